package certs

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// The interface package rollout defines; certs does not import it.
type sealKeys interface {
	SigningKey() (id string, secret []byte)
	Key(id string) (secret []byte, ok bool)
}

var stateKeySecret = client.ObjectKey{Namespace: testNamespace, Name: DefaultStateKeySecretName}

// idAt is the ID of a key made d after t0 (2026-03-01 09:00:00 UTC).
func idAt(d time.Duration) string {
	return keyID(t0.Add(d))
}

// testKeyOf is a distinct, recognisable 32-byte key per byte.
func testKeyOf(b byte) []byte {
	return bytes.Repeat([]byte{b}, stateKeySize)
}

// storedRing is a ring whose keys are testKeyOf(1), testKeyOf(2), … in the
// order of ids.
func storedRing(current string, ids ...string) keyRing {
	r := keyRing{current: current, keys: map[string][]byte{}}
	for i, id := range ids {
		r.keys[id] = testKeyOf(byte(i + 1))
	}
	return r
}

func TestStateKeyIDsSortByAgeAndRoundTrip(t *testing.T) {
	assert.Equal(t, "20260301T090000Z", idAt(0))
	assert.Equal(t, "20260331T090000Z", idAt(30*day))
	local := time.Date(2026, 12, 2, 2, 35, 0, 900_000_000, time.FixedZone("CET", 3600))
	assert.Equal(t, "20261202T013500Z", keyID(local), "UTC, to the second")
	got, ok := parseKeyID("20261202T013500Z")
	require.True(t, ok)
	assert.Equal(t, time.Date(2026, 12, 2, 1, 35, 0, 0, time.UTC), got)
	for _, bad := range []string{"", "garbage", "2026-12-02T01:35:00Z", "20261202T013500", "20261202t013500z", "20261302T013500Z"} {
		_, ok := parseKeyID(bad)
		assert.False(t, ok, "%q", bad)
	}
	assert.Less(t, idAt(59*time.Second), idAt(time.Minute))
	assert.Less(t, idAt(364*day), idAt(365*day))
}

