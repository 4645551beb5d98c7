package e2e

// What clusters do to a Deployment while fledge rolls it out
// (docs of ../shared/design/OPERATIONS.md): capacity changes, writers other
// than the user's kubectl apply, traffic paths, and a few small things.
// Each test runs in its own namespace, in parallel with the others but
// after the package's serial tests (one of which restarts the manager).

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/fledge-dev/fledge/rollout"
	"github.com/fledge-dev/fledge/test/lab"
)

// policyNamespace makes an opted-in namespace with policy p (its Namespace
// is set here) and web at v1 with replicas pods.
func policyNamespace(t *testing.T, name string, p lab.Policy, replicas int) string {
	t.Helper()
	ns := namespace(t, name, true)
	p.Namespace = ns
	_, stderr, err := kubectl(t, p.Manifest(), "apply", "-f", "-")
	require.NoError(t, err, stderr)
	deployed(t, ns, "v1", replicas)
	return ns
}

// historyNamespace is policyNamespace with a history: web ran v0, then
// v1, before the namespace opted in, so kubectl rollout undo has a
// revision to go back to.
func historyNamespace(t *testing.T, name string, p lab.Policy, replicas int) string {
	t.Helper()
	ns := namespace(t, name, false)
	p.Namespace = ns
	_, stderr, err := kubectl(t, p.Manifest(), "apply", "-f", "-")
	require.NoError(t, err, stderr)
	deployed(t, ns, "v0", replicas)
	deployed(t, ns, "v1", replicas)
	eventually(t, "only v1 pods", func(ctx context.Context) (bool, error) {
		return assert.ObjectsAreEqual(map[string]int{lab.DemoImage + ":v1": replicas}, imagesOfPods(t, ns)), nil
	})
	_, stderr, err = kubectl(t, "", "label", "namespace", ns, rollout.LabelEnabled+"=true")
	require.NoError(t, err, stderr)
	return ns
}

// deployApp applies a and waits until all its replicas are ready.
func deployApp(t *testing.T, a lab.App) {
	t.Helper()
	_, stderr, err := kubectl(t, a.Manifest(), "apply", "-f", "-")
	require.NoError(t, err, stderr)
	eventually(t, "web ready", func(ctx context.Context) (bool, error) {
		d := get(t, a.Namespace, "web")
		return d.Status.ReadyReplicas == int32(a.Replicas) && d.Status.UpdatedReplicas == int32(a.Replicas), nil
	})
}

// stateOf is web's rollout state now, nil when none runs.
func stateOf(t *testing.T, ns string) *rollout.State {
	t.Helper()
	s, err := rollout.ParseState(get(t, ns, "web"))
	require.NoError(t, err)
	return s
}

// scaleWeb runs kubectl scale on web.
func scaleWeb(t *testing.T, ns string, replicas int) {
	t.Helper()
	_, stderr, err := kubectl(t, "", "scale", "deployment/web", "-n", ns, fmt.Sprintf("--replicas=%d", replicas))
	require.NoError(t, err, stderr)
}

// sleepUntil sleeps until at.
func sleepUntil(at time.Time) {
	time.Sleep(time.Until(at))
}

// canaryOf is web's canary Deployment, nil when there is none.
func canaryOf(t *testing.T, ns string) *appsv1.Deployment {
	t.Helper()
	c, err := theLab.Client.AppsV1().Deployments(ns).Get(t.Context(), rollout.CanaryName("web"), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	require.NoError(t, err)
	return c
}

// waitCanaryAt waits until web's canary wants replicas pods and has that
// many Ready. When it gives up it says what the canary and the rollout
// were doing, so a rollback tells apart from slow pods.
func waitCanaryAt(t *testing.T, ns string, replicas int32) {
	t.Helper()
	var c *appsv1.Deployment
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		c = canaryOf(t, ns)
		return c != nil && ptr.Deref(c.Spec.Replicas, -1) == replicas && c.Status.ReadyReplicas == replicas && c.Status.Replicas == replicas, nil
	})
	if err != nil {
		canary := "no canary"
		if c != nil {
			canary = fmt.Sprintf("canary wants %d, %d Ready", ptr.Deref(c.Spec.Replicas, -1), c.Status.ReadyReplicas)
		}
		d := get(t, ns, "web")
		require.NoError(t, err, "waiting for the canary at %d Ready pods: %s; state %s; last outcome %s",
			replicas, canary, d.Annotations[rollout.AnnotationState], d.Annotations[rollout.AnnotationLast])
	}
}

// eventsNow returns the messages of web's Events with reason right now,
// without waiting: for Events that must not be there.
func eventsNow(t *testing.T, ns, reason string) []string {
	t.Helper()
	list, err := theLab.Client.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.name=web,reason=" + reason})
	require.NoError(t, err)
	var msgs []string
	for _, e := range list.Items {
		msgs = append(msgs, e.Message)
	}
	return msgs
}

// staysFor looks at web every 200ms for d and fails at the first look at
// which ok does not hold.
func staysFor(t *testing.T, ns string, d time.Duration, what string, ok func(*appsv1.Deployment, *rollout.State) bool) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		dep := get(t, ns, "web")
		s, err := rollout.ParseState(dep)
		require.NoError(t, err)
		if !ok(dep, s) {
			o, _ := rollout.ParseOutcome(dep)
			t.Fatalf("%s: not so any more after %.1fs; state %+v; outcome %+v", what, time.Since(start).Seconds(), s, o)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// exitCode is the exit code of a command run by kubectl(): 0 without error.
func exitCode(err error) int {
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.ExitCode()
	}
	return -1
}

// serviceTracks counts the ready endpoints of Service svc by the track of
// their pod (tracks, for any Service).
func serviceTracks(t *testing.T, ns, svc string) map[string]int {
	t.Helper()
	ctx := t.Context()
	slices, err := theLab.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
	require.NoError(t, err)
	pods, err := theLab.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	track := map[string]string{}
	for _, p := range pods.Items {
		track[p.Name] = p.Labels[rollout.LabelTrack]
		if track[p.Name] == "" {
			track[p.Name] = rollout.TrackStable
		}
	}
	counts := map[string]int{}
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			if ptr.Deref(e.Conditions.Ready, false) && e.TargetRef != nil {
				counts[track[e.TargetRef.Name]]++
			}
		}
	}
	return counts
}

