package router

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	"github.com/fledge-dev/fledge/policy"
	"github.com/fledge-dev/fledge/rollout"
)

var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func ago(d time.Duration) *metav1.MicroTime { return ptr.To(metav1.NewMicroTime(now.Add(-d))) }

// web is the stable Deployment: 4 replicas, paused on the new template v2.
func web(replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": "web"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team-a", UID: "uid-web", Generation: 2},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Paused:   true,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "demo:v2"}}},
			},
		},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: replicas, ReadyReplicas: replicas, AvailableReplicas: replicas},
	}
}

// canary is web's canary with replicas pods, ready of them Ready.
func canary(d *appsv1.Deployment, replicas, ready int32) *appsv1.Deployment {
	c := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web-canary", Namespace: "team-a", UID: "uid-canary", Generation: 1}}
	rollout.SetCanarySpec(c, d, 1, replicas)
	c.Status = appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: replicas, UpdatedReplicas: replicas, ReadyReplicas: ready}
	return c
}

// canaryPods are n pods of attempt, ready of them Running and Ready.
func canaryPods(attempt string, n, ready int) []corev1.Pod {
	pods := make([]corev1.Pod, n)
	for i := range pods {
		pods[i] = corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("web-canary-abc-%d", i), Labels: map[string]string{rollout.LabelTrack: rollout.TrackCanary, rollout.LabelAttempt: attempt}},
			Status:     corev1.PodStatus{Phase: corev1.PodPending},
		}
		if i < ready {
			pods[i].Status = corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
		}
	}
	return pods
}

// withPods fills in what a test leaves out: the canary's pods as its
// status counts them, of the current attempt, and the stable pods' labels.
func withPods(o observed) observed {
	if o.CanaryPods == nil && o.Canary != nil {
		o.CanaryPods = canaryPods("1", int(o.Canary.Status.Replicas), int(o.Canary.Status.ReadyReplicas))
	}
	if o.StableLabels == nil && !o.StableGone {
		o.StableLabels = labels.Set{"app": "web"}
	}
	return o
}

// service selects selector.
func service(name string, selector map[string]string) corev1.Service {
	return corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team-a"}, Spec: corev1.ServiceSpec{Selector: selector}}
}

func stableTemplate() *corev1.PodTemplateSpec {
	t := web(4).Spec.Template.DeepCopy()
	t.Spec.Containers[0].Image = "demo:v1"
	return t
}

// state is a rollout of web at step with the default policy.
func state(phase rollout.Phase, step int32) *rollout.State {
	return &rollout.State{
		Phase: phase, Step: step, Attempt: 1,
		StableRevision: rollout.TemplateHash(stableTemplate()),
		CanaryRevision: rollout.TemplateHash(&web(4).Spec.Template),
		Policy:         *policy.Default(),
		PolicySource:   "default",
		StartedAt:      *ago(10 * time.Minute),
	}
}

func withAnalysis(s *rollout.State) *rollout.State {
	s.Policy.Analysis = &policy.Analysis{
		Interval: metav1.Duration{Duration: 10 * time.Second}, FailureLimit: 1, NoDataLimit: 2,
		Prometheus: policy.Prometheus{URL: "http://prometheus:9090"},
		Checks:     []policy.Check{{Name: "error-rate", Query: "q", Max: ptr.To(0.01)}},
	}
	return s
}

// holding puts s at its step with canary pods Ready since d ago.
func holding(s *rollout.State, d time.Duration) *rollout.State {
	s.StepStartedAt = ago(d + 5*time.Second)
	s.HoldingSince = ago(d)
	s.History = append(s.History, rollout.StepRecord{Step: s.Step, Weight: s.Policy.Steps[s.Step].Weight, Started: *s.StepStartedAt})
	return s
}

func result(check string, r policy.Result, value float64) policy.CheckResult {
	return policy.CheckResult{Check: check, Result: r, Value: ptr.To(value), Bound: 0.01, Op: "<=", Reason: "error-rate 0.2 > 0.01"}
}

func events(p planned) []string {
	var out []string
	for _, e := range p.Events {
		out = append(out, e.Type+" "+e.Reason+": "+e.Message)
	}
	return out
}

