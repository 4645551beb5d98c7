package rollout

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/fledge-dev/fledge/policy"
)

var (
	keyA = StaticKeys{{"20261201T000000Z", []byte("a-secret-of-32-bytes-aaaaaaaaaaa")}}
	keyB = StaticKeys{{"20261202T000000Z", []byte("b-secret-of-32-bytes-bbbbbbbbbbb")}}
	// rotatedB signs with B and still accepts A.
	rotatedB = StaticKeys{keyB[0], keyA[0]}
)

func sealedDeployment(t *testing.T, keys Keys, uid types.UID, s *State) *appsv1.Deployment {
	t.Helper()
	raw, err := SealState(s, keys, uid)
	require.NoError(t, err)
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{
		Namespace: "shop", Name: "web", UID: uid,
		Annotations: map[string]string{AnnotationState: raw},
	}}
}

func sampleState() *State {
	at := metav1.NewMicroTime(time.Date(2026, 12, 2, 1, 2, 3, 456000, time.UTC).Local())
	return &State{
		Phase: Progressing, Step: 1, Attempt: 2,
		StableRevision: "5d4f", CanaryRevision: "7c9b",
		Policy:    policy.Policy{Steps: []policy.Step{{Weight: 5}, {Weight: 25}}},
		StartedAt: at, HoldingSince: &at, Message: "holding",
	}
}

func TestSealedStateOpensOnItsDeployment(t *testing.T) {
	s := sampleState()
	d := sealedDeployment(t, keyA, "uid-1", s)
	raw := d.Annotations[AnnotationState]

	// The seal is the JSON's last member, readable by jq like the rest.
	assert.True(t, strings.HasPrefix(raw, `{"phase":"Progressing","step":1,"attempt":2,`), raw)
	assert.Regexp(t, `,"seal":"20261201T000000Z:[A-Za-z0-9_-]{43}"}$`, raw)
	var generic map[string]any
	require.NoError(t, json.Unmarshal([]byte(raw), &generic))
	assert.Equal(t, "Progressing", generic["phase"])

	got, err := OpenState(d, keyA)
	require.NoError(t, err)
	want := *s
	want.Seal = strings.TrimSuffix(raw[strings.LastIndex(raw, `"seal":"`)+len(`"seal":"`):], `"}`)
	assert.Equal(t, &want, got)

	// Sealing what was opened gives the same bytes: the router writes an
	// unchanged state back unchanged.
	again, err := SealState(got, keyA, "uid-1")
	require.NoError(t, err)
	assert.Equal(t, raw, again)
}

func TestOpenStateRejects(t *testing.T) {
	good := sealedDeployment(t, keyA, "uid-1", sampleState()).Annotations[AnnotationState]
	unsealed, err := json.Marshal(sampleState())
	require.NoError(t, err)

	for _, tc := range []struct {
		name string
		uid  types.UID
		raw  string
		keys Keys
		why  string
	}{
		{"another Deployment's UID (copied, or restored from a backup)", "uid-2", good, keyA,
			"its seal does not match: it was copied from another Deployment, restored from a backup, or changed by hand"},
		{"a tampered field", "uid-1", strings.Replace(good, `"phase":"Progressing"`, `"phase":"Promoting"`, 1), keyA,
			"its seal does not match: it was copied from another Deployment, restored from a backup, or changed by hand"},
		{"a tampered byte of the MAC", "uid-1", good[:len(good)-3] + flip(good[len(good)-3]) + good[len(good)-2:], keyA,
			"its seal does not match: it was copied from another Deployment, restored from a backup, or changed by hand"},
		{"the wrong key", "uid-1", good, StaticKeys{{keyA[0].ID, []byte("another-secret-of-32-bytes-xxxxx")}},
			"its seal does not match: it was copied from another Deployment, restored from a backup, or changed by hand"},
		{"a key fledge does not hold", "uid-1", good, keyB,
			"it is sealed with key 20261201T000000Z, which fledge does not hold (rotated out long ago, or another installation's)"},
		{"no seal (written by hand, or by a fledge before sealing)", "uid-1", string(unsealed), keyA, "it has no seal"},
		{"a seal moved away from the end", "uid-1", moveSealFirst(good), keyA, "its seal is malformed"},
		{"a seal without a key ID", "uid-1", strings.Replace(good, `"seal":"20261201T000000Z:`, `"seal":"`, 1), keyA, "its seal is malformed"},
		{"not JSON", "uid-1", `{"phase":"Promoting"`, keyA, "it does not parse: unexpected end of JSON input"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{
				Namespace: "shop", Name: "web", UID: tc.uid,
				Annotations: map[string]string{AnnotationState: tc.raw},
			}}
			s, err := OpenState(d, tc.keys)
			assert.Nil(t, s)
			var rejected *RejectedError
			require.ErrorAs(t, err, &rejected)
			assert.Equal(t, RejectedError{Annotation: AnnotationState, Object: "shop/web", Why: tc.why}, *rejected)
			assert.Equal(t, "annotation fledge.dev/rollout of shop/web was not written by fledge for it: "+tc.why, err.Error())
		})
	}
}

func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

