package e2e

// A rollout that fails leaves the Deployment holding the failed revision
// (ARCHITECTURE.md, "Rollback"): paused on the applied template, its stable
// ReplicaSet serving every pod, until a person or git applies another
// template, undoes or retries.

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/fledge-dev/fledge/rollout"
	"github.com/fledge-dev/fledge/test/lab"
)

// crashingApp is web at v3 whose pods crash (the manifest release applies
// for release(t, ns, "v3", replicas, crashing)).
func crashingApp(ns string, replicas int) string {
	k, v, _ := strings.Cut(crashing, "=")
	return lab.App{Namespace: ns, Tag: "v3", Replicas: replicas, PodLabels: map[string]string{k: v}}.Manifest()
}

// crashAndHold releases the crashing v3 into ns, where web runs v1 with
// replicas pods, waits for the rollback and checks that web holds the
// failed revision. It returns the outcome.
func crashAndHold(t *testing.T, ns string, replicas int) *rollout.Outcome {
	t.Helper()
	_, stderr, err := kubectl(t, crashingApp(ns, replicas), "apply", "-f", "-")
	require.NoError(t, err, stderr)
	out := waitOutcome(t, ns)
	require.Equal(t, rollout.RolledBack, out.Phase, "reason: %+v", out.Reason)
	canaryGone(t, ns)
	d := get(t, ns, "web")
	require.True(t, d.Spec.Paused, "web holds the failed revision: paused")
	require.Equal(t, out.CanaryRevision, rollout.TemplateHash(&d.Spec.Template), "on the template that was applied")
	eventually(t, "the stable ReplicaSet serving every pod", func(ctx context.Context) (bool, error) {
		return assert.ObjectsAreEqual(map[string]int32{lab.DemoImage + ":v1": int32(replicas)}, stableRS(t, ns)) &&
			assert.ObjectsAreEqual(map[string]int{lab.DemoImage + ":v1": replicas}, imagesOfPods(t, ns)), nil
	})
	return out
}

// stillHeld checks for a few seconds that web still holds the failed
// revision of out, exactly as it was: no rollout, the same outcome, no
// canary, paused on that template, the stable ReplicaSet at replicas.
func stillHeld(t *testing.T, ns string, out *rollout.Outcome, replicas int, how string) {
	t.Helper()
	last := get(t, ns, "web").Annotations[rollout.AnnotationLast]
	staysFor(t, ns, 3*time.Second, how+": web still holds the failed revision", func(d *appsv1.Deployment, s *rollout.State) bool {
		o, err := rollout.ParseOutcome(d)
		return s == nil && err == nil && o != nil && o.Attempt == out.Attempt && o.FinishedAt.Equal(&out.FinishedAt) &&
			d.Annotations[rollout.AnnotationLast] == last && d.Spec.Paused &&
			rollout.TemplateHash(&d.Spec.Template) == out.CanaryRevision && canaryReplicas(t, ns) == -1
	})
	assert.Equal(t, map[string]int32{lab.DemoImage + ":v1": int32(replicas)}, stableRS(t, ns), "%s: the stable ReplicaSet at full size", how)
	assert.Equal(t, int32(replicas), get(t, ns, "web").Status.ReadyReplicas, "%s: every pod Ready", how)
}

// heldWarning is what the webhook says to a write that re-applies the held
// revision of out.
func assertHeldWarning(t *testing.T, stderr string, out *rollout.Outcome, how string) {
	t.Helper()
	assert.Regexp(t, regexp.QuoteMeta("Warning: fledge: web holds revision "+out.CanaryRevision+", rolled back at ")+`\S+ \(`+regexp.QuoteMeta(out.Reason.Message)+`.*\): `+
		regexp.QuoteMeta("applying it again releases nothing; web stays paused and the stable revision "+out.StableRevision+" serves. "+
			"To release it again: kubectl fledge retry web; to go back: kubectl fledge undo web, or apply the stable manifest"), stderr, how)
}

