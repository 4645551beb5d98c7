package certs

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"
)

func testPolicy(now time.Time) policy {
	return policy{
		now:             now,
		caName:          "fledge-webhook-ca@" + now.Format(time.RFC3339),
		caLifetime:      365 * day,
		servingLifetime: 90 * day,
		settle:          10 * time.Minute,
		dnsNames:        testDNSNames,
		ips:             testIPs,
	}
}

func mustPlan(t *testing.T, cur state, published bool, now time.Time) decision {
	t.Helper()
	d, err := plan(cur, published, testPolicy(now))
	require.NoError(t, err)
	return d
}

func TestRenewalHappensAtTwoThirdsAndNotBefore(t *testing.T) {
	for _, tc := range []struct {
		name    string
		start   func(t *testing.T) state
		watched func(state) *x509.Certificate
		renewAt time.Duration // after t0
	}{
		{
			name: "serving certificate of 90 days renews at day 60",
			start: func(t *testing.T) state {
				return mustPlan(t, state{}, false, t0).next
			},
			watched: func(s state) *x509.Certificate { return s.serving.Cert },
			renewAt: 60 * day,
		},
		{
			name: "CA of 365 days renews at day 243 8h",
			start: func(t *testing.T) state {
				ca := mustCA(t, t0, 365*day)
				fresh := mustServing(t, ca, t0.Add(240*day), 90*day)
				return state{signer: ca, trust: []*x509.Certificate{ca.Cert}, serving: fresh}
			},
			watched: func(s state) *x509.Certificate { return s.signer.Cert },
			renewAt: 243*day + 8*time.Hour,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc := clocktesting.NewFakeClock(t0)
			cur := tc.start(t)

			fc.SetTime(t0.Add(tc.renewAt - time.Second))
			before := mustPlan(t, cur, true, fc.Now())
			assert.False(t, before.changed, "one second before: %v", before.notes)
			assert.Equal(t, tc.watched(cur).Raw, tc.watched(before.next).Raw)

			fc.Step(time.Second)
			at := mustPlan(t, cur, true, fc.Now())
			assert.True(t, at.changed)
			assert.NotEqual(t, tc.watched(cur).Raw, tc.watched(at.next).Raw)
			assert.Equal(t, fc.Now(), IssuedAt(tc.watched(at.next)))
		})
	}
}