// waitSucceeded waits for the rollout's end, requires it Succeeded, and
// waits for the canary's removal.
func waitSucceeded(t *testing.T, ns string) *rollout.Outcome {
	t.Helper()
	out := waitOutcome(t, ns)
	require.Equal(t, rollout.Succeeded, out.Phase, "reason: %+v", out.Reason)
	canaryGone(t, ns)
	return out
}

// onlyPods waits until web's pods (canary pods included) are n of image tag.
func onlyPods(t *testing.T, ns, tag string, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("only %d %s pods", n, tag), func(ctx context.Context) (bool, error) {
		return assert.ObjectsAreEqual(map[string]int{lab.DemoImage + ":" + tag: n}, imagesOfPods(t, ns)), nil
	})
}

// noRollback asserts that web has no RollingBack, RolledBack or Aborted Event.
func noRollback(t *testing.T, ns string) {
	t.Helper()
	for _, reason := range []string{"RollingBack", "RolledBack", "Aborted"} {
		assert.Empty(t, eventsNow(t, ns, reason), "%s Events", reason)
	}
}

// zeroPrometheus serves, for every query, the answer a real Prometheus gave
// to vector(0) (policy/testdata/prometheus): checks on it pass at every
// evaluation. It returns its URL and the number of queries it answered.
func zeroPrometheus(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	body, err := os.ReadFile("../../policy/testdata/prometheus/zero.json")
	require.NoError(t, err)
	var queries atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/query" {
			http.NotFound(w, r)
			return
		}
		queries.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &queries
}

// ---- Capacity changes -----------------------------------------------------

func TestScaleUpAfterReadyTimeoutMovesTheSurgeCanaryWithoutRollback(t *testing.T) {
	t.Parallel()
	ns := policyNamespace(t, "ops-scale-surge", lab.Policy{Holds: [3]string{"2s", "40s", "2s"}, ReadyTimeout: "20s"}, 4)
	release(t, ns, "v2", 4)
	s := waitState(t, ns, "step 2 holding", func(s *rollout.State) bool { return s.Step == 1 && s.HoldingSince != nil })
	waitCanaryAt(t, ns, 1) // 25% of 4 stable: c* = 1.33 → 1

	// More than readyTimeout into the step: a wait counted from the step's
	// start would be over before the new pods could be Ready.
	sleepUntil(s.StepStartedAt.Add(21 * time.Second))
	scaleWeb(t, ns, 12)
	// 25% of 12 stable: c* = 4.
	waitCanaryAt(t, ns, 4)
	s = stateOf(t, ns)
	require.NotNil(t, s, "the rollout goes on")
	assert.Equal(t, int32(1), s.Step)
	assert.Equal(t, rollout.Progressing, s.Phase)

	out := waitSucceeded(t, ns)
	assert.Equal(t, int32(1), out.Attempt)
	require.Len(t, out.History, 3)
	assert.Equal(t, [2]int32{4, 12}, [2]int32{out.History[1].Canary, out.History[1].Stable}, "step 2's record has the counts after the scale")
	assert.Equal(t, [2]int32{12, 12}, [2]int32{out.History[2].Canary, out.History[2].Stable})
	noRollback(t, ns)
	onlyPods(t, ns, "v2", 12)
	logPhases(t, out)
}

func TestScaleUpAfterReadyTimeoutMovesTheShiftCanaryWithoutRollback(t *testing.T) {
	t.Parallel()
	ns := policyNamespace(t, "ops-scale-shift", lab.Policy{Holds: [3]string{"2s", "40s", "2s"}, ReadyTimeout: "20s", Capacity: "shift"}, 4)
	release(t, ns, "v2", 4)
	s := waitState(t, ns, "step 2 holding", func(s *rollout.State) bool { return s.Step == 1 && s.HoldingSince != nil })
	eventually(t, "3 stable + 1 canary", func(ctx context.Context) (bool, error) {
		return assert.ObjectsAreEqual(map[string]int{"stable": 3, "canary": 1}, tracks(t, ns)), nil
	})

	sleepUntil(s.StepStartedAt.Add(21 * time.Second))
	scaleWeb(t, ns, 12)
	// The new total is 12: 25% of 12 is 3 canary pods, 9 stable.
	waitCanaryAt(t, ns, 3)
	eventually(t, "9 stable + 3 canary", func(ctx context.Context) (bool, error) {
		return assert.ObjectsAreEqual(map[string]int{"stable": 9, "canary": 3}, tracks(t, ns)), nil
	})
	s = stateOf(t, ns)
	require.NotNil(t, s, "the rollout goes on")
	assert.Equal(t, int32(1), s.Step)
	assert.Equal(t, int32(12), s.Replicas)
	assert.Equal(t, []string{"web was scaled to 12 replicas: the rollout now shares 12 pods between stable and canary"}, eventMessages(t, ns, "Scaled", 1))

	out := waitSucceeded(t, ns)
	require.Len(t, out.History, 3)
	assert.Equal(t, [2]int32{3, 9}, [2]int32{out.History[1].Canary, out.History[1].Stable}, "step 2's record has the counts after the scale")
	assert.Equal(t, [2]int32{6, 6}, [2]int32{out.History[2].Canary, out.History[2].Stable})
	assert.Equal(t, int32(12), *get(t, ns, "web").Spec.Replicas, "the user's total is back on the Deployment")
	noRollback(t, ns)
	onlyPods(t, ns, "v2", 12)
}

