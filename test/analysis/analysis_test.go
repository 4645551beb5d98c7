// Package analysis runs rollouts judged by real metrics: demo pods that
// answer on their own IPs in the lab's node network, a real Prometheus
// scraping them there, traffic sent to the Service's ClusterIP through a
// real kube-proxy, and the manager built from this checkout.
package analysis

import (
	"context"
	"maps"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/fledge-dev/fledge/rollout"
	"github.com/fledge-dev/fledge/test/lab"
)

var theLab *lab.Lab

func TestMain(m *testing.M) {
	os.Exit(lab.Run(m, lab.Options{BuildDemoApp: true, Prometheus: true}, &theLab, lab.WithFledge))
}

// app is the demo app web at tag with env. Without LATENCY in env it
// answers in 10ms: a latency ratio between two versions that answer in
// microseconds is noise.
func app(ns, tag string, replicas int, env map[string]string) string {
	env = maps.Clone(env)
	if env == nil {
		env = map[string]string{}
	}
	if _, ok := env["LATENCY"]; !ok {
		env["LATENCY"] = "10ms"
	}
	return lab.App{Namespace: ns, Tag: tag, Replicas: replicas, Env: env}.Manifest()
}

func kubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	stdout, stderr, err := theLab.Kubectl(t.Context(), stdin, args...)
	require.NoError(t, err, stderr)
	return stdout
}

// scenario is one namespace with the policy, web at v1 serving, and
// traffic running against it until the test ends.
type scenario struct {
	ns      string
	traffic *lab.Traffic
	// policy is the policy applied, Namespace and PrometheusURL filled in.
	policy lab.Policy
}

// newScenario starts one; rps is the traffic's rate of requests.
func newScenario(t *testing.T, name, hold string, noDataLimit, rps int, stableEnv map[string]string) *scenario {
	t.Helper()
	return setup{
		Policy:    lab.Policy{Holds: [3]string{hold, hold, hold}, NoDataLimit: noDataLimit, LatencyRatio: 1.5},
		RPS:       rps,
		StableEnv: stableEnv,
	}.start(t, name)
}

// setup is what a scenario starts with: its policy (start fills in the
// namespace and the Prometheus URL), the traffic's rate and connections,
// and the stable version's environment.
type setup struct {
	Policy      lab.Policy
	RPS         int
	Connections lab.Connections
	StableEnv   map[string]string
}

// start starts the scenario in namespace name.
func (c setup) start(t *testing.T, name string) *scenario {
	t.Helper()
	require.NoError(t, theLab.CreateNamespace(t.Context(), name, map[string]string{rollout.LabelEnabled: "true"}))
	p := c.Policy
	p.Namespace, p.PrometheusURL = name, theLab.PrometheusURL
	kubectl(t, p.Manifest(), "apply", "-f", "-")
	kubectl(t, app(name, "v1", 6, c.StableEnv), "apply", "-f", "-")
	kubectl(t, "", "rollout", "status", "deployment/web", "-n", name, "--timeout=60s")

	s := &scenario{ns: name, traffic: lab.NewTraffic(theLab.Client, name, "web", c.RPS), policy: p}
	s.traffic.Connections = c.Connections
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.traffic.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// Every stable pod answers and has been scraped before the release.
	s.waitFor(t, "stable traffic", 90*time.Second, func() bool { return s.traffic.Snapshot().Tracks["stable"].Requests >= 600 })
	time.Sleep(4 * time.Second)
	return s
}

func (s *scenario) waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) { return cond(), nil })
	require.NoError(t, err, "waiting for %s", what)
}

// outcome waits for the rollout to end.
func (s *scenario) outcome(t *testing.T) *rollout.Outcome {
	t.Helper()
	return s.outcomeWithin(t, 3*time.Minute)
}

// outcomeWithin waits up to timeout for the rollout to end.
func (s *scenario) outcomeWithin(t *testing.T, timeout time.Duration) *rollout.Outcome {
	t.Helper()
	var out *rollout.Outcome
	s.waitFor(t, "the rollout to end", timeout, func() bool {
		d, err := theLab.Client.AppsV1().Deployments(s.ns).Get(t.Context(), "web", metav1.GetOptions{})
		if err != nil || d.Annotations[rollout.AnnotationState] != "" {
			return false
		}
		out, err = rollout.ParseOutcome(d)
		return err == nil && out != nil
	})
	return out
}

