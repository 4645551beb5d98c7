package analysis

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fledge-dev/fledge/policy"
	"github.com/fledge-dev/fledge/rollout"
	"github.com/fledge-dev/fledge/test/lab"
)

// The comparison's lab tests: policies that judge errors with
// analysis.compare (lab.Policy.Compare: tolerance 0.5 and alpha 0.01 unless
// set, evaluated every 2s) instead of the error-rate threshold, against
// stable pods that fail some requests of their own, as real services do.

// stableErrors is the stable version's own error rate in most of these
// tests: half a percent, the noise a comparison must see through.
var stableErrors = map[string]string{"ERROR_RATE": "0.005"}

// comparing is a policy that judges the canary with the comparison alone
// (no latency check), every step held hold.
func comparing(hold string, noDataLimit int, c lab.Comparison) lab.Policy {
	return lab.Policy{Holds: [3]string{hold, hold, hold}, NoDataLimit: noDataLimit, Compare: &c}
}

// interval is lab.Policy's analysis interval.
const interval = 2 * time.Second

// watcher records what the router wrote while a rollout ran: every change
// of the rollout's phase and step on web, and every evaluation of the
// canary (the evidence annotation of web-canary, one per evaluation,
// told apart by its time). It polls every 250ms, well within the 2s
// between evaluations.
type watcher struct {
	mu     sync.Mutex
	states []seenState
	evals  []rollout.Evidence
}

// seenState is the rollout state as first seen with this phase and step.
type seenState struct {
	At    time.Time
	Phase rollout.Phase
	Step  int32
}

// watch starts a watcher on the scenario; it stops when the test ends.
func (s *scenario) watch(t *testing.T) *watcher {
	w := &watcher{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			w.look(ctx, s.ns)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

func (w *watcher) look(ctx context.Context, ns string) {
	deployments := theLab.Client.AppsV1().Deployments(ns)
	if d, err := deployments.Get(ctx, "web", metav1.GetOptions{}); err == nil {
		if st, err := rollout.ParseState(d); err == nil && st != nil {
			w.mu.Lock()
			if n := len(w.states); n == 0 || w.states[n-1].Phase != st.Phase || w.states[n-1].Step != st.Step {
				w.states = append(w.states, seenState{At: time.Now(), Phase: st.Phase, Step: st.Step})
			}
			w.mu.Unlock()
		}
	}
	if c, err := deployments.Get(ctx, rollout.CanaryName("web"), metav1.GetOptions{}); err == nil {
		if ev, err := rollout.ReadEvidence(c); err == nil && ev != nil && !ev.At.IsZero() {
			w.mu.Lock()
			if n := len(w.evals); n == 0 || !w.evals[n-1].At.Equal(&ev.At) {
				w.evals = append(w.evals, *ev)
			}
			w.mu.Unlock()
		}
	}
}

// evaluations returns the evaluations seen at step (0-based), oldest first.
func (w *watcher) evaluations(step int32) []rollout.Evidence {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []rollout.Evidence
	for _, e := range w.evals {
		if e.Step == step {
			out = append(out, e)
		}
	}
	return out
}

// seen returns the states seen, oldest first.
func (w *watcher) seen() []seenState {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]seenState(nil), w.states...)
}

// describe is one line per evaluation, for the test's log.
func describe(evals []rollout.Evidence) string {
	var b []byte
	for _, e := range evals {
		line := fmt.Sprintf("\n  %s step %d %s noData %d", e.At.Format("15:04:05.000"), e.Step+1, e.Result, e.Counters.NoData)
		if e.Gathering {
			line += " (gathering)"
		}
		if len(e.Tallies) > 0 {
			tl := e.Tallies[0]
			c, st := tl.StepCounts()
			line += fmt.Sprintf(" | canary %.0f req %.0f err, stable %.0f req %.0f err, step canary %.0f stable %.0f (based %t), e-value %.3g",
				tl.Canary.Requests, tl.Canary.Errors, tl.Stable.Requests, tl.Stable.Errors, c, st, tl.Based, tl.EValue())
		}
		line += " | " + e.Verdict
		b = append(b, line...)
	}
	return string(b)
}