func TestHPAForcingAScaleAfterReadyTimeoutMovesTheCanaryWithoutRollback(t *testing.T) {
	t.Parallel()
	ns := policyNamespace(t, "ops-hpa-scale", lab.Policy{Holds: [3]string{"2s", "40s", "2s"}, ReadyTimeout: "20s"}, 4)
	release(t, ns, "v2", 4)
	s := waitState(t, ns, "step 2 holding", func(s *rollout.State) bool { return s.Step == 1 && s.HoldingSince != nil })

	sleepUntil(s.StepStartedAt.Add(21 * time.Second))
	createHPA(t, ns, 12, 20)
	eventually(t, "the HPA to scale web to 12", func(ctx context.Context) (bool, error) {
		return *get(t, ns, "web").Spec.Replicas == 12, nil
	})
	waitCanaryAt(t, ns, 4)
	s = stateOf(t, ns)
	require.NotNil(t, s, "the rollout goes on")
	assert.Equal(t, int32(1), s.Step)

	out := waitSucceeded(t, ns)
	require.Len(t, out.History, 3)
	assert.Equal(t, [2]int32{4, 12}, [2]int32{out.History[1].Canary, out.History[1].Stable})
	noRollback(t, ns)
	onlyPods(t, ns, "v2", 12)
}

// createHPA makes an HPA of web with these bounds. Without a metrics API
// it only enforces them: below min it scales to min, and stays there.
func createHPA(t *testing.T, ns string, minReplicas, maxReplicas int32) {
	t.Helper()
	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "web"},
			MinReplicas:    ptr.To(minReplicas),
			MaxReplicas:    maxReplicas,
		},
	}
	_, err := theLab.Client.AutoscalingV2().HorizontalPodAutoscalers(ns).Create(t.Context(), hpa, metav1.CreateOptions{})
	require.NoError(t, err)
}

func TestScaleDownMidHoldMovesTheCanaryDown(t *testing.T) {
	t.Parallel()
	ns := policyNamespace(t, "ops-scale-down", lab.Policy{Holds: [3]string{"2s", "20s", "2s"}}, 12)
	release(t, ns, "v2", 12)
	waitState(t, ns, "step 2 holding", func(s *rollout.State) bool { return s.Step == 1 && s.HoldingSince != nil })
	waitCanaryAt(t, ns, 4) // 25% of 12 stable

	scaleWeb(t, ns, 4)
	// 25% of 4 stable: c* = 1.33 → 1.
	waitCanaryAt(t, ns, 1)
	eventually(t, "4 stable + 1 canary", func(ctx context.Context) (bool, error) {
		return assert.ObjectsAreEqual(map[string]int{"stable": 4, "canary": 1}, tracks(t, ns)), nil
	})
	assert.Equal(t, int32(1), stateOf(t, ns).Step)

	out := waitSucceeded(t, ns)
	require.Len(t, out.History, 3)
	assert.Equal(t, [2]int32{1, 4}, [2]int32{out.History[1].Canary, out.History[1].Stable}, "step 2's record has the counts after the scale")
	assert.Equal(t, [2]int32{4, 4}, [2]int32{out.History[2].Canary, out.History[2].Stable})
	noRollback(t, ns)
	onlyPods(t, ns, "v2", 4)
}

func TestScaledToZeroMidRolloutHoldsAndScaledBackFinishes(t *testing.T) {
	t.Parallel()
	ns := rolloutNamespace(t, "ops-scale-zero", "3s", 4)
	release(t, ns, "v2", 4)
	waitState(t, ns, "step 1 holding", func(s *rollout.State) bool { return s.Step == 0 && s.HoldingSince != nil })

	scaleWeb(t, ns, 0)
	const noPods = "web is scaled to 0: no canary pods to judge; the rollout holds until it has replicas again"
	s := waitState(t, ns, "the rollout holding without pods", func(s *rollout.State) bool { return s.Message == noPods })
	assert.Equal(t, []string{noPods}, eventMessages(t, ns, "NoPods", 1))
	eventually(t, "the canary at 0 pods", func(ctx context.Context) (bool, error) {
		c := canaryOf(t, ns)
		return c == nil || (ptr.Deref(c.Spec.Replicas, -1) == 0 && c.Status.Replicas == 0), nil
	})
	// Longer than all three holds: nothing is judged, nothing passes.
	staysFor(t, ns, 12*time.Second, "held at step 1 without pods", func(_ *appsv1.Deployment, cur *rollout.State) bool {
		return cur != nil && cur.Phase == rollout.Progressing && cur.Step == s.Step
	})

	scaleWeb(t, ns, 4)
	out := waitSucceeded(t, ns)
	require.Len(t, out.History, 3)
	noRollback(t, ns)
	onlyPods(t, ns, "v2", 4)
	logPhases(t, out)
}

func TestDeletedCanaryPodIsReplacedAndTheHoldGoesOn(t *testing.T) {
	t.Parallel()
	const hold = 35 * time.Second
	ns := policyNamespace(t, "ops-canary-pod", lab.Policy{Holds: [3]string{"35s", "2s", "2s"}, ReadyTimeout: "20s"}, 4)
	release(t, ns, "v2", 4)
	s := waitState(t, ns, "step 1 holding", func(s *rollout.State) bool { return s.Step == 0 && s.HoldingSince != nil })
	waitCanaryAt(t, ns, 1)

	// Past readyTimeout since the step began, as a node drain may be.
	sleepUntil(s.StepStartedAt.Add(21 * time.Second))
	pods := canaryPodNames(t, ns)
	require.Len(t, pods, 1)
	require.NoError(t, theLab.Client.CoreV1().Pods(ns).Delete(t.Context(), pods[0], metav1.DeleteOptions{}))
	eventually(t, "a new canary pod Ready", func(ctx context.Context) (bool, error) {
		now := canaryPodNames(t, ns)
		return len(now) == 1 && now[0] != pods[0] && canaryOf(t, ns).Status.ReadyReplicas == 1, nil
	})
	s = stateOf(t, ns)
	require.NotNil(t, s, "the rollout goes on")
	assert.Equal(t, int32(0), s.Step)

	out := waitSucceeded(t, ns)
	require.Len(t, out.History, 3)
	held := out.History[0].Ended.Sub(out.History[0].Ready.Time)
	t.Logf("step 1 held %.1fs (hold %s)", held.Seconds(), hold)
	assert.GreaterOrEqual(t, held, hold)
	// The pod went about 20s into the hold: a hold started over would end
	// some 55s after it first began.
	assert.Less(t, held, hold+7*time.Second, "the hold went on after the pod was replaced; it did not start over")
	noRollback(t, ns)
}

