package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/fledge-dev/fledge/rollout"
	"github.com/fledge-dev/fledge/test/lab"
)

// rolloutNamespace makes an opted-in namespace with a fast policy (holds
// of hold each) and web at v1 with replicas pods.
func rolloutNamespace(t *testing.T, name, hold string, replicas int) string {
	t.Helper()
	ns := namespace(t, name, true)
	_, stderr, err := kubectl(t, lab.Policy{Namespace: ns, Holds: [3]string{hold, hold, hold}}.Manifest(), "apply", "-f", "-")
	require.NoError(t, err, stderr)
	deployed(t, ns, "v1", replicas)
	return ns
}

// release applies web at tag, with podLabels added to its pods, and returns
// kubectl's warnings.
func release(t *testing.T, ns, tag string, replicas int, podLabels ...string) string {
	t.Helper()
	a := lab.App{Namespace: ns, Tag: tag, Replicas: replicas, PodLabels: map[string]string{}}
	for _, l := range podLabels {
		k, v, _ := strings.Cut(l, "=")
		a.PodLabels[k] = v
	}
	_, stderr, err := kubectl(t, a.Manifest(), "apply", "-f", "-")
	require.NoError(t, err, stderr)
	return stderr
}

// crashing is kwok's label that makes a pod's container fail (LAB.md).
const crashing = "pod-container-running-failed.stage.kwok.x-k8s.io=true"

// waitState waits until the rollout state satisfies cond, and returns it.
func waitState(t *testing.T, ns, what string, cond func(*rollout.State) bool) *rollout.State {
	t.Helper()
	var got *rollout.State
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		s, err := rollout.ParseState(get(t, ns, "web"))
		if err != nil {
			return false, err
		}
		got = s
		return s != nil && cond(s), nil
	})
	require.NoError(t, err, "waiting for %s; last state: %+v", what, got)
	return got
}

// waitOutcome waits until the rollout is over and returns its outcome.
func waitOutcome(t *testing.T, ns string) *rollout.Outcome {
	t.Helper()
	var out *rollout.Outcome
	eventually90(t, "the rollout to end", func(ctx context.Context) (bool, error) {
		d := get(t, ns, "web")
		if d.Annotations[rollout.AnnotationState] != "" {
			return false, nil
		}
		o, err := rollout.ParseOutcome(d)
		out = o
		return o != nil, err
	})
	return out
}

func eventually90(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 90*time.Second, true, cond)
	require.NoError(t, err, "waiting for %s", what)
}

// tracks counts the ready endpoints of Service web by the track of their pod.
func tracks(t *testing.T, ns string) map[string]int {
	t.Helper()
	return serviceTracks(t, ns, "web")
}

// canaryReplicas is the canary Deployment's ready replicas, or -1 without one.
func canaryReplicas(t *testing.T, ns string) int32 {
	c, err := theLab.Client.AppsV1().Deployments(ns).Get(t.Context(), "web-canary", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return -1
	}
	require.NoError(t, err)
	return c.Status.ReadyReplicas
}

// canaryGone waits until web has no canary: it is deleted right after the
// outcome is written.
func canaryGone(t *testing.T, ns string) {
	t.Helper()
	eventually(t, "the canary removed", func(ctx context.Context) (bool, error) {
		return canaryReplicas(t, ns) == -1, nil
	})
}

// eventMessages waits for want of web's Events with reason and returns
// their messages, oldest first.
func eventMessages(t *testing.T, ns, reason string, want int) []string {
	t.Helper()
	msgs, err := theLab.EventMessages(t.Context(), ns, "web", reason, want)
	require.NoError(t, err)
	return msgs
}

func imagesOfPods(t *testing.T, ns string) map[string]int {
	pods, err := theLab.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=web"})
	require.NoError(t, err)
	out := map[string]int{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			out[p.Spec.Containers[0].Image]++
		}
	}
	return out
}