func TestPlanKeys(t *testing.T) {
	const (
		lifetime = 30 * day
		settle   = 20 * time.Minute // two intervals of 10 minutes
	)
	short := bytes.Repeat([]byte{9}, 16)
	for _, tc := range []struct {
		name        string
		cur         keyRing
		rotate      bool
		at          time.Duration // after t0
		wantCurrent string
		wantIDs     []string
		wantChanged bool
		wantRotated bool
		wantNote    string
	}{
		{
			name:        "first start makes a key that signs at once",
			cur:         keyRing{},
			wantCurrent: idAt(0),
			wantIDs:     []string{idAt(0)},
			wantChanged: true,
			wantNote:    "Made state key 20260301T090000Z and signed with it at once because the Secret names no signing key; 1 keys accepted",
		},
		{
			name:        "current naming no key makes a key that signs at once and keeps the others",
			cur:         storedRing("20260201T000000Z", idAt(-time.Hour)),
			wantCurrent: idAt(0),
			wantIDs:     []string{idAt(-time.Hour), idAt(0)},
			wantChanged: true,
			wantNote:    `because the signing key "20260201T000000Z" is missing or unreadable; 2 keys accepted`,
		},
		{
			name:        "a signing key that is not 32 bytes is dropped and replaced at once",
			cur:         keyRing{current: idAt(0), keys: map[string][]byte{idAt(0): short}},
			at:          day,
			wantCurrent: idAt(day),
			wantIDs:     []string{idAt(day)},
			wantChanged: true,
			wantNote:    "Dropped key 20260301T090000Z: 16 bytes, not 32",
		},
		{
			name: "entries whose name is not an ID are dropped, the signing key stays",
			cur: keyRing{current: idAt(0), keys: map[string][]byte{
				idAt(0): testKeyOf(1), "garbage": testKeyOf(2), "2026-03-01T09:00:00Z": testKeyOf(3),
			}},
			at:          time.Hour,
			wantCurrent: idAt(0),
			wantIDs:     []string{idAt(0)},
			wantChanged: true,
			wantNote:    "Dropped key.garbage: its name is not a creation time like 20060102T150405Z",
		},
		{
			name:        "a signing key one second short of its lifetime is kept alone",
			cur:         storedRing(idAt(0), idAt(0)),
			at:          lifetime - time.Second,
			wantCurrent: idAt(0),
			wantIDs:     []string{idAt(0)},
		},
		{
			name:        "a signing key one lifetime old gets a successor that is published, not signing",
			cur:         storedRing(idAt(0), idAt(0)),
			at:          lifetime,
			wantCurrent: idAt(0),
			wantIDs:     []string{idAt(0), idAt(lifetime)},
			wantChanged: true,
			wantNote:    "Published state key 20260331T090000Z because signing key 20260301T090000Z is 720h0m0s old (lifetime 720h0m0s); it signs from 2026-03-31T09:20:00Z, key 20260301T090000Z signs until then; 2 keys accepted",
		},
		{
			name:        "a waiting successor is not joined by a second one",
			cur:         storedRing(idAt(0), idAt(0), idAt(lifetime)),
			at:          lifetime + 10*time.Minute,
			wantCurrent: idAt(0),
			wantIDs:     []string{idAt(0), idAt(lifetime)},
		},
		{
			name:        "the successor does not sign one second before two intervals",
			cur:         storedRing(idAt(0), idAt(0), idAt(lifetime)),
			at:          lifetime + settle - time.Second,
			wantCurrent: idAt(0),
			wantIDs:     []string{idAt(0), idAt(lifetime)},
		},
		{
			name:        "the successor signs two intervals after it was made",
			cur:         storedRing(idAt(0), idAt(0), idAt(lifetime)),
			at:          lifetime + settle,
			wantCurrent: idAt(lifetime),
			wantIDs:     []string{idAt(0), idAt(lifetime)},
			wantChanged: true,
			wantNote:    "Key 20260331T090000Z signs from now, 20m0s after it was made (it waits 20m0s so that every replica has read it); key 20260301T090000Z stays accepted until 2026-04-30T09:20:00Z",
		},
		{
			name:        "the retired key stays until its successor has signed a lifetime",
			cur:         storedRing(idAt(lifetime), idAt(0), idAt(lifetime), idAt(2*lifetime)),
			at:          2*lifetime + settle - time.Second,
			wantCurrent: idAt(lifetime),
			wantIDs:     []string{idAt(0), idAt(lifetime), idAt(2 * lifetime)},
		},
		{
			name:        "the retired key is dropped when its successor has signed a lifetime, as the next key takes over",
			cur:         storedRing(idAt(lifetime), idAt(0), idAt(lifetime), idAt(2*lifetime)),
			at:          2*lifetime + settle,
			wantCurrent: idAt(2 * lifetime),
			wantIDs:     []string{idAt(lifetime), idAt(2 * lifetime)},
			wantChanged: true,
			wantNote:    "Dropped key 20260301T090000Z: key 20260331T090000Z took over signing at 2026-03-31T09:20:00Z, and a retired key is accepted for one lifetime of 720h0m0s after that, until 2026-04-30T09:20:00Z; 2 keys accepted",
		},
		{
			name:        "the rotate annotation publishes a successor whatever the signing key's age",
			cur:         storedRing(idAt(0), idAt(0)),
			rotate:      true,
			at:          time.Hour,
			wantCurrent: idAt(0),
			wantIDs:     []string{idAt(0), idAt(time.Hour)},
			wantChanged: true,
			wantRotated: true,
			wantNote:    "Published state key 20260301T100000Z because the Secret asks for it (annotation fledge.dev/rotate)",
		},
		{
			name:        "the rotate annotation supersedes a waiting successor",
			cur:         storedRing(idAt(0), idAt(0), idAt(lifetime)),
			rotate:      true,
			at:          lifetime + 5*time.Minute,
			wantCurrent: idAt(0),
			wantIDs:     []string{idAt(0), idAt(lifetime), idAt(lifetime + 5*time.Minute)},
			wantChanged: true,
			wantRotated: true,
		},
		{
			name:        "a superseded successor never signs: the newest key takes over",
			cur:         storedRing(idAt(0), idAt(0), idAt(lifetime), idAt(lifetime+5*time.Minute)),
			at:          lifetime + 5*time.Minute + settle,
			wantCurrent: idAt(lifetime + 5*time.Minute),
			wantIDs:     []string{idAt(0), idAt(lifetime), idAt(lifetime + 5*time.Minute)},
			wantChanged: true,
		},
		{
			name:        "the rotate annotation waits a second when a key was made this second",
			cur:         storedRing(idAt(0), idAt(0)),
			rotate:      true,
			at:          500 * time.Millisecond,
			wantCurrent: idAt(0),
			wantIDs:     []string{idAt(0)},
			wantNote:    "A new key waits for the next pass: key 20260301T090000Z was made this second",
		},
		{
			name:        "the rotate annotation on a Secret without keys is done by the first key",
			cur:         keyRing{},
			rotate:      true,
			wantCurrent: idAt(0),
			wantIDs:     []string{idAt(0)},
			wantChanged: true,
			wantRotated: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := planKeys(tc.cur, tc.rotate, keyPolicy{now: t0.Add(tc.at), lifetime: lifetime, settle: settle})

			assert.Equal(t, tc.wantCurrent, d.next.current)
			assert.Equal(t, tc.wantIDs, sortedIDs(d.next.keys))
			assert.Equal(t, tc.wantChanged, d.changed, "notes: %q", d.notes)
			assert.Equal(t, tc.wantRotated, d.rotated)
			if tc.wantNote != "" {
				assert.True(t, slices.ContainsFunc(d.notes, func(n string) bool { return strings.Contains(n, tc.wantNote) }), "want a note with %q, got %q", tc.wantNote, d.notes)
			}
			if !tc.wantChanged {
				assert.Empty(t, slices.DeleteFunc(slices.Clone(d.notes), func(n string) bool { return strings.Contains(n, "waits for the next pass") }))
			}
			for id, secret := range d.next.keys {
				if old, ok := tc.cur.keys[id]; ok && len(old) == stateKeySize {
					assert.Equal(t, old, secret, "stored key %s is kept as it is", id)
					continue
				}
				assert.Len(t, secret, stateKeySize, "new key %s", id)
				for oldID, old := range tc.cur.keys {
					assert.NotEqual(t, old, secret, "new key %s is not a copy of %s", id, oldID)
				}
			}
		})
	}
}

