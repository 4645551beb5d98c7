package certs

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// Defaults for StateKeysOptions. A key signs for 30 days and the one before
// it is accepted for 30 days after that, far longer than a rollout lasts.
const (
	DefaultStateKeySecretName = "fledge-state-key"
	DefaultStateKeyLifetime   = 30 * 24 * time.Hour
)

// RotateAnnotation on the state key Secret, with any non-empty value, asks
// the next pass for a new key whatever the age of the signing key (see
// "Emergency rotation" in doc.go). The pass removes it.
const RotateAnnotation = "fledge.dev/rotate"

// Layout of the state key Secret (see doc.go). An ID is the key's creation
// time in UTC to the second, so IDs sort by age.
const (
	stateKeyCurrent  = "current"
	stateKeyPrefix   = "key."
	stateKeyIDLayout = "20060102T150405Z"
	stateKeySize     = 32
)

// StateKeysOptions configure StateKeys. Namespace is required; the rest have
// defaults.
type StateKeysOptions struct {
	// Namespace is fledge's namespace, where the Secret lives.
	Namespace string
	// SecretName defaults to DefaultStateKeySecretName.
	SecretName string
	// Lifetime is how long a key signs before a new one is made, and how
	// long it is accepted after it stopped signing (DefaultStateKeyLifetime).
	Lifetime time.Duration
	// Interval is the time between passes (DefaultInterval). A new key
	// signs two Intervals after it was made.
	Interval time.Duration
	// Clock defaults to the real clock; tests pass a fake one.
	Clock clock.Clock
}

// StateKeys keeps the MAC keys that fledge seals its rollout state with. It
// is a controller-runtime Runnable that runs a pass at start and every
// Interval; it is not leader-elected, because every replica must hold the
// keys to check seals. SigningKey and Key are safe for concurrent use: they
// read an immutable snapshot that each pass replaces.
type StateKeys struct {
	client client.Client
	opts   StateKeysOptions
	clock  clock.Clock
	loaded atomic.Pointer[keySnapshot]
}

// keySnapshot is what the last successful pass read. It is never modified.
type keySnapshot struct {
	signingID string
	keys      map[string][]byte
}

// NewStateKeys checks the options and fills the defaults. The client should
// read from the API server rather than from the manager's cache (see
// doc.go).
func NewStateKeys(c client.Client, opts StateKeysOptions) (*StateKeys, error) {
	if c == nil {
		return nil, errors.New("certs: state key options: no client")
	}
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("certs: state key options: %w", err)
	}
	return &StateKeys{client: c, opts: opts, clock: opts.Clock}, nil
}

func (o StateKeysOptions) withDefaults() StateKeysOptions {
	if o.SecretName == "" {
		o.SecretName = DefaultStateKeySecretName
	}
	if o.Lifetime == 0 {
		o.Lifetime = DefaultStateKeyLifetime
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return o
}

// validate refuses options under which the rollover cannot work: IDs have
// second precision, so passes must be at least a second apart for two keys
// never to need one ID, and a key must sign for longer than the two
// Intervals its successor waits before it signs.
func (o StateKeysOptions) validate() error {
	switch {
	case o.Namespace == "":
		return errors.New("namespace is empty")
	case o.Interval < time.Second:
		return fmt.Errorf("interval %s is shorter than a second, the precision of key IDs", o.Interval)
	case o.Lifetime < 3*o.Interval:
		return fmt.Errorf("lifetime %s is shorter than 3 intervals of %s", o.Lifetime, o.Interval)
	}
	return nil
}

// NeedLeaderElection is false: every replica checks seals, and the Secret is
// written with optimistic concurrency.
func (k *StateKeys) NeedLeaderElection() bool {
	return false
}

// Start runs a pass at once, then one every Interval until ctx is done. A
// failed pass is logged and retried sooner rather than returned: an error
// would stop the whole manager, while the keys already loaded stay good for
// a Lifetime.
func (k *StateKeys) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName("state-keys")
	ctx = logf.IntoContext(ctx, log)
	log.Info("Starting state key rotation", "secret", k.secretKey().String(), "lifetime", k.opts.Lifetime, "interval", k.opts.Interval)
	runPasses(ctx, k.clock, k.opts.Interval, log, "State key pass failed", func(ctx context.Context) (bool, error) {
		return true, k.pass(ctx)
	})
	return nil
}

// Load runs one pass. main calls it before the manager starts, so that the
// router can seal and check states from its first reconcile.
func (k *StateKeys) Load(ctx context.Context) error {
	return k.pass(ctx)
}