func TestHealthyReleaseIsPromotedThroughEveryStep(t *testing.T) {
	ns := rolloutNamespace(t, "router-healthy", "3s", 6)
	release(t, ns, "v2", 6)

	// 6 stable pods: 5% → 1 canary (14.3%), 25% → 2 (25%), 50% → 6 (50%).
	for step, want := range []int{1, 2, 6} {
		waitState(t, ns, fmt.Sprintf("step %d holding", step+1), func(s *rollout.State) bool {
			return s.Step == int32(step) && s.HoldingSince != nil
		})
		assert.Equal(t, map[string]int32{"fledge/demo:v1": 6}, stableRS(t, ns), "step %d: stable stays on v1", step+1)
		assert.Equal(t, int32(want), canaryReplicas(t, ns), "step %d", step+1)
		eventually(t, "endpoints of the step", func(ctx context.Context) (bool, error) {
			return assert.ObjectsAreEqual(map[string]int{"stable": 6, "canary": want}, tracks(t, ns)), nil
		})
	}

	out := waitOutcome(t, ns)
	assert.Equal(t, rollout.Succeeded, out.Phase)
	require.Len(t, out.History, 3)
	for i, want := range []float64{100.0 / 7, 25, 50} {
		assert.InDelta(t, want, out.History[i].Effective, 0.01, "step %d effective weight", i+1)
	}
	canaryGone(t, ns)
	d := get(t, ns, "web")
	assert.False(t, d.Spec.Paused)
	// fledge patches what it changes: kubectl's last-applied
	// configuration, which its cache does not hold, is still v2's.
	assert.Contains(t, d.Annotations[corev1.LastAppliedConfigAnnotation], `"image":"fledge/demo:v2"`)
	_, stderr, err := kubectl(t, "", "rollout", "status", "deployment/web", "-n", ns, "--timeout=60s")
	require.NoError(t, err, stderr)
	eventually(t, "only v2 pods", func(ctx context.Context) (bool, error) {
		return assert.ObjectsAreEqual(map[string]int{"fledge/demo:v2": 6}, imagesOfPods(t, ns)), nil
	})
	assert.Equal(t, []string{"promoted web: all 6 pods run the new version"}, eventMessages(t, ns, "Succeeded", 1))
	logPhases(t, out)

	// The apiserver called fledge's webhook for the user's two applies
	// (v1 and v2) and for none of fledge's own writes of the rollout.
	// fledge wrote each transition at most once: the canary created, then
	// per step its scale, the step's start and its hold (web; one write
	// when the pods are Ready before the step's start is written), then
	// Promoting, the outcome, the canary deleted. Conflicts (the
	// Deployment controller's status writes race fledge's) are not writes.
	writes := deploymentWrites(t, ns)
	fledgeWrites := writes["system:serviceaccount:fledge-system:fledge"]
	assert.LessOrEqual(t, fledgeWrites.writes, 12, "fledge's writes of web and its canary: %+v", writes)
	assert.GreaterOrEqual(t, fledgeWrites.writes, 9, "fledge's writes of web and its canary: %+v", writes)
	assert.Zero(t, fledgeWrites.admitted, "fledge's own writes sent to its webhook: %+v", writes)
	assert.Equal(t, 1, writes["lab-admin"].admitted, "the user's applies sent to fledge's webhook (v1 creates web: no call): %+v", writes)
	t.Logf("Deployment writes in the rollout: %+v", writes)
}

// webhookCalls counts, by user, the writes to Deployments of ns that the
// apiserver carried out and how many of them it sent to fledge's
// Deployment webhook, from the lab's audit log.
type webhookCalls struct {
	writes, admitted int
	// conflicts are writes refused for a stale resourceVersion (not in writes).
	conflicts int
	log       []string // verb, Deployment and answer of each write
}

func deploymentWrites(t *testing.T, ns string) map[string]webhookCalls {
	t.Helper()
	events, err := theLab.AuditEvents()
	require.NoError(t, err)
	out := map[string]webhookCalls{}
	for _, e := range events {
		if e.ObjectRef == nil || e.ObjectRef.Namespace != ns || e.ObjectRef.Resource != "deployments" || e.ObjectRef.Subresource != "" {
			continue
		}
		c := out[e.User.Username]
		c.log = append(c.log, fmt.Sprintf("%s %s %d", e.Verb, e.ObjectRef.Name, e.Code()))
		if e.Code() == http.StatusConflict {
			c.conflicts++
			out[e.User.Username] = c
			continue
		}
		c.writes++
		if slices.Contains(e.MutatingWebhooks(), "deployments.fledge.dev") {
			c.admitted++
		}
		out[e.User.Username] = c
	}
	return out
}

