package certs

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Keys of the Secret. tls.crt and tls.key make it a valid kubernetes.io/tls
// Secret; ca.crt follows the convention of cert-manager and of service
// account token Secrets for "the CAs to trust".
const (
	keyServingCert = corev1.TLSCertKey
	keyServingKey  = corev1.TLSPrivateKeyKey
	keyBundle      = "ca.crt"
	keySignerCert  = "ca-signer.crt"
	keySignerKey   = "ca.key"
)

// loadSecret reads the Secret; nil without error means it does not exist.
func (r *Rotator) loadSecret(ctx context.Context) (*corev1.Secret, error) {
	return readSecret(ctx, r.client, r.secretKey(), "secret")
}

// storeSecret creates the Secret, or updates it from existing with the
// resourceVersion read, so that a write based on a stale read fails with
// Conflict instead of overwriting another replica's pair. Keys that fledge
// does not own are kept.
func (r *Rotator) storeSecret(ctx context.Context, existing *corev1.Secret, st state) error {
	data, err := encodeState(st)
	if err != nil {
		return fmt.Errorf("certs: store secret %s: %w", r.secretKey(), err)
	}
	if existing == nil {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: r.opts.Namespace,
				Name:      r.opts.SecretName,
				Labels: map[string]string{
					"app.kubernetes.io/name":       "fledge",
					"app.kubernetes.io/component":  "webhook-certs",
					"app.kubernetes.io/managed-by": "fledge",
				},
			},
			Type: corev1.SecretTypeTLS,
			Data: data,
		}
		if err := r.client.Create(ctx, s); err != nil {
			return fmt.Errorf("certs: create secret %s: %w", r.secretKey(), err)
		}
		return nil
	}
	s := existing.DeepCopy()
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	for k, v := range data {
		s.Data[k] = v
	}
	if err := r.client.Update(ctx, s); err != nil {
		return fmt.Errorf("certs: store secret %s: %w", r.secretKey(), err)
	}
	return nil
}

func (r *Rotator) secretKey() client.ObjectKey {
	return client.ObjectKey{Namespace: r.opts.Namespace, Name: r.opts.SecretName}
}

// decodeSecret parses what it can and says what it could not: a part that
// does not parse is left empty for the plan to replace, and the problems go
// to the log.
func decodeSecret(s *corev1.Secret) (state, []string) {
	if s == nil {
		return state{}, nil
	}
	var st state
	var problems []string
	if kp, err := ParseKeyPair(s.Data[keySignerCert], s.Data[keySignerKey]); err != nil {
		problems = append(problems, fmt.Sprintf("%s/%s: %v", keySignerCert, keySignerKey, err))
	} else {
		st.signer = kp
	}
	if certs, err := ParseCerts(s.Data[keyBundle]); err != nil {
		problems = append(problems, fmt.Sprintf("%s: %v", keyBundle, err))
	} else {
		st.trust = certs
	}
	if kp, err := ParseKeyPair(s.Data[keyServingCert], s.Data[keyServingKey]); err != nil {
		problems = append(problems, fmt.Sprintf("%s/%s: %v", keyServingCert, keyServingKey, err))
	} else {
		st.serving = kp
	}
	return st, problems
}

func encodeState(st state) (map[string][]byte, error) {
	servingKey, err := st.serving.KeyPEM()
	if err != nil {
		return nil, err
	}
	signerKey, err := st.signer.KeyPEM()
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		keyServingCert: st.serving.CertPEM(),
		keyServingKey:  servingKey,
		keyBundle:      EncodeCerts(st.trust...),
		keySignerCert:  st.signer.CertPEM(),
		keySignerKey:   signerKey,
	}, nil
}