func TestPlan(t *testing.T) {
	d := web(4)
	tests := []struct {
		name  string
		o     observed
		check func(t *testing.T, p planned)
	}{
		{
			name: "a new rollout starts its first step with the canary at the nearest count",
			o:    observed{Deployment: d, State: state(rollout.Progressing, 0)},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, ptr.To[int32](1), p.CanaryReplicas, "1 of 5 pods: nearest 5% with at least one")
				assert.True(t, p.Paused)
				assert.Equal(t, ago(0), p.State.StepStartedAt)
				assert.Equal(t, []string{"Normal Step: step 1 of 3: web canary at 5% target: 1 canary and 4 stable pods (20.0% effective)"}, events(p))
				assert.Equal(t, 2*time.Second, p.RequeueAfter)
			},
		},
		{
			name: "canary pods not yet Ready: wait, and the readyTimeout starts",
			o: observed{Deployment: d, State: func() *rollout.State {
				s := state(rollout.Progressing, 0)
				s.StepStartedAt = ago(time.Minute)
				return s
			}(), Canary: canary(d, 1, 0)},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, rollout.Progressing, p.State.Phase)
				assert.Nil(t, p.State.HoldingSince)
				assert.Equal(t, ago(0), p.State.NotReadySince)
				assert.Empty(t, p.Events)
				assert.Equal(t, 2*time.Second, p.RequeueAfter)
			},
		},
		{
			name: "canary pods not Ready within readyTimeout: roll back, canary cut first",
			o: observed{Deployment: d, State: func() *rollout.State {
				s := state(rollout.Progressing, 0)
				s.StepStartedAt = ago(5 * time.Minute)
				s.NotReadySince = ago(5 * time.Minute)
				return s
			}(), Canary: canary(d, 1, 0)},
			check: func(t *testing.T, p planned) {
				require.NotNil(t, p.State)
				assert.Equal(t, rollout.RollingBack, p.State.Phase)
				assert.Equal(t, &rollout.Reason{Check: "ready-timeout", Value: ptr.To(0.0), Bound: ptr.To(1.0), Step: 0, Weight: 5, Message: "0 of 1 canary pods Ready after 5m0s (readyTimeout)"}, p.State.Reason)
				assert.Equal(t, ptr.To[int32](0), p.CanaryReplicas)
				assert.True(t, p.Paused)
				assert.Equal(t, []string{"Warning RollingBack: rolling back web: 0 of 1 canary pods Ready after 5m0s (readyTimeout) at step 1 (5%)"}, events(p))
			},
		},
		{
			name: "canary Ready: the hold starts and the step is recorded",
			o: observed{Deployment: d, State: func() *rollout.State {
				s := state(rollout.Progressing, 0)
				s.StepStartedAt = ago(3 * time.Second)
				return s
			}(), Canary: canary(d, 1, 1)},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, ago(0), p.State.HoldingSince)
				assert.Equal(t, []rollout.StepRecord{{Step: 0, Weight: 5, Effective: 20, Canary: 1, Stable: 4, Started: *ago(3 * time.Second), Ready: ago(0)}}, p.State.History)
				assert.Equal(t, time.Minute, p.RequeueAfter)
			},
		},
		{
			name: "hold passed: the next step",
			o:    observed{Deployment: d, State: holding(state(rollout.Progressing, 0), time.Minute), Canary: canary(d, 1, 1)},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, int32(1), p.State.Step)
				assert.Equal(t, ptr.To[int32](1), p.CanaryReplicas, "25% of 4 stable: 1 (20%) is nearer than 2 (33%)")
				assert.Equal(t, ago(0), p.State.History[0].Ended)
				assert.Nil(t, p.State.HoldingSince)
				assert.Equal(t, []string{"Normal Step: step 2 of 3: web canary at 25% target: 1 canary and 4 stable pods (20.0% effective)"}, events(p))
			},
		},
		{
			name: "the last step held: promotion unpauses the Deployment and keeps the canary serving",
			o:    observed{Deployment: d, State: holding(state(rollout.Progressing, 2), time.Minute), Canary: canary(d, 4, 4)},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, rollout.Promoting, p.State.Phase)
				assert.False(t, p.Paused)
				assert.Equal(t, ptr.To[int32](4), p.CanaryReplicas)
				assert.Equal(t, []string{"Normal Promoting: promoting web: the Deployment rolls to the new version while the canary serves"}, events(p))
			},
		},
		{
			name: "promotion waits for the Deployment's own rolling update",
			o: observed{Deployment: func() *appsv1.Deployment {
				d := web(4)
				d.Spec.Paused = false
				d.Generation = 3
				d.Status.UpdatedReplicas = 2
				return d
			}(), State: state(rollout.Promoting, 2), Canary: canary(d, 4, 4)},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, rollout.Promoting, p.State.Phase)
				assert.Equal(t, ptr.To[int32](4), p.CanaryReplicas)
				assert.Nil(t, p.Outcome)
			},
		},
		{
			name: "promotion ends when every pod runs the new version: canary removed, outcome recorded",
			o: observed{Deployment: func() *appsv1.Deployment {
				d := web(4)
				d.Spec.Paused = false
				d.Status.UpdatedReplicas = 4
				return d
			}(), State: state(rollout.Promoting, 2), Canary: canary(d, 4, 4)},
			check: func(t *testing.T, p planned) {
				assert.Nil(t, p.State)
				assert.Nil(t, p.CanaryReplicas, "the canary goes")
				require.NotNil(t, p.Outcome)
				assert.Equal(t, rollout.Succeeded, p.Outcome.Phase)
				assert.Equal(t, []string{"Normal Succeeded: promoted web: all 4 pods run the new version"}, events(p))
			},
		},
		{
			name: "a failed canary pod rolls back at once",
			o: observed{Deployment: d, State: holding(state(rollout.Progressing, 1), 10*time.Second), Canary: canary(d, 1, 0),
				CanaryPods: []corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Name: "web-canary-abc-x1", Labels: map[string]string{rollout.LabelAttempt: "1"}}, Status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "containerFailed"}}}},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, rollout.RollingBack, p.State.Phase)
				assert.Equal(t, "canary pod web-canary-abc-x1 failed (containerFailed)", p.State.Reason.Message)
				assert.Equal(t, "pod-failed", p.State.Reason.Check)
				assert.Equal(t, int32(25), p.State.Reason.Weight)
				assert.Equal(t, ptr.To[int32](0), p.CanaryReplicas)
			},
		},
		{
			name: "restarts beyond maxRestarts roll back",
			o: observed{Deployment: d, State: holding(state(rollout.Progressing, 0), 10*time.Second), Canary: canary(d, 1, 1),
				CanaryPods: []corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{rollout.LabelAttempt: "1"}}, Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{RestartCount: 1}}}}}},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, rollout.RollingBack, p.State.Phase)
				assert.Equal(t, &rollout.Reason{Check: "restarts", Value: ptr.To(1.0), Bound: ptr.To(0.0), Step: 0, Weight: 5, Message: "canary containers restarted 1 times > 0"}, p.State.Reason)
			},
		},
		{
			name: "rollback waits until the canary has no pods",
			o: observed{Deployment: d, State: func() *rollout.State {
				s := state(rollout.RollingBack, 1)
				s.Reason = &rollout.Reason{Check: "error-rate", Step: 1, Weight: 25, Message: "error-rate 0.2 > 0.01"}
				s.FailedAt = ago(time.Second)
				return s
			}(), Canary: canary(d, 0, 0), CanaryPods: []corev1.Pod{{}}},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, rollout.RollingBack, p.State.Phase)
				assert.Equal(t, ptr.To[int32](0), p.CanaryReplicas)
				assert.True(t, p.Paused)
				assert.True(t, p.Cutting)
				assert.False(t, p.CanaryGone)
			},
		},
		{
			name: "once the canary is gone, the Deployment holds the failed revision, paused",
			o: observed{Deployment: d, State: func() *rollout.State {
				s := state(rollout.RollingBack, 1)
				s.Reason = &rollout.Reason{Check: "error-rate", Value: ptr.To(0.2), Bound: ptr.To(0.01), Step: 1, Weight: 25, Message: "error-rate 0.2 > 0.01"}
				s.FailedAt = ago(time.Second)
				return s
			}(), Canary: canary(d, 0, 0),
				CanaryPods: []corev1.Pod{{Status: corev1.PodStatus{Phase: corev1.PodFailed}}}},
			check: func(t *testing.T, p planned) {
				assert.Nil(t, p.State, "a failed pod serves nothing: it does not hold the rollback")
				assert.True(t, p.Paused, "the applied template stays; the stable ReplicaSet serves")
				assert.Nil(t, p.CanaryReplicas)
				assert.True(t, p.CanaryGone)
				require.NotNil(t, p.Outcome)
				assert.Equal(t, rollout.RolledBack, p.Outcome.Phase)
				assert.Equal(t, "error-rate", p.Outcome.Reason.Check)
				assert.Equal(t, int32(1), p.Outcome.Attempt)
				assert.True(t, rollout.Holds(d, p.Outcome))
				assert.Equal(t, []string{"Warning RolledBack: rolled back web: error-rate 0.2 > 0.01 at step 2 (25%); the stable version serves all 4 pods and web holds the failed revision " +
					p.Outcome.CanaryRevision + ", paused: apply the stable manifest or kubectl fledge undo web to go back, kubectl fledge retry web to try it again"}, events(p))
			},
		},
		{
			name: "a template reverted by the user ends as Aborted, unpaused on the stable template",
			o: observed{Deployment: func() *appsv1.Deployment {
				d := web(4)
				d.Spec.Template = *stableTemplate()
				return d
			}(), State: state(rollout.Aborted, 0)},
			check: func(t *testing.T, p planned) {
				require.NotNil(t, p.Outcome)
				assert.Equal(t, rollout.Aborted, p.Outcome.Phase)
				assert.Equal(t, &rollout.Reason{Check: "user", Step: 0, Weight: 5, Message: "aborted by user"}, p.Outcome.Reason)
				assert.False(t, p.Paused)
			},
		},
		{
			name: "kubectl fledge abort ends as Aborted and holds the revision, paused",
			o:    observed{Deployment: d, State: state(rollout.Aborted, 0)},
			check: func(t *testing.T, p planned) {
				require.NotNil(t, p.Outcome)
				assert.Equal(t, rollout.Aborted, p.Outcome.Phase)
				assert.True(t, p.Paused)
				assert.True(t, rollout.Holds(d, p.Outcome))
			},
		},
		{
			name: "fledge.dev/skip during a rollout: the canary is cut first",
			o: observed{Deployment: func() *appsv1.Deployment {
				d := web(4)
				d.Annotations = map[string]string{rollout.AnnotationSkip: "true"}
				return d
			}(), State: holding(state(rollout.Progressing, 1), time.Second), Canary: canary(d, 1, 1)},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, rollout.Aborted, p.State.Phase)
				assert.Equal(t, ptr.To[int32](0), p.CanaryReplicas)
				assert.True(t, p.Paused, "not unpaused before the canary is gone")
				assert.Equal(t, []string{"Warning HandedBack: web: fledge.dev/skip set during the rollout: the Deployment rolls out natively"}, events(p))
			},
		},
		{
			name: "fledge.dev/skip during a rollout: then the Deployment is handed back as the user left it",
			o: observed{Deployment: func() *appsv1.Deployment {
				d := web(4)
				d.Annotations = map[string]string{rollout.AnnotationSkip: "true"}
				return d
			}(), State: func() *rollout.State {
				s := state(rollout.Aborted, 1)
				s.Reason = &rollout.Reason{Check: "skip", Step: 1, Weight: 25, Message: "fledge.dev/skip set during the rollout: the Deployment rolls out natively"}
				return s
			}(), Canary: canary(d, 0, 0)},
			check: func(t *testing.T, p planned) {
				assert.Nil(t, p.State)
				assert.False(t, p.Paused)
				assert.Nil(t, p.CanaryReplicas)
				require.NotNil(t, p.Outcome)
				assert.Equal(t, rollout.Aborted, p.Outcome.Phase)
				assert.Equal(t, "skip", p.Outcome.Reason.Check)
			},
		},
		{
			name: "a manual approval step waits after its hold",
			o: observed{Deployment: d, State: func() *rollout.State {
				s := state(rollout.Progressing, 2)
				s.Policy.Steps[2].Approval = policy.ApprovalManual
				return holding(s, time.Minute)
			}(), Canary: canary(d, 4, 4)},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, rollout.Paused, p.State.Phase)
				assert.Equal(t, "waiting for approval: kubectl fledge promote web", p.State.Message)
				assert.Equal(t, []string{"Normal Approval: web held step 3 (50%) for 1m0s; waiting for approval: kubectl fledge promote web"}, events(p))
			},
		},
		{
			name: "pause holds the step even when its hold passed",
			o:    observed{Deployment: d, State: holding(state(rollout.Progressing, 0), time.Minute), Canary: canary(d, 1, 1), Command: rollout.CommandPause},
			check: func(t *testing.T, p planned) {
				assert.True(t, p.ClearCommand)
				assert.Equal(t, rollout.Paused, p.State.Phase)
				assert.Equal(t, int32(0), p.State.Step)
				assert.Equal(t, []string{"Normal Command: pause: web holds at step 1 (5%)"}, events(p))
			},
		},
		{
			name: "resume goes on from a pause",
			o:    observed{Deployment: d, State: holding(state(rollout.Paused, 0), 10*time.Second), Canary: canary(d, 1, 1), Command: rollout.CommandResume},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, rollout.Progressing, p.State.Phase)
				assert.Equal(t, []string{"Normal Command: resume: web goes on at step 1 (5%)"}, events(p))
			},
		},
		{
			name: "promote leaves the step now",
			o:    observed{Deployment: d, State: holding(state(rollout.Progressing, 0), time.Second), Canary: canary(d, 1, 1), Command: rollout.CommandPromote},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, int32(1), p.State.Step)
				assert.Equal(t, "Normal Command: promote: web leaves step 1 (5%) now", events(p)[0])
			},
		},
		{
			name: "promote-full skips to promotion",
			o:    observed{Deployment: d, State: holding(state(rollout.Progressing, 0), time.Second), Canary: canary(d, 1, 1), Command: rollout.CommandPromoteFull},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, rollout.Promoting, p.State.Phase)
				assert.False(t, p.Paused)
			},
		},
		{
			name: "abort cuts the canary",
			o:    observed{Deployment: d, State: holding(state(rollout.Progressing, 1), time.Second), Canary: canary(d, 1, 1), Command: rollout.CommandAbort},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, rollout.Aborted, p.State.Phase)
				assert.Equal(t, ptr.To[int32](0), p.CanaryReplicas)
				assert.Equal(t, "user", p.State.Reason.Check)
			},
		},
		{
			name: "an unknown command is cleared with a warning",
			o:    observed{Deployment: d, State: holding(state(rollout.Progressing, 0), time.Second), Canary: canary(d, 1, 1), Command: "rollback"},
			check: func(t *testing.T, p planned) {
				assert.True(t, p.ClearCommand)
				assert.Equal(t, rollout.Progressing, p.State.Phase)
				assert.Equal(t, []string{`Warning CommandIgnored: unknown command "rollback"; use promote, promote-full, abort, pause, resume or retry`}, events(p))
			},
		},
		{
			name: "a failing check beyond failureLimit rolls back with the check's numbers",
			o: observed{Deployment: d, State: holding(withAnalysis(state(rollout.Progressing, 1)), 20*time.Second),
				Evidence: rollout.Evidence{Attempt: 1, Step: 1, Counters: policy.Counters{Failures: 1}}, Canary: canary(d, 1, 1), Evaluation: &policy.Evaluation{At: now, Results: []policy.CheckResult{result("error-rate", policy.Fail, 0.2)}}},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, rollout.RollingBack, p.State.Phase)
				assert.Equal(t, &rollout.Reason{Check: "error-rate", Value: ptr.To(0.2), Bound: ptr.To(0.01), Step: 1, Weight: 25, Message: "error-rate 0.2 > 0.01"}, p.State.Reason)
				assert.Equal(t, ptr.To[int32](0), p.CanaryReplicas)
			},
		},
		{
			name: "inconclusive evidence never completes a hold",
			o: observed{Deployment: d, State: holding(withAnalysis(state(rollout.Progressing, 0)), 2*time.Minute), Canary: canary(d, 1, 1),
				Evaluation: &policy.Evaluation{At: now, Results: []policy.CheckResult{{Check: "error-rate", Result: policy.Inconclusive, Reason: "no data for error-rate"}}}},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, int32(0), p.State.Step, "held 2m of 1m, but without passing evidence")
				require.NotNil(t, p.Evidence)
				assert.Equal(t, rollout.Evidence{Attempt: 1, Step: 0, At: metav1.NewMicroTime(now), Counters: policy.Counters{NoData: 1},
					Checks: []policy.CheckResult{{Check: "error-rate", Result: policy.Inconclusive, Reason: "no data for error-rate"}},
					Result: policy.Inconclusive, Verdict: "no data for error-rate (no data 1 of 2 tolerated)"}, *p.Evidence, "the figures go to the canary")
				assert.Equal(t, []string{"Warning ChecksInconclusive: checks of web at step 1 (5%): no data for error-rate (no data 1 of 2 tolerated)"}, events(p), "the verdict changed")
				assert.Equal(t, "canary pods Ready; holding 1m0s once the checks pass", p.State.Message)
				assert.Equal(t, 10*time.Second, p.RequeueAfter)
			},
		},
		{
			name: "passing evidence after the hold moves on",
			o: observed{Deployment: d, State: holding(withAnalysis(state(rollout.Progressing, 0)), 2*time.Minute), Canary: canary(d, 1, 1),
				Evaluation: &policy.Evaluation{At: now, Results: []policy.CheckResult{result("error-rate", policy.Pass, 0.001)}}},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, int32(1), p.State.Step)
			},
		},
		{
			name: "passing evidence during the hold says so",
			o: observed{Deployment: d, State: holding(withAnalysis(state(rollout.Progressing, 0)), 10*time.Second), Canary: canary(d, 1, 1),
				Evaluation: &policy.Evaluation{At: now, Results: []policy.CheckResult{result("error-rate", policy.Pass, 0.001)}}},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, int32(0), p.State.Step)
				assert.Equal(t, "checks pass; holding 1m0s", p.State.Message)
				assert.Equal(t, ago(0), p.State.PassedSince)
				assert.Equal(t, []string{"Normal ChecksPass: checks of web at step 1 (5%): error-rate 0.2 > 0.01"}, events(p))
				assert.Equal(t, 10*time.Second, p.RequeueAfter, "the next evaluation comes before the hold ends")
			},
		},
		{
			name: "capacity shift lowers stable only once the canary pods are Ready",
			o: observed{Deployment: web(10), State: func() *rollout.State {
				s := state(rollout.Progressing, 1)
				s.Policy.Capacity = policy.CapacityShift
				s.Replicas = 10
				s.StepStartedAt = ago(time.Second)
				return s
			}(), Canary: canary(web(10), 2, 1)},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, ptr.To[int32](2), p.CanaryReplicas, "25% of 10 is 2.5: the smaller")
				assert.Nil(t, p.StableReplicas, "not before the canary is Ready")
			},
		},
		{
			name: "capacity shift with Ready canary pods lowers stable",
			o: observed{Deployment: web(10), State: func() *rollout.State {
				s := state(rollout.Progressing, 1)
				s.Policy.Capacity = policy.CapacityShift
				s.Replicas = 10
				s.StepStartedAt = ago(time.Second)
				return s
			}(), Canary: canary(web(10), 2, 2)},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, ptr.To[int32](8), p.StableReplicas)
			},
		},
		{
			name: "a user's scale during a shift rollout becomes the new total",
			o: observed{Deployment: web(20), State: func() *rollout.State {
				s := state(rollout.Progressing, 1)
				s.Policy.Capacity = policy.CapacityShift
				s.Replicas = 10
				s.StableSet = 8 // fledge had set 10 − 2
				s.StepStartedAt = ago(time.Second)
				return s
			}(), Canary: canary(web(10), 2, 2)},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, int32(20), p.State.Replicas)
				assert.Equal(t, ptr.To[int32](5), p.CanaryReplicas, "25% of 20")
				assert.Nil(t, p.StableReplicas, "stable waits for the 5 canary pods to be Ready")
				assert.Equal(t, "Normal Scaled: web was scaled to 20 replicas: the rollout now shares 20 pods between stable and canary", events(p)[0])
			},
		},
		{
			name: "capacity shift falls back to surge with an HPA, and says so",
			o: observed{Deployment: web(10), HPA: true, State: func() *rollout.State {
				s := state(rollout.Progressing, 0)
				s.Policy.Capacity = policy.CapacityShift
				return s
			}()},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, ptr.To[int32](1), p.CanaryReplicas)
				assert.Nil(t, p.StableReplicas)
				assert.Equal(t, "Warning CapacitySurge: capacity shift falls back to surge for web: a HorizontalPodAutoscaler scales the Deployment", events(p)[0])
			},
		},
		{
			name: "kubectl scale of the stable Deployment during a surge rollout: the canary follows",
			o:    observed{Deployment: web(20), State: holding(state(rollout.Progressing, 1), 10*time.Second), Canary: canary(web(4), 1, 1)},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, ptr.To[int32](7), p.CanaryReplicas, "7 of 27 pods: nearest 25%")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := withPods(tt.o)
			o.Now = now
			before, err := json.Marshal(o.State)
			require.NoError(t, err)
			tt.check(t, plan(o))
			after, err := json.Marshal(o.State)
			require.NoError(t, err)
			assert.Equal(t, before, after, "plan must not change what it observed")
		})
	}
}