// canaryPodNames lists the canary pods not being deleted.
func canaryPodNames(t *testing.T, ns string) []string {
	t.Helper()
	pods, err := theLab.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: rollout.LabelTrack + "=" + rollout.TrackCanary})
	require.NoError(t, err)
	var names []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			names = append(names, p.Name)
		}
	}
	return names
}

func TestDeletedStablePodChangesNothingInTheRollout(t *testing.T) {
	t.Parallel()
	ns := policyNamespace(t, "ops-stable-pod", lab.Policy{Holds: [3]string{"20s", "2s", "2s"}}, 4)
	release(t, ns, "v2", 4)
	waitState(t, ns, "step 1 holding", func(s *rollout.State) bool { return s.Step == 0 && s.HoldingSince != nil })
	waitCanaryAt(t, ns, 1)
	state := get(t, ns, "web").Annotations[rollout.AnnotationState]

	pods, err := theLab.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=web,!" + rollout.LabelTrack})
	require.NoError(t, err)
	require.Len(t, pods.Items, 4)
	gone := pods.Items[0].Name
	require.NoError(t, theLab.Client.CoreV1().Pods(ns).Delete(t.Context(), gone, metav1.DeleteOptions{}))
	eventually(t, "the stable pod replaced", func(ctx context.Context) (bool, error) {
		pods, err := theLab.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web,!" + rollout.LabelTrack})
		if err != nil {
			return false, err
		}
		names := podSet(pods.Items)
		return !names[gone] && len(names) == 4 && tracks(t, ns)["stable"] == 4, nil
	})
	assert.Equal(t, state, get(t, ns, "web").Annotations[rollout.AnnotationState], "the rollout state is untouched")
	assert.Equal(t, int32(1), canaryReplicas(t, ns))

	out := waitSucceeded(t, ns)
	require.Len(t, out.History, 3)
	noRollback(t, ns)
}

func TestRemovedHPALeavesTheRolloutAsItIs(t *testing.T) {
	t.Parallel()
	ns := policyNamespace(t, "ops-hpa-removed", lab.Policy{Holds: [3]string{"2s", "20s", "2s"}}, 4)
	createHPA(t, ns, 6, 10)
	eventually(t, "the HPA to scale web to 6", func(ctx context.Context) (bool, error) {
		d := get(t, ns, "web")
		return *d.Spec.Replicas == 6 && d.Status.ReadyReplicas == 6, nil
	})
	release(t, ns, "v2", 6)
	waitState(t, ns, "step 2 holding", func(s *rollout.State) bool { return s.Step == 1 && s.HoldingSince != nil })
	waitCanaryAt(t, ns, 2) // 25% of 6 stable: c* = 2

	require.NoError(t, theLab.Client.AutoscalingV2().HorizontalPodAutoscalers(ns).Delete(t.Context(), "web", metav1.DeleteOptions{}))
	staysFor(t, ns, 5*time.Second, "step 2 at 6 stable and 2 canary pods", func(d *appsv1.Deployment, s *rollout.State) bool {
		return s != nil && s.Step == 1 && *d.Spec.Replicas == 6 && canaryReplicas(t, ns) == 2
	})

	out := waitSucceeded(t, ns)
	require.Len(t, out.History, 3)
	assert.Equal(t, [2]int32{2, 6}, [2]int32{out.History[1].Canary, out.History[1].Stable})
	assert.Equal(t, int32(6), *get(t, ns, "web").Spec.Replicas)
	noRollback(t, ns)
	onlyPods(t, ns, "v2", 6)
}

// ---- Items 4 and 5 of issue 9 ----------------------------------------------

func TestRolloutStatusIsSteadyDuringACanaryStep(t *testing.T) {
	t.Parallel()
	prom, queries := zeroPrometheus(t)
	ns := policyNamespace(t, "ops-status-steady", lab.Policy{Holds: [3]string{"25s", "2s", "2s"}, PrometheusURL: prom}, 4)
	release(t, ns, "v2", 4)
	waitState(t, ns, "step 1 holding on passing checks", func(s *rollout.State) bool {
		return s.Step == 0 && s.HoldingSince != nil && s.PassedSince != nil
	})
	eventually(t, "the Deployment controller to observe web", func(ctx context.Context) (bool, error) {
		d := get(t, ns, "web")
		return d.Status.ObservedGeneration == d.Generation, nil
	})
	before := queries.Load()

	// The checks run every 2s meanwhile: 4 evaluations or so.
	stdout, stderr, err := kubectl(t, "", "rollout", "status", "deployment/web", "-n", ns, "--timeout=8s")
	assert.Equal(t, 1, exitCode(err), "stdout:\n%s\nstderr:\n%s", stdout, stderr)
	assert.NotContains(t, stdout, "successfully rolled out")
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	for _, l := range lines {
		assert.Equal(t, `Waiting for deployment "web" rollout to finish: 0 out of 4 new replicas have been updated...`, l)
	}
	t.Logf("kubectl rollout status printed %d lines while the checks ran %d times", len(lines), queries.Load()-before)
	assert.GreaterOrEqual(t, queries.Load()-before, int64(3), "the checks ran during the watch")
	assert.Equal(t, int32(0), stateOf(t, ns).Step, "all within step 1")
}

