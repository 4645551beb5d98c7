package certs

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"
)

func TestReadyOnlyForAServablePair(t *testing.T) {
	ca := mustCA(t, t0, 365*day)
	good := mustServing(t, ca, t0, 90*day)
	other := mustServing(t, ca, t0, 90*day)
	goodKey, err := good.KeyPEM()
	require.NoError(t, err)
	otherKey, err := other.KeyPEM()
	require.NoError(t, err)

	for _, tc := range []struct {
		name    string
		cert    []byte
		key     []byte
		elapsed int // days after t0
		want    string
	}{
		{name: "empty cert dir is not ready", want: "tls.crt: no such file"},
		{name: "key of another certificate is not ready", cert: good.CertPEM(), key: otherKey, want: "private key does not match public key"},
		{name: "expired certificate is not ready", cert: good.CertPEM(), key: goodKey, elapsed: 90, want: "serving certificate expired at 2026-05-30T09:00:00Z"},
		{name: "valid matching pair is ready", cert: good.CertPEM(), key: goodKey, elapsed: 89},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.cert != nil {
				require.NoError(t, os.WriteFile(filepath.Join(dir, certFile), tc.cert, 0o644))
				require.NoError(t, os.WriteFile(filepath.Join(dir, keyFile), tc.key, 0o600))
			}
			fc := clocktesting.NewFakeClock(t0.Add(day * time.Duration(tc.elapsed)))
			r := newTestRotator(t, newFakeClient(), fc, dir)

			err := r.Ready(nil)
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			assert.ErrorContains(t, err, tc.want)
		})
	}
}

func TestWriteFileAtomicReplacesOnlyChangedContent(t *testing.T) {
	dir := t.TempDir()
	wrote, err := writeFileAtomic(dir, certFile, []byte("one"), 0o644)
	require.NoError(t, err)
	assert.True(t, wrote)
	first, err := os.Stat(filepath.Join(dir, certFile))
	require.NoError(t, err)

	wrote, err = writeFileAtomic(dir, certFile, []byte("one"), 0o644)
	require.NoError(t, err)
	assert.False(t, wrote)
	same, err := os.Stat(filepath.Join(dir, certFile))
	require.NoError(t, err)
	assert.True(t, os.SameFile(first, same))

	wrote, err = writeFileAtomic(dir, certFile, []byte("two"), 0o644)
	require.NoError(t, err)
	assert.True(t, wrote)
	got, err := os.ReadFile(filepath.Join(dir, certFile))
	require.NoError(t, err)
	assert.Equal(t, "two", string(got))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary file left behind")
}