func newTestStateKeys(t *testing.T, c client.Client, clk *clocktesting.FakeClock, edits ...func(*StateKeysOptions)) *StateKeys {
	t.Helper()
	opts := StateKeysOptions{Namespace: testNamespace, Clock: clk}
	for _, edit := range edits {
		edit(&opts)
	}
	k, err := NewStateKeys(c, opts)
	require.NoError(t, err)
	return k
}

func getKeySecret(t *testing.T, c client.Client) *corev1.Secret {
	t.Helper()
	var s corev1.Secret
	require.NoError(t, c.Get(t.Context(), stateKeySecret, &s))
	return &s
}

// storedKeyIDs are the IDs of the key entries of the Secret, oldest first.
func storedKeyIDs(s *corev1.Secret) []string {
	ring, _ := decodeKeySecret(s)
	return sortedIDs(ring.keys)
}

func TestStateKeysIsAManagerRunnableOnEveryReplica(t *testing.T) {
	k := newTestStateKeys(t, newFakeClient(), clocktesting.NewFakeClock(t0))
	var _ manager.Runnable = k
	var _ manager.LeaderElectionRunnable = k
	var _ healthz.Checker = k.Ready
	var _ sealKeys = k
	assert.False(t, k.NeedLeaderElection())
}

func TestStateKeysBeforeTheFirstPassHaveNoKeyAndAreNotReady(t *testing.T) {
	k := newTestStateKeys(t, newFakeClient(), clocktesting.NewFakeClock(t0))

	id, secret := k.SigningKey()
	assert.Equal(t, "", id)
	assert.Nil(t, secret)
	_, ok := k.Key(idAt(0))
	assert.False(t, ok)
	assert.EqualError(t, k.Ready(nil), "certs: state keys not loaded yet from secret fledge-system/fledge-state-key")
}

