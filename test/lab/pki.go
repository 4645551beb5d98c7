package lab

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/client-go/util/cert"
)

// identity is a user the apiserver knows by a static bearer token.
type identity struct {
	token  string
	user   string
	groups []string
}

// files of the lab's PKI, inside the lab directory.
type pki struct {
	servingCert string // the apiserver's serving certificate, chained to its CA
	servingKey  string
	caFile      string // the CA alone, for --root-ca-file
	caData      []byte // what clients trust
	saKey       string // service-account signing key (RSA, PKCS#1)
	tokenFile   string // --token-auth-file
}

// writePKI makes the apiserver's serving certificate (for 127.0.0.1 and
// localhost), the service-account key and the static token file.
func writePKI(dir string, ids []identity) (*pki, error) {
	certPEM, keyPEM, err := cert.GenerateSelfSignedCertKey("127.0.0.1", []net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"})
	if err != nil {
		return nil, fmt.Errorf("generate apiserver certificate: %w", err)
	}
	// certPEM is the serving certificate followed by the CA that signed it.
	servingBlock, rest := pem.Decode(certPEM)
	if servingBlock == nil || len(rest) == 0 {
		return nil, fmt.Errorf("generate apiserver certificate: no CA in the chain")
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate service-account key: %w", err)
	}
	saPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)})

	var tokens []byte
	for _, id := range ids {
		tokens = fmt.Appendf(tokens, "%s,%s,%s,\"%s\"\n", id.token, id.user, id.user, strings.Join(id.groups, ","))
	}

	p := &pki{
		servingCert: filepath.Join(dir, "apiserver.crt"),
		servingKey:  filepath.Join(dir, "apiserver.key"),
		caFile:      filepath.Join(dir, "ca.crt"),
		caData:      certPEM,
		saKey:       filepath.Join(dir, "sa.key"),
		tokenFile:   filepath.Join(dir, "tokens.csv"),
	}
	for path, data := range map[string][]byte{
		p.servingCert: certPEM,
		p.servingKey:  keyPEM,
		p.caFile:      rest,
		p.saKey:       saPEM,
		p.tokenFile:   tokens,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// newToken returns a random bearer token.
func newToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