// logPhases prints how long each phase of a finished rollout took.
func logPhases(t *testing.T, out *rollout.Outcome) {
	t.Helper()
	last := out.StartedAt.Time
	for _, h := range out.History {
		end := out.FinishedAt.Time
		if h.Ended != nil {
			end = h.Ended.Time
		}
		t.Logf("step %d (%d%%, %.1f%% effective, %d canary / %d stable): %.1fs", h.Step+1, h.Weight, h.Effective, h.Canary, h.Stable, end.Sub(h.Started.Time).Seconds())
		last = end
	}
	t.Logf("%s after the last step: %.1fs; whole rollout: %.1fs", out.Phase, out.FinishedAt.Sub(last).Seconds(), out.FinishedAt.Sub(out.StartedAt.Time).Seconds())
}

// metric returns the value of one sample of the manager's /metrics.
func metric(t *testing.T, sample string) string {
	t.Helper()
	resp, err := http.Get(fledge.MetricsURL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			return v
		}
	}
	return ""
}

func TestCrashingReleaseIsRolledBack(t *testing.T) {
	ns := rolloutNamespace(t, "router-crash", "3s", 4)
	const rolledBack = `fledge_rollout_outcomes_total{outcome="RolledBack",reason="pod-failed"}`
	before, _ := strconv.Atoi(metric(t, rolledBack)) // "" before the first one: 0
	release(t, ns, "v3", 4, crashing)

	out := waitOutcome(t, ns)
	assert.Equal(t, rollout.RolledBack, out.Phase)
	require.NotNil(t, out.Reason)
	assert.Equal(t, "pod-failed", out.Reason.Check)
	assert.Equal(t, int32(0), out.Reason.Step)

	// The failed revision is held: the Deployment stays paused on what was
	// applied, its stable ReplicaSet serving every user.
	d := get(t, ns, "web")
	assert.True(t, d.Spec.Paused)
	assert.Equal(t, "fledge/demo:v3", d.Spec.Template.Spec.Containers[0].Image, "the template stays what was applied: no drift for GitOps")
	assert.True(t, rollout.Holds(d, out))
	assert.Equal(t, int32(1), out.Attempt)
	canaryGone(t, ns)
	eventually(t, "only v1 pods", func(ctx context.Context) (bool, error) {
		return assert.ObjectsAreEqual(map[string]int{"fledge/demo:v1": 4}, imagesOfPods(t, ns)), nil
	})
	assert.Equal(t, map[string]int32{"fledge/demo:v1": 4}, stableRS(t, ns))
	logPhases(t, out)
	eventually(t, "the rollback counted in /metrics", func(ctx context.Context) (bool, error) {
		return metric(t, rolledBack) == strconv.Itoa(before+1), nil
	})
	t.Logf("cut ordered to canary at zero pods: %ss over %s rollbacks", metric(t, "fledge_rollback_seconds_sum"), metric(t, "fledge_rollback_seconds_count"))
	msgs := eventMessages(t, ns, "RolledBack", 1)
	require.Len(t, msgs, 1)
	assert.Regexp(t, `^rolled back web: canary pod web-canary-\w+-\w+ failed \(container app: containerFailed, exit code 1\) at step 1 \(5%\); the stable version serves all 4 pods and web holds the failed revision `+out.CanaryRevision+`, paused: apply the stable manifest or kubectl fledge undo web to go back, kubectl fledge retry web to try it again$`, msgs[0])
}

func TestRevertMidRolloutAborts(t *testing.T) {
	ns := rolloutNamespace(t, "router-revert", "30s", 4)
	release(t, ns, "v2", 4)
	waitState(t, ns, "the canary holding", func(s *rollout.State) bool { return s.HoldingSince != nil })

	warnings := release(t, ns, "v1", 4)
	assert.Contains(t, warnings, "fledge: rollout of web aborted: the template is back to the stable version")
	out := waitOutcome(t, ns)
	assert.Equal(t, rollout.Aborted, out.Phase)
	assert.Equal(t, "aborted by user", out.Reason.Message)
	canaryGone(t, ns)
	d := get(t, ns, "web")
	assert.False(t, d.Spec.Paused)
	assert.Equal(t, map[string]int32{"fledge/demo:v1": 4}, stableRS(t, ns))
}

