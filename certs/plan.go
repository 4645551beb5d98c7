package certs

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"time"
)

// state is the TLS material as the Secret stores it. A part that is missing
// or does not parse is nil (or, for the bundle, left out), and the plan
// replaces it.
type state struct {
	signer  *KeyPair            // the CA that signs new serving certificates
	trust   []*x509.Certificate // the bundle: every CA the apiserver must trust
	serving *KeyPair            // the certificate every replica serves
}

// policy is what a plan must achieve, fixed for one pass.
type policy struct {
	now             time.Time
	caName          string
	caLifetime      time.Duration
	servingLifetime time.Duration
	// settle is how long a new CA waits, after it was issued, before it
	// signs: see "CA rollover" in doc.go.
	settle   time.Duration
	dnsNames []string
	ips      []net.IP
}

// decision is the planned state, whether it differs from the stored one,
// and notes for the log that carry the numbers.
type decision struct {
	next    state
	changed bool
	notes   []string
}

// plan decides the next state from the stored one. published reports
// whether the stored signer is in the caBundle of every webhook entry that
// exists. plan reads no clock and does no I/O; it only draws randomness for
// new keys.
//
// The order of the three steps matters: the bundle is pruned before the
// signer is checked (so that a lost CA is replaced by a new one, not kept
// because of its bundle entry), and the signer is settled before the
// serving certificate (which it may have to sign).
func plan(cur state, published bool, p policy) (decision, error) {
	d := decision{next: state{signer: cur.signer, serving: cur.serving}}
	d.pruneTrust(cur.trust, p.now)
	fresh, err := d.planSigner(p)
	if err != nil {
		return decision{}, err
	}
	if err := d.planServing(fresh, published, p); err != nil {
		return decision{}, err
	}
	return d, nil
}

func (d *decision) note(format string, args ...any) {
	d.notes = append(d.notes, fmt.Sprintf(format, args...))
}

// pruneTrust keeps the CAs that still verify something: an expired CA
// trusts nothing, and every certificate it signed has expired with it.
func (d *decision) pruneTrust(trust []*x509.Certificate, now time.Time) {
	for _, ca := range trust {
		switch {
		case !ca.IsCA:
			d.changed = true
			d.note("Dropped %q from the bundle: not a CA", ca.Subject.CommonName)
		case !now.Before(ca.NotAfter):
			d.changed = true
			d.note("Pruned CA %q from the bundle: expired at %s", ca.Subject.CommonName, stamp(ca.NotAfter))
		case containsCert(d.next.trust, ca):
			d.changed = true
		default:
			d.next.trust = append(d.next.trust, ca)
		}
	}
}

// planSigner replaces a signer that is missing, broken or due, and reports
// whether it did. The new CA joins the bundle beside the old ones: the
// serving certificate in use keeps verifying while the bundle is published.
func (d *decision) planSigner(p policy) (bool, error) {
	if why := signerProblem(d.next.signer, p.now); why != "" {
		ca, err := NewCA(p.caName, p.now, p.caLifetime)
		if err != nil {
			return false, err
		}
		d.next.signer = ca
		d.next.trust = append(d.next.trust, ca.Cert)
		d.changed = true
		d.note("Issued CA %q (notAfter %s, renew at %s) because %s; the bundle holds %d CAs",
			ca.Cert.Subject.CommonName, stamp(ca.Cert.NotAfter), stamp(RenewAt(ca.Cert)), why, len(d.next.trust))
		return true, nil
	}
	if !containsCert(d.next.trust, d.next.signer.Cert) {
		d.next.trust = append(d.next.trust, d.next.signer.Cert)
		d.changed = true
		d.note("Added the current CA %q back to the bundle", d.next.signer.Cert.Subject.CommonName)
	}
	return false, nil
}

// signerProblem says why the stored CA must be replaced, or "" if it may
// keep signing.
func signerProblem(signer *KeyPair, now time.Time) string {
	switch {
	case signer == nil:
		return "the stored CA is missing or unreadable"
	case !signer.Cert.IsCA:
		return fmt.Sprintf("the stored CA %q is not a CA", signer.Cert.Subject.CommonName)
	case !now.Before(signer.Cert.NotAfter):
		return fmt.Sprintf("CA %q expired at %s", signer.Cert.Subject.CommonName, stamp(signer.Cert.NotAfter))
	case !now.Before(RenewAt(signer.Cert)):
		return fmt.Sprintf("CA %q was due for renewal at %s (two thirds of its lifetime)",
			signer.Cert.Subject.CommonName, stamp(RenewAt(signer.Cert)))
	}
	return ""
}