// events lists the Events of web with reason, oldest first, as they are
// now (lab.EventMessages waits for a number of them).
func events(t *testing.T, ns, reason string) []corev1.Event {
	t.Helper()
	list, err := theLab.Client.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.name=web,reason=" + reason})
	require.NoError(t, err)
	return list.Items
}

// eventAt is when an Event happened.
func eventAt(e corev1.Event) time.Time {
	if !e.EventTime.IsZero() {
		return e.EventTime.Time
	}
	return e.FirstTimestamp.Time
}

// measuredEvent is the Measured Event's message (router/plan.go, endStep).
var measuredEvent = regexp.MustCompile(`^step (\d) of web \((\d+)% target, (\d+\.\d)% of pods\): the canary served (\d+\.\d)% of (\d+) requests$`)

// assertMeasuredEvents checks that the Measured Events say what the
// history's records say, one per record, in order.
func assertMeasuredEvents(t *testing.T, ns string, history []rollout.StepRecord) {
	t.Helper()
	msgs, err := theLab.EventMessages(t.Context(), ns, "web", "Measured", len(history))
	require.NoError(t, err)
	require.Len(t, msgs, len(history), "one Measured Event per step: %q", msgs)
	for i, h := range history {
		require.NotNil(t, h.Measured, "step %d", h.Step+1)
		m := measuredEvent.FindStringSubmatch(msgs[i])
		require.NotNil(t, m, "Measured Event %q", msgs[i])
		assert.Equal(t, strconv.Itoa(int(h.Step+1)), m[1], msgs[i])
		assert.Equal(t, strconv.Itoa(int(h.Weight)), m[2], msgs[i])
		assert.Equal(t, fmt.Sprintf("%.1f", h.Effective), m[3], msgs[i])
		assert.Equal(t, fmt.Sprintf("%.1f", *h.Measured), m[4], msgs[i])
		assert.Equal(t, strconv.FormatInt(h.Requests, 10), m[5], msgs[i])
	}
}

// comparisonReason is the comparison's reason for a rollback
// (policy.Comparison.Judge): both sides' counts, the ratio when stable
// failed any, the e-value against 1/alpha.
var comparisonReason = regexp.MustCompile(`^errors: canary [\d.]+% \(([\d,]+) of ([\d,]+)\) vs stable [\d.]+% \(([\d,]+) of ([\d,]+)\)(, [\d.e+]+× stable's rate)?; e-value (> 1e\+12|[\d.e+]+) >= 100 \(tolerance 1\.5× stable, alpha 0\.01\)$`)

// count reads a count of comparisonReason: "10,912".
func count(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(regexp.MustCompile(`,`).ReplaceAllString(s, ""))
	require.NoError(t, err, s)
	return n
}

// rejection checks a rollback by the comparison: reason check errors,
// bound 1.5× stable, a message with the counts; it returns the canary's
// requests and errors the message gives.
func rejection(t *testing.T, out *rollout.Outcome) (canaryRequests, canaryErrors int) {
	t.Helper()
	require.Equal(t, rollout.RolledBack, out.Phase, "reason: %+v", out.Reason)
	require.NotNil(t, out.Reason)
	require.Equal(t, "errors", out.Reason.Check, "reason: %+v", out.Reason)
	require.NotNil(t, out.Reason.Bound)
	assert.Equal(t, 1.5, *out.Reason.Bound)
	m := comparisonReason.FindStringSubmatch(out.Reason.Message)
	require.NotNil(t, m, "the reason carries the counts: %q", out.Reason.Message)
	canaryErrors, canaryRequests = count(t, m[1]), count(t, m[2])
	stableErrs, stableRequests := count(t, m[3]), count(t, m[4])
	assert.Positive(t, canaryErrors)
	assert.LessOrEqual(t, canaryErrors, canaryRequests)
	assert.LessOrEqual(t, stableErrs, stableRequests)
	assert.Positive(t, stableRequests)
	// The ratio is there exactly when stable failed any request.
	assert.Equal(t, stableErrs > 0, out.Reason.Value != nil, "value %v with %d stable errors", out.Reason.Value, stableErrs)
	if v := out.Reason.Value; v != nil {
		assert.Greater(t, *v, 1.5, "rejected: worse than the tolerance")
	}
	return canaryRequests, canaryErrors
}