func TestAnalysisDue(t *testing.T) {
	s := holding(withAnalysis(state(rollout.Progressing, 0)), 30*time.Second)
	ev := rollout.Evidence{Attempt: 1}
	assert.True(t, analysisDue(s, ev, now), "never evaluated")
	ev.At = *ago(5 * time.Second)
	assert.False(t, analysisDue(s, ev, now), "5s of a 10s interval")
	ev.At = *ago(10 * time.Second)
	assert.True(t, analysisDue(s, ev, now))
	s.StalledSince = ago(time.Second)
	assert.False(t, analysisDue(s, ev, now), "a stalled step is not judged")
	s.StalledSince = nil
	s.HoldingSince = nil
	assert.False(t, analysisDue(s, ev, now), "canary pods not Ready yet")
	assert.False(t, analysisDue(state(rollout.Progressing, 0), ev, now), "no analysis in the policy")
}

// TestPlanJudgesOnlyWhatServes covers what clusters do to a Deployment
// mid-step (OPERATIONS.md): a step is judged only while its canary really
// serves, and no routine change rolls back a healthy release.
func TestPlanJudgesOnlyWhatServes(t *testing.T) {
	d := web(4)
	versioned := func(version string) *appsv1.Deployment {
		d := web(4)
		d.Spec.Template.Labels = map[string]string{"app": "web", "version": version}
		return d
	}
	tests := []struct {
		name  string
		o     observed
		check func(t *testing.T, p planned)
	}{
		{
			name: "a scale long after the step began starts a fresh readyTimeout, never a rollback",
			o: observed{Deployment: web(20), State: func() *rollout.State {
				s := holding(state(rollout.Progressing, 1), 40*time.Second)
				s.StepStartedAt = ago(10 * time.Minute) // readyTimeout is 5m
				return s
			}(), Canary: canary(web(4), 1, 1)},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, rollout.Progressing, p.State.Phase)
				assert.Equal(t, ptr.To[int32](7), p.CanaryReplicas, "7 of 27 pods: nearest 25%")
				assert.Equal(t, ago(0), p.State.NotReadySince)
				assert.Equal(t, ago(0), p.State.StalledSince, "the hold clock stops")
				assert.Equal(t, "waiting for 7 canary pods to be Ready", p.State.Message)
				assert.Empty(t, p.Events)
			},
		},
		{
			name: "readiness lost readyTimeout ago rolls back, counted from the loss",
			o: observed{Deployment: d, State: func() *rollout.State {
				s := holding(state(rollout.Progressing, 1), 6*time.Minute)
				s.NotReadySince = ago(5 * time.Minute)
				s.StalledSince = ago(5 * time.Minute)
				return s
			}(), Canary: canary(d, 1, 0)},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, rollout.RollingBack, p.State.Phase)
				assert.Equal(t, "ready-timeout", p.State.Reason.Check)
			},
		},
		{
			name: "time stalled does not count toward the hold",
			o: observed{Deployment: d, State: func() *rollout.State {
				s := holding(state(rollout.Progressing, 0), 70*time.Second)
				s.StalledSince = ago(30 * time.Second)
				return s
			}(), Canary: canary(d, 1, 1)},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, int32(0), p.State.Step, "held 40s of 1m")
				assert.Equal(t, ago(40*time.Second), p.State.HoldingSince)
				assert.Nil(t, p.State.StalledSince)
				assert.Equal(t, 20*time.Second, p.RequeueAfter)
			},
		},
		{
			name: "scaled to 0: the step holds and never passes",
			o:    observed{Deployment: web(0), State: holding(state(rollout.Progressing, 1), 2*time.Minute), Canary: canary(d, 0, 0)},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, int32(1), p.State.Step)
				assert.Equal(t, rollout.Progressing, p.State.Phase)
				assert.Equal(t, ptr.To[int32](0), p.CanaryReplicas)
				assert.Equal(t, ago(0), p.State.StalledSince)
				assert.Equal(t, []string{"Warning NoPods: web is scaled to 0: no canary pods to judge; the rollout holds until it has replicas again"}, events(p))
			},
		},
		{
			name: "a stall already reported is not reported again",
			o: observed{Deployment: web(0), State: func() *rollout.State {
				s := holding(state(rollout.Progressing, 1), 2*time.Minute)
				s.StalledSince = ago(time.Minute)
				s.Message = "web is scaled to 0: no canary pods to judge; the rollout holds until it has replicas again"
				return s
			}(), Canary: canary(d, 0, 0)},
			check: func(t *testing.T, p planned) {
				assert.Empty(t, p.Events)
				assert.Equal(t, ago(time.Minute), p.State.StalledSince)
			},
		},
		{
			name: "the stable ReplicaSet gone: the step holds with a Warning that says what to do",
			o:    observed{Deployment: d, StableGone: true, State: holding(state(rollout.Progressing, 2), 2*time.Minute), Canary: canary(d, 4, 4)},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, rollout.Progressing, p.State.Phase, "never promotes")
				assert.True(t, p.Paused)
				rev := state(rollout.Progressing, 2).StableRevision
				assert.Equal(t, []string{"Warning StableReplicaSetGone: the stable ReplicaSet of web (revision " + rev + ") is gone, so the canary cannot be judged against it and the Deployment controller may run an older revision: the rollout holds; " +
					"to go back, kubectl fledge abort web and apply the stable manifest; to release the new version anyway, kubectl fledge promote --full web"}, events(p))
			},
		},
		{
			name: "a Service that selects only the stable version holds the step",
			o: observed{Deployment: versioned("v2"), StableLabels: labels.Set{"app": "web", "version": "v1"},
				Services: []corev1.Service{service("web", map[string]string{"app": "web", "version": "v1"})},
				State:    holding(state(rollout.Progressing, 2), 2*time.Minute), Canary: canary(versioned("v2"), 4, 4)},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, rollout.Progressing, p.State.Phase, "promoting would leave Service web without endpoints")
				assert.Equal(t, ago(0), p.State.StalledSince)
				assert.Equal(t, []string{"Warning ServiceMissesCanary: Service web selects version=v1 (canary pods: version=v2): it sends the canary no traffic and would have no endpoints after the promotion; " +
					"remove version from its selector so that it selects both versions; the rollout holds until it does (kubectl fledge diagnose web)"}, events(p))
			},
		},
		{
			name: "Services that select both versions, or only the canary, let the step pass",
			o: observed{Deployment: d, Services: []corev1.Service{
				service("web", map[string]string{"app": "web"}), service("web-admin", map[string]string{"app": "web"}),
				service("web-canary-only", map[string]string{rollout.LabelTrack: rollout.TrackCanary}),
			}, State: holding(state(rollout.Progressing, 0), time.Minute), Canary: canary(d, 1, 1)},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, int32(1), p.State.Step)
			},
		},
		{
			name: "a hand-deleted canary is re-created, with an Event",
			o:    observed{Deployment: d, State: holding(state(rollout.Progressing, 1), 30*time.Second)},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, ptr.To[int32](1), p.CanaryReplicas)
				assert.Equal(t, ago(0), p.State.StalledSince)
				assert.Equal(t, []string{"Warning CanaryRecreated: canary web-canary was deleted; re-creating it with 1 pods: the time without it does not count toward the hold"}, events(p))
			},
		},
		{
			name: "a canary deleted in the foreground (its pods go first) is re-created once gone, with an Event",
			o: observed{Deployment: d, CanaryDeleting: true, State: func() *rollout.State {
				s := holding(state(rollout.Progressing, 1), 30*time.Second)
				s.NotReadySince = ago(2 * time.Second) // its pods were terminating
				s.StalledSince = ago(2 * time.Second)
				s.Message = "waiting for 1 canary pods to be Ready"
				return s
			}()},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, ago(2*time.Second), p.State.StalledSince, "the hold clock stopped when the pods went")
				assert.Equal(t, ago(2*time.Second), p.State.NotReadySince)
				assert.Equal(t, []string{"Warning CanaryRecreated: canary web-canary was deleted; re-creating it with 1 pods: the time without it does not count toward the hold"}, events(p))
			},
		},
		{
			name: "pods of an earlier attempt are neither failures nor readiness of this one",
			o: observed{Deployment: d, State: state(rollout.Progressing, 0), Canary: canary(d, 1, 1), CanaryPods: append(canaryPods("1", 1, 1),
				corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-canary-old-1", Labels: map[string]string{rollout.LabelAttempt: "0"}}, Status: corev1.PodStatus{Phase: corev1.PodFailed}})},
			check: func(t *testing.T, p planned) {
				assert.Equal(t, rollout.Progressing, p.State.Phase)
				assert.NotNil(t, p.State.HoldingSince)
			},
		},
		{
			name: "the canary of an earlier attempt's template is not Ready for this one",
			o: observed{Deployment: d, State: func() *rollout.State {
				s := state(rollout.Progressing, 0)
				s.Attempt = 2
				return s
			}(), Canary: canary(d, 1, 1), CanaryPods: canaryPods("1", 1, 1)},
			check: func(t *testing.T, p planned) {
				assert.Nil(t, p.State.HoldingSince)
				assert.Equal(t, ago(0), p.State.NotReadySince)
			},
		},
		{
			name: "the step's history shows the pod counts after a scale",
			o: observed{Deployment: web(20), State: func() *rollout.State {
				s := holding(state(rollout.Progressing, 1), 10*time.Second)
				s.History[0].Canary, s.History[0].Stable, s.History[0].Effective = 1, 4, 20
				return s
			}(), Canary: canary(web(20), 7, 7)},
			check: func(t *testing.T, p planned) {
				r := p.State.History[0]
				assert.Equal(t, []any{int32(7), int32(20), "25.9"}, []any{r.Canary, r.Stable, fmt.Sprintf("%.1f", r.Effective)})
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := withPods(tt.o)
			o.Now = now
			tt.check(t, plan(o))
		})
	}
}