func TestGenerationMovesOnlyOnTransitionsDuringARollout(t *testing.T) {
	t.Parallel()
	prom, queries := zeroPrometheus(t)
	ns := policyNamespace(t, "ops-generation", lab.Policy{Holds: [3]string{"8s", "8s", "8s"}, PrometheusURL: prom}, 4)
	before := get(t, ns, "web").Generation
	generations := watchGenerations(t, ns)

	release(t, ns, "v2", 4)
	out := waitSucceeded(t, ns)
	eventually(t, "v2 rolled out", func(ctx context.Context) (bool, error) {
		d := get(t, ns, "web")
		return d.Status.UpdatedReplicas == 4 && d.Status.ReadyReplicas == 4 && d.Status.Replicas == 4 && d.Status.ObservedGeneration == d.Generation, nil
	})
	time.Sleep(2 * time.Second) // a write after the end counts too
	after := get(t, ns, "web").Generation
	seen := generations()
	moved := after - before
	t.Logf("generation moved %d times during a healthy 3-step rollout (%d → %d; checks evaluated %d times; generations seen: %v)",
		moved, before, after, queries.Load(), seen)
	var later int64
	for _, g := range seen {
		if g > before {
			later++
		}
	}
	assert.Equal(t, moved, later, "the watch saw every generation")
	// The transitions: the apply; per step its start, its canary not yet
	// Ready (a write of its own), Ready, passing checks; the promotion; the
	// outcome. 12 to 14 of them; one write per evaluation made it 21.
	assert.LessOrEqual(t, moved, int64(14), "the generation moves on transitions, not at every evaluation")
	assert.GreaterOrEqual(t, queries.Load(), int64(9), "the checks ran at every interval of the three 8s holds")
	require.Len(t, out.History, 3)
}

// watchGenerations records every metadata.generation web has from now on,
// and returns a function that lists the distinct ones seen so far, in
// order. It logs what each new generation carries, for the reader.
func watchGenerations(t *testing.T, ns string) func() []int64 {
	t.Helper()
	var mu sync.Mutex
	var seen []int64
	record := func(obj any) {
		d, ok := obj.(*appsv1.Deployment)
		if !ok || d.Name != "web" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if n := len(seen); n == 0 || seen[n-1] != d.Generation {
			seen = append(seen, d.Generation)
			t.Logf("generation %d: %s", d.Generation, describe(d))
		}
	}
	f := informers.NewSharedInformerFactoryWithOptions(theLab.Client, 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "metadata.name=web" }))
	inf := f.Apps().V1().Deployments().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: record, UpdateFunc: func(_, obj any) { record(obj) }})
	require.NoError(t, err)
	f.Start(t.Context().Done())
	t.Cleanup(f.Shutdown)
	require.True(t, cache.WaitForCacheSync(t.Context().Done(), inf.HasSynced))
	return func() []int64 {
		mu.Lock()
		defer mu.Unlock()
		return append([]int64(nil), seen...)
	}
}

func TestDeletedStableReplicaSetHoldsTheRollout(t *testing.T) {
	t.Parallel()
	ns := rolloutNamespace(t, "ops-stable-rs", "3s", 4)
	release(t, ns, "v2", 4)
	s := waitState(t, ns, "step 1 holding", func(s *rollout.State) bool { return s.Step == 0 && s.HoldingSince != nil })

	rss, err := theLab.Client.AppsV1().ReplicaSets(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=web,!" + rollout.LabelTrack})
	require.NoError(t, err)
	require.Len(t, rss.Items, 1)
	require.Equal(t, s.StableRevision, rollout.TemplateHash(&rss.Items[0].Spec.Template))
	require.NoError(t, theLab.Client.AppsV1().ReplicaSets(ns).Delete(t.Context(), rss.Items[0].Name, metav1.DeleteOptions{}))

	want := fmt.Sprintf("the stable ReplicaSet of web (revision %s) is gone, so the canary cannot be judged against it and the Deployment controller may run an older revision: the rollout holds; "+
		"to go back, kubectl fledge abort web and apply the stable manifest; to release the new version anyway, kubectl fledge promote --full web", s.StableRevision)
	assert.Equal(t, []string{want}, eventMessages(t, ns, "StableReplicaSetGone", 1))
	waitState(t, ns, "the hold's message", func(s *rollout.State) bool { return s.Message == want })
	// Far longer than the 3s hold, and than all three.
	staysFor(t, ns, 12*time.Second, "held at step 1", func(_ *appsv1.Deployment, cur *rollout.State) bool {
		return cur != nil && cur.Phase == rollout.Progressing && cur.Step == 0
	})
	assert.Len(t, eventsNow(t, ns, "StableReplicaSetGone"), 1, "one Event when the hold began")
}

// describe says in one line what a Deployment's rollout looks like.
func describe(d *appsv1.Deployment) string {
	s, _ := rollout.ParseState(d)
	o, _ := rollout.ParseOutcome(d)
	desc := fmt.Sprintf("paused=%t image=%s", d.Spec.Paused, d.Spec.Template.Spec.Containers[0].Image)
	if s != nil {
		desc += fmt.Sprintf(" %s step=%d holding=%t stalled=%t passed=%t notReady=%t message=%q",
			s.Phase, s.Step, s.HoldingSince != nil, s.StalledSince != nil, s.PassedSince != nil, s.NotReadySince != nil, s.Message)
	}
	if o != nil {
		desc += " outcome=" + string(o.Phase)
	}
	if r := d.Annotations["deployment.kubernetes.io/revision"]; r != "" {
		desc += " revision=" + r
	}
	return desc
}

// ---- Writers other than the user's kubectl apply --------------------------

// deploymentOnly is the Deployment of an App manifest, without its Service.
func deploymentOnly(manifest string) string {
	d, _, _ := strings.Cut(manifest, "\n---\n")
	return d + "\n"
}

func TestReappliedManifestDuringARolloutChangesNothing(t *testing.T) {
	t.Parallel()
	ns := policyNamespace(t, "ops-reapply", lab.Policy{Holds: [3]string{"40s", "2s", "2s"}}, 4)
	manifest := app(ns, "v2", 4)
	_, stderr, err := kubectl(t, manifest, "apply", "-f", "-")
	require.NoError(t, err, stderr)
	waitState(t, ns, "step 1 holding", func(s *rollout.State) bool { return s.Step == 0 && s.HoldingSince != nil })
	waitCanaryAt(t, ns, 1)
	state := get(t, ns, "web").Annotations[rollout.AnnotationState]
	canary := canaryOf(t, ns)
	pods := canaryPodNames(t, ns)

	unchanged := func(how string) {
		t.Helper()
		d := get(t, ns, "web")
		assert.True(t, d.Spec.Paused, "%s: still paused", how)
		assert.Equal(t, state, d.Annotations[rollout.AnnotationState], "%s: same rollout, step and attempt", how)
		c := canaryOf(t, ns)
		require.NotNil(t, c, how)
		assert.Equal(t, canary.UID, c.UID, "%s: the same canary", how)
		assert.Equal(t, rollout.TemplateHash(&canary.Spec.Template), rollout.TemplateHash(&c.Spec.Template), "%s: the same canary template", how)
		assert.Equal(t, pods, canaryPodNames(t, ns), "%s: the same canary pods", how)
	}

	stdout, stderr, err := kubectl(t, manifest, "apply", "-f", "-")
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, "deployment.apps/web unchanged")
	unchanged("client-side apply")

	_, stderr, err = kubectl(t, manifest, "apply", "--server-side", "--field-manager=argocd", "--force-conflicts", "-f", "-")
	require.NoError(t, err, stderr)
	time.Sleep(time.Second) // a router woken by the write has looked
	unchanged("server-side apply by argocd")

	_, stderr, err = kubectl(t, deploymentOnly(manifest), "replace", "-f", "-")
	require.NoError(t, err, stderr)
	time.Sleep(time.Second)
	unchanged("kubectl replace")

	out := waitSucceeded(t, ns)
	assert.Equal(t, int32(1), out.Attempt)
	require.Len(t, out.History, 3)
	noRollback(t, ns)
}