// TestComparisonPromotesAHealthyCanaryAndMeasuresItsShare releases a
// version as good as stable (both fail 0.5% of requests) under a policy
// that judges with the comparison, and checks what fledge measured of
// each step: the share of requests its canary served, by its own counts,
// against the share of pods and against what the traffic generator saw.
func TestComparisonPromotesAHealthyCanaryAndMeasuresItsShare(t *testing.T) {
	const minRequests = 200
	s := setup{
		Policy:    comparing("30s", 8, lab.Comparison{MinRequests: minRequests}),
		RPS:       500,
		StableEnv: stableErrors,
	}.start(t, "compare-healthy")
	w := s.watch(t)
	s.release(t, "v2", stableErrors)
	out := s.outcomeWithin(t, 5*time.Minute)
	require.Equal(t, rollout.Succeeded, out.Phase, "reason: %+v; evaluations:%s%s%s", out.Reason,
		describe(w.evaluations(0)), describe(w.evaluations(1)), describe(w.evaluations(2)))
	require.Len(t, out.History, 3)

	previous := 0.0 // the canary's share of pods before the step
	for _, h := range out.History {
		evals := w.evaluations(h.Step)
		require.NotNil(t, h.Measured, "step %d has its measured share", h.Step+1)
		require.NotNil(t, h.Ready, "step %d", h.Step+1)
		require.NotNil(t, h.Ended, "step %d", h.Step+1)
		measured, n := *h.Measured, float64(h.Requests)
		canary := measured / 100 * n

		// Requests counts both sides; the minimum is the canary's own.
		assert.GreaterOrEqual(t, h.Requests, int64(minRequests), "step %d", h.Step+1)
		assert.GreaterOrEqual(t, canary, minRequests-0.5, "step %d: the canary served the step's minimum", h.Step+1)

		// The step's counted window: from the reading that began its
		// counts (the first whose tally is based at the step) to its last.
		from, to := h.Ready.Time, h.Ended.Time
		for _, e := range evals {
			if len(e.Tallies) > 0 && e.Tallies[0].Based && e.Tallies[0].Step == h.Step {
				from = e.At.Time
				break
			}
		}
		if len(evals) > 0 {
			to = evals[len(evals)-1].At.Time
		}
		window := to.Sub(from)

		// Each request goes to a ready endpoint chosen at random, so the
		// canary's count is binomial(n, p), p its share of pods: at 500 rps
		// a step's ~13,000 requests give a standard deviation of 0.3 points
		// at 14.3% and 0.43 at 50%; 4 of them (stat) is the statistical
		// part, beyond which chance goes once in 16,000 runs. Two
		// systematic parts come on top, both from the step's edges, so
		// they shrink with its counted window W (about 28s here):
		//
		//   - phase: Prometheus holds each pod's counter as of its last
		//     scrape, each pod at its own phase, up to 2s (a scrape
		//     interval) before the reading. Readings are 2s apart as
		//     scrapes are, so a pod's part of the window is rarely off by
		//     a scrape; if the canary's were off by a whole one against
		//     stable's, its share would be off by p(1-p)·2s/W.
		//   - ramp, downward only: the step's counts begin one interval
		//     after its pods were all Ready, once Prometheus has a series
		//     of each (policy.Analysis.FoldComparisons), but kube-proxy
		//     programs new endpoints a moment after they are Ready (1.3s
		//     measured, LAB.md; more under load), and a counter read at the
		//     start may be a scrape old: up to 2s of the window may run at
		//     about the previous step's share, (effective - previous)·2s/W.
		//     (Before the counts waited that interval, the runs with 20s
		//     holds showed 1.8 and 3.6 points low at step 3.)
		p := h.Effective / 100
		stat := 4 * 100 * math.Sqrt(p*(1-p)/n)
		phase := 100 * p * (1 - p) * 2 / window.Seconds()
		ramp := (h.Effective - previous) * 2 / window.Seconds()
		low, high := h.Effective-stat-phase-ramp, h.Effective+stat+phase
		assert.True(t, low <= measured && measured <= high, "step %d: measured share %.2f%% outside [%.2f, %.2f] around the effective %.1f%%",
			h.Step+1, measured, low, high, h.Effective)

		// The traffic generator's own count of the same window: the same
		// requests but for the edges: Prometheus's counters are up to a
		// scrape older than the readings, and Between takes the whole
		// seconds inside. The same allowance covers them.
		gen := s.traffic.Between(from, to)
		genShare := 100 * gen.Share(rollout.TrackCanary)
		genN := gen.Requests() - gen.NoEndpoint
		genLow, genHigh := genShare-stat-phase-ramp, genShare+stat+phase
		assert.True(t, genLow <= measured && measured <= genHigh, "step %d: measured share %.2f%% outside [%.2f, %.2f] around the generator's %.2f%%",
			h.Step+1, measured, genLow, genHigh, genShare)
		t.Logf("step %d (%d%% target, %d canary / %d stable pods): effective %.1f%%, fledge measured %.2f%% of %d requests (canary %.0f, minRequests %d), "+
			"generator %.2f%% of %d requests in [%s, %s]; measured-effective %+.2f (allowed %.2f to %+.2f: stat %.2f, phase %.2f, ramp %.2f), measured-generator %+.2f (allowed %.2f to %+.2f); "+
			"Ready→Ended %.1fs, %d evaluations, counted over %.1fs from %.1fs after Ready",
			h.Step+1, h.Weight, h.Canary, h.Stable, h.Effective, measured, h.Requests, canary, minRequests,
			genShare, genN, from.Format("15:04:05.0"), to.Format("15:04:05.0"),
			measured-h.Effective, low-h.Effective, high-h.Effective, stat, phase, ramp, measured-genShare, genLow-genShare, genHigh-genShare,
			h.Ended.Sub(h.Ready.Time).Seconds(), len(evals), window.Seconds(), from.Sub(h.Ready.Time).Seconds())
		previous = h.Effective
	}
	assertMeasuredEvents(t, s.ns, out.History)
	// Every canary pod got its share, so nothing is under-served, at any
	// step, even while a step's new pods are not in the counters yet.
	for _, e := range events(t, s.ns, "CanaryUnderServed") {
		step, _ := strconv.Atoi(regexp.MustCompile(`at step (\d)`).FindStringSubmatch(e.Message + " at step 0")[1])
		assert.Fail(t, "a canary served its share is not under-served", "CanaryUnderServed at %s: %s; the step's evaluations:%s",
			eventAt(e).Format("15:04:05.000"), e.Message, describe(w.evaluations(int32(step-1))))
	}
	t.Logf("rollout took %.1fs", out.FinishedAt.Sub(out.StartedAt.Time).Seconds())
}