// TestPlanWritesStateOnTransitionsOnly replays a holding step with checks
// evaluated at every look: the figures change, the state does not, so the
// Deployment's generation does not move (ARCHITECTURE.md, "State").
func TestPlanWritesStateOnTransitionsOnly(t *testing.T) {
	d := web(4)
	s := holding(withAnalysis(state(rollout.Progressing, 0)), 5*time.Second)
	s.Policy.Steps[0].Hold = metav1.Duration{Duration: 10 * time.Minute}
	s.Message = "checks pass; holding 10m0s"
	s.PassedSince = ago(5 * time.Second)
	s.History[0].Canary, s.History[0].Stable, s.History[0].Effective = 1, 4, 20
	want, err := json.Marshal(s)
	require.NoError(t, err)
	ev := rollout.Evidence{Attempt: 1, Result: policy.Pass}
	for i := range 10 {
		at := now.Add(time.Duration(i) * 10 * time.Second)
		o := withPods(observed{Now: at, Deployment: d, State: s, Canary: canary(d, 1, 1), Evidence: ev,
			Evaluation: &policy.Evaluation{At: at, Results: []policy.CheckResult{result("error-rate", policy.Pass, 0.001*float64(i))}}})
		p := plan(o)
		got, err := json.Marshal(p.State)
		require.NoError(t, err)
		assert.Equal(t, want, got, "evaluation %d changed the state", i+1)
		require.NotNil(t, p.Evidence)
		assert.Equal(t, metav1.NewMicroTime(at), p.Evidence.At, "evaluation %d: the figures go to the canary", i+1)
		assert.Empty(t, p.Events)
		ev = *p.Evidence
	}
}