func TestKubectlRolloutCommandsDuringARolloutLeaveItRunning(t *testing.T) {
	t.Parallel()
	ns := historyNamespace(t, "ops-kubectl-rollout", lab.Policy{Holds: [3]string{"60s", "2s", "2s"}}, 4)
	release(t, ns, "v2", 4)
	first := waitState(t, ns, "step 1 holding", func(s *rollout.State) bool { return s.Step == 0 && s.HoldingSince != nil })
	canary := canaryOf(t, ns)

	same := func(how string) {
		t.Helper()
		d := get(t, ns, "web")
		assert.True(t, d.Spec.Paused, "%s: still paused", how)
		s, err := rollout.ParseState(d)
		require.NoError(t, err)
		require.NotNil(t, s, "%s: the rollout goes on", how)
		assert.Equal(t, [4]any{first.Attempt, first.Step, first.StableRevision, first.CanaryRevision},
			[4]any{s.Attempt, s.Step, s.StableRevision, s.CanaryRevision}, "%s: same attempt, step and revisions", how)
		assert.Equal(t, rollout.Progressing, s.Phase, how)
		c := canaryOf(t, ns)
		require.NotNil(t, c, how)
		assert.Equal(t, canary.UID, c.UID, "%s: the same canary", how)
	}

	// kubectl refuses to restart a paused Deployment; a tool that restarts
	// by writing kubectl's annotation itself is no release.
	_, stderr, err := kubectl(t, "", "rollout", "restart", "deployment/web", "-n", ns)
	assert.Equal(t, 1, exitCode(err), stderr)
	assert.Contains(t, stderr, `can't restart paused deployment (run rollout resume first)`)
	same("rollout restart")
	_, stderr, err = kubectl(t, "", "patch", "deployment/web", "-n", ns, "--type=strategic", "-p", restartPatch())
	require.NoError(t, err, stderr)
	assert.Contains(t, get(t, ns, "web").Spec.Template.Annotations, rollout.AnnotationRestartedAt)
	time.Sleep(time.Second)
	same("a restart by patch")

	_, stderr, err = kubectl(t, "", "rollout", "pause", "deployment/web", "-n", ns)
	assert.Equal(t, 1, exitCode(err), stderr)
	assert.Contains(t, stderr, "is already paused")
	same("rollout pause")

	_, stderr, err = kubectl(t, "", "rollout", "resume", "deployment/web", "-n", ns)
	require.NoError(t, err, stderr)
	assert.Contains(t, stderr, "Warning: fledge: web stays paused while its rollout runs")
	same("rollout resume")

	_, stderr, err = kubectl(t, "", "rollout", "undo", "deployment/web", "-n", ns)
	assert.Equal(t, 1, exitCode(err), stderr)
	assert.Contains(t, stderr, "you cannot rollback a paused deployment")
	same("rollout undo")

	_, stderr, code := kubectlFledge(t, "promote", "--full", "web", "-n", ns)
	require.Equal(t, 0, code, stderr)
	out := waitSucceeded(t, ns)
	assert.Equal(t, first.Attempt, out.Attempt)
	onlyPods(t, ns, "v2", 4)
	assert.Contains(t, get(t, ns, "web").Spec.Template.Annotations, rollout.AnnotationRestartedAt, "the restart is in the promoted template")
	noRollback(t, ns)
}

func TestSetImageDuringARolloutSupersedesWithANewAttempt(t *testing.T) {
	t.Parallel()
	ns := policyNamespace(t, "ops-set-image", lab.Policy{Holds: [3]string{"60s", "2s", "2s"}}, 4)
	release(t, ns, "v2", 4)
	first := waitState(t, ns, "step 1 holding", func(s *rollout.State) bool { return s.Step == 0 && s.HoldingSince != nil })
	require.Equal(t, int32(1), first.Attempt)

	_, stderr, err := kubectl(t, "", "set", "image", "deployment/web", "-n", ns, "app="+lab.DemoImage+":v4")
	require.NoError(t, err, stderr)
	assert.Contains(t, stderr, "fledge: a new revision of web supersedes the canary; restarting at step 1")
	s := waitState(t, ns, "v4 at step 1", func(s *rollout.State) bool { return s.CanaryRevision != first.CanaryRevision })
	assert.Equal(t, int32(0), s.Step)
	assert.Equal(t, first.StableRevision, s.StableRevision)
	assert.Equal(t, first.Attempt+1, s.Attempt, "a new revision is a new attempt")
	assert.Equal(t, rollout.TemplateHash(&get(t, ns, "web").Spec.Template), s.CanaryRevision)
	eventually(t, "only v4 canary pods of attempt 2", func(ctx context.Context) (bool, error) {
		pods, err := theLab.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: rollout.LabelTrack + "=" + rollout.TrackCanary})
		if err != nil {
			return false, err
		}
		live := 0
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			live++
			if p.Spec.Containers[0].Image != lab.DemoImage+":v4" || p.Labels[rollout.LabelAttempt] != "2" {
				return false, nil
			}
		}
		return live == 1, nil
	})

	_, stderr, code := kubectlFledge(t, "promote", "--full", "web", "-n", ns)
	require.Equal(t, 0, code, stderr)
	out := waitSucceeded(t, ns)
	assert.Equal(t, int32(2), out.Attempt)
	onlyPods(t, ns, "v4", 4)
}