// TestComparisonRollsBackATwentyPercentErrorCanaryAtOnce releases a canary
// that fails 20% of its requests against a stable that fails 0.5%. At
// step 1 (1 canary pod of 7: 14.3% of 300 rps) one 2s interval holds about
// 86 canary requests with 17 errors against 514 stable ones with 2 or 3:
// the canary's share of the errors is some 0.87 where 0.2 is the most a
// canary within the tolerance gives, and the e-value passes 1/alpha = 100
// on the first interval counted. The decision then waits only for
// Prometheus to have scraped the new pod (its discovery, then one scrape)
// and for the baseline reading: a few evaluations after the hold starts.
func TestComparisonRollsBackATwentyPercentErrorCanaryAtOnce(t *testing.T) {
	s := setup{
		Policy:    comparing("30s", 8, lab.Comparison{}),
		RPS:       300,
		StableEnv: stableErrors,
	}.start(t, "compare-errors")
	w := s.watch(t)
	s.release(t, "v3", map[string]string{"ERROR_RATE": "0.2"})
	out := s.outcome(t)
	canaryRequests, canaryErrors := rejection(t, out)
	assert.Equal(t, int32(0), out.Reason.Step)
	assert.Equal(t, int32(5), out.Reason.Weight)
	require.Len(t, out.History, 1, "no step after the first: %+v", out.History)
	h := out.History[0]
	require.NotNil(t, h.Ready)
	require.NotNil(t, h.Ended)
	assert.Regexp(t, `^rolled back web: errors: canary .* at step 1 \(5%\); the stable version serves all 6 pods and web holds the failed revision \w+, paused: `, rolledBackMessage(t, s.ns))

	evals := w.evaluations(0)
	decided := h.Ended.Sub(h.Ready.Time) // Ended is FailedAt: the rejection
	over := out.FinishedAt.Sub(h.Ready.Time)
	t.Logf("hold start to rejection %.1fs (%d evaluations seen before it), to the end of the rollback (canary cut) %.1fs; the rejection counted %d canary requests, %d errors; Value %v; evaluations:%s",
		decided.Seconds(), len(evals), over.Seconds(), canaryRequests, canaryErrors, ptrString(out.Reason.Value), describe(evals))
	// The evaluations before the rejection: without data until Prometheus
	// scrapes the new pod (its discovery batches changes for up to 5s,
	// then a scrape within 2s), then the baseline reading, which counts
	// nothing, and then the rejection, on the first interval counted. One
	// passing evaluation is allowed before it (an interval cut short);
	// none was seen in the runs.
	passed := 0
	for i, e := range evals {
		if i < len(evals)-1 {
			// The failing one is the last; it may not be seen, since the
			// canary and its evidence go at once.
			assert.NotEqual(t, policy.Fail, e.Result, "only the last evaluation fails: %s", describe(evals))
		}
		if e.Result == policy.Pass {
			passed++
		}
	}
	assert.LessOrEqual(t, passed, 1, "rejected on the first or second interval counted: %s", describe(evals))
	// In time: discovery and a scrape (up to 7s), the baseline reading and
	// one interval (2 to 4s with the readings' alignment): 4.2 to 8.3s in
	// the runs. 25s is 3× the slowest, and still under the 30s hold: the
	// canary is cut a few evaluations into its hold, not at its end.
	assert.Less(t, decided, 25*time.Second, "rejected within a few evaluations of the hold start")
	// A 20%-error canary is told apart on one interval's ~86 requests.
	assert.Less(t, canaryRequests, 1000, "rejected within a few intervals of the canary's requests")
}

