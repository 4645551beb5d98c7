package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// webhookConfigs are the configurations named in Options, as fresh objects
// to read into.
func (r *Rotator) webhookConfigs() []client.Object {
	var objs []client.Object
	if name := r.opts.MutatingWebhookName; name != "" {
		objs = append(objs, &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}})
	}
	if name := r.opts.ValidatingWebhookName; name != "" {
		objs = append(objs, &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}})
	}
	return objs
}

// clientConfigs points into every webhook entry of a configuration, so that
// one loop serves both kinds.
func clientConfigs(obj client.Object) []*admissionregistrationv1.WebhookClientConfig {
	var out []*admissionregistrationv1.WebhookClientConfig
	switch o := obj.(type) {
	case *admissionregistrationv1.MutatingWebhookConfiguration:
		for i := range o.Webhooks {
			out = append(out, &o.Webhooks[i].ClientConfig)
		}
	case *admissionregistrationv1.ValidatingWebhookConfiguration:
		for i := range o.Webhooks {
			out = append(out, &o.Webhooks[i].ClientConfig)
		}
	}
	return out
}

func describe(obj client.Object) string {
	switch obj.(type) {
	case *admissionregistrationv1.MutatingWebhookConfiguration:
		return "MutatingWebhookConfiguration " + obj.GetName()
	case *admissionregistrationv1.ValidatingWebhookConfiguration:
		return "ValidatingWebhookConfiguration " + obj.GetName()
	}
	return obj.GetName()
}

// published reports whether signer is in the caBundle of every webhook
// entry of every configuration that exists. A configuration that does not
// exist is not called by the apiserver, so it trusts nothing that matters.
func (r *Rotator) published(ctx context.Context, signer *KeyPair) (bool, error) {
	if signer == nil {
		return false, nil
	}
	for _, obj := range r.webhookConfigs() {
		err := r.client.Get(ctx, client.ObjectKeyFromObject(obj), obj)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("certs: read %s: %w", describe(obj), err)
		}
		for _, cc := range clientConfigs(obj) {
			if !bundleHolds(cc.CABundle, signer.Cert) {
				return false, nil
			}
		}
	}
	return true, nil
}

func bundleHolds(bundle []byte, cert *x509.Certificate) bool {
	certs, err := ParseCerts(bundle)
	return err == nil && containsCert(certs, cert)
}

// inject sets caBundle on every webhook entry of the configured webhook
// configurations and returns the names of those that do not exist yet.
func (r *Rotator) inject(ctx context.Context, bundle []byte) ([]string, error) {
	var missing []string
	for _, obj := range r.webhookConfigs() {
		found, err := r.injectInto(ctx, obj, bundle)
		if err != nil {
			return missing, err
		}
		if !found {
			missing = append(missing, describe(obj))
		}
	}
	return missing, nil
}

// injectInto writes only when some entry's caBundle differs, and retries on
// Conflict from a fresh read so that concurrent edits of other fields (by
// kubectl apply, or another replica) are kept.
func (r *Rotator) injectInto(ctx context.Context, obj client.Object, bundle []byte) (bool, error) {
	log := logf.FromContext(ctx)
	found := true
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := r.client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			if apierrors.IsNotFound(err) {
				found = false
				return nil
			}
			return err
		}
		configs := clientConfigs(obj)
		updated := 0
		for _, cc := range configs {
			if !bytes.Equal(cc.CABundle, bundle) {
				cc.CABundle = bytes.Clone(bundle)
				updated++
			}
		}
		if updated == 0 {
			return nil
		}
		if err := r.client.Update(ctx, obj); err != nil {
			return err
		}
		log.Info("Injected caBundle", "configuration", describe(obj), "updatedWebhooks", updated, "webhooks", len(configs))
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("certs: inject caBundle into %s: %w", describe(obj), err)
	}
	return found, nil
}
