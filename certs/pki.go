package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// backdate moves NotBefore into the past so that an apiserver whose clock
// lags fledge's a little still accepts a certificate that is served at once.
const backdate = 5 * time.Minute

// KeyPair is a certificate with its private key.
type KeyPair struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA issues a self-signed CA valid from now for lifetime. It may only
// sign leaf certificates (path length 0): fledge has no intermediates.
func NewCA(commonName string, now time.Time, lifetime time.Duration) (*KeyPair, error) {
	if lifetime <= 0 {
		return nil, fmt.Errorf("issue CA %s: lifetime %s is not positive", commonName, lifetime)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue CA %s: generate key: %w", commonName, err)
	}
	tmpl, err := template(commonName, now, now.Add(lifetime))
	if err != nil {
		return nil, fmt.Errorf("issue CA %s: %w", commonName, err)
	}
	tmpl.IsCA = true
	tmpl.MaxPathLenZero = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	cert, err := sign(tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("issue CA %s: %w", commonName, err)
	}
	return &KeyPair{Cert: cert, Key: key}, nil
}

// NewServing issues a serving certificate signed by ca for the given DNS
// names and IPs, valid from now for lifetime but never past the CA's own
// NotAfter: a certificate whose CA has expired verifies nowhere.
func NewServing(ca *KeyPair, now time.Time, lifetime time.Duration, dnsNames []string, ips []net.IP) (*KeyPair, error) {
	if err := checkServingRequest(ca, now, lifetime, dnsNames, ips); err != nil {
		return nil, fmt.Errorf("issue serving certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue serving certificate: generate key: %w", err)
	}
	notAfter := now.Add(lifetime)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	commonName := "fledge-webhook"
	if len(dnsNames) > 0 {
		commonName = dnsNames[0]
	}
	tmpl, err := template(commonName, now, notAfter)
	if err != nil {
		return nil, fmt.Errorf("issue serving certificate: %w", err)
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	tmpl.DNSNames = append([]string(nil), dnsNames...)
	tmpl.IPAddresses = append([]net.IP(nil), ips...)
	cert, err := sign(tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue serving certificate for %v: %w", dnsNames, err)
	}
	return &KeyPair{Cert: cert, Key: key}, nil
}

func checkServingRequest(ca *KeyPair, now time.Time, lifetime time.Duration, dnsNames []string, ips []net.IP) error {
	switch {
	case ca == nil || ca.Cert == nil || ca.Key == nil:
		return errors.New("no CA to sign with")
	case !ca.Cert.IsCA:
		return fmt.Errorf("signer %q is not a CA", ca.Cert.Subject.CommonName)
	case !now.Before(ca.Cert.NotAfter):
		return fmt.Errorf("CA %q expired at %s", ca.Cert.Subject.CommonName, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	case lifetime <= 0:
		return fmt.Errorf("lifetime %s is not positive", lifetime)
	case len(dnsNames) == 0 && len(ips) == 0:
		return errors.New("no DNS name or IP to certify")
	}
	return nil
}

// template fills what a CA and a serving certificate share. The serial is
// random (128 bits) so that two replicas issuing at the same second never
// produce certificates with equal issuer and serial.
func template(commonName string, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"fledge"}},
		NotBefore:             notBefore.Add(-backdate).UTC(),
		NotAfter:              notAfter.UTC(),
		BasicConstraintsValid: true,
	}, nil
}

func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse signed certificate: %w", err)
	}
	return cert, nil
}

// IssuedAt is when a certificate of this package was issued: its NotBefore
// without the backdate. Lifetimes and renewal are counted from it.
func IssuedAt(cert *x509.Certificate) time.Time {
	return cert.NotBefore.Add(backdate)
}

// RenewAt is when a certificate is due for renewal: two thirds into its
// lifetime, which leaves a third of it for passes that fail or wait.
func RenewAt(cert *x509.Certificate) time.Time {
	issued := IssuedAt(cert)
	return issued.Add(cert.NotAfter.Sub(issued) / 3 * 2)
}

// ServiceDNSNames are the names under which the apiserver and other clients
// reach a Service: short, namespaced, the .svc name the apiserver uses for a
// service reference, and the fully qualified cluster.local name.
func ServiceDNSNames(service, namespace string) []string {
	return []string{
		service,
		service + "." + namespace,
		service + "." + namespace + ".svc",
		service + "." + namespace + ".svc.cluster.local",
	}
}

// CertPEM is the certificate in PEM.
func (k *KeyPair) CertPEM() []byte {
	return EncodeCerts(k.Cert)
}

// KeyPEM is the private key in PKCS#8 PEM.
func (k *KeyPair) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.Key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// EncodeCerts writes certificates as concatenated PEM blocks, the format of
// a caBundle and of ca.crt.
func EncodeCerts(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		// Encoding to a bytes.Buffer cannot fail.
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

// ParseCerts reads every CERTIFICATE block of a PEM bundle; other blocks are
// skipped. A bundle without any certificate is an error.
func ParseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %d of bundle: %w", len(certs)+1, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// ParseKey reads an ECDSA P-256 private key in PKCS#8 or SEC 1 PEM.
func ParseKey(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM private key found")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("private key is %T, want ECDSA P-256", key)
	}
	return ec, nil
}

// ParseKeyPair reads a certificate (the first of certPEM) and its key, and
// checks that they belong together: a served certificate whose key does not
// match fails every handshake.
func ParseKeyPair(certPEM, keyPEM []byte) (*KeyPair, error) {
	certs, err := ParseCerts(certPEM)
	if err != nil {
		return nil, err
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	if !key.PublicKey.Equal(certs[0].PublicKey) {
		return nil, fmt.Errorf("private key does not match certificate %q", certs[0].Subject.CommonName)
	}
	return &KeyPair{Cert: certs[0], Key: key}, nil
}