func TestFirstLoadCreatesTheSecretAndSignsWithItsKey(t *testing.T) {
	ctx := testContext(t)
	c := newFakeClient()
	k := newTestStateKeys(t, c, clocktesting.NewFakeClock(t0.Add(500*time.Millisecond)))

	require.NoError(t, k.Load(ctx))

	s := getKeySecret(t, c)
	assert.Equal(t, corev1.SecretTypeOpaque, s.Type)
	assert.Equal(t, map[string]string{
		"app.kubernetes.io/name":       "fledge",
		"app.kubernetes.io/component":  "state-key",
		"app.kubernetes.io/managed-by": "fledge",
	}, s.Labels)
	assert.ElementsMatch(t, []string{"current", "key.20260301T090000Z"}, keysOf(s.Data))
	assert.Equal(t, "20260301T090000Z", string(s.Data["current"]))
	assert.Len(t, s.Data["key.20260301T090000Z"], 32)

	id, secret := k.SigningKey()
	assert.Equal(t, "20260301T090000Z", id)
	assert.Equal(t, s.Data["key.20260301T090000Z"], secret)
	got, ok := k.Key(id)
	assert.True(t, ok)
	assert.Equal(t, secret, got)
	_, ok = k.Key(idAt(-time.Second))
	assert.False(t, ok)
	assert.NoError(t, k.Ready(nil))

	secret[0] ^= 0xff
	_, again := k.SigningKey()
	assert.Equal(t, s.Data["key.20260301T090000Z"], again, "a caller cannot change the snapshot")
}

func TestLoadKeepsEntriesThatAreNotFledges(t *testing.T) {
	ctx := testContext(t)
	existing := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNamespace, Name: DefaultStateKeySecretName, Labels: map[string]string{"team": "platform"}},
		Type:       corev1.SecretTypeOpaque,
		Data: map[string][]byte{
			"note":                 []byte("rotated by hand in March"),
			"key.20260201T000000Z": []byte("too short"),
		},
	}
	c := newFakeClient(existing)
	k := newTestStateKeys(t, c, clocktesting.NewFakeClock(t0))

	require.NoError(t, k.Load(ctx))

	s := getKeySecret(t, c)
	assert.ElementsMatch(t, []string{"note", "current", "key.20260301T090000Z"}, keysOf(s.Data), "the broken key is dropped")
	assert.Equal(t, "rotated by hand in March", string(s.Data["note"]))
	assert.Equal(t, map[string]string{"team": "platform"}, s.Labels)
	id, _ := k.SigningKey()
	assert.Equal(t, "20260301T090000Z", id)
}

