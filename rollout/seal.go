package rollout

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Keys are the MAC keys that fledge seals its state with (ARCHITECTURE.md,
// "State is authenticated"). certs.StateKeys keeps them in a Secret that
// only fledge's ServiceAccount can read, and rotates them.
type Keys interface {
	// SigningKey is the key new seals are made with; "" before any is loaded.
	SigningKey() (id string, secret []byte)
	// Key returns the accepted key with that ID: the signing key, a newer
	// one already published, or an older one still accepted.
	Key(id string) (secret []byte, ok bool)
}

// StaticKeys is a fixed set of keys: the first signs, all are accepted.
// Tests and tools use it; the manager's keys are certs.StateKeys.
type StaticKeys []Key

// Key is one MAC key and its ID.
type Key struct {
	ID     string
	Secret []byte
}

// SigningKey implements Keys.
func (k StaticKeys) SigningKey() (string, []byte) {
	if len(k) == 0 {
		return "", nil
	}
	return k[0].ID, k[0].Secret
}

// Key implements Keys.
func (k StaticKeys) Key(id string) ([]byte, bool) {
	for _, key := range k {
		if key.ID == id {
			return key.Secret, true
		}
	}
	return nil, false
}

// A seal is "<key ID>:<MAC>", the last member ("seal") of the JSON of a
// State or an Evidence. The MAC is HMAC-SHA256, keyed by the key of that
// ID, over the annotation's key, the UID of the object it is written on,
// and the exact bytes of the JSON without the seal member. So a state is
// fledge's only for the Deployment it was written for: copied to another
// one, restored from a backup (a new UID) or changed by one byte, it does
// not verify. The bytes are checked as they are, never re-encoded, so the
// check does not depend on how Go happens to encode a value.
const sealMember = `"seal":`

// RejectedError says why an annotation that should hold fledge's sealed
// JSON is not fledge's: it does not parse, has no seal, or its seal does
// not verify. The router acts on none of it.
type RejectedError struct {
	Annotation string
	// Object is namespace/name of the object that carries it.
	Object string
	Why    string
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("annotation %s of %s was not written by fledge for it: %s", e.Annotation, e.Object, e.Why)
}

const noSeal = "it has no seal"

// ErrNoKey means no signing key is loaded yet: fledge cannot seal, and so
// must not write a state.
var ErrNoKey = errors.New("fledge's state key is not loaded yet")

// seal appends the seal of body, the JSON of an object without its seal
// member, for annotation on the object of uid.
func seal(keys Keys, annotation string, uid types.UID, body []byte) (string, error) {
	if keys == nil {
		return "", ErrNoKey
	}
	id, secret := keys.SigningKey()
	if id == "" {
		return "", ErrNoKey
	}
	s := id + ":" + mac(secret, annotation, uid, body)
	sep := ","
	if bytes.Equal(body, []byte("{}")) {
		sep = ""
	}
	return string(body[:len(body)-1]) + sep + sealMember + quote(s) + "}", nil
}

// open checks the seal of raw, an annotation's value whose parsed seal
// member is s.
func open(keys Keys, annotation string, uid types.UID, raw, s string) string {
	if s == "" {
		return noSeal
	}
	id, sum, ok := strings.Cut(s, ":")
	body, found := strings.CutSuffix(raw, sealMember+quote(s)+"}")
	if !ok || !found {
		return "its seal is malformed"
	}
	body = strings.TrimSuffix(body, ",") + "}"
	secret, ok := keys.Key(id)
	if !ok {
		return fmt.Sprintf("it is sealed with key %s, which fledge does not hold (rotated out long ago, or another installation's)", id)
	}
	if !hmac.Equal([]byte(sum), []byte(mac(secret, annotation, uid, []byte(body)))) {
		return "its seal does not match: it was copied from another Deployment, restored from a backup, or changed by hand"
	}
	return ""
}

func mac(secret []byte, annotation string, uid types.UID, body []byte) string {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(annotation))
	h.Write([]byte{0})
	h.Write([]byte(uid))
	h.Write([]byte{0})
	h.Write(body)
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// quote renders a seal as a JSON string; a seal has no character that
// JSON escapes, so this is what encoding/json writes.
func quote(s string) string { return `"` + s + `"` }

// SealState renders s for AnnotationState of the Deployment with uid,
// sealed with the signing key.
func SealState(s *State, keys Keys, uid types.UID) (string, error) {
	c := *s
	c.Seal = ""
	body, err := json.Marshal(&c)
	if err != nil {
		return "", fmt.Errorf("encode rollout state: %w", err)
	}
	return seal(keys, AnnotationState, uid, body)
}

// OpenState reads the rollout state of d and checks that fledge wrote it
// for d; nil when none runs. A state that is not fledge's is a
// *RejectedError.
func OpenState(d *appsv1.Deployment, keys Keys) (*State, error) {
	if keys == nil {
		keys = StaticKeys{}
	}
	return openAnnotation[State](d, AnnotationState, keys, func(s *State) string { return s.Seal })
}

// SealEvidence renders e for AnnotationEvidence of the canary with uid.
func SealEvidence(e *Evidence, keys Keys, uid types.UID) (string, error) {
	c := *e
	c.Seal = ""
	body, err := json.Marshal(&c)
	if err != nil {
		return "", fmt.Errorf("encode rollout evidence: %w", err)
	}
	return seal(keys, AnnotationEvidence, uid, body)
}

// OpenEvidence reads the evidence of a canary Deployment and checks that
// fledge wrote it for this canary; nil when there is none.
func OpenEvidence(canary *appsv1.Deployment, keys Keys) (*Evidence, error) {
	if keys == nil {
		keys = StaticKeys{}
	}
	return openAnnotation[Evidence](canary, AnnotationEvidence, keys, func(e *Evidence) string { return e.Seal })
}

// ReadState reads the rollout state of d as far as a reader without
// fledge's key (the plugin) can tell it is fledge's: it parses and carries
// a seal. Only OpenState verifies the seal, which the router does before it
// acts; a *RejectedError here says, in the same words, why it is not.
func ReadState(d *appsv1.Deployment) (*State, error) {
	return openAnnotation[State](d, AnnotationState, nil, func(s *State) string { return s.Seal })
}

// ReadEvidence reads the canary's evidence as ReadState reads a state.
func ReadEvidence(canary *appsv1.Deployment) (*Evidence, error) {
	return openAnnotation[Evidence](canary, AnnotationEvidence, nil, func(e *Evidence) string { return e.Seal })
}

// openAnnotation parses annotation key of d and checks its seal with keys;
// with no keys it only checks that there is a seal.
func openAnnotation[T any](d *appsv1.Deployment, key string, keys Keys, sealOf func(*T) string) (*T, error) {
	raw := d.Annotations[key]
	if raw == "" {
		return nil, nil
	}
	reject := func(why string) error {
		return &RejectedError{Annotation: key, Object: d.Namespace + "/" + d.Name, Why: why}
	}
	var v T
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		return nil, reject(fmt.Sprintf("it does not parse: %v", err))
	}
	switch {
	case keys == nil && sealOf(&v) == "":
		return nil, reject(noSeal)
	case keys == nil:
		return &v, nil
	}
	if why := open(keys, key, d.UID, raw, sealOf(&v)); why != "" {
		return nil, reject(why)
	}
	return &v, nil
}
