package router

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fledge-dev/fledge/rollout"
)

// rollbackSeconds reads the count and sum of fledge_rollback_seconds.
func rollbackSeconds(t *testing.T, m *Metrics) (uint64, float64) {
	t.Helper()
	var out dto.Metric
	require.NoError(t, m.rollbackSeconds.Write(&out))
	return out.GetHistogram().GetSampleCount(), out.GetHistogram().GetSampleSum()
}

// pass plans o at now and hands the plan to m as apply does; it returns
// the plan, whose State is the next pass's.
func pass(m *Metrics, o observed, at time.Time) planned {
	o = withPods(o)
	o.Now = at
	p := plan(o)
	m.cut(o, p)
	return p
}

// restarted is a canary pod of attempt 1 whose container restarted once,
// which the default policy (maxRestarts 0) rolls back.
func restarted() []corev1.Pod {
	return []corev1.Pod{{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{rollout.LabelAttempt: "1"}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{RestartCount: 1}}},
	}}
}

func TestRollbackSecondsSamplesEachRollbackOnce(t *testing.T) {
	d := web(4)
	m := NewMetrics(prometheus.NewRegistry())

	// The pass that sees the restart orders the cut; the next sees a pod
	// still stopping; the third sees the canary at zero and ends the rollout.
	p := pass(m, observed{Deployment: d, State: holding(state(rollout.Progressing, 0), 10*time.Second), Canary: canary(d, 1, 1), CanaryPods: restarted()}, now)
	require.Equal(t, rollout.RollingBack, p.State.Phase)
	rollingBack := p.State
	p = pass(m, observed{Deployment: d, State: rollingBack, Canary: canary(d, 0, 1), CanaryPods: canaryPods("1", 1, 1)}, now.Add(time.Second))
	require.NotNil(t, p.State, "a pod still serves: the cut goes on")
	count, _ := rollbackSeconds(t, m)
	assert.Equal(t, uint64(0), count, "not while the canary still has a pod")
	p = pass(m, observed{Deployment: d, State: rollingBack, Canary: canary(d, 0, 0)}, now.Add(1500*time.Millisecond))
	require.NotNil(t, p.Outcome)
	require.Equal(t, rollout.RolledBack, p.Outcome.Phase)
	count, sum := rollbackSeconds(t, m)
	assert.Equal(t, uint64(1), count)
	assert.InDelta(t, 1.5, sum, 1e-9, "from the reconcile that ordered the cut to the one that saw the canary at zero")

	// Later looks at the same rollback (a requeue on a cache that has not
	// seen the outcome yet, the canary being deleted) add no sample.
	pass(m, observed{Deployment: d, State: rollingBack, Canary: canary(d, 0, 0)}, now.Add(2*time.Second))
	pass(m, observed{Deployment: d, State: rollingBack, CanaryDeleting: true}, now.Add(3*time.Second))
	pass(m, observed{Deployment: d, State: rollingBack}, now.Add(4*time.Second))
	count, sum = rollbackSeconds(t, m)
	assert.Equal(t, uint64(1), count)
	assert.InDelta(t, 1.5, sum, 1e-9)

	// The next attempt that rolls back is timed on its own, also when this
	// process missed the end of the last one (forget).
	next := *rollingBack
	next.Attempt = 2
	pass(m, observed{Deployment: d, State: &next, Canary: canary(d, 0, 1), CanaryPods: canaryPods("2", 1, 1)}, now.Add(time.Minute))
	pass(m, observed{Deployment: d, State: &next}, now.Add(time.Minute+250*time.Millisecond))
	count, sum = rollbackSeconds(t, m)
	assert.Equal(t, uint64(2), count)
	assert.InDelta(t, 1.75, sum, 1e-9)
}

func TestRollbackSecondsIgnoreAborts(t *testing.T) {
	skipped := web(4)
	skipped.Annotations = map[string]string{rollout.AnnotationSkip: "true"}
	tests := []struct {
		name  string
		first observed
	}{
		{
			name:  "kubectl fledge abort cuts the canary without a rollback sample",
			first: observed{Deployment: web(4), State: holding(state(rollout.Progressing, 0), 10*time.Second), Command: rollout.CommandAbort, Canary: canary(web(4), 1, 1)},
		},
		{
			name:  "a template reverted mid-rollout aborts without a rollback sample",
			first: observed{Deployment: web(4), State: state(rollout.Aborted, 0), Canary: canary(web(4), 1, 1)},
		},
		{
			name:  "fledge.dev/skip during a rollback hands the Deployment back without a sample",
			first: observed{Deployment: skipped, State: state(rollout.RollingBack, 0), Canary: canary(web(4), 1, 1)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMetrics(prometheus.NewRegistry())
			p := pass(m, tt.first, now)
			require.Equal(t, rollout.Aborted, p.State.Phase)
			next := tt.first
			next.State, next.Command, next.Canary = p.State, "", canary(tt.first.Deployment, 0, 0)
			p = pass(m, next, now.Add(time.Second))
			require.NotNil(t, p.Outcome)
			assert.Equal(t, rollout.Aborted, p.Outcome.Phase)
			count, _ := rollbackSeconds(t, m)
			assert.Equal(t, uint64(0), count, "a person's abort is not a rollback")
		})
	}
}

func TestRollbackSecondsTimeTheCutNotAManagerOutage(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	o := observed{Deployment: web(4), State: state(rollout.RollingBack, 0)}
	at := func(d time.Duration) observed { o.Now = t0.Add(d); return o }
	cutting, gone := planned{Cutting: true}, planned{Cutting: true, CanaryGone: true}

	m := NewMetrics(prometheus.NewRegistry())
	m.cut(at(0), cutting)
	m.cut(at(time.Second), cutting)
	m.cut(at(1500*time.Millisecond), gone)
	count, sum := rollbackSeconds(t, m)
	assert.Equal(t, uint64(1), count)
	assert.InDelta(t, 1.5, sum, 1e-9, "from the reconcile that ordered the cut to the canary at zero")

	// The cut was ordered by a manager that was then killed; the one that
	// took over 5 minutes later sees the canary gone at its second look.
	restarted := NewMetrics(prometheus.NewRegistry())
	restarted.cut(at(5*time.Minute), cutting)
	restarted.cut(at(5*time.Minute+200*time.Millisecond), gone)
	count, sum = rollbackSeconds(t, restarted)
	assert.Equal(t, uint64(1), count)
	assert.InDelta(t, 0.2, sum, 1e-9, "the outage is not counted as time to cut")
}