func ptrString(v *float64) string {
	if v == nil {
		return "nil"
	}
	return strconv.FormatFloat(*v, 'g', 4, 64)
}

// TestComparisonRollsBackACanaryFourTimesWorse releases a canary that
// fails 2% of its requests against a stable that fails 0.5%: four times
// stable's rate, where the default tolerance allows 1.5 times. Each error
// is then weak evidence, and the comparison needs many of them.
//
// The expected detection point: at step 1 (14.3% of 500 rps, 71 rps on the
// canary) the canary's share of the errors is 0.40 where a canary at the
// tolerance gives 0.20, about 0.1 nats of evidence per error, and the
// mixture e-value (12 alternatives) passes 100 at some 7 nats: ~70 errors
// of both sides, 5.1 a second, ~14s; from step 2 on evidence comes faster
// (7 errors a second, 0.12 nats each). A simulation of this test's counts
// with policy.Comparison itself (2s intervals, 500 rps, steps of 12
// intervals, 20,000 runs) rejected every run, after 1,136 canary requests
// at the median and 4,062 at the 99th percentile, 70% at step 1, the rest
// at step 2 but 0.3% at step 3. With 24s holds the steps last 12
// evaluations and more, so a run that would not reject before promotion
// is rarer than 1 in 20,000; at 300 rps and 20s holds it was 1 in 1,000.
func TestComparisonRollsBackACanaryFourTimesWorse(t *testing.T) {
	s := setup{
		Policy:    comparing("24s", 8, lab.Comparison{}),
		RPS:       500,
		StableEnv: stableErrors,
	}.start(t, "compare-4x")
	w := s.watch(t)
	released := time.Now()
	s.release(t, "v3", map[string]string{"ERROR_RATE": "0.02"})
	out := s.outcomeWithin(t, 5*time.Minute)
	canaryRequests, canaryErrors := rejection(t, out)
	h := out.History[len(out.History)-1]
	assert.Equal(t, h.Step, out.Reason.Step, "rejected at the step it was holding")
	require.NotNil(t, h.Ready)
	var evals []rollout.Evidence
	for step := int32(0); step <= out.Reason.Step; step++ {
		evals = append(evals, w.evaluations(step)...)
	}
	gen := s.traffic.Window(released).Tracks["canary"]
	t.Logf("rejected at step %d (%d%%) after %d canary requests (%d errors) by fledge's count, %.1fs into the step's hold, %.1fs after the release; the generator saw the canary answer %d requests, %d failed; Value %v; evaluations:%s",
		out.Reason.Step+1, out.Reason.Weight, canaryRequests, canaryErrors, h.Ended.Sub(h.Ready.Time).Seconds(), out.FinishedAt.Sub(released).Seconds(),
		gen.Requests, gen.Errors, ptrString(out.Reason.Value), describe(evals))
}

