package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"

	"github.com/fledge-dev/fledge/rollout"
	"github.com/fledge-dev/fledge/test/lab"
)

// Only fledge starts or steers a rollout (ARCHITECTURE.md, "State is
// authenticated"): a state written by anyone else, through any path, is
// never acted on, and people are told why.

// runningRollout is web in an opted-in namespace with a rollout of v2 that
// holds its first step for 10 minutes, so nothing but a forgery could end
// it during a test.
func runningRollout(t *testing.T, name string) string {
	t.Helper()
	ns := policyNamespace(t, name, lab.Policy{Holds: [3]string{"10m", "10m", "10m"}}, 4)
	_, stderr, err := kubectl(t, app(ns, "v2", 4), "apply", "-f", "-")
	require.NoError(t, err, stderr)
	waitCanaryAt(t, ns, 1)
	// Holding: the state changes no more until the hold ends.
	waitState(t, ns, "holding step 1", func(s *rollout.State) bool { return s.HoldingSince != nil })
	return ns
}

// stillRunning asserts for d that web's rollout goes on untouched: the
// same state bytes, its canary at 1 pod, no outcome.
func stillRunning(t *testing.T, ns, raw string, d time.Duration) {
	t.Helper()
	staysFor(t, ns, d, "the rollout goes on untouched", func(dep *appsv1.Deployment, s *rollout.State) bool {
		return dep.Annotations[rollout.AnnotationState] == raw && dep.Spec.Paused &&
			dep.Annotations[rollout.AnnotationLast] == "" && s.Phase == rollout.Progressing
	})
	c := canaryOf(t, ns)
	require.NotNil(t, c)
	assert.Equal(t, int32(1), *c.Spec.Replicas)
}

// kubectl patch deploy web --subresource=status ... while the canary holds
// its first step: before, the router promoted at once.
func TestStatusSubresourceCannotWriteFledgesState(t *testing.T) {
	ns := runningRollout(t, "auth-status")
	raw := get(t, ns, "web").Annotations[rollout.AnnotationState]

	_, stderr, err := kubectl(t, "", "patch", "deployment/web", "-n", ns, "--subresource=status", "--type=merge",
		"-p", `{"metadata":{"annotations":{"fledge.dev/rollout":"{\"phase\":\"Promoting\"}","fledge.dev/last-rollout":"{\"phase\":\"Succeeded\"}"}}}`)
	require.NoError(t, err, stderr)
	assert.Equal(t, []string{
		"Warning: fledge: annotation fledge.dev/rollout is written by fledge only; your change to it was undone",
		"Warning: fledge: annotation fledge.dev/last-rollout is written by fledge only; your change to it was undone",
	}, fledgeWarnings(stderr))
	stillRunning(t, ns, raw, 3*time.Second)
}

// The same through an update with fledge.dev/skip, which otherwise keeps
// the webhook out of the way: the skip hands the Deployment back, as it
// should, from fledge's own state, never from the forged one.
func TestSkipDoesNotLetAnyoneWriteFledgesState(t *testing.T) {
	ns := runningRollout(t, "auth-skip")
	real := stateOf(t, ns)

	_, stderr, err := kubectl(t, "", "annotate", "deployment/web", "-n", ns, "--overwrite",
		rollout.AnnotationSkip+"=true", rollout.AnnotationState+`={"phase":"Promoting"}`)
	require.NoError(t, err, stderr)
	assert.Equal(t, []string{"Warning: fledge: annotation fledge.dev/rollout is written by fledge only; your change to it was undone"}, fledgeWarnings(stderr))

	out := waitOutcome(t, ns)
	assert.Equal(t, rollout.Aborted, out.Phase, "handed back, not promoted")
	require.NotNil(t, out.Reason)
	assert.Equal(t, "skip", out.Reason.Check)
	assert.Equal(t, real.Attempt, out.Attempt)
	assert.Equal(t, real.StableRevision, out.StableRevision)
	assert.Equal(t, real.CanaryRevision, out.CanaryRevision)
}