// restartPatch is the patch `kubectl rollout restart` sends.
func restartPatch() string {
	return fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{%q:%q}}}}}`, rollout.AnnotationRestartedAt, time.Now().Format(time.RFC3339))
}

// ---- Traffic paths --------------------------------------------------------

// versioned is web at tag whose pods carry version: tag, behind a Service
// that selects version: v1 as well as app: web.
func versioned(ns, tag string) lab.App {
	return lab.App{Namespace: ns, Tag: tag, Replicas: 4, PodLabels: map[string]string{"version": tag}, ServiceSelector: map[string]string{"version": "v1"}}
}

func TestServiceSelectingTheOldVersionHoldsTheRolloutUntilForced(t *testing.T) {
	t.Parallel()
	ns := namespace(t, "ops-service-version", true)
	_, stderr, err := kubectl(t, lab.Policy{Namespace: ns, Holds: [3]string{"3s", "3s", "3s"}}.Manifest(), "apply", "-f", "-")
	require.NoError(t, err, stderr)
	deployApp(t, versioned(ns, "v1"))

	const gap = "Service web selects version=v1 (canary pods: version=v2): it sends the canary no traffic and would have no endpoints after the promotion; remove version from its selector so that it selects both versions"
	_, stderr, err = kubectl(t, versioned(ns, "v2").Manifest(), "apply", "-f", "-")
	require.NoError(t, err, stderr)
	assert.Contains(t, stderr, "Warning: fledge: "+gap, "kubectl apply warns, naming the Service and the key")

	want := gap + "; the rollout holds until it does (kubectl fledge diagnose web)"
	waitState(t, ns, "the rollout holding on the Service", func(s *rollout.State) bool { return s.Message == want })
	assert.Equal(t, []string{want}, eventMessages(t, ns, "ServiceMissesCanary", 1))
	eventually(t, "web sending to the 4 stable pods only", func(ctx context.Context) (bool, error) {
		return assert.ObjectsAreEqual(map[string]int{"stable": 4}, serviceTracks(t, ns, "web")), nil
	})
	// Longer than all three holds together.
	staysFor(t, ns, 12*time.Second, "held at step 1", func(_ *appsv1.Deployment, s *rollout.State) bool {
		return s != nil && s.Phase == rollout.Progressing && s.Step == 0
	})

	stdout, stderr, code := kubectlFledge(t, "promote", "--full", "web", "-n", ns)
	assert.Equal(t, 1, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
	assert.Contains(t, stderr, gap)
	assert.Contains(t, stderr, "--force")
	d := get(t, ns, "web")
	assert.NotContains(t, d.Annotations, rollout.AnnotationCommand, "no command was sent")
	s, err := rollout.ParseState(d)
	require.NoError(t, err)
	require.NotNil(t, s)
	assert.Equal(t, [2]any{rollout.Progressing, int32(0)}, [2]any{s.Phase, s.Step})

	_, stderr, code = kubectlFledge(t, "promote", "--full", "--force", "web", "-n", ns)
	require.Equal(t, 0, code, stderr)
	waitSucceeded(t, ns)
	onlyPods(t, ns, "v2", 4)
	eventually(t, "web without endpoints, as forced", func(ctx context.Context) (bool, error) {
		return len(serviceTracks(t, ns, "web")) == 0, nil
	})
}

func TestTwoServicesSelectingTheSamePodsBothSendTheCanaryItsShare(t *testing.T) {
	t.Parallel()
	ns := rolloutNamespace(t, "ops-two-services", "3s", 4)
	_, stderr, err := kubectl(t, fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: web-internal
  namespace: %s
spec:
  selector: {app: web}
  ports:
  - port: 8080
`, ns), "apply", "-f", "-")
	require.NoError(t, err, stderr)

	warnings := release(t, ns, "v2", 4)
	assert.NotContains(t, warnings, "Service")
	waitState(t, ns, "step 1 holding", func(s *rollout.State) bool { return s.Step == 0 && s.HoldingSince != nil })
	for _, svc := range []string{"web", "web-internal"} {
		eventually(t, svc+" sending to 4 stable and 1 canary pods", func(ctx context.Context) (bool, error) {
			return assert.ObjectsAreEqual(map[string]int{"stable": 4, "canary": 1}, serviceTracks(t, ns, svc)), nil
		})
	}
	out := waitSucceeded(t, ns)
	require.Len(t, out.History, 3)
	assert.Empty(t, eventsNow(t, ns, "ServiceMissesCanary"))
}