func TestRolledBackReleaseHoldsTheFailedRevision(t *testing.T) {
	t.Parallel()
	ns := rolloutNamespace(t, "held-crash", "3s", 4)
	v1 := rollout.TemplateHash(&get(t, ns, "web").Spec.Template)
	out := crashAndHold(t, ns, 4)

	assert.Equal(t, int32(1), out.Attempt)
	assert.Equal(t, v1, out.StableRevision)
	require.NotNil(t, out.Reason)
	assert.Equal(t, "pod-failed", out.Reason.Check)
	d := get(t, ns, "web")
	assert.Equal(t, lab.DemoImage+":v3", d.Spec.Template.Spec.Containers[0].Image, "the applied template stays: git and cluster agree")
	k, v, _ := strings.Cut(crashing, "=")
	assert.Equal(t, v, d.Spec.Template.Labels[k])
	assert.NotContains(t, d.Annotations, rollout.AnnotationState)
	msgs := eventMessages(t, ns, "RolledBack", 1)
	require.Len(t, msgs, 1)
	assert.Regexp(t, `^rolled back web: canary pod web-canary-\w+-\w+ failed \(container app: containerFailed, exit code 1\) at step 1 \(5%\)`, msgs[0])

	// A paused Deployment still scales: the stable ReplicaSet follows.
	scaleWeb(t, ns, 6)
	eventually(t, "the stable ReplicaSet at 6", func(ctx context.Context) (bool, error) {
		return assert.ObjectsAreEqual(map[string]int32{lab.DemoImage + ":v1": 6}, stableRS(t, ns)) && get(t, ns, "web").Status.ReadyReplicas == 6, nil
	})
	stillHeld(t, ns, out, 6, "kubectl scale")
}

func TestReapplyingAHeldRevisionChangesNothing(t *testing.T) {
	t.Parallel()
	ns := rolloutNamespace(t, "held-reapply", "3s", 4)
	out := crashAndHold(t, ns, 4)
	manifest := crashingApp(ns, 4)

	stdout, stderr, err := kubectl(t, manifest, "apply", "-f", "-")
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, "deployment.apps/web unchanged", "client-side apply sends nothing")
	stillHeld(t, ns, out, 4, "client-side apply")

	_, stderr, err = kubectl(t, manifest, "apply", "--server-side", "--field-manager=argocd", "--force-conflicts", "-f", "-")
	require.NoError(t, err, stderr)
	assertHeldWarning(t, stderr, out, "server-side apply")
	stillHeld(t, ns, out, 4, "server-side apply by argocd")

	_, stderr, err = kubectl(t, deploymentOnly(manifest), "replace", "-f", "-")
	require.NoError(t, err, stderr)
	assertHeldWarning(t, stderr, out, "kubectl replace")
	stillHeld(t, ns, out, 4, "kubectl replace")
}

// canaryPodsSeen records every canary pod of a namespace: its attempt label
// and its ReplicaSet, even of pods deleted a moment after they were made.
type canaryPodsSeen struct {
	mu       sync.Mutex
	attempts map[string]string // pod name → attempt label
	sets     map[string]string // pod name → ReplicaSet
}

func watchCanaryPods(t *testing.T, ns string) *canaryPodsSeen {
	t.Helper()
	seen := &canaryPodsSeen{attempts: map[string]string{}, sets: map[string]string{}}
	record := func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		seen.mu.Lock()
		defer seen.mu.Unlock()
		seen.attempts[p.Name] = p.Labels[rollout.LabelAttempt]
		if owner := metav1.GetControllerOf(p); owner != nil {
			seen.sets[p.Name] = owner.Name
		}
	}
	f := informers.NewSharedInformerFactoryWithOptions(theLab.Client, 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = rollout.LabelTrack + "=" + rollout.TrackCanary }))
	inf := f.Core().V1().Pods().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: record, UpdateFunc: func(_, obj any) { record(obj) }})
	require.NoError(t, err)
	f.Start(t.Context().Done())
	t.Cleanup(f.Shutdown)
	require.True(t, cache.WaitForCacheSync(t.Context().Done(), inf.HasSynced))
	return seen
}

// byAttempt returns the ReplicaSets of the canary pods seen, by attempt label.
func (s *canaryPodsSeen) byAttempt() map[string][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]string{}
	for pod, a := range s.attempts {
		if rs := s.sets[pod]; !slices.Contains(out[a], rs) {
			out[a] = append(out[a], rs)
		}
	}
	return out
}

