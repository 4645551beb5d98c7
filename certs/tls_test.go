package certs

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRequireTLS12RefusesOlderClients(t *testing.T) {
	ca := mustCA(t, t0, 365*day)
	srv := mustServing(t, ca, t0, 90*day)
	keyPEM, err := srv.KeyPEM()
	require.NoError(t, err)
	pair, err := tls.X509KeyPair(srv.CertPEM(), keyPEM)
	require.NoError(t, err)

	for _, tc := range []struct {
		name       string
		option     bool
		clientMax  uint16
		wantRefuse bool
	}{
		{name: "a lax server accepts TLS 1.1", clientMax: tls.VersionTLS11},
		{name: "the option refuses TLS 1.1", option: true, clientMax: tls.VersionTLS11, wantRefuse: true},
		{name: "the option accepts TLS 1.2", option: true, clientMax: tls.VersionTLS12},
		{name: "the option accepts TLS 1.3", option: true, clientMax: tls.VersionTLS13},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			// A caller's configuration that allows TLS 1.0 explicitly: the
			// option must raise it, not only rely on Go's default.
			server.TLS = &tls.Config{MinVersion: tls.VersionTLS10, Certificates: []tls.Certificate{pair}}
			if tc.option {
				RequireTLS12(server.TLS)
			}
			server.StartTLS()
			defer server.Close()

			conn, err := tls.Dial("tcp", server.Listener.Addr().String(), &tls.Config{
				RootCAs:    pool([]*x509.Certificate{ca.Cert}),
				ServerName: "127.0.0.1",
				MinVersion: tls.VersionTLS10,
				MaxVersion: tc.clientMax,
				Time:       func() time.Time { return t0.Add(day) },
			})
			if tc.wantRefuse {
				assert.ErrorContains(t, err, "protocol version")
				return
			}
			require.NoError(t, err)
			defer conn.Close()
			assert.Equal(t, tc.clientMax, conn.ConnectionState().Version)
		})
	}
}

func TestRequireTLS12KeepsAHigherMinimum(t *testing.T) {
	c := &tls.Config{MinVersion: tls.VersionTLS13}
	RequireTLS12(c)
	assert.Equal(t, uint16(tls.VersionTLS13), c.MinVersion)
}