func TestServiceSelectingOnlyTheCanaryDoesNotHoldTheRollout(t *testing.T) {
	t.Parallel()
	ns := rolloutNamespace(t, "ops-canary-service", "3s", 4)
	_, stderr, err := kubectl(t, fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: web-preview
  namespace: %s
spec:
  selector: {app: web, fledge.dev/track: canary}
  ports:
  - port: 8080
`, ns), "apply", "-f", "-")
	require.NoError(t, err, stderr)

	warnings := release(t, ns, "v2", 4)
	assert.NotContains(t, warnings, "Service")
	waitState(t, ns, "step 1 holding", func(s *rollout.State) bool { return s.Step == 0 && s.HoldingSince != nil })
	eventually(t, "web-preview sending to the canary only", func(ctx context.Context) (bool, error) {
		return assert.ObjectsAreEqual(map[string]int{"canary": 1}, serviceTracks(t, ns, "web-preview")), nil
	})
	out := waitSucceeded(t, ns)
	require.Len(t, out.History, 3)
	assert.Empty(t, eventsNow(t, ns, "ServiceMissesCanary"))
}

// ---- Small things ---------------------------------------------------------

// Serial: it measures how soon the router reacts.
func TestNamespaceLabelAddedBackResumesTheRolloutAtOnce(t *testing.T) {
	ns := rolloutNamespace(t, "ops-ns-label", "3s", 4)
	release(t, ns, "v2", 4)
	waitState(t, ns, "step 1 holding", func(s *rollout.State) bool { return s.Step == 0 && s.HoldingSince != nil })

	_, stderr, err := kubectl(t, "", "label", "namespace", ns, rollout.LabelEnabled+"-")
	require.NoError(t, err, stderr)
	// The router leaves a namespace that opted out alone: step 1 stays
	// well past its 3s hold.
	staysFor(t, ns, 6*time.Second, "step 1 while opted out", func(_ *appsv1.Deployment, s *rollout.State) bool {
		return s != nil && s.Step == 0
	})

	_, stderr, err = kubectl(t, "", "label", "namespace", ns, rollout.LabelEnabled+"=true")
	require.NoError(t, err, stderr)
	labelled := time.Now()
	waitState(t, ns, "step 2", func(s *rollout.State) bool { return s.Step == 1 })
	resumed := time.Since(labelled)
	t.Logf("the rollout went on %.2fs after the label was back", resumed.Seconds())
	assert.Less(t, resumed, 3*time.Second, "the router watches Namespaces; it does not wait for a requeue")
	waitSucceeded(t, ns)
}

func TestHandDeletedCanaryIsRecreatedAndItsAbsenceDoesNotCountTowardTheHold(t *testing.T) {
	t.Parallel()
	canaryDeleted(t, "ops-canary-deleted", false)
}

// The foreground deletion (kubectl delete --cascade=foreground, or a
// GitOps prune) takes the canary's pods first, so the canary is still there,
// being deleted, while nothing serves.
func TestCanaryDeletedInTheForegroundIsRecreatedAndTheWaitDoesNotCountTowardTheHold(t *testing.T) {
	t.Parallel()
	canaryDeleted(t, "ops-canary-foreground", true)
}

// canaryDeleted deletes the canary of a holding step 1 (20s hold) by hand
// and checks that it is re-created with one Event, that the rollout goes
// on, and that the time without a serving canary was added to the hold.
func canaryDeleted(t *testing.T, name string, foreground bool) {
	const hold = 20 * time.Second
	ns := policyNamespace(t, name, lab.Policy{Holds: [3]string{"20s", "2s", "2s"}}, 4)
	release(t, ns, "v2", 4)
	waitState(t, ns, "step 1 holding", func(s *rollout.State) bool { return s.Step == 0 && s.HoldingSince != nil })
	waitCanaryAt(t, ns, 1)
	old := canaryOf(t, ns)

	opts := metav1.DeleteOptions{}
	unblock := func() {}
	if foreground {
		pods := canaryPodNames(t, ns)
		require.Len(t, pods, 1)
		// A finalizer on its pod keeps the canary in deletion until the
		// test lets it go.
		const finalizer = "lab.fledge.dev/hold"
		_, err := theLab.Client.CoreV1().Pods(ns).Patch(t.Context(), pods[0], types.MergePatchType,
			[]byte(fmt.Sprintf(`{"metadata":{"finalizers":[%q]}}`, finalizer)), metav1.PatchOptions{})
		require.NoError(t, err)
		unblock = func() {
			_, _ = theLab.Client.CoreV1().Pods(ns).Patch(context.WithoutCancel(t.Context()), pods[0], types.MergePatchType,
				[]byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
		}
		t.Cleanup(unblock)
		opts.PropagationPolicy = ptr.To(metav1.DeletePropagationForeground)
	}
	deleted := time.Now()
	require.NoError(t, theLab.Client.AppsV1().Deployments(ns).Delete(t.Context(), old.Name, opts))
	if foreground {
		staysFor(t, ns, 5*time.Second, "step 1 while the canary is being deleted", func(_ *appsv1.Deployment, s *rollout.State) bool {
			return s != nil && s.Phase == rollout.Progressing && s.Step == 0
		})
		t.Logf("while the canary was being deleted: %q", stateOf(t, ns).Message)
		unblock()
	}
	eventually(t, "a new canary with 1 Ready pod", func(ctx context.Context) (bool, error) {
		c := canaryOf(t, ns)
		return c != nil && c.UID != old.UID && c.Status.ReadyReplicas == 1, nil
	})
	without := time.Since(deleted)
	assert.Equal(t, []string{"canary web-canary was deleted; re-creating it with 1 pods: the time without it does not count toward the hold"},
		eventMessages(t, ns, "CanaryRecreated", 1))
	s := stateOf(t, ns)
	require.NotNil(t, s)
	assert.Equal(t, int32(0), s.Step)

	out := waitSucceeded(t, ns)
	require.Len(t, out.History, 3)
	held := out.History[0].Ended.Sub(out.History[0].Ready.Time)
	t.Logf("step 1 held %.1fs: hold %s, %.1fs without a serving canary", held.Seconds(), hold, without.Seconds())
	// without is measured to the canary Deployment's status, which lags
	// the pods the router reads by up to a second or so.
	assert.GreaterOrEqual(t, held, hold+without-1500*time.Millisecond, "the time without a serving canary was added to the hold")
	noRollback(t, ns)
}

func TestStatusInANamespaceNotOptedInSaysSo(t *testing.T) {
	t.Parallel()
	ns := namespace(t, "ops-status-not-opted-in", false)
	deployed(t, ns, "v1", 2)

	stdout, stderr, code := kubectlFledge(t, "status", "web", "-n", ns)
	t.Logf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	said := strings.ToLower(stdout + stderr)
	assert.Contains(t, said, fmt.Sprintf("namespace %s is not labelled %s=true", ns, rollout.LabelEnabled))
	assert.Contains(t, said, fmt.Sprintf("kubectl label namespace %s %s=true", ns, rollout.LabelEnabled))
}

// podSet is the set of names of pods.
func podSet(pods []corev1.Pod) map[string]bool {
	out := map[string]bool{}
	for _, p := range pods {
		out[p.Name] = true
	}
	return out
}