// shares checks, step by step, that the measured canary share of the
// traffic is within 3 points of the effective weight, over ≥ 1000 requests.
// Each request picks an endpoint at random, so the share is a sample: at
// 800 rps a step's ~5000 requests put 3 points beyond 4 standard deviations
// (0.7 points at a 50% share), so the test fails for a real skew, not luck.
func (s *scenario) shares(t *testing.T, out *rollout.Outcome) {
	t.Helper()
	for _, h := range out.History {
		if h.Ready == nil || h.Ended == nil {
			continue
		}
		// A second for the EndpointSlice and the pod runner to catch up.
		w := s.traffic.Between(h.Ready.Add(time.Second), h.Ended.Time)
		reached := w.Requests() - w.NoEndpoint
		share := 100 * w.Share("canary")
		t.Logf("step %d: target %d%%, effective %.1f%%, measured %.1f%% of %d requests (%d errors)",
			h.Step+1, h.Weight, h.Effective, share, reached, w.Errors())
		assert.GreaterOrEqual(t, reached, 1000, "step %d", h.Step+1)
		assert.InDelta(t, h.Effective, share, 3, "step %d: measured share vs effective weight", h.Step+1)
	}
}

func (s *scenario) release(t *testing.T, tag string, env map[string]string) {
	t.Helper()
	kubectl(t, app(s.ns, tag, 6, env), "apply", "-f", "-")
}

func rolledBackMessage(t *testing.T, ns string) string {
	t.Helper()
	msgs, err := theLab.EventMessages(t.Context(), ns, "web", "RolledBack", 1)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	return msgs[0]
}

func TestHealthyCanaryIsPromotedWithTrafficFollowingPods(t *testing.T) {
	s := newScenario(t, "analysis-healthy", "8s", 8, 800, nil)
	s.release(t, "v2", nil)
	out := s.outcome(t)
	require.Equal(t, rollout.Succeeded, out.Phase, "reason: %+v", out.Reason)
	require.Len(t, out.History, 3)
	s.shares(t, out)
}

func TestErrorRateCanaryIsRolledBackAtTheFirstStep(t *testing.T) {
	s := newScenario(t, "analysis-errors", "30s", 8, 300, nil)
	released := time.Now()
	s.release(t, "v3", map[string]string{"ERROR_RATE": "0.2"})
	out := s.outcome(t)
	require.Equal(t, rollout.RolledBack, out.Phase)
	require.NotNil(t, out.Reason)
	assert.Equal(t, "error-rate", out.Reason.Check)
	assert.Equal(t, int32(0), out.Reason.Step)
	assert.InDelta(t, 0.2, *out.Reason.Value, 0.1)
	assert.Equal(t, 0.05, *out.Reason.Bound)
	assert.Regexp(t, `^rolled back web: error-rate 0\.\d+ > 0\.05 at step 1 \(5%\); the stable version serves all 6 pods and web holds the failed revision \w+, paused: `, rolledBackMessage(t, s.ns))

	// What users saw: the canary's failed requests, and the time from the
	// first 500 to the last request the canary answered (its endpoints gone).
	first, ok := s.traffic.FirstError("canary", released)
	require.True(t, ok, "the canary answered 500s")
	last := s.traffic.LastRequest("canary")
	window := s.traffic.Window(released)
	failed := window.Tracks["canary"].Errors
	t.Logf("first canary 500 to its last request: %.1fs; canary requests that failed: %d of %d requests to both tracks",
		last.Sub(first).Seconds(), failed, window.Requests())
	assert.Greater(t, failed, 0)
	time.Sleep(2 * time.Second)
	assert.Equal(t, 0, s.traffic.Window(time.Now().Add(-time.Second)).Tracks["canary"].Requests, "no traffic reaches a canary after the rollback")
}

func TestCanaryThatBreaksLaterIsRolledBackAtHalf(t *testing.T) {
	s := newScenario(t, "analysis-later", "12s", 8, 300, nil)
	// The first canary pod starts with step 1; steps 1 and 2 take about
	// 2 × (12s hold + readiness + an evaluation), so it is healthy through 5%
	// and 25%, and every request it serves fails from 30s of uptime, early
	// in the 50% step: issues detected at 50%, as in the seed's table.
	s.release(t, "v3", map[string]string{"FAIL_AFTER": "30s"})
	out := s.outcome(t)
	require.Equal(t, rollout.RolledBack, out.Phase)
	assert.Equal(t, "error-rate", out.Reason.Check)
	assert.Equal(t, int32(2), out.Reason.Step, "passed 5%% and 25%%, failed at 50%%: %+v", out.History)
	assert.Equal(t, int32(50), out.Reason.Weight)
	for _, h := range out.History {
		t.Logf("step %d (%d%%): %.1fs", h.Step+1, h.Weight, h.Ended.Sub(h.Started.Time).Seconds())
	}
}

func TestLatencyRatio(t *testing.T) {
	stable := map[string]string{"LATENCY": "20ms"}
	t.Run("3x slower than stable is rolled back", func(t *testing.T) {
		s := newScenario(t, "analysis-slow", "30s", 8, 300, stable)
		s.release(t, "v3", map[string]string{"LATENCY": "60ms"})
		out := s.outcome(t)
		require.Equal(t, rollout.RolledBack, out.Phase)
		assert.Equal(t, "mean-latency", out.Reason.Check)
		assert.InDelta(t, 3.0, *out.Reason.Value, 0.5)
		assert.Equal(t, 1.5, *out.Reason.Bound)
	})
	t.Run("1.05x is promoted", func(t *testing.T) {
		s := newScenario(t, "analysis-fine", "4s", 8, 300, stable)
		s.release(t, "v2", map[string]string{"LATENCY": "21ms"})
		out := s.outcome(t)
		assert.Equal(t, rollout.Succeeded, out.Phase, "reason: %+v", out.Reason)
	})
}