// Two replicas pass every hour, half an hour apart, for 50 days with keys
// of a 10-day lifetime. After every pass, each replica accepts the key that
// every replica signs with, and a key stays accepted for exactly one
// lifetime after it stopped signing.
func TestRolloverKeepsEveryReplicasSealsAccepted(t *testing.T) {
	ctx := testContext(t)
	const (
		lifetime = 10 * day
		interval = time.Hour
	)
	fc := clocktesting.NewFakeClock(t0)
	c := newFakeClient()
	replicas := []*StateKeys{}
	for range 2 {
		replicas = append(replicas, newTestStateKeys(t, c, fc, func(o *StateKeysOptions) { o.Lifetime = lifetime; o.Interval = interval }))
	}

	made := map[string]time.Time{}
	stopped := map[string]time.Time{}
	dropped := map[string]time.Time{}
	signer, maxKeys := "", 0
	for step := 0; step < 50*48; step++ {
		r := replicas[step%2]
		require.NoError(t, r.Load(ctx), "at %s", fc.Now())
		s := getKeySecret(t, c)
		ids := storedKeyIDs(s)
		maxKeys = max(maxKeys, len(ids))
		for _, id := range ids {
			if _, ok := made[id]; !ok {
				made[id] = fc.Now()
			}
		}
		for id := range made {
			if _, ok := dropped[id]; !ok && !slices.Contains(ids, id) {
				dropped[id] = fc.Now()
			}
		}
		if cur := string(s.Data["current"]); cur != signer {
			if signer != "" {
				stopped[signer] = fc.Now()
			}
			signer = cur
		}
		for _, a := range replicas {
			id, secret := a.SigningKey()
			if id == "" {
				continue // not loaded yet
			}
			for j, b := range replicas {
				if b.loaded.Load() == nil {
					continue
				}
				got, ok := b.Key(id)
				require.True(t, ok, "at %s replica %d does not accept key %s", fc.Now(), j, id)
				require.Equal(t, secret, got)
			}
		}
		fc.Step(interval / 2)
	}

	want := []string{idAt(0), idAt(lifetime), idAt(2 * lifetime), idAt(3 * lifetime), idAt(4 * lifetime)}
	assert.Equal(t, want, slices.Sorted(maps.Keys(made)), "a key every lifetime")
	for i, id := range want {
		assert.Equal(t, keyTimeOrFail(t, id), made[id], "key %s stored when it was made", id)
		if i+1 < len(want) {
			assert.Equal(t, made[want[i+1]].Add(2*interval), stopped[id], "key %s stops signing two intervals after its successor was made", id)
		}
	}
	assert.Equal(t, []string{want[0], want[1], want[2]}, slices.Sorted(maps.Keys(dropped)))
	for id, at := range dropped {
		assert.Equal(t, lifetime, at.Sub(stopped[id]), "key %s accepted for one lifetime after it stopped signing", id)
	}
	assert.Equal(t, 3, maxKeys, "three keys at most, during the two intervals before the oldest goes")
}

func keyTimeOrFail(t *testing.T, id string) time.Time {
	t.Helper()
	at, ok := parseKeyID(id)
	require.True(t, ok, id)
	return at
}

func TestReplicasRacingOnFirstStartConvergeOnOneKey(t *testing.T) {
	ctx := testContext(t)
	fc := clocktesting.NewFakeClock(t0)
	base := newFakeClient()
	winner := newTestStateKeys(t, base, fc)
	raced := false
	c := interceptor.NewClient(base, interceptor.Funcs{
		Create: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if _, ok := obj.(*corev1.Secret); ok && !raced {
				raced = true
				require.NoError(t, winner.Load(ctx))
			}
			return cl.Create(ctx, obj, opts...)
		},
	})
	loser := newTestStateKeys(t, c, fc)

	require.NoError(t, loser.Load(ctx))

	require.True(t, raced)
	s := getKeySecret(t, base)
	assert.Equal(t, []string{idAt(0)}, storedKeyIDs(s))
	idW, secretW := winner.SigningKey()
	idL, secretL := loser.SigningKey()
	assert.Equal(t, idAt(0), idW)
	assert.Equal(t, idW, idL)
	assert.Equal(t, s.Data["key."+idW], secretW)
	assert.Equal(t, secretW, secretL, "the loser signs with the winner's key")
}