func TestRetryStartsAFreshAttemptJudgedOnItsOwnPods(t *testing.T) {
	t.Parallel()
	ns := rolloutNamespace(t, "held-retry", "3s", 4)
	seen := watchCanaryPods(t, ns)
	first := crashAndHold(t, ns, 4)
	require.Equal(t, int32(1), first.Attempt)

	stdout, stderr, code := kubectlFledge(t, "retry", "web", "-n", ns)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
	var second *rollout.Outcome
	eventually90(t, "attempt 2 to end", func(ctx context.Context) (bool, error) {
		d := get(t, ns, "web")
		o, err := rollout.ParseOutcome(d)
		second = o
		return d.Annotations[rollout.AnnotationState] == "" && o != nil && o.Attempt == 2, err
	})
	assert.Equal(t, rollout.RolledBack, second.Phase, "the same crashing revision fails again")
	assert.Equal(t, first.CanaryRevision, second.CanaryRevision, "a retry releases the same revision")
	assert.Equal(t, first.StableRevision, second.StableRevision)
	assert.NotContains(t, get(t, ns, "web").Annotations, rollout.AnnotationCommand, "the webhook took the command")
	canaryGone(t, ns)

	sets := seen.byAttempt()
	t.Logf("canary ReplicaSets by attempt: %v", sets)
	assert.ElementsMatch(t, []string{"1", "2"}, slices.Collect(maps.Keys(sets)), "every canary pod carries its attempt")
	require.Len(t, sets["1"], 1)
	require.Len(t, sets["2"], 1)
	assert.NotEqual(t, sets["1"][0], sets["2"][0], "each attempt has its own ReplicaSet, so its own pod names and series")

	msgs := eventMessages(t, ns, "RolledBack", 2)
	require.Len(t, msgs, 2)
	m := regexp.MustCompile(`^rolled back web: canary pod (\S+)-\w+ failed `).FindStringSubmatch(msgs[1])
	require.NotNil(t, m, msgs[1])
	assert.Equal(t, sets["2"][0], m[1], "attempt 2 was judged on a pod of its own")
	stillHeld(t, ns, second, 4, "after attempt 2")
}

func TestRetryAfterAFixIsPromoted(t *testing.T) {
	t.Parallel()
	ns := policyNamespace(t, "held-retry-fixed", lab.Policy{Holds: [3]string{"2s", "2s", "2s"}, ReadyTimeout: "10s"}, 4)
	// A quota the stable pods fill: no canary pod can be created.
	quota := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Name: "pods", Namespace: ns},
		Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourcePods: resource.MustParse("4")}},
	}
	_, err := theLab.Client.CoreV1().ResourceQuotas(ns).Create(t.Context(), quota, metav1.CreateOptions{})
	require.NoError(t, err)
	eventually(t, "the quota counting 4 pods", func(ctx context.Context) (bool, error) {
		q, err := theLab.Client.CoreV1().ResourceQuotas(ns).Get(ctx, "pods", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		used := q.Status.Used[corev1.ResourcePods]
		return used.Value() == 4, nil
	})

	release(t, ns, "v2", 4)
	first := waitOutcome(t, ns)
	require.Equal(t, rollout.RolledBack, first.Phase)
	require.NotNil(t, first.Reason)
	assert.Equal(t, "ready-timeout", first.Reason.Check)
	assert.Equal(t, "0 of 1 canary pods Ready after 10s (readyTimeout)", first.Reason.Message)
	canaryGone(t, ns)
	stillHeld(t, ns, first, 4, "after the ready timeout")

	// The fix: room for the canary.
	require.NoError(t, theLab.Client.CoreV1().ResourceQuotas(ns).Delete(t.Context(), "pods", metav1.DeleteOptions{}))
	time.Sleep(time.Second) // the quota admission's cache sees the deletion
	_, stderr, code := kubectlFledge(t, "retry", "web", "-n", ns)
	require.Equal(t, 0, code, stderr)
	var second *rollout.Outcome
	eventually90(t, "attempt 2 to end", func(ctx context.Context) (bool, error) {
		d := get(t, ns, "web")
		o, err := rollout.ParseOutcome(d)
		second = o
		return d.Annotations[rollout.AnnotationState] == "" && o != nil && o.Attempt == 2, err
	})
	assert.Equal(t, rollout.Succeeded, second.Phase, "reason: %+v", second.Reason)
	assert.Equal(t, first.CanaryRevision, second.CanaryRevision)
	require.Len(t, second.History, 3)
	canaryGone(t, ns)
	assert.False(t, get(t, ns, "web").Spec.Paused)
	onlyPods(t, ns, "v2", 4)
}

