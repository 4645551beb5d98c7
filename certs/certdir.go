package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"

	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// Names the webhook server reads by default (webhook.Options.CertName and
// KeyName).
const (
	certFile = "tls.crt"
	keyFile  = "tls.key"
)

// writeCertDir writes the serving pair where the webhook server reads it.
// Each file is replaced by a rename, so the server's certwatcher never reads
// a half-written file; the key is written first, so a reload between the two
// renames sees a mismatched pair, which certwatcher rejects while it keeps
// serving the old one. Unchanged files are not touched, so the watcher only
// reloads when the pair changed.
func (r *Rotator) writeCertDir(ctx context.Context, serving *KeyPair) error {
	keyPEM, err := serving.KeyPEM()
	if err != nil {
		return fmt.Errorf("certs: write cert dir %s: %w", r.opts.CertDir, err)
	}
	if err := os.MkdirAll(r.opts.CertDir, 0o700); err != nil {
		return fmt.Errorf("certs: write cert dir %s: %w", r.opts.CertDir, err)
	}
	wroteKey, err := writeFileAtomic(r.opts.CertDir, keyFile, keyPEM, 0o600)
	if err != nil {
		return fmt.Errorf("certs: write cert dir %s: %w", r.opts.CertDir, err)
	}
	wroteCert, err := writeFileAtomic(r.opts.CertDir, certFile, serving.CertPEM(), 0o644)
	if err != nil {
		return fmt.Errorf("certs: write cert dir %s: %w", r.opts.CertDir, err)
	}
	if wroteKey || wroteCert {
		logf.FromContext(ctx).Info("Wrote serving certificate to cert dir", "dir", r.opts.CertDir,
			"serial", serving.Cert.SerialNumber.Text(16), "notAfter", stamp(serving.Cert.NotAfter))
	}
	return nil
}

// writeFileAtomic replaces dir/name with data through a temporary file in
// the same directory and a rename, unless the file already holds data. It
// reports whether it wrote.
func writeFileAtomic(dir, name string, data []byte, perm os.FileMode) (bool, error) {
	path := filepath.Join(dir, name)
	current, err := os.ReadFile(path)
	if err == nil && bytes.Equal(current, data) {
		return false, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("read %s: %w", name, err)
	}
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return false, fmt.Errorf("write %s: %w", name, err)
	}
	if err := fillAndClose(tmp, data, perm); err != nil {
		_ = os.Remove(tmp.Name())
		return false, fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = os.Remove(tmp.Name())
		return false, fmt.Errorf("write %s: %w", name, err)
	}
	return true, nil
}

func fillAndClose(f *os.File, data []byte, perm os.FileMode) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// Ready is a readiness check (a controller-runtime healthz.Checker): it
// passes only when the cert dir holds a pair that parses, whose key matches
// its certificate, and that is valid now. A replica that would fail every
// TLS handshake is kept out of the Service's endpoints.
func (r *Rotator) Ready(_ *http.Request) error {
	certPEM, err := os.ReadFile(filepath.Join(r.opts.CertDir, certFile))
	if err != nil {
		return fmt.Errorf("certs: cert dir %s: %w", r.opts.CertDir, err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(r.opts.CertDir, keyFile))
	if err != nil {
		return fmt.Errorf("certs: cert dir %s: %w", r.opts.CertDir, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("certs: cert dir %s: serving pair: %w", r.opts.CertDir, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return fmt.Errorf("certs: cert dir %s: serving certificate: %w", r.opts.CertDir, err)
		}
	}
	now := r.clock.Now()
	switch {
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("certs: cert dir %s: serving certificate is valid only from %s", r.opts.CertDir, stamp(leaf.NotBefore))
	case !now.Before(leaf.NotAfter):
		return fmt.Errorf("certs: cert dir %s: serving certificate expired at %s", r.opts.CertDir, stamp(leaf.NotAfter))
	}
	return nil
}
