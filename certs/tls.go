package certs

import "crypto/tls"

// RequireTLS12 raises a TLS configuration's minimum version to TLS 1.2,
// keeping a higher minimum if one is set. Pass it in
// webhook.Options.TLSOpts: TLS 1.0 and 1.1 are deprecated (RFC 8996), and the
// apiserver speaks 1.2 and 1.3, so refusing older versions costs nothing.
func RequireTLS12(c *tls.Config) {
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
}