// planServing re-signs the serving certificate when it must change. A
// certificate that still verifies against the bundle waits for the signer
// to be safely published; one that verifies nowhere is replaced at once.
func (d *decision) planServing(freshSigner, published bool, p policy) error {
	why := servingProblem(d.next.serving, d.next.signer, p)
	if why == "" {
		return nil
	}
	if usable(d.next.serving, d.next.trust, p.now) {
		if wait := signerWait(d.next.signer, freshSigner, published, p); wait != "" {
			d.note("Kept the serving certificate, which %s, because %s", why, wait)
			return nil
		}
	}
	kp, err := NewServing(d.next.signer, p.now, p.servingLifetime, p.dnsNames, p.ips)
	if err != nil {
		return err
	}
	d.next.serving = kp
	d.changed = true
	d.note("Issued serving certificate for %v %v (notAfter %s, renew at %s) signed by CA %q because it %s",
		p.dnsNames, p.ips, stamp(kp.Cert.NotAfter), stamp(RenewAt(kp.Cert)), d.next.signer.Cert.Subject.CommonName, why)
	return nil
}

// servingProblem says why the stored serving certificate must be
// replaced, or "" if it stays.
func servingProblem(serving, signer *KeyPair, p policy) string {
	switch {
	case serving == nil:
		return "was missing or unreadable"
	case serving.Cert.CheckSignatureFrom(signer.Cert) != nil:
		return fmt.Sprintf("was signed by %q, not by the current CA %q", serving.Cert.Issuer.CommonName, signer.Cert.Subject.CommonName)
	case !sameNames(serving.Cert, p.dnsNames, p.ips):
		return fmt.Sprintf("certified %v %v, not %v %v", serving.Cert.DNSNames, serving.Cert.IPAddresses, p.dnsNames, p.ips)
	case !p.now.Before(serving.Cert.NotAfter):
		return fmt.Sprintf("expired at %s", stamp(serving.Cert.NotAfter))
	case !p.now.Before(RenewAt(serving.Cert)):
		return fmt.Sprintf("was due for renewal at %s (two thirds of its lifetime)", stamp(RenewAt(serving.Cert)))
	}
	return ""
}

// signerWait says why the signer may not sign a serving certificate yet, or
// "" if it may. Until the apiserver trusts the signer, a certificate it signs
// would fail every webhook call.
func signerWait(signer *KeyPair, fresh, published bool, p policy) string {
	name := signer.Cert.Subject.CommonName
	switch {
	case fresh:
		return fmt.Sprintf("the new CA %q signs only after the bundle holding it is published", name)
	case !published:
		return fmt.Sprintf("CA %q is not yet in the caBundle of every webhook", name)
	case p.now.Before(IssuedAt(signer.Cert).Add(p.settle)):
		return fmt.Sprintf("CA %q signs from %s, one interval after it was issued", name, stamp(IssuedAt(signer.Cert).Add(p.settle)))
	}
	return ""
}

// usable reports whether a serving certificate works now: its key matched
// when it was parsed, it is within its validity, and it chains to a CA of
// the bundle for server authentication.
func usable(serving *KeyPair, trust []*x509.Certificate, now time.Time) bool {
	if serving == nil || now.Before(serving.Cert.NotBefore) || !now.Before(serving.Cert.NotAfter) {
		return false
	}
	_, err := serving.Cert.Verify(x509.VerifyOptions{
		Roots:       pool(trust),
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	return err == nil
}

func sameNames(cert *x509.Certificate, dnsNames []string, ips []net.IP) bool {
	if !sameSet(cert.DNSNames, dnsNames) {
		return false
	}
	return sameSet(ipStrings(cert.IPAddresses), ipStrings(ips))
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

func pool(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func containsCert(certs []*x509.Certificate, c *x509.Certificate) bool {
	return slices.ContainsFunc(certs, func(o *x509.Certificate) bool { return bytes.Equal(o.Raw, c.Raw) })
}

func stamp(t time.Time) string {
	return t.UTC().Format(time.RFC3339)
}