// withComparison gives s an analysis of one comparison, named errors, and
// a minimum of 100 requests a step.
func withComparison(s *rollout.State) *rollout.State {
	s.Policy.Analysis = &policy.Analysis{
		Interval: metav1.Duration{Duration: 2 * time.Second}, FailureLimit: 1, NoDataLimit: 2, MinRequests: 100,
		Prometheus: policy.Prometheus{URL: "http://prometheus:9090"},
		Compare:    []policy.Comparison{{Name: "errors", Requests: "r", Errors: "e", Tolerance: 0.5, Alpha: 0.01}},
	}
	return s
}

// counters is one reading of the comparison: cumulative requests and
// errors of one canary and one stable series.
func counters(at time.Time, canaryRequests, canaryErrors, stableRequests, stableErrors float64) *policy.Evaluation {
	return &policy.Evaluation{At: at, Readings: []policy.Reading{{CanaryPods: 1, Series: map[string]float64{
		"cr/x": canaryRequests, "ce/x": canaryErrors, "sr/a": stableRequests, "se/a": stableErrors,
	}}}}
}

// replay plans a step of web at one evaluation every 2s, feeding each
// plan's state and evidence into the next, and returns the plans.
func replay(t *testing.T, s *rollout.State, readings []*policy.Evaluation) []planned {
	t.Helper()
	d := web(10)
	ev := rollout.Evidence{}
	var plans []planned
	for _, e := range readings {
		o := withPods(observed{Now: e.At, Deployment: d, State: s, Canary: canary(d, 1, 1), Evidence: ev.For(s), Evaluation: e})
		p := plan(o)
		plans = append(plans, p)
		if p.State == nil {
			break
		}
		s = p.State
		if p.Evidence != nil {
			ev = *p.Evidence
		}
	}
	return plans
}