func TestManyReplicasStartingTogetherConvergeOnOneKey(t *testing.T) {
	ctx := testContext(t)
	fc := clocktesting.NewFakeClock(t0)
	c := newFakeClient()
	replicas := make([]*StateKeys, 8)
	for i := range replicas {
		replicas[i] = newTestStateKeys(t, c, fc)
	}
	start := make(chan struct{})
	errs := make([]error, len(replicas))
	var wg sync.WaitGroup
	for i, r := range replicas {
		wg.Go(func() {
			<-start
			errs[i] = r.Load(ctx)
		})
	}
	close(start)
	wg.Wait()

	require.NoError(t, errors.Join(errs...))
	s := getKeySecret(t, c)
	require.Equal(t, []string{idAt(0)}, storedKeyIDs(s))
	for i, r := range replicas {
		id, secret := r.SigningKey()
		assert.Equal(t, idAt(0), id, "replica %d", i)
		assert.Equal(t, s.Data["key."+idAt(0)], secret, "replica %d", i)
	}
}

func TestReplicaThatLosesTheRolloverRaceKeepsTheWinnersSuccessor(t *testing.T) {
	ctx := testContext(t)
	fc := clocktesting.NewFakeClock(t0)
	base := newFakeClient()
	winner := newTestStateKeys(t, base, fc)
	require.NoError(t, winner.Load(ctx))
	raced := false
	c := interceptor.NewClient(base, interceptor.Funcs{
		Update: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if _, ok := obj.(*corev1.Secret); ok && !raced {
				raced = true
				fc.Step(time.Second) // the winner makes its key a second later
				require.NoError(t, winner.Load(ctx))
			}
			return cl.Update(ctx, obj, opts...)
		},
	})
	loser := newTestStateKeys(t, c, fc)

	fc.Step(DefaultStateKeyLifetime) // the signing key is due
	require.NoError(t, loser.Load(ctx))

	require.True(t, raced)
	successor := idAt(DefaultStateKeyLifetime + time.Second)
	s := getKeySecret(t, base)
	assert.Equal(t, []string{idAt(0), successor}, storedKeyIDs(s), "one successor, the winner's")
	assert.Equal(t, idAt(0), string(s.Data["current"]), "the old key keeps signing")
	for name, r := range map[string]*StateKeys{"winner": winner, "loser": loser} {
		id, _ := r.SigningKey()
		assert.Equal(t, idAt(0), id, name)
		got, ok := r.Key(successor)
		assert.True(t, ok, name)
		assert.Equal(t, s.Data["key."+successor], got, name)
	}
}

func TestSecretUpdateConflictIsRetriedAndKeepsTheOtherEdit(t *testing.T) {
	ctx := testContext(t)
	fc := clocktesting.NewFakeClock(t0)
	base := newFakeClient()
	require.NoError(t, newTestStateKeys(t, base, fc).Load(ctx))
	s := getKeySecret(t, base)
	s.Annotations = map[string]string{RotateAnnotation: "now"}
	require.NoError(t, base.Update(ctx, s))
	updates := 0
	c := interceptor.NewClient(base, interceptor.Funcs{
		Update: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if _, ok := obj.(*corev1.Secret); ok {
				updates++
				if updates == 1 {
					other := &corev1.Secret{}
					require.NoError(t, cl.Get(ctx, stateKeySecret, other))
					other.Data["note"] = []byte("edited by kubectl")
					require.NoError(t, cl.Update(ctx, other))
				}
			}
			return cl.Update(ctx, obj, opts...)
		},
	})
	k := newTestStateKeys(t, c, fc)

	fc.Step(time.Hour)
	require.NoError(t, k.Load(ctx))

	assert.Equal(t, 2, updates, "the conflicting update is planned again and retried")
	got := getKeySecret(t, base)
	assert.Equal(t, "edited by kubectl", string(got.Data["note"]))
	assert.Equal(t, []string{idAt(0), idAt(time.Hour)}, storedKeyIDs(got), "one new key")
	assert.NotContains(t, got.Annotations, RotateAnnotation, "the rotation is done")
	id, _ := k.SigningKey()
	assert.Equal(t, idAt(0), id, "the new key is published, not signing")
}