// SigningKey is the key new seals are made with: "", nil until a pass has
// loaded the keys.
func (k *StateKeys) SigningKey() (id string, secret []byte) {
	snap := k.loaded.Load()
	if snap == nil {
		return "", nil
	}
	return snap.signingID, slices.Clone(snap.keys[snap.signingID])
}

// Key returns the accepted key with that ID: the signing key, a newer one
// already published, or an older one still accepted.
func (k *StateKeys) Key(id string) (secret []byte, ok bool) {
	snap := k.loaded.Load()
	if snap == nil {
		return nil, false
	}
	secret, ok = snap.keys[id]
	return slices.Clone(secret), ok
}

// Ready is a healthz.Checker that fails until the keys are loaded: a
// replica without them can neither seal nor check a state.
func (k *StateKeys) Ready(_ *http.Request) error {
	if k.loaded.Load() == nil {
		return fmt.Errorf("certs: state keys not loaded yet from secret %s", k.secretKey())
	}
	return nil
}

// pass settles the Secret and publishes what it holds. It is cut off after
// half an Interval, so that a replica reads the Secret at least once in any
// two Intervals while its passes succeed (see doc.go).
func (k *StateKeys) pass(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, k.opts.Interval/2)
	defer cancel()
	ring, err := k.settleSecret(ctx)
	if err != nil {
		return err
	}
	k.publish(ctx, ring)
	return nil
}

// publish replaces the snapshot and logs when the key set changed.
func (k *StateKeys) publish(ctx context.Context, ring keyRing) {
	snap := &keySnapshot{signingID: ring.current, keys: maps.Clone(ring.keys)}
	for id, secret := range snap.keys {
		snap.keys[id] = slices.Clone(secret)
	}
	old := k.loaded.Swap(snap)
	if old == nil || old.signingID != snap.signingID || !slices.Equal(sortedIDs(old.keys), sortedIDs(snap.keys)) {
		logf.FromContext(ctx).Info("Loaded state keys", "secret", k.secretKey().String(), "signing", snap.signingID, "accepted", sortedIDs(snap.keys))
	}
}

// settleSecret brings the Secret to a planned key set and returns it.
// Losing a race to another replica (AlreadyExists on create, Conflict on
// update, NotFound when the Secret was deleted after the read) means
// re-reading and planning again, which normally finds the other replica's
// keys good and leaves them.
func (k *StateKeys) settleSecret(ctx context.Context) (keyRing, error) {
	var settled keyRing
	lostRace := func(err error) bool {
		return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err)
	}
	err := retry.OnError(retry.DefaultRetry, lostRace, func() error {
		ring, err := k.reconcileSecret(ctx)
		settled = ring
		return err
	})
	return settled, err
}

// reconcileSecret is one observe → plan → store round on the Secret.
func (k *StateKeys) reconcileSecret(ctx context.Context) (keyRing, error) {
	log := logf.FromContext(ctx).WithValues("secret", k.secretKey().String())
	secret, err := k.loadSecret(ctx)
	if err != nil {
		return keyRing{}, err
	}
	cur, rotate := decodeKeySecret(secret)
	d := planKeys(cur, rotate, k.policy(k.clock.Now()))
	if d.changed {
		if err := k.storeSecret(ctx, secret, d); err != nil {
			return keyRing{}, err
		}
	}
	for _, n := range d.notes {
		log.Info(n)
	}
	return d.next, nil
}

func (k *StateKeys) policy(now time.Time) keyPolicy {
	return keyPolicy{now: now, lifetime: k.opts.Lifetime, settle: 2 * k.opts.Interval}
}

// loadSecret reads the Secret; nil without error means it does not exist.
func (k *StateKeys) loadSecret(ctx context.Context) (*corev1.Secret, error) {
	return readSecret(ctx, k.client, k.secretKey(), "state key secret")
}

// storeSecret creates the Secret, or updates it from existing with the
// resourceVersion read, so that a write based on a stale read fails with
// Conflict instead of overwriting another replica's keys. fledge's entries
// are replaced by the planned ones; the others are kept.
func (k *StateKeys) storeSecret(ctx context.Context, existing *corev1.Secret, d keyDecision) error {
	if existing == nil {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: k.opts.Namespace,
				Name:      k.opts.SecretName,
				Labels: map[string]string{
					"app.kubernetes.io/name":       "fledge",
					"app.kubernetes.io/component":  "state-key",
					"app.kubernetes.io/managed-by": "fledge",
				},
			},
			Type: corev1.SecretTypeOpaque,
			Data: encodeKeyRing(d.next),
		}
		if err := k.client.Create(ctx, s); err != nil {
			return fmt.Errorf("certs: create state key secret %s: %w", k.secretKey(), err)
		}
		return nil
	}
	s := existing.DeepCopy()
	for name := range s.Data {
		if isKeyEntry(name) {
			delete(s.Data, name)
		}
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	maps.Copy(s.Data, encodeKeyRing(d.next))
	if d.rotated {
		delete(s.Annotations, RotateAnnotation)
	}
	if err := k.client.Update(ctx, s); err != nil {
		return fmt.Errorf("certs: store state key secret %s: %w", k.secretKey(), err)
	}
	return nil
}