func TestPrometheusOutage(t *testing.T) {
	t.Run("back within noDataLimit: the rollout goes on", func(t *testing.T) {
		s := newScenario(t, "analysis-blip", "8s", 10, 300, nil)
		s.release(t, "v2", nil)
		waitStep(t, s.ns, 1)
		theLab.StopPrometheus()
		time.Sleep(4 * time.Second) // Prometheus away 4s: with its restart and the 6s rate window, about 6 evaluations without data; 10 are tolerated
		require.NoError(t, theLab.StartPrometheus(t.Context()))
		out := s.outcome(t)
		assert.Equal(t, rollout.Succeeded, out.Phase, "reason: %+v", out.Reason)
	})
	t.Run("gone for longer: the rollout does not advance and is rolled back", func(t *testing.T) {
		s := newScenario(t, "analysis-outage", "8s", 6, 300, nil)
		s.release(t, "v2", nil)
		st := waitStep(t, s.ns, 1)
		theLab.StopPrometheus()
		defer func() { require.NoError(t, theLab.StartPrometheus(context.Background())) }()
		out := s.outcome(t)
		require.Equal(t, rollout.RolledBack, out.Phase)
		assert.Equal(t, st.Step, out.Reason.Step, "no step was taken without evidence")
		assert.Contains(t, out.Reason.Message, "in 7 consecutive evaluations (noDataLimit 6)")
	})
}

// waitStep waits until the rollout holds at step (0-based) and returns its state.
func waitStep(t *testing.T, ns string, step int32) *rollout.State {
	t.Helper()
	var s *rollout.State
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := theLab.Client.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		s, err = rollout.ParseState(d)
		return s != nil && s.Step == step && s.HoldingSince != nil, err
	})
	require.NoError(t, err, "waiting for step %d; state %+v", step+1, s)
	return s
}

// TestRetryIsJudgedOnItsOwnPods retries a failed revision: its second
// attempt runs on new canary pods (a new ReplicaSet, so new pod names and
// Prometheus series), and the first attempt's errors are never its evidence.
// v3 answers 500 once it has run 8s, so attempt 1 fails at step 1; attempt
// 2's pods have run less than that when its first checks are evaluated.
func TestRetryIsJudgedOnItsOwnPods(t *testing.T) {
	s := newScenario(t, "analysis-retry", "30s", 8, 300, nil)
	s.release(t, "v3", map[string]string{"FAIL_AFTER": "8s"})
	first := s.outcome(t)
	require.Equal(t, rollout.RolledBack, first.Phase)
	require.Equal(t, int32(1), first.Attempt)
	assert.Equal(t, "error-rate", first.Reason.Check)

	kubectl(t, "", "annotate", "deployment/web", "-n", s.ns, rollout.AnnotationCommand+"="+rollout.CommandRetry)
	holding := waitStep(t, s.ns, 0)
	require.Equal(t, int32(2), holding.Attempt)
	require.Equal(t, first.CanaryRevision, holding.CanaryRevision, "the same revision")

	pods, err := theLab.Client.CoreV1().Pods(s.ns).List(t.Context(), metav1.ListOptions{LabelSelector: rollout.LabelAttempt + "=2"})
	require.NoError(t, err)
	require.Len(t, pods.Items, 1, "5% of 6: one canary pod of attempt 2")
	owner := metav1.GetControllerOf(&pods.Items[0])
	require.NotNil(t, owner)

	// The first evaluations of attempt 2 see its own pod, not yet failing:
	// judged on attempt 1's series it would be rolled back within seconds.
	deadline := holding.HoldingSince.Add(6 * time.Second)
	for time.Now().Before(deadline) {
		d, err := theLab.Client.AppsV1().Deployments(s.ns).Get(t.Context(), "web", metav1.GetOptions{})
		require.NoError(t, err)
		st, err := rollout.ParseState(d)
		require.NoError(t, err)
		require.NotNil(t, st, "attempt 2 ended within 6s of its first hold: %s", d.Annotations[rollout.AnnotationLast])
		require.Equal(t, rollout.Progressing, st.Phase)
		c, err := theLab.Client.AppsV1().Deployments(s.ns).Get(t.Context(), "web-canary", metav1.GetOptions{})
		require.NoError(t, err)
		ev, err := rollout.ReadEvidence(c)
		require.NoError(t, err)
		if ev != nil && ev.Attempt == 2 {
			for _, r := range ev.Checks {
				assert.NotEqual(t, "Fail", string(r.Result), "attempt 2 judged on another attempt's errors: %+v", r)
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("attempt 2 runs ReplicaSet %s; still Progressing 6s into its first hold", owner.Name)
}