func TestNewRevisionMidRolloutSupersedes(t *testing.T) {
	ns := rolloutNamespace(t, "router-supersede", "30s", 4)
	release(t, ns, "v2", 4)
	first := waitState(t, ns, "the canary holding", func(s *rollout.State) bool { return s.HoldingSince != nil })

	warnings := release(t, ns, "v4", 4)
	assert.Contains(t, warnings, "fledge: a new revision of web supersedes the canary; restarting at step 1")
	s := waitState(t, ns, "v4 holding at step 1", func(s *rollout.State) bool {
		return s.CanaryRevision != first.CanaryRevision && s.HoldingSince != nil
	})
	assert.Equal(t, int32(0), s.Step)
	assert.Equal(t, first.StableRevision, s.StableRevision)
	c, err := theLab.Client.AppsV1().Deployments(ns).Get(t.Context(), "web-canary", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "fledge/demo:v4", c.Spec.Template.Spec.Containers[0].Image)
	eventually(t, "only v4 canary pods", func(ctx context.Context) (bool, error) {
		return assert.ObjectsAreEqual(map[string]int{"fledge/demo:v1": 4, "fledge/demo:v4": 1}, imagesOfPods(t, ns)), nil
	})
}

func TestDeletingTheDeploymentDeletesTheCanary(t *testing.T) {
	ns := rolloutNamespace(t, "router-delete", "30s", 2)
	release(t, ns, "v2", 2)
	waitState(t, ns, "the canary holding", func(s *rollout.State) bool { return s.HoldingSince != nil })

	require.NoError(t, theLab.Client.AppsV1().Deployments(ns).Delete(t.Context(), "web", metav1.DeleteOptions{}))
	eventually(t, "the canary garbage-collected", func(ctx context.Context) (bool, error) {
		_, err := theLab.Client.AppsV1().Deployments(ns).Get(ctx, "web-canary", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}

func TestScalingTheStableDeploymentMovesTheCanary(t *testing.T) {
	ns := rolloutNamespace(t, "router-scale", "60s", 4)
	release(t, ns, "v2", 4)
	waitState(t, ns, "the canary holding", func(s *rollout.State) bool { return s.HoldingSince != nil })
	// The router holds once it sees the canary's pods Ready; the canary
	// Deployment's status says so a moment later.
	eventually(t, "5% of 4: one canary pod", func(ctx context.Context) (bool, error) {
		return canaryReplicas(t, ns) == 1, nil
	})

	_, stderr, err := kubectl(t, "", "scale", "deployment/web", "-n", ns, "--replicas=40")
	require.NoError(t, err, stderr)
	// 5% of 40 stable: c*=2.1 → 2 (4.8%).
	eventually(t, "the canary at 2 pods", func(ctx context.Context) (bool, error) {
		return canaryReplicas(t, ns) == 2, nil
	})
	assert.Equal(t, int32(40), *get(t, ns, "web").Spec.Replicas)
}

func TestManagerRestartResumesTheStep(t *testing.T) {
	ns := rolloutNamespace(t, "router-restart", "8s", 4)
	release(t, ns, "v2", 4)
	before := waitState(t, ns, "step 2 holding", func(s *rollout.State) bool { return s.Step == 1 && s.HoldingSince != nil })

	fledge.Stop()
	time.Sleep(3 * time.Second)
	during, err := rollout.ParseState(get(t, ns, "web"))
	require.NoError(t, err)
	assert.Equal(t, before.Step, during.Step, "nothing moves while the manager is down")

	restarted, err := theLab.StartFledge(t.Context(), fledge.Binary, fledge.Args...)
	require.NoError(t, err)
	fledge = restarted

	out := waitOutcome(t, ns)
	assert.Equal(t, rollout.Succeeded, out.Phase)
	require.Len(t, out.History, 3, "each step exactly once")
	for i, h := range out.History {
		assert.Equal(t, int32(i), h.Step)
	}
	assert.Equal(t, before.History[1].Started, out.History[1].Started, "step 2 was resumed, not restarted")
	assert.GreaterOrEqual(t, out.History[1].Ended.Sub(before.HoldingSince.Time), 8*time.Second, "step 2 held its full 8s")
}

func TestCommandsSteerTheRollout(t *testing.T) {
	ns := rolloutNamespace(t, "router-commands", "2s", 4)
	release(t, ns, "v2", 4)
	waitState(t, ns, "the canary holding", func(s *rollout.State) bool { return s.HoldingSince != nil })

	command := func(cmd string) {
		t.Helper()
		_, stderr, err := kubectl(t, "", "annotate", "deployment/web", "-n", ns, "--overwrite", rollout.AnnotationCommand+"="+cmd)
		require.NoError(t, err, stderr)
		eventually(t, cmd+" consumed", func(ctx context.Context) (bool, error) {
			_, pending := get(t, ns, "web").Annotations[rollout.AnnotationCommand]
			return !pending, nil
		})
	}

	command("pause")
	s := waitState(t, ns, "paused", func(s *rollout.State) bool { return s.Phase == rollout.Paused })
	time.Sleep(3 * time.Second) // longer than the 2s hold
	s2, err := rollout.ParseState(get(t, ns, "web"))
	require.NoError(t, err)
	assert.Equal(t, s.Step, s2.Step, "a paused rollout does not advance")
	assert.Equal(t, rollout.Paused, s2.Phase)

	command("resume")
	waitState(t, ns, "moving again", func(s *rollout.State) bool { return s.Phase == rollout.Progressing })
	command("promote-full")
	out := waitOutcome(t, ns)
	assert.Equal(t, rollout.Succeeded, out.Phase)

	msgs := eventMessages(t, ns, "Command", 3)
	require.Len(t, msgs, 3)
	assert.Regexp(t, `^pause: web holds at step \d \(\d+%\)$`, msgs[0])
	assert.Regexp(t, `^resume: web goes on at step \d \(\d+%\)$`, msgs[1])
	assert.Equal(t, "promote-full: web skips to promotion", msgs[2])
}

func TestShiftKeepsTheTotalAndFollowsAScale(t *testing.T) {
	ns := namespace(t, "router-shift", true)
	_, stderr, err := kubectl(t, lab.Policy{Namespace: ns, Holds: [3]string{"60s", "60s", "60s"}, Capacity: "shift"}.Manifest(), "apply", "-f", "-")
	require.NoError(t, err, stderr)
	deployed(t, ns, "v1", 10)
	release(t, ns, "v2", 10)

	// 5% of 10: one canary pod, and stable gives one up once it is Ready.
	waitState(t, ns, "step 1 holding", func(s *rollout.State) bool { return s.HoldingSince != nil })
	eventually(t, "9 stable + 1 canary", func(ctx context.Context) (bool, error) {
		return assert.ObjectsAreEqual(map[string]int{"stable": 9, "canary": 1}, tracks(t, ns)), nil
	})

	_, stderr, err = kubectl(t, "", "scale", "deployment/web", "-n", ns, "--replicas=20")
	require.NoError(t, err, stderr)
	// The new total is 20: 5% of 20 is 1 canary pod, 19 stable.
	eventually(t, "19 stable + 1 canary", func(ctx context.Context) (bool, error) {
		return assert.ObjectsAreEqual(map[string]int{"stable": 19, "canary": 1}, tracks(t, ns)), nil
	})
	s, err := rollout.ParseState(get(t, ns, "web"))
	require.NoError(t, err)
	assert.Equal(t, int32(20), s.Replicas)
}

func TestSkipDuringARolloutHandsTheDeploymentBack(t *testing.T) {
	ns := rolloutNamespace(t, "router-skip", "60s", 4)
	release(t, ns, "v2", 4)
	waitState(t, ns, "the canary holding", func(s *rollout.State) bool { return s.HoldingSince != nil })

	// The documented bypass, as during a webhook outage: skip, and a new image.
	a := lab.App{Namespace: ns, Tag: "v5", Replicas: 4}.Manifest()
	a = strings.Replace(a, "  name: web\n  namespace: "+ns+"\n", "  name: web\n  namespace: "+ns+"\n  annotations: {fledge.dev/skip: \"true\"}\n", 1)
	_, stderr, err := kubectl(t, a, "apply", "-f", "-")
	require.NoError(t, err, stderr)

	out := waitOutcome(t, ns)
	assert.Equal(t, rollout.Aborted, out.Phase)
	assert.Equal(t, "skip", out.Reason.Check)
	canaryGone(t, ns)
	assert.False(t, get(t, ns, "web").Spec.Paused)
	eventually(t, "v5 rolled out natively", func(ctx context.Context) (bool, error) {
		return assert.ObjectsAreEqual(map[string]int{"fledge/demo:v5": 4}, imagesOfPods(t, ns)), nil
	})
}