func (k *StateKeys) secretKey() client.ObjectKey {
	return client.ObjectKey{Namespace: k.opts.Namespace, Name: k.opts.SecretName}
}

// isKeyEntry reports whether a data entry of the Secret is fledge's.
func isKeyEntry(name string) bool {
	return name == stateKeyCurrent || strings.HasPrefix(name, stateKeyPrefix)
}

// decodeKeySecret returns fledge's entries as stored, parsed or not (the
// plan sorts out what is unusable), and whether the Secret asks for a
// rotation.
func decodeKeySecret(s *corev1.Secret) (keyRing, bool) {
	ring := keyRing{keys: map[string][]byte{}}
	if s == nil {
		return ring, false
	}
	ring.current = string(s.Data[stateKeyCurrent])
	for name, v := range s.Data {
		if id, ok := strings.CutPrefix(name, stateKeyPrefix); ok {
			ring.keys[id] = v
		}
	}
	return ring, s.Annotations[RotateAnnotation] != ""
}

func encodeKeyRing(r keyRing) map[string][]byte {
	data := map[string][]byte{stateKeyCurrent: []byte(r.current)}
	for id, secret := range r.keys {
		data[stateKeyPrefix+id] = secret
	}
	return data
}

// keyRing is a key set: the ID of the signing key and the secret of every
// accepted key by ID. A ring read from the Secret may hold entries that do
// not parse; a planned one holds none.
type keyRing struct {
	current string
	keys    map[string][]byte
}

// keyPolicy is what a key plan must achieve, fixed for one pass.
type keyPolicy struct {
	now      time.Time
	lifetime time.Duration
	// settle is how long a new key waits, after it was made, before it
	// signs: two Intervals, so that every replica's pass has read it.
	settle time.Duration
}

// keyDecision is the planned key set, whether the Secret must be written,
// whether a rotation the Secret asked for was done (so its annotation
// goes), and notes for the log that carry the numbers.
type keyDecision struct {
	next    keyRing
	changed bool
	rotated bool
	notes   []string
}

// planKeys decides the next key set from the stored one; rotate says that
// the Secret asks for a new key now. It reads no clock and does no I/O; it
// only draws randomness for new keys.
//
// The steps run in the order of doc.go's "State key rollover", except that
// keys older than the signer are dropped before a newer key is promoted:
// their time is counted from when the current signer took over, and a
// promotion is never due before that (a successor is made a Lifetime into
// its predecessor's signing at the earliest).
func planKeys(cur keyRing, rotate bool, p keyPolicy) keyDecision {
	d := keyDecision{next: keyRing{current: cur.current, keys: map[string][]byte{}}}
	d.dropUnreadable(cur.keys)
	made := d.ensureSigner(p)
	d.dropRetired(p)
	d.promote(p)
	switch {
	case made && rotate:
		d.rotated = true
		d.note("The rotation asked for by annotation %s is done: key %s was made this pass", RotateAnnotation, d.next.current)
	case !made:
		d.publishSuccessor(rotate, p)
	}
	return d
}

func (d *keyDecision) note(format string, args ...any) {
	d.notes = append(d.notes, fmt.Sprintf(format, args...))
}

// dropUnreadable keeps the stored keys whose ID is a creation time and whose
// secret has 32 bytes.
func (d *keyDecision) dropUnreadable(stored map[string][]byte) {
	for _, id := range sortedIDs(stored) {
		secret := stored[id]
		if _, ok := parseKeyID(id); !ok {
			d.changed = true
			d.note("Dropped %s%s: its name is not a creation time like %s", stateKeyPrefix, id, stateKeyIDLayout)
			continue
		}
		if len(secret) != stateKeySize {
			d.changed = true
			d.note("Dropped key %s: %d bytes, not %d", id, len(secret), stateKeySize)
			continue
		}
		d.next.keys[id] = secret
	}
}