func TestRolloutStatusNeverReportsAHeldRevisionAsRolledOut(t *testing.T) {
	t.Parallel()
	ns := rolloutNamespace(t, "held-rollout-status", "3s", 4)
	out := crashAndHold(t, ns, 4)

	stdout, stderr, err := kubectl(t, "", "rollout", "status", "deployment/web", "-n", ns, "--timeout=5s")
	assert.Equal(t, 1, exitCode(err), "stdout:\n%s\nstderr:\n%s", stdout, stderr)
	assert.NotContains(t, stdout, "successfully rolled out")
	for _, l := range strings.Split(strings.TrimSuffix(stdout, "\n"), "\n") {
		assert.Equal(t, `Waiting for deployment "web" rollout to finish: 0 out of 4 new replicas have been updated...`, l)
	}
	assert.Contains(t, stderr, "timed out")

	// fledge's own status says what happened.
	stdout, stderr, code := kubectlFledge(t, "status", "web", "-n", ns)
	assert.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
	assert.Regexp(t, `(?m)^Outcome:\s+RolledBack$`, stdout)
	assert.Regexp(t, `(?m)^Holding:\s+revision `+out.CanaryRevision+` `, stdout)
}

func TestKubectlRolloutCommandsOnAHeldRevisionChangeNothing(t *testing.T) {
	t.Parallel()
	ns := historyNamespace(t, "held-kubectl-rollout", lab.Policy{Holds: [3]string{"3s", "3s", "3s"}}, 4)
	out := crashAndHold(t, ns, 4)

	// kubectl refuses to restart a paused Deployment; a tool that restarts
	// by writing the annotation itself gets the held warning.
	_, stderr, err := kubectl(t, "", "rollout", "restart", "deployment/web", "-n", ns)
	assert.Equal(t, 1, exitCode(err), stderr)
	assert.Contains(t, stderr, `can't restart paused deployment (run rollout resume first)`)
	stillHeld(t, ns, out, 4, "rollout restart")
	_, stderr, err = kubectl(t, "", "patch", "deployment/web", "-n", ns, "--type=strategic", "-p", restartPatch())
	require.NoError(t, err, stderr)
	assertHeldWarning(t, stderr, out, "a restart by patch")
	stillHeld(t, ns, out, 4, "a restart by patch")

	_, stderr, err = kubectl(t, "", "rollout", "pause", "deployment/web", "-n", ns)
	assert.Equal(t, 1, exitCode(err), stderr)
	assert.Contains(t, stderr, "is already paused")
	stillHeld(t, ns, out, 4, "rollout pause")

	_, stderr, err = kubectl(t, "", "rollout", "resume", "deployment/web", "-n", ns)
	require.NoError(t, err, stderr)
	assert.Contains(t, stderr, "Warning: fledge: web holds revision "+out.CanaryRevision+", rolled back ", "the resume is undone, and says why")
	stillHeld(t, ns, out, 4, "rollout resume")

	_, stderr, err = kubectl(t, "", "rollout", "undo", "deployment/web", "-n", ns)
	assert.Equal(t, 1, exitCode(err), stderr)
	assert.Contains(t, stderr, "you cannot rollback a paused deployment")
	stillHeld(t, ns, out, 4, "rollout undo")
}

func TestSetImageOnAHeldRevisionStartsANewRolloutFromTheStableRevision(t *testing.T) {
	t.Parallel()
	ns := rolloutNamespace(t, "held-set-image", "60s", 4)
	release(t, ns, "v2", 4)
	waitState(t, ns, "step 1 holding", func(s *rollout.State) bool { return s.HoldingSince != nil })
	_, stderr, code := kubectlFledge(t, "abort", "web", "-n", ns)
	require.Equal(t, 0, code, stderr)
	out := waitOutcome(t, ns)
	require.Equal(t, rollout.Aborted, out.Phase)
	canaryGone(t, ns)
	require.True(t, get(t, ns, "web").Spec.Paused, "an abort holds the revision too")
	stillHeld(t, ns, out, 4, "after the abort")

	_, stderr, err := kubectl(t, "", "set", "image", "deployment/web", "-n", ns, "app="+lab.DemoImage+":v4")
	require.NoError(t, err, stderr)
	s := waitState(t, ns, "the v4 rollout", func(s *rollout.State) bool { return true })
	assert.Equal(t, out.StableRevision, s.StableRevision, "from the stable revision, not from the held one")
	assert.Equal(t, rollout.TemplateHash(&get(t, ns, "web").Spec.Template), s.CanaryRevision)
	assert.Equal(t, out.Attempt+1, s.Attempt)
	assert.Equal(t, [2]any{rollout.Progressing, int32(0)}, [2]any{s.Phase, s.Step})
	waitState(t, ns, "v4 holding", func(s *rollout.State) bool { return s.HoldingSince != nil })
	c := canaryOf(t, ns)
	require.NotNil(t, c)
	assert.Equal(t, lab.DemoImage+":v4", c.Spec.Template.Spec.Containers[0].Image)

	_, stderr, code = kubectlFledge(t, "promote", "--full", "web", "-n", ns)
	require.Equal(t, 0, code, stderr)
	final := waitSucceeded(t, ns)
	assert.Equal(t, out.Attempt+1, final.Attempt)
	onlyPods(t, ns, "v4", 4)
}