func TestPlan(t *testing.T) {
	caOld := mustCA(t, t0, 365*day)
	rollover := RenewAt(caOld.Cert) // t0 + 243d8h
	caNew := mustCA(t, rollover, 365*day)
	servingOld := mustServing(t, caOld, rollover.Add(-10*day), 90*day)
	servingLate := mustServing(t, caNew, caOld.Cert.NotAfter.Add(-30*day), 90*day)
	shortNames, err := NewServing(caNew, rollover.Add(time.Hour), 90*day, testDNSNames[:2], nil)
	require.NoError(t, err)
	expired := mustServing(t, caOld, t0, 30*day)
	both := []*x509.Certificate{caOld.Cert, caNew.Cert}

	for _, tc := range []struct {
		name      string
		cur       state
		published bool
		now       time.Time
		// wantSigner and wantServing are "kept" or "new"; wantTrust names
		// the bundle's CAs in order: "old", "new", or "fresh" for a CA
		// issued by this plan.
		wantSigner  string
		wantTrust   []string
		wantServing string
	}{
		{
			name:       "empty secret issues a CA and a serving certificate at once",
			now:        t0,
			wantSigner: "new", wantTrust: []string{"fresh"}, wantServing: "new",
		},
		{
			name:       "valid state changes nothing",
			cur:        state{signer: caOld, trust: []*x509.Certificate{caOld.Cert}, serving: servingOld},
			published:  true,
			now:        rollover.Add(-time.Hour),
			wantSigner: "kept", wantTrust: []string{"old"}, wantServing: "kept",
		},
		{
			name:       "due CA is replaced but the serving certificate stays until the new CA is published",
			cur:        state{signer: caOld, trust: []*x509.Certificate{caOld.Cert}, serving: servingOld},
			published:  true,
			now:        rollover,
			wantSigner: "new", wantTrust: []string{"old", "fresh"}, wantServing: "kept",
		},
		{
			name:       "new CA missing from a caBundle keeps the serving certificate",
			cur:        state{signer: caNew, trust: both, serving: servingOld},
			published:  false,
			now:        rollover.Add(time.Hour),
			wantSigner: "kept", wantTrust: []string{"old", "new"}, wantServing: "kept",
		},
		{
			name:       "new CA published but issued less than an interval ago keeps the serving certificate",
			cur:        state{signer: caNew, trust: both, serving: servingOld},
			published:  true,
			now:        rollover.Add(9 * time.Minute),
			wantSigner: "kept", wantTrust: []string{"old", "new"}, wantServing: "kept",
		},
		{
			name:       "new CA published for an interval re-signs the serving certificate",
			cur:        state{signer: caNew, trust: both, serving: servingOld},
			published:  true,
			now:        rollover.Add(10 * time.Minute),
			wantSigner: "kept", wantTrust: []string{"old", "new"}, wantServing: "new",
		},
		{
			name:       "old CA stays in the bundle until it expires",
			cur:        state{signer: caNew, trust: both, serving: servingLate},
			published:  true,
			now:        caOld.Cert.NotAfter.Add(-time.Second),
			wantSigner: "kept", wantTrust: []string{"old", "new"}, wantServing: "kept",
		},
		{
			name:       "expired old CA is pruned from the bundle",
			cur:        state{signer: caNew, trust: both, serving: servingLate},
			published:  true,
			now:        caOld.Cert.NotAfter,
			wantSigner: "kept", wantTrust: []string{"new"}, wantServing: "kept",
		},
		{
			name:       "lost CA key starts a rollover and keeps the usable serving certificate",
			cur:        state{trust: []*x509.Certificate{caOld.Cert}, serving: servingOld},
			published:  true,
			now:        rollover.Add(-time.Hour),
			wantSigner: "new", wantTrust: []string{"old", "fresh"}, wantServing: "kept",
		},
		{
			name:       "expired serving certificate is re-issued at once, even by an unpublished CA",
			cur:        state{trust: []*x509.Certificate{caOld.Cert}, serving: expired},
			now:        t0.Add(31 * day),
			wantSigner: "new", wantTrust: []string{"old", "fresh"}, wantServing: "new",
		},
		{
			name:       "serving certificate the bundle does not trust is re-issued at once",
			cur:        state{signer: caNew, trust: []*x509.Certificate{caNew.Cert}, serving: servingOld},
			published:  false,
			now:        rollover.Add(time.Hour),
			wantSigner: "kept", wantTrust: []string{"new"}, wantServing: "new",
		},
		{
			name:       "serving certificate missing a wanted name is re-issued by a published CA",
			cur:        state{signer: caNew, trust: []*x509.Certificate{caNew.Cert}, serving: shortNames},
			published:  true,
			now:        rollover.Add(2 * time.Hour),
			wantSigner: "kept", wantTrust: []string{"new"}, wantServing: "new",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := mustPlan(t, tc.cur, tc.published, tc.now)

			names := map[string]*x509.Certificate{"old": caOld.Cert, "new": caNew.Cert, "fresh": d.next.signer.Cert}
			var wantTrust [][]byte
			for _, n := range tc.wantTrust {
				wantTrust = append(wantTrust, names[n].Raw)
			}
			var gotTrust [][]byte
			for _, c := range d.next.trust {
				gotTrust = append(gotTrust, c.Raw)
			}
			assert.Equal(t, wantTrust, gotTrust, "bundle")

			assert.Equal(t, tc.wantSigner, keptOrNew(tc.cur.signer, d.next.signer), "signer")
			assert.Equal(t, tc.wantServing, keptOrNew(tc.cur.serving, d.next.serving), "serving certificate")
			if tc.wantServing == "new" {
				assert.NoError(t, d.next.serving.Cert.CheckSignatureFrom(d.next.signer.Cert), "signed by the current CA")
				assert.True(t, sameNames(d.next.serving.Cert, testDNSNames, testIPs))
			}
			wantChanged := tc.wantSigner == "new" || tc.wantServing == "new" || len(tc.wantTrust) != len(tc.cur.trust)
			assert.Equal(t, wantChanged, d.changed, "changed")
			assert.True(t, usable(d.next.serving, d.next.trust, tc.now), "the planned serving certificate verifies against the planned bundle")
		})
	}
}

func keptOrNew(before, after *KeyPair) string {
	if before != nil && after != nil && string(before.Cert.Raw) == string(after.Cert.Raw) {
		return "kept"
	}
	return "new"
}