// A Deployment created with a state in it, as a restored backup or a
// copied `kubectl get -o yaml` is: before, the router paused it and ran an
// embedded policy that was never validated.
func TestCreateWithFledgesStateStartsClean(t *testing.T) {
	from := runningRollout(t, "auth-create-from")
	copied := get(t, from, "web")
	ns := namespace(t, "auth-create", true)

	manifest := copyOf(t, copied, ns)
	_, stderr, err := kubectl(t, manifest, "create", "-f", "-")
	require.NoError(t, err, stderr)
	assert.Equal(t, []string{"Warning: fledge: removed fledge.dev/rollout from the new Deployment web: only fledge writes them, for the Deployment it rolls out; a new Deployment starts with no rollout, so the pause that came with its rollout state is lifted"},
		fledgeWarnings(stderr))

	d := get(t, ns, "web")
	assert.NotContains(t, d.Annotations, rollout.AnnotationState)
	assert.False(t, d.Spec.Paused)
	// Nothing served yet, so it rolls out natively, as any new Deployment.
	eventually(t, "web's 4 v2 pods ready", func(ctx context.Context) (bool, error) {
		d := get(t, ns, "web")
		return d.Status.ReadyReplicas == 4 && d.Status.UpdatedReplicas == 4, nil
	})
	assert.Nil(t, canaryOf(t, ns))
	assert.Equal(t, map[string]int32{lab.DemoImage + ":v2": 4}, stableRS(t, ns))
}

// copyOf is d as `kubectl get -o yaml` shows it, moved to namespace ns:
// its state, pause and template as they were, server fields dropped.
func copyOf(t *testing.T, d *appsv1.Deployment, ns string) string {
	t.Helper()
	c := &appsv1.Deployment{}
	c.APIVersion, c.Kind = "apps/v1", "Deployment"
	c.Name, c.Namespace = d.Name, ns
	c.Labels, c.Annotations = d.Labels, d.Annotations
	c.Spec = d.Spec
	b, err := json.Marshal(c)
	require.NoError(t, err)
	return string(b)
}

// forgedOutsideOptIn writes raw as web's state and pauses web in a
// namespace that has not opted in, where the webhook is not called.
func forgedOutsideOptIn(t *testing.T, name, raw string) string {
	t.Helper()
	ns := namespace(t, name, false)
	deployed(t, ns, "v1", 2)
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{rollout.AnnotationState: raw}},
		"spec":     map[string]any{"paused": true},
	})
	require.NoError(t, err)
	_, stderr, err := kubectl(t, "", "patch", "deployment/web", "-n", ns, "--type=merge", "-p", string(patch))
	require.NoError(t, err, stderr)
	return ns
}

// optInAndWaitForDrop labels ns opted in and waits for the router to drop
// web's state; it returns the StateRejected Event's message.
func optInAndWaitForDrop(t *testing.T, ns string) string {
	t.Helper()
	_, stderr, err := kubectl(t, "", "label", "namespace", ns, rollout.LabelEnabled+"=true")
	require.NoError(t, err, stderr)
	eventually(t, "the state dropped with a StateRejected Event", func(ctx context.Context) (bool, error) {
		return get(t, ns, "web").Annotations[rollout.AnnotationState] == "" && len(eventsNow(t, ns, "StateRejected")) == 1, nil
	})
	d := get(t, ns, "web")
	assert.True(t, d.Spec.Paused, "the spec is left as it was")
	assert.Nil(t, canaryOf(t, ns), "no canary was started")
	assert.Equal(t, map[string]int32{lab.DemoImage + ":v1": 2}, stableRS(t, ns))
	return eventsNow(t, ns, "StateRejected")[0]
}

// A real state, sealed by fledge for another Deployment, copied onto one
// in a namespace that has not opted in: before, status and list showed it
// as live, and opting in (as diagnose advises) made the router act on it.
func TestCopiedStateIsNeverActedOn(t *testing.T) {
	from := runningRollout(t, "auth-copied-from")
	real := get(t, from, "web").Annotations[rollout.AnnotationState]
	ns := forgedOutsideOptIn(t, "auth-copied", real)

	out, _, code := kubectlFledge(t, "status", "web", "-n", ns)
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, "namespace not opted in")
	assert.NotContains(t, out, "Progressing")
	list, _, code := kubectlFledge(t, "list", "-A")
	assert.Equal(t, 0, code, list)
	assert.Contains(t, lineOf(list, ns), "namespace not opted in")

	msg := optInAndWaitForDrop(t, ns)
	assert.Equal(t, "Removed the rollout state of web without acting on it: its seal does not match: it was copied from another Deployment, restored from a backup, or changed by hand."+
		" No rollout runs; the Deployment is left paused (kubectl rollout resume lifts it), and its next template change starts a canary rollout", msg)
	// The Deployment it was copied from goes on untouched.
	stillRunning(t, from, real, time.Second)
}