// ensureSigner makes a key and signs with it at once when the Secret names
// no usable signing key, and reports whether it did. Waiting protects
// nothing then: no replica can seal.
func (d *keyDecision) ensureSigner(p keyPolicy) bool {
	if _, ok := d.next.keys[d.next.current]; ok {
		return false
	}
	why := "the Secret names no signing key"
	if d.next.current != "" {
		why = fmt.Sprintf("the signing key %q is missing or unreadable", d.next.current)
	}
	id := keyID(p.now)
	d.changed = true
	d.next.current = id
	if _, taken := d.next.keys[id]; taken {
		d.note("Signing with key %s, made this second, because %s; %d keys accepted", id, why, len(d.next.keys))
		return true
	}
	d.next.keys[id] = newStateKey()
	d.note("Made state key %s and signed with it at once because %s; %d keys accepted", id, why, len(d.next.keys))
	return true
}

// dropRetired drops the keys older than the signer once the signer has
// signed for a Lifetime. The signer took over one settle after it was made,
// which its ID tells, so a key that stopped signing then stays accepted for
// one Lifetime after it stopped.
func (d *keyDecision) dropRetired(p keyPolicy) {
	signer := d.next.current
	since := keyTime(signer).Add(p.settle)
	until := since.Add(p.lifetime)
	if p.now.Before(until) {
		return
	}
	for _, id := range sortedIDs(d.next.keys) {
		if id >= signer {
			break
		}
		delete(d.next.keys, id)
		d.changed = true
		d.note("Dropped key %s: key %s took over signing at %s, and a retired key is accepted for one lifetime of %s after that, until %s; %d keys accepted",
			id, signer, stamp(since), p.lifetime, stamp(until), len(d.next.keys))
	}
}

// promote makes the newest key the signer once it was made a settle ago:
// every replica's pass has read it by then. A newer key that is not the
// newest (a rotation was asked for while one was waiting) never signs.
func (d *keyDecision) promote(p keyPolicy) {
	newest := slices.Max(sortedIDs(d.next.keys))
	old := d.next.current
	if newest <= old {
		return
	}
	made := keyTime(newest)
	if p.now.Before(made.Add(p.settle)) {
		return
	}
	d.next.current = newest
	d.changed = true
	d.note("Key %s signs from now, %s after it was made (it waits %s so that every replica has read it); key %s stays accepted until %s",
		newest, p.now.Sub(made), p.settle, old, stamp(made.Add(p.settle).Add(p.lifetime)))
}

// publishSuccessor makes a new key and stores it beside the signer, which
// keeps signing, when the signer has signed for a Lifetime and no successor
// exists, or when the Secret asks for a rotation. The new key signs a
// settle later (see promote).
func (d *keyDecision) publishSuccessor(rotate bool, p keyPolicy) {
	signer := d.next.current
	made := keyTime(signer)
	age := p.now.Sub(made)
	pending := slices.Max(sortedIDs(d.next.keys)) != signer
	var why string
	switch {
	case rotate:
		why = fmt.Sprintf("the Secret asks for it (annotation %s)", RotateAnnotation)
	case pending || age < p.lifetime:
		return
	default:
		why = fmt.Sprintf("signing key %s is %s old (lifetime %s)", signer, age, p.lifetime)
	}
	id := keyID(p.now)
	if _, taken := d.next.keys[id]; taken {
		d.note("A new key waits for the next pass: key %s was made this second, and key IDs have second precision", id)
		return
	}
	d.next.keys[id] = newStateKey()
	d.changed = true
	d.rotated = rotate
	d.note("Published state key %s because %s; it signs from %s, key %s signs until then; %d keys accepted",
		id, why, stamp(keyTime(id).Add(p.settle)), signer, len(d.next.keys))
}

// keyID is the ID of a key made at t.
func keyID(t time.Time) string {
	return t.UTC().Format(stateKeyIDLayout)
}

// parseKeyID returns the creation time an ID names; only the exact form
// keyID writes is accepted.
func parseKeyID(id string) (time.Time, bool) {
	t, err := time.Parse(stateKeyIDLayout, id)
	if err != nil || keyID(t) != id {
		return time.Time{}, false
	}
	return t, true
}

// keyTime is the creation time of a key of a planned ring, whose IDs all
// parse: dropUnreadable keeps only those, and new keys get keyID's.
func keyTime(id string) time.Time {
	t, _ := parseKeyID(id)
	return t
}

func newStateKey() []byte {
	b := make([]byte, stateKeySize)
	rand.Read(b) // never fails: crypto/rand crashes the program instead
	return b
}

// sortedIDs returns the IDs of keys oldest first.
func sortedIDs(keys map[string][]byte) []string {
	return slices.Sorted(maps.Keys(keys))
}