// moveSealFirst puts the seal member first, as a hand edit might: the
// content is the same, the bytes are not.
func moveSealFirst(raw string) string {
	i := strings.LastIndex(raw, `,"seal":`)
	return `{` + raw[i+1:len(raw)-1] + `,` + raw[1:i] + `}`
}

func TestRotatedKeyStillOpensOlderSeals(t *testing.T) {
	d := sealedDeployment(t, keyA, "uid-1", sampleState())
	s, err := OpenState(d, rotatedB)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(s.Seal, keyA[0].ID+":"))

	// Written again, it is sealed with the new signing key.
	raw, err := SealState(s, rotatedB, "uid-1")
	require.NoError(t, err)
	assert.Contains(t, raw, `"seal":"20261202T000000Z:`)
	d.Annotations[AnnotationState] = raw
	_, err = OpenState(d, keyB)
	require.NoError(t, err)
}

func TestNoStateAndNoKey(t *testing.T) {
	s, err := OpenState(&appsv1.Deployment{}, keyA)
	assert.Nil(t, s)
	assert.NoError(t, err)

	_, err = SealState(sampleState(), StaticKeys{}, "uid-1")
	assert.ErrorIs(t, err, ErrNoKey)
}

func TestEvidenceIsSealedForItsCanary(t *testing.T) {
	e := &Evidence{Attempt: 2, Step: 1, At: metav1.NewMicroTime(time.Unix(1796000000, 0)), Counters: policy.Counters{Failures: 1}}
	raw, err := SealEvidence(e, keyA, "canary-uid")
	require.NoError(t, err)
	canary := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{
		Namespace: "shop", Name: "web-canary", UID: "canary-uid",
		Annotations: map[string]string{AnnotationEvidence: raw},
	}}
	got, err := OpenEvidence(canary, keyA)
	require.NoError(t, err)
	assert.Equal(t, policy.Counters{Failures: 1}, got.Counters)

	// A state's seal does not pass for evidence, nor the other way round:
	// the annotation's key is part of the MAC.
	canary.UID = "other-canary"
	_, err = OpenEvidence(canary, keyA)
	assert.EqualError(t, err, "annotation fledge.dev/analysis of shop/web-canary was not written by fledge for it: its seal does not match: it was copied from another Deployment, restored from a backup, or changed by hand")

	stateRaw, err := SealState(sampleState(), keyA, "canary-uid")
	require.NoError(t, err)
	canary.UID = "canary-uid"
	canary.Annotations[AnnotationEvidence] = stateRaw
	_, err = OpenEvidence(canary, keyA)
	assert.ErrorContains(t, err, "its seal does not match")
}

func TestSealOfAnEmptyObject(t *testing.T) {
	raw, err := seal(keyA, "k", "u", []byte("{}"))
	require.NoError(t, err)
	assert.Regexp(t, `^\{"seal":"20261201T000000Z:[A-Za-z0-9_-]{43}"}$`, raw)
	var v struct{ Seal string }
	require.NoError(t, json.Unmarshal([]byte(raw), &v))
	assert.Empty(t, open(keyA, "k", "u", raw, v.Seal))
}

func TestReadStateChecksWhatAReaderWithoutTheKeyCan(t *testing.T) {
	d := sealedDeployment(t, keyA, "uid-1", sampleState())
	s, err := ReadState(d)
	require.NoError(t, err)
	assert.Equal(t, Progressing, s.Phase)

	d.Annotations[AnnotationState] = `{"phase":"Promoting"}`
	_, err = ReadState(d)
	assert.EqualError(t, err, "annotation fledge.dev/rollout of shop/web was not written by fledge for it: it has no seal")
	d.Annotations[AnnotationState] = `{"phase":`
	_, err = ReadState(d)
	assert.EqualError(t, err, "annotation fledge.dev/rollout of shop/web was not written by fledge for it: it does not parse: unexpected end of JSON input")

	// OpenState with no keys accepts nothing.
	d = sealedDeployment(t, keyA, "uid-1", sampleState())
	_, err = OpenState(d, nil)
	assert.ErrorContains(t, err, "which fledge does not hold")
}

// BenchmarkSealAndOpenState measures what sealing adds to each state the
// router writes and each it reads: one HMAC-SHA256 over the state's JSON.
func BenchmarkSealAndOpenState(b *testing.B) {
	s := sampleState()
	s.Policy = *policy.Default()
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "uid-1", Annotations: map[string]string{}}}
	b.ReportAllocs()
	for b.Loop() {
		raw, err := SealState(s, keyA, d.UID)
		if err != nil {
			b.Fatal(err)
		}
		d.Annotations[AnnotationState] = raw
		if _, err := OpenState(d, keyA); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(d.Annotations[AnnotationState])), "state-bytes")
}

// BenchmarkParseState is the same round trip without the seal, to compare.
func BenchmarkParseState(b *testing.B) {
	s := sampleState()
	s.Policy = *policy.Default()
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "uid-1", Annotations: map[string]string{}}}
	b.ReportAllocs()
	for b.Loop() {
		raw, err := json.Marshal(s)
		if err != nil {
			b.Fatal(err)
		}
		d.Annotations[AnnotationState] = string(raw)
		if _, err := ParseState(d); err != nil {
			b.Fatal(err)
		}
	}
}