// A state that does not parse: before, the router said "abort with
// kubectl fledge abort", and abort, status and every command failed on
// the same parse.
func TestUnparseableStateIsDroppedAndThePluginStillWorks(t *testing.T) {
	ns := forgedOutsideOptIn(t, "auth-unparseable", `{"phase":`)

	out, stderr, code := kubectlFledge(t, "status", "web", "-n", ns)
	assert.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "not written by fledge")
	out, stderr, code = kubectlFledge(t, "abort", "web", "-n", ns)
	assert.Equal(t, 0, code, out+stderr)

	msg := optInAndWaitForDrop(t, ns)
	assert.Equal(t, "Removed the rollout state of web without acting on it: it does not parse: unexpected end of JSON input."+
		" No rollout runs; the Deployment is left paused (kubectl rollout resume lifts it), and its next template change starts a canary rollout", msg)

	out, stderr, code = kubectlFledge(t, "status", "web", "-n", ns)
	assert.Equal(t, 0, code, stderr)
	assert.NotContains(t, out, "not written by fledge", "the state is gone")
	// Its next template change is a canary rollout, as for any Deployment.
	_, stderr, err := kubectl(t, app(ns, "v2", 2), "apply", "-f", "-")
	require.NoError(t, err, stderr)
	assert.Contains(t, stderr, "fledge: canary rollout started for web")
	waitCanaryAt(t, ns, 1)
}

// lineOf is the line of out that names ns, or "".
func lineOf(out, ns string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, ns) {
			return l
		}
	}
	return ""
}

// An update that reaches the webhook during Promoting (here, naming the
// policy) must not pause the Deployment again: before, Decide paused it
// whenever a state existed, while the router unpaused it to promote.
func TestAnUpdateDuringPromotingDoesNotPauseAgain(t *testing.T) {
	ns := policyNamespace(t, "auth-promoting", lab.Policy{Holds: [3]string{"1s", "1s", "1s"}}, 4)
	// Each new pod must be available 5s before the next is made: the
	// promotion of 4 pods takes about 20s.
	_, stderr, err := kubectl(t, "", "patch", "deployment/web", "-n", ns, "--type=merge", "-p", `{"spec":{"minReadySeconds":5}}`)
	require.NoError(t, err, stderr)
	_, stderr, err = kubectl(t, app(ns, "v2", 4), "apply", "-f", "-")
	require.NoError(t, err, stderr)
	waitState(t, ns, "Promoting", func(s *rollout.State) bool { return s.Phase == rollout.Promoting })

	_, stderr, err = kubectl(t, "", "annotate", "deployment/web", "-n", ns, "--overwrite", "fledge.dev/policy=fledge-policy")
	require.NoError(t, err, stderr)
	d := get(t, ns, "web")
	s, err := rollout.ParseState(d)
	require.NoError(t, err)
	require.NotNil(t, s, "still promoting")
	assert.Equal(t, rollout.Promoting, s.Phase)
	assert.False(t, d.Spec.Paused, "the promotion goes on")
	assert.Empty(t, fledgeWarnings(stderr))
	waitSucceeded(t, ns)
}

// The canary's evidence (the last evaluation and the consecutive failures)
// edited by hand, as someone resetting a failure count would: the router
// takes none of it, and the next evaluation writes its own, sealed.
func TestEvidenceEditedByHandIsNotTaken(t *testing.T) {
	prom, _ := zeroPrometheus(t)
	ns := policyNamespace(t, "auth-evidence", lab.Policy{Holds: [3]string{"10m", "10m", "10m"}, PrometheusURL: prom}, 4)
	_, stderr, err := kubectl(t, app(ns, "v2", 4), "apply", "-f", "-")
	require.NoError(t, err, stderr)
	waitCanaryAt(t, ns, 1)
	eventually(t, "the canary's first sealed evidence", func(ctx context.Context) (bool, error) {
		_, err := rollout.ReadEvidence(canaryOf(t, ns))
		return err == nil && canaryOf(t, ns).Annotations[rollout.AnnotationEvidence] != "", nil
	})

	forged := `{"attempt":1,"step":0,"at":"2099-01-01T00:00:00.000000Z","result":"Pass","seal":"20990101T000000Z:forged"}`
	_, stderr, err = kubectl(t, "", "annotate", "deployment/"+rollout.CanaryName("web"), "-n", ns, "--overwrite", rollout.AnnotationEvidence+"="+forged)
	require.NoError(t, err, stderr)
	// Taken, its time in 2099 would stop every evaluation; the next one
	// comes within the 2s interval and writes evidence of its own.
	eventually(t, "the forged evidence replaced", func(ctx context.Context) (bool, error) {
		raw := canaryOf(t, ns).Annotations[rollout.AnnotationEvidence]
		return raw != forged && !strings.Contains(raw, "2099"), nil
	})
	ev, err := rollout.ReadEvidence(canaryOf(t, ns))
	require.NoError(t, err)
	assert.Equal(t, int32(1), ev.Attempt)
	assert.NotContains(t, ev.Seal, "forged")
	assert.Equal(t, rollout.Progressing, stateOf(t, ns).Phase)
}