func TestPlanComparison(t *testing.T) {
	start := now.Add(-10 * time.Second)
	fresh := func() *rollout.State {
		s := withComparison(state(rollout.Progressing, 0))
		s.Policy.Steps[0].Hold = metav1.Duration{Duration: 6 * time.Second}
		s.StepStartedAt = ptr.To(metav1.NewMicroTime(start.Add(-time.Second)))
		s.HoldingSince = ptr.To(metav1.NewMicroTime(start))
		s.History = []rollout.StepRecord{{Step: 0, Weight: 5, Effective: 9.1, Canary: 1, Stable: 10, Started: *s.StepStartedAt}}
		return s
	}
	at := func(i int) time.Time { return start.Add(time.Duration(2*i) * time.Second) }

	t.Run("a healthy canary gathers its requests quietly, then passes with its measured share", func(t *testing.T) {
		plans := replay(t, fresh(), []*policy.Evaluation{
			counters(at(0), 0, 0, 1e6, 5000),      // the attempt's baseline
			counters(at(1), 40, 0, 1e6+400, 5002), // an interval after Ready: the step's counts begin
			counters(at(2), 80, 0, 1e6+800, 5004),
			counters(at(3), 160, 1, 1e6+1600, 5006), // hold over (6s), 120 requests at the step: passes
		})
		require.Len(t, plans, 4)
		for i, p := range plans[:3] {
			assert.Equal(t, int32(0), p.State.Step, "evaluation %d", i)
			assert.Nil(t, p.State.PassedSince, "evaluation %d: fewer than 100 requests", i)
			assert.True(t, p.Evidence.Gathering, "evaluation %d", i)
			assert.Empty(t, events(p), "evaluation %d: gathering is no news", i)
			assert.Equal(t, policy.Counters{}, p.Evidence.Counters, "evaluation %d: gathering is not missing data", i)
		}
		last := plans[3]
		assert.Equal(t, int32(1), last.State.Step, "moved on to step 2")
		rec := last.State.History[0]
		require.NotNil(t, rec.Measured)
		assert.InDelta(t, 100*120.0/1320, *rec.Measured, 1e-9, "120 of the 1,320 requests since the step's counts began")
		assert.Equal(t, int64(1320), rec.Requests)
		assert.Equal(t, []string{
			"Normal ChecksPass: checks of web at step 1 (5%): errors: canary 0.625% (1 of 160) vs stable 0.375% (6 of 1,600), 1.67× stable's rate; e-value 0.341 < 100 (tolerance 1.5× stable, alpha 0.01)",
			"Normal Measured: step 1 of web (5% target, 9.1% of pods): the canary served 9.1% of 1320 requests",
			"Normal Step: step 2 of 3: web canary at 25% target: 3 canary and 10 stable pods (23.1% effective)",
		}, events(last))
		assert.Equal(t, []policy.Tally{last.Evidence.Tallies[0]}, last.Evidence.Tallies)
		assert.Equal(t, 160.0, last.Evidence.Tallies[0].Canary.Requests, "the attempt's counts go on to step 2")
	})

	t.Run("a regression rolls back at the evaluation that rejects, whatever failureLimit says", func(t *testing.T) {
		plans := replay(t, fresh(), []*policy.Evaluation{
			counters(at(0), 0, 0, 1e6, 5000),
			counters(at(1), 36, 7, 1e6+364, 5002),
		})
		require.Len(t, plans, 2)
		p := plans[1]
		assert.Equal(t, rollout.RollingBack, p.State.Phase)
		require.NotNil(t, p.State.Reason)
		assert.Equal(t, "errors", p.State.Reason.Check)
		assert.InDelta(t, 35.38, *p.State.Reason.Value, 0.01, "the canary's rate as a multiple of stable's")
		assert.Equal(t, ptr.To(1.5), p.State.Reason.Bound)
		assert.Equal(t, "errors: canary 19.4% (7 of 36) vs stable 0.549% (2 of 364), 35.4× stable's rate; e-value 7140 >= 100 (tolerance 1.5× stable, alpha 0.01)", p.State.Reason.Message)
		assert.Equal(t, ptr.To[int32](0), p.CanaryReplicas, "the canary is cut")
	})

	t.Run("a canary traffic does not reach holds through its hold, then rolls back after noDataLimit", func(t *testing.T) {
		plans := replay(t, fresh(), []*policy.Evaluation{
			counters(at(0), 0, 0, 1e6, 5000),
			counters(at(1), 1, 0, 1e6+400, 5002),
			counters(at(2), 2, 0, 1e6+800, 5004),
			counters(at(3), 3, 0, 1e6+1200, 5006), // the hold has run: counts as no data 1 of 2
			counters(at(4), 4, 0, 1e6+1600, 5008), // 2 of 2
			counters(at(5), 5, 0, 1e6+2000, 5010), // 3 > 2: rolls back
		})
		require.Len(t, plans, 6)
		assert.Equal(t, policy.Counters{}, plans[2].Evidence.Counters)
		assert.Equal(t, policy.Counters{NoData: 1}, plans[3].Evidence.Counters)
		assert.Empty(t, events(plans[2]), "36 canary requests expected of 401 since the step's counts began: too few to tell")
		assert.Contains(t, events(plans[3]), "Warning CanaryUnderServed: the canary of web served 0.2% of 802 requests at step 1, far below its 9.1% of pods: clients that keep connections open (HTTP keep-alive, HTTP/2, gRPC) stay on the stable pods they reached first; the comparison judges only the requests the canary served")
		for _, p := range plans[4:] {
			for _, e := range events(p) {
				assert.NotContains(t, e, "CanaryUnderServed", "said once")
			}
		}
		last := plans[5]
		assert.Equal(t, rollout.RollingBack, last.State.Phase)
		assert.Equal(t, "min-requests", last.State.Reason.Check)
		assert.Equal(t, "canary served 4 of the 100 requests a step needs (minRequests) after the step's hold, in 3 consecutive evaluations (noDataLimit 2): traffic does not reach the canary enough; check its Services with kubectl fledge diagnose, lengthen the hold or lower analysis.minRequests", last.State.Reason.Message)
	})
}

// Events that say different things have different actions, so that the
// events.k8s.io recorder does not fold the second into the first's series.
func TestEventActionFollowsTheMessage(t *testing.T) {
	a := event{Reason: "ChecksInconclusive", Message: "no data for errors (no data 1 of 4 tolerated)"}
	b := event{Reason: "ChecksInconclusive", Message: "no data for errors (no data 2 of 4 tolerated)"}
	assert.NotEqual(t, a.action(), b.action())
	assert.Equal(t, a.action(), a.action())
	assert.Regexp(t, `^Rollout-[0-9a-f]{8}$`, a.action())
}