// TestComparisonPromotesACanaryNoWorseThanABadStable releases a canary
// that fails 10% of its requests, as the stable version does. The old
// threshold check (error-rate max 0.05, lab.Policy without Compare) would
// roll it back at its first evaluation, though users see no change at
// all; the comparison judges it against stable and promotes it. (Its
// chance of rolling back a canary no worse than stable is at most alpha =
// 1%, far less at a rate ratio of 1 against a tolerated 1.5: a simulation
// of this test's counts saw none in 20,000 runs.)
func TestComparisonPromotesACanaryNoWorseThanABadStable(t *testing.T) {
	bad := map[string]string{"ERROR_RATE": "0.10"}
	s := setup{
		Policy:    comparing("10s", 8, lab.Comparison{}),
		RPS:       300,
		StableEnv: bad,
	}.start(t, "compare-bad-stable")
	w := s.watch(t)
	released := time.Now()
	s.release(t, "v2", bad)
	out := s.outcome(t)
	require.Equal(t, rollout.Succeeded, out.Phase, "reason: %+v; evaluations:%s%s%s", out.Reason,
		describe(w.evaluations(0)), describe(w.evaluations(1)), describe(w.evaluations(2)))
	require.Len(t, out.History, 3)
	for _, h := range out.History {
		require.NotNil(t, h.Measured, "step %d", h.Step+1)
	}
	window := s.traffic.Window(released)
	canary, stable := window.Tracks["canary"], window.Tracks["stable"]
	require.Positive(t, canary.Requests)
	require.Positive(t, stable.Requests)
	cr, sr := float64(canary.Errors)/float64(canary.Requests), float64(stable.Errors)/float64(stable.Requests)
	// What the old threshold would have seen: the canary fails far more
	// than 5% of its requests.
	assert.Greater(t, cr, 0.05, "the canary fails beyond the old max: 0.05")
	last := w.evaluations(2)
	var e float64
	if n := len(last); n > 0 && len(last[n-1].Tallies) > 0 {
		e = last[n-1].Tallies[0].EValue()
	}
	t.Logf("promoted in %.1fs; the generator saw canary %.2f%% errors (%d of %d) vs stable %.2f%% (%d of %d); last e-value %.3g (rejects at 100)",
		out.FinishedAt.Sub(out.StartedAt.Time).Seconds(), 100*cr, canary.Errors, canary.Requests, 100*sr, stable.Errors, stable.Requests, e)
}

