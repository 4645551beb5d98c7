package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"
)

const day = 24 * time.Hour

// t0 is a whole second: certificates store times to the second.
var t0 = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

var (
	testDNSNames = ServiceDNSNames("fledge-webhook", "fledge-system")
	testIPs      = []net.IP{net.ParseIP("127.0.0.1")}
)

func mustCA(t *testing.T, now time.Time, lifetime time.Duration) *KeyPair {
	t.Helper()
	ca, err := NewCA("fledge-webhook-ca", now, lifetime)
	require.NoError(t, err)
	return ca
}

func mustServing(t *testing.T, ca *KeyPair, now time.Time, lifetime time.Duration) *KeyPair {
	t.Helper()
	kp, err := NewServing(ca, now, lifetime, testDNSNames, testIPs)
	require.NoError(t, err)
	return kp
}

func verifyFor(cert *x509.Certificate, name string, now time.Time, cas ...*x509.Certificate) error {
	_, err := cert.Verify(x509.VerifyOptions{
		DNSName:     name,
		Roots:       pool(cas),
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	return err
}

func TestServingCertificateChainsToCAForEverySAN(t *testing.T) {
	fc := clocktesting.NewFakeClock(t0)
	ca := mustCA(t, fc.Now(), 365*day)
	srv := mustServing(t, ca, fc.Now(), 90*day)

	for _, name := range []string{
		"fledge-webhook",
		"fledge-webhook.fledge-system",
		"fledge-webhook.fledge-system.svc",
		"fledge-webhook.fledge-system.svc.cluster.local",
		"127.0.0.1",
	} {
		assert.NoError(t, verifyFor(srv.Cert, name, fc.Now(), ca.Cert), name)
	}
	assert.Error(t, verifyFor(srv.Cert, "fledge-webhook.other-ns.svc", fc.Now(), ca.Cert), "a name that is not a SAN")
	assert.Error(t, verifyFor(srv.Cert, "fledge-webhook", fc.Now(), mustCA(t, fc.Now(), 365*day).Cert), "another CA")
}

func TestCertificatesHaveTheConfiguredShape(t *testing.T) {
	fc := clocktesting.NewFakeClock(t0)
	ca := mustCA(t, fc.Now(), 365*day)
	srv := mustServing(t, ca, fc.Now(), 30*day)

	assert.True(t, ca.Cert.IsCA)
	assert.NotZero(t, ca.Cert.KeyUsage&x509.KeyUsageCertSign)
	assert.Equal(t, t0.Add(365*day), ca.Cert.NotAfter)
	assert.Equal(t, t0.Add(-backdate), ca.Cert.NotBefore)
	assert.Equal(t, elliptic.P256(), ca.Cert.PublicKey.(*ecdsa.PublicKey).Curve)

	assert.False(t, srv.Cert.IsCA)
	assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, srv.Cert.ExtKeyUsage)
	assert.Equal(t, t0.Add(30*day), srv.Cert.NotAfter)
	assert.Equal(t, elliptic.P256(), srv.Cert.PublicKey.(*ecdsa.PublicKey).Curve)
	assert.Equal(t, testDNSNames, srv.Cert.DNSNames)
	require.Len(t, srv.Cert.IPAddresses, 1)
	assert.True(t, srv.Cert.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")))
}

func TestServingCertificateNeverOutlivesItsCA(t *testing.T) {
	ca := mustCA(t, t0, 100*day)
	srv := mustServing(t, ca, t0.Add(50*day), 90*day)
	assert.Equal(t, ca.Cert.NotAfter, srv.Cert.NotAfter)

	_, err := NewServing(ca, t0.Add(100*day), 90*day, testDNSNames, nil)
	assert.ErrorContains(t, err, "expired")
}

func TestRenewAtIsTwoThirdsOfTheLifetime(t *testing.T) {
	ca := mustCA(t, t0, 365*day)
	srv := mustServing(t, ca, t0, 90*day)
	assert.Equal(t, t0.Add(60*day), RenewAt(srv.Cert))
	assert.Equal(t, t0.Add(243*day+8*time.Hour), RenewAt(ca.Cert))
	assert.Equal(t, t0, IssuedAt(srv.Cert))
}

func TestPEMRoundTrip(t *testing.T) {
	ca := mustCA(t, t0, 365*day)
	srv := mustServing(t, ca, t0, 90*day)
	keyPEM, err := srv.KeyPEM()
	require.NoError(t, err)

	got, err := ParseKeyPair(srv.CertPEM(), keyPEM)
	require.NoError(t, err)
	assert.Equal(t, srv.Cert.Raw, got.Cert.Raw)
	assert.True(t, srv.Key.Equal(got.Key))

	bundle, err := ParseCerts(EncodeCerts(ca.Cert, srv.Cert))
	require.NoError(t, err)
	require.Len(t, bundle, 2)
	assert.Equal(t, ca.Cert.Raw, bundle[0].Raw)
	assert.Equal(t, srv.Cert.Raw, bundle[1].Raw)
}

func TestParseKeyPairRefusesWhatCannotServe(t *testing.T) {
	ca := mustCA(t, t0, 365*day)
	srv := mustServing(t, ca, t0, 90*day)
	caKey, err := ca.KeyPEM()
	require.NoError(t, err)
	der, err := x509.MarshalECPrivateKey(srv.Key)
	require.NoError(t, err)
	sec1 := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})

	_, err = ParseKeyPair(srv.CertPEM(), caKey)
	assert.ErrorContains(t, err, "does not match", "key of another certificate")
	_, err = ParseKeyPair(nil, caKey)
	assert.ErrorContains(t, err, "no PEM certificate")
	_, err = ParseKeyPair(srv.CertPEM(), []byte("garbage"))
	assert.ErrorContains(t, err, "no PEM private key")
	_, err = ParseKeyPair(srv.CertPEM(), sec1)
	assert.NoError(t, err, "SEC 1 keys are read too")
}