func TestFledgeUndoOfAHeldRevisionRestoresTheStableTemplateWithoutTouchingPods(t *testing.T) {
	t.Parallel()
	ns := rolloutNamespace(t, "held-undo", "3s", 4)
	out := crashAndHold(t, ns, 4)
	rssBefore := webReplicaSets(t, ns)
	podsBefore := podUIDs(t, ns)

	stdout, stderr, code := kubectlFledge(t, "undo", "web", "-n", ns)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)

	d := get(t, ns, "web")
	assert.False(t, d.Spec.Paused, "undone: web is no longer paused")
	assert.Equal(t, out.StableRevision, rollout.TemplateHash(&d.Spec.Template), "on the stable template")
	assert.Equal(t, lab.DemoImage+":v1", d.Spec.Template.Spec.Containers[0].Image)
	assert.NotContains(t, d.Annotations, rollout.AnnotationState, "nothing rolls")
	_, stderr, err := kubectl(t, "", "rollout", "status", "deployment/web", "-n", ns, "--timeout=30s")
	require.NoError(t, err, stderr)
	time.Sleep(2 * time.Second) // a ReplicaSet made by mistake would be there by now
	assert.Equal(t, rssBefore, webReplicaSets(t, ns), "no new ReplicaSet: the stable one is adopted as it is")
	assert.Equal(t, map[string]int32{lab.DemoImage + ":v1": 4}, stableRS(t, ns))
	assert.Equal(t, podsBefore, podUIDs(t, ns), "the same pods serve")
	assert.Equal(t, int32(4), get(t, ns, "web").Status.ReadyReplicas)
}

func TestFledgeUndoDuringARolloutAbortsByRevert(t *testing.T) {
	t.Parallel()
	ns := rolloutNamespace(t, "held-undo-live", "60s", 4)
	v1 := rollout.TemplateHash(&get(t, ns, "web").Spec.Template)
	rssBefore := webReplicaSets(t, ns)
	release(t, ns, "v2", 4)
	waitState(t, ns, "step 1 holding", func(s *rollout.State) bool { return s.HoldingSince != nil })

	stdout, stderr, code := kubectlFledge(t, "undo", "web", "-n", ns)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
	out := waitOutcome(t, ns)
	assert.Equal(t, rollout.Aborted, out.Phase)
	canaryGone(t, ns)
	d := get(t, ns, "web")
	assert.False(t, d.Spec.Paused, "a revert unpauses")
	assert.Equal(t, v1, rollout.TemplateHash(&d.Spec.Template))
	assert.Equal(t, rssBefore, webReplicaSets(t, ns))
	assert.Equal(t, map[string]int32{lab.DemoImage + ":v1": 4}, stableRS(t, ns))
}

// webReplicaSets lists the names of web's own ReplicaSets (not its canary's).
func webReplicaSets(t *testing.T, ns string) []string {
	t.Helper()
	rss, err := theLab.Client.AppsV1().ReplicaSets(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=web,!" + rollout.LabelTrack})
	require.NoError(t, err)
	var names []string
	for _, rs := range rss.Items {
		names = append(names, rs.Name)
	}
	slices.Sort(names)
	return names
}

// podUIDs lists the UIDs of web's pods, sorted.
func podUIDs(t *testing.T, ns string) []string {
	t.Helper()
	pods, err := theLab.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=web"})
	require.NoError(t, err)
	var uids []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			uids = append(uids, fmt.Sprint(p.UID))
		}
	}
	slices.Sort(uids)
	return uids
}