func TestDeletingTheSecretReplacesEveryKey(t *testing.T) {
	ctx := testContext(t)
	fc := clocktesting.NewFakeClock(t0)
	c := newFakeClient()
	k := newTestStateKeys(t, c, fc)
	require.NoError(t, k.Load(ctx))
	old, _ := k.SigningKey()

	require.NoError(t, c.Delete(ctx, getKeySecret(t, c)))
	fc.Step(DefaultInterval)
	require.NoError(t, k.Load(ctx))

	id, secret := k.SigningKey()
	assert.Equal(t, idAt(DefaultInterval), id, "a new key signs at once")
	assert.Equal(t, getKeySecret(t, c).Data["key."+id], secret)
	_, ok := k.Key(old)
	assert.False(t, ok, "the old key is no longer accepted")
}

func TestStartRetriesAFailedPassAfterThirtySeconds(t *testing.T) {
	fc := clocktesting.NewFakeClock(t0)
	base := newFakeClient()
	var mu sync.Mutex
	failures := 1
	c := interceptor.NewClient(base, interceptor.Funcs{
		Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			mu.Lock()
			defer mu.Unlock()
			if failures > 0 {
				failures--
				return errors.New("apiserver unavailable")
			}
			return cl.Get(ctx, key, obj, opts...)
		},
	})
	k := newTestStateKeys(t, c, fc)
	ctx, cancel := context.WithCancel(testContext(t))
	done := make(chan error, 1)
	go func() { done <- k.Start(ctx) }()

	require.Eventually(t, fc.HasWaiters, 10*time.Second, 10*time.Millisecond, "first pass done, waiting")
	assert.Error(t, k.Ready(nil), "the first pass failed")

	fc.Step(retryInterval)
	require.Eventually(t, func() bool { return k.Ready(nil) == nil }, 10*time.Second, 10*time.Millisecond, "the pass 30s later loads the keys")
	id, _ := k.SigningKey()
	assert.Equal(t, idAt(retryInterval), id)

	stops(t, cancel, done)
}

func TestNewStateKeysRefusesOptionsThatCannotWork(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*StateKeysOptions)
		want string
	}{
		{"namespace is required", func(o *StateKeysOptions) { o.Namespace = "" }, "certs: state key options: namespace is empty"},
		{"passes at least a second apart", func(o *StateKeysOptions) { o.Interval = time.Millisecond }, "certs: state key options: interval 1ms is shorter than a second, the precision of key IDs"},
		{"interval is not negative", func(o *StateKeysOptions) { o.Interval = -time.Minute }, "certs: state key options: interval -1m0s is shorter than a second, the precision of key IDs"},
		{"a key signs longer than its successor waits", func(o *StateKeysOptions) { o.Lifetime = 29 * time.Minute }, "certs: state key options: lifetime 29m0s is shorter than 3 intervals of 10m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := StateKeysOptions{Namespace: testNamespace}
			tc.edit(&opts)
			_, err := NewStateKeys(newFakeClient(), opts)
			assert.EqualError(t, err, tc.want)
		})
	}
	_, err := NewStateKeys(nil, StateKeysOptions{Namespace: testNamespace})
	assert.EqualError(t, err, "certs: state key options: no client")

	k, err := NewStateKeys(newFakeClient(), StateKeysOptions{Namespace: testNamespace})
	require.NoError(t, err)
	assert.Equal(t, "fledge-state-key", k.opts.SecretName)
	assert.Equal(t, 30*day, k.opts.Lifetime)
	assert.Equal(t, 10*time.Minute, k.opts.Interval)
}