// TestComparisonDoesNotPassAStepTheCanaryDidNotServe sends most of the
// traffic over 64 kept-alive connections opened before the release, so
// they all stay on stable pods (kube-proxy balances a connection once,
// when it opens), and a trickle of 4 requests a second on new connections,
// of which the canary gets its 1/7: about 0.6 a second, some 25 requests
// over the step's hold and the evaluations after it, where the policy
// wants 300. (Should a pooled connection break and reopen onto the canary,
// it would bring 200/64 ≈ 3 requests a second, some 110 by the end:
// still short of 300.) The canary serves some requests, so the comparison
// itself has something to judge and passes; only the step's minimum is not
// met. (A canary that served none at all leaves the comparison gathering
// too; the rollback still names min-requests, which comes first.)
//
// The step must then hold quietly (gathering) through its hold, never
// advance, say once that the canary is under-served, and, once the hold
// has run, count each evaluation short of the minimum as missing data:
// past noDataLimit, a rollback with reason check min-requests.
func TestComparisonDoesNotPassAStepTheCanaryDidNotServe(t *testing.T) {
	const (
		// Long enough for Prometheus to have scraped the canary pod
		// (within 10s in every run) before the hold ends, so that what the
		// step lacks after it is requests, not series.
		hold = 16 * time.Second
		// Prometheus takes 2 to 5 evaluations to scrape a new canary pod
		// (its discovery batches changes for 5s): the step gathers
		// meanwhile, and any evaluation without data then is cleared by
		// the gathering ones after it. 8 evaluations after the hold.
		noDataLimit = 8
		minRequests = 300
	)
	s := setup{
		Policy:      comparing(hold.String(), noDataLimit, lab.Comparison{MinRequests: minRequests}),
		RPS:         200,
		Connections: lab.Connections{KeepAlive: 64},
		StableEnv:   nil,
	}.start(t, "compare-underserved")
	opened := s.traffic.Opened()
	require.Equal(t, 64, opened, "the pool's connections are all open before the release")
	trickle := lab.NewTraffic(theLab.Client, s.ns, "web", 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = trickle.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	w := s.watch(t)
	released := time.Now()
	s.release(t, "v2", nil)
	out := s.outcome(t)
	evals := w.evaluations(0)
	t.Logf("evaluations:%s", describe(evals))

	require.Equal(t, rollout.RolledBack, out.Phase, "reason: %+v", out.Reason)
	require.NotNil(t, out.Reason)
	assert.Equal(t, "min-requests", out.Reason.Check, "reason: %+v", out.Reason)
	assert.Equal(t, int32(0), out.Reason.Step)
	require.Len(t, out.History, 1, "no step 2: %+v", out.History)
	for _, st := range w.seen() {
		assert.Equal(t, int32(0), st.Step, "the rollout never left step 1: %+v", w.seen())
	}
	require.NotNil(t, out.Reason.Bound)
	assert.Equal(t, float64(minRequests), *out.Reason.Bound)
	require.NotNil(t, out.Reason.Value)
	served := *out.Reason.Value
	assert.Less(t, served, float64(minRequests))
	assert.Regexp(t, fmt.Sprintf(`^canary served \d+ of the %d requests a step needs \(minRequests\) after the step's hold, in %d consecutive evaluations \(noDataLimit %d\): traffic does not reach the canary enough; `,
		minRequests, noDataLimit+1, noDataLimit), out.Reason.Message)

	h := out.History[0]
	require.NotNil(t, h.Ready)
	require.NotNil(t, h.Ended)
	holdEnd := h.Ready.Add(hold)
	ended := h.Ended.Sub(h.Ready.Time)
	// The step's evaluations: gathering, quietly, until the hold ran; the
	// ones after it count as missing data. Should an evaluation without
	// data come last before the hold's end, it counts with those after:
	// so the rollback comes noDataLimit+1 missing ones after, at the
	// earliest after the hold plus noDataLimit+1 minus those.
	missingEarly := int32(0)
	var afterHold []rollout.Evidence
	for _, e := range evals {
		if !e.At.Time.Before(holdEnd) {
			afterHold = append(afterHold, e)
			continue
		}
		// During the hold: gathering, also before Prometheus scraped the
		// new pod; never a pass.
		assert.NotEqual(t, policy.Pass, e.Result, "no evaluation passes the step: %s", describe([]rollout.Evidence{e}))
		assert.NotEqual(t, policy.Fail, e.Result, "nothing fails during the hold")
		assert.True(t, e.Gathering, "gathering during the hold: %s", describe([]rollout.Evidence{e}))
		missingEarly = e.Counters.NoData
	}
	after := int32(noDataLimit + 1 - missingEarly)
	t.Logf("hold %s; rolled back %.1fs after the hold's start (%.1fs after the release); %d evaluations without data at its start, then %d after the hold; canary served %.0f requests at the step (minRequests %d); the generator's pool opened %d connections, and saw the canary answer %d of the trickle's %d requests",
		hold, ended.Seconds(), out.FinishedAt.Sub(released).Seconds(), missingEarly, after, served, minRequests,
		s.traffic.Opened(), trickle.Window(released).Tracks["canary"].Requests, trickle.Window(released).Requests())
	assert.GreaterOrEqual(t, ended, hold+time.Duration(after-1)*interval-100*time.Millisecond,
		"the rollback comes after the hold and %d more evaluations, at least 2s apart", after)
	// After the hold: each evaluation short of the minimum is missing
	// data, counted on from those at the hold's start. (The last, the
	// failing one, may go unseen with the canary.)
	if assert.NotEmpty(t, afterHold, "evaluations after the hold") {
		last := missingEarly
		for i, e := range afterHold {
			if e.Result == policy.Fail {
				continue
			}
			assert.False(t, e.Gathering, "missing, not gathering, after the hold: %s", describe([]rollout.Evidence{e}))
			assert.Greater(t, e.Counters.NoData, last, "evaluation %d after the hold counts as missing: %s", i+1, describe([]rollout.Evidence{e}))
			last = e.Counters.NoData
			assert.Regexp(t, fmt.Sprintf(`^canary served \d+ of the %d requests a step needs \(minRequests\) \(no data %d of %d tolerated\)$`, minRequests, e.Counters.NoData, noDataLimit), e.Verdict)
		}
	}

	// Quiet while gathering: no Event during the hold. After it, one
	// Event when the verdict turned from gathering to missing data; the
	// ones after it say the same with a higher count, which is no news.
	var inconclusive []string
	for _, e := range events(t, s.ns, "ChecksInconclusive") {
		t.Logf("ChecksInconclusive at %s: %s", eventAt(e).Format("15:04:05.000"), e.Message)
		assert.False(t, eventAt(e).Before(holdEnd.Add(-time.Second)), "quiet during the hold: %s at %s, the hold ran until %s",
			e.Message, eventAt(e).Format("15:04:05.000"), holdEnd.Format("15:04:05.000"))
		inconclusive = append(inconclusive, e.Message)
	}
	if assert.Len(t, inconclusive, 1) {
		assert.Regexp(t, fmt.Sprintf(`^checks of web at step 1 \(5%%\): canary served \d+ of the %d requests a step needs \(minRequests\) \(no data 1 of %d tolerated\)$`, minRequests, noDataLimit), inconclusive[0])
	}
	assert.Empty(t, events(t, s.ns, "ChecksPass"), "the step never passed")

	// Said once, with the numbers: the canary served a sliver of the
	// step's requests where its pods are 1 of 7.
	msgs, err := theLab.EventMessages(t.Context(), s.ns, "web", "CanaryUnderServed", 1)
	require.NoError(t, err)
	require.Len(t, msgs, 1, "said once per step: %q", msgs)
	m := regexp.MustCompile(`^the canary of web served (\d+\.\d)% of (\d+) requests at step 1, far below its 14\.3% of pods: clients that keep connections open \(HTTP keep-alive, HTTP/2, gRPC\) stay on the stable pods they reached first; the comparison judges only the requests the canary served$`).FindStringSubmatch(msgs[0])
	require.NotNil(t, m, "CanaryUnderServed: %q", msgs[0])
	share, _ := strconv.ParseFloat(m[1], 64)
	requests, _ := strconv.Atoi(m[2])
	assert.Less(t, share, 7.15, "below half of 14.3%")
	assert.GreaterOrEqual(t, float64(requests)*14.3/100, 40.0, "enough requests to say so")
	t.Logf("CanaryUnderServed: %s", msgs[0])

	require.NotNil(t, h.Measured)
	assert.Less(t, *h.Measured, 2.0, "the step's measured share: %.2f%% of %d requests", *h.Measured, h.Requests)
	assertMeasuredEvents(t, s.ns, out.History)
}
