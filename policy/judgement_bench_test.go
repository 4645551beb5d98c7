package policy

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/stretchr/testify/require"
)

// The canary-judgement simulation: how often each way of judging a canary
// rolls back a healthy one, and how fast it catches a bad one, measured on
// fledge's own decision code (thresholdOf, threshold.judge and judgeRatio
// for the fixed rules; Comparison.Count, Comparison.Judge and
// Analysis.MinRequestsResult for the sequential one; Judge for every
// verdict). Only the traffic, the counters and the router's step loop are
// simulated; nothing of the policy is re-implemented here.
//
// What is simulated:
//
//   - A Deployment of 10 stable pods serving 200 requests/s in all. The
//     canary runs three surge steps of 5%, 25% and 50%, which with 10 stable
//     pods are 1, 3 and 10 canary pods (router.surgeReplicas; router cannot
//     be imported from here). kube-proxy picks a ready pod uniformly for
//     each request, so in each 2 s interval the canary serves
//     Binomial(400, c/(c+10)) requests and the stable pods the rest.
//   - Every request fails independently with its side's error rate:
//     Binomial(requests, rate) errors per side and interval. Stable fails
//     0.5% of its requests; the canary 0.5% (healthy) or 20%, 5%, 2% or 1%.
//   - Counters are scraped every 2 s and evaluated every 2 s, at the same
//     instants and without lag: the evaluation at t reads the cumulative
//     counters up to t. One series per side and query. The stable series
//     start at 1e6 requests and 5,000 errors (the stable pods served long
//     before the rollout), the canary's at 0.
//   - t=0: the canary is Ready and the first evaluation runs, a baseline
//     with nothing counted yet. Each step holds 60 s; it ends at the first
//     evaluation at or after its hold whose verdict is Pass, which is when
//     the router ends it (hold run and the latest verdict Pass). held, for
//     Judge, is whether the step's hold has run. The next step starts at
//     once, its pods Ready at once. After step 3 the rollout is promoted.
//     A Fail verdict is a rollback: its time and the canary requests served
//     until then are recorded. A rollout still running at 30 minutes is
//     counted as stuck.
//   - The fixed rules read what an ideal Prometheus would: the canary's (and
//     for maxRatio the stable pods') errors / requests over a trailing 1m
//     window, the last 30 intervals or fewer since the canary started.
//     With no interval yet, or no canary requests in the window, the check
//     is Inconclusive for want of data.
//
// What is not simulated: scrape jitter, scrape-to-evaluation lag and the
// evaluation loop's requeue timing; rate()'s extrapolation at the window's
// edges; pod start-up and readiness time (traffic moves the instant a step
// starts); long-lived connections (the canary's share of requests is its
// share of pods); errors that come in bursts, or vary with load, time or
// pod; counter resets, series per pod and error series that appear only at
// the first error (which would make the documented error-rate query return
// no data for a canary without errors); Prometheus outages and gaps;
// Kubernetes health checks, manual approval and HPAs.
//
// Random numbers: math/rand/v2's PCG, seeded by the scenario and the
// rollout's index, so that a run is the same whatever the number of
// workers, and so that the three rules see the same traffic for the same
// rollout for as long as they are at the same step (common random numbers:
// their differences are not sampling noise between rules). Binomials are
// drawn exactly, by inversion of the CDF (drawBinomial), with one uniform
// number each, rather than with gonum's distuv.Binomial: no new module,
// and the draws stay aligned across rules.

// Simulation constants; see the model above.
const (
	simInterval            = 2      // seconds between two scrapes and two evaluations
	simRequestsPerInterval = 400    // 200 requests per second
	simStablePods          = 10     // stable replicas
	simHold                = 60     // each step's hold, in seconds
	simWindow              = 30     // intervals in the fixed rules' 1m window
	simMaxTime             = 1800   // seconds after which a rollout counts as stuck
	simStableBefore        = 1e6    // stable requests counted before the rollout
	simStableErrorRate     = 0.005  // the stable pods' error rate, in every scenario
	simBenchRollouts       = 10_000 // rollouts per rule and scenario in the benchmark
)

// simCanaryPods are the canary pods of the three steps, 5%, 25% and 50% with
// 10 stable pods by the surge replica math (docs/replica-math.md): 1/11,
// 3/13 and 10/20 of the traffic.
var simCanaryPods = [...]int64{1, 3, 10}

// judgementScenario is one kind of canary: the error rate it serves with,
// against the stable pods' 0.5%, and the seed of its rollouts.
type judgementScenario struct {
	name       string
	canaryRate float64
	seed       uint64
}

// healthy reports whether the canary is no worse than stable, so that any
// rollback of it is a false one.
func (s judgementScenario) healthy() bool { return s.canaryRate <= simStableErrorRate }

// judgementScenarios are the benchmark's canaries, healthy first.
var judgementScenarios = []judgementScenario{
	{name: "healthy", canaryRate: 0.005, seed: 0x5eed_0001},
	{name: "errors-20pct", canaryRate: 0.20, seed: 0x5eed_0020},
	{name: "errors-5pct", canaryRate: 0.05, seed: 0x5eed_0005},
	{name: "errors-2pct", canaryRate: 0.02, seed: 0x5eed_0002},
	{name: "errors-1pct", canaryRate: 0.01, seed: 0x5eed_0010},
}

// judgementScenarioNamed returns the scenario of that name.
func judgementScenarioNamed(name string) judgementScenario {
	for _, s := range judgementScenarios {
		if s.name == name {
			return s
		}
	}
	panic("no scenario " + name)
}

// judgementRule is one way of judging the canary: an analysis with either
// one fixed check (Checks) or one comparison (Compare), evaluated as
// evaluate says.
type judgementRule struct {
	name     string
	analysis *Analysis
}

// judgementRules are the three rules compared: the sequential comparison
// with fledge's defaults, the documented max of 1% errors, and a maxRatio
// tolerating the same regression as the comparison.
func judgementRules() []judgementRule {
	return []judgementRule{
		{name: "sequential", analysis: &Analysis{
			Interval:     dur(simInterval * time.Second),
			FailureLimit: defaultFailureLimit,
			NoDataLimit:  defaultNoDataLimit,
			MinRequests:  defaultMinRequests,
			Compare: []Comparison{{
				Name:      "errors",
				Requests:  `http_requests_total{namespace="{{.Namespace}}",pod=~"{{.Pods}}"}`,
				Errors:    `http_requests_total{namespace="{{.Namespace}}",pod=~"{{.Pods}}",code=~"5.."}`,
				Tolerance: defaultTolerance,
				Alpha:     defaultAlpha,
			}},
		}},
		{name: "max", analysis: &Analysis{
			Interval:     dur(simInterval * time.Second),
			FailureLimit: 1,
			NoDataLimit:  4,
			Checks:       []Check{{Name: "error-rate", Query: errorQuery, Max: num(0.01)}},
		}},
		{name: "maxRatio", analysis: &Analysis{
			Interval:     dur(simInterval * time.Second),
			FailureLimit: 1,
			NoDataLimit:  4,
			Checks:       []Check{{Name: "error-rate", Query: errorQuery, MaxRatio: num(1 + defaultTolerance)}},
		}},
	}
}

// judgementRuleNamed returns the rule of that name.
func judgementRuleNamed(name string) judgementRule {
	for _, r := range judgementRules() {
		if r.name == name {
			return r
		}
	}
	panic("no rule " + name)
}

// Indexes of the four counters of simTraffic.
const (
	simCanaryRequests = iota
	simCanaryErrors
	simStableRequests
	simStableErrors
)

// simTraffic is what one rollout's pods served: the counters since t=0 and
// the last simWindow intervals of them, with their sums.
type simTraffic struct {
	total     [4]int64
	intervals [simWindow][4]int64
	next      int // where the next interval goes in intervals
	window    [4]int64
}

// serve draws one interval's requests and errors with canaryPods canary
// pods beside the stable ones, and adds them to the counters and window.
// It uses exactly three uniform numbers.
func (s *simTraffic) serve(rng *rand.Rand, canaryPods int64, canaryRate float64) {
	share := float64(canaryPods) / float64(canaryPods+simStablePods)
	var d [4]int64
	d[simCanaryRequests] = drawBinomial(rng, simRequestsPerInterval, share)
	d[simStableRequests] = simRequestsPerInterval - d[simCanaryRequests]
	d[simCanaryErrors] = drawBinomial(rng, d[simCanaryRequests], canaryRate)
	d[simStableErrors] = drawBinomial(rng, d[simStableRequests], simStableErrorRate)
	old := s.intervals[s.next] // zeros until the window is full
	for i := range d {
		s.total[i] += d[i]
		s.window[i] += d[i] - old[i]
	}
	s.intervals[s.next] = d
	s.next = (s.next + 1) % simWindow
}

// drawBinomial draws from Binomial(n, p) exactly (to float64 rounding) by
// inverting its CDF, searched upwards from 0 with the pmf's recurrence,
// mirrored for p > 0.5 so that the search is at most about n/2 long. It uses
// exactly one uniform number whatever n and p, which keeps the random
// stream aligned between rules. It needs (1−p)^n not to underflow: n up to
// about 1,000 at p = 0.5, far more than the 400 used here.
func drawBinomial(rng *rand.Rand, n int64, p float64) int64 {
	u := rng.Float64()
	switch {
	case n <= 0 || p <= 0:
		return 0
	case p >= 1:
		return n
	case p > 0.5:
		return n - invertBinomial(u, n, 1-p)
	}
	return invertBinomial(u, n, p)
}

// invertBinomial is the smallest k with P(X ≤ k) > u for X ~ Binomial(n, p),
// p ≤ 0.5; n when rounding leaves the CDF just under u.
func invertBinomial(u float64, n int64, p float64) int64 {
	q := 1 - p
	f := math.Pow(q, float64(n)) // P(X = 0)
	if f == 0 {
		panic(fmt.Sprintf("binomial(%d, %g): too many trials for inversion", n, p))
	}
	ratio := p / q
	cdf := f
	k := int64(0)
	for u >= cdf && k < n {
		f *= ratio * float64(n-k) / float64(k+1)
		k++
		cdf += f
	}
	return k
}

// rolloutEnd is how a simulated rollout ended.
type rolloutEnd int

const (
	// rolloutStuck: still running at simMaxTime.
	rolloutStuck rolloutEnd = iota
	// rolloutPromoted: the last step passed its hold.
	rolloutPromoted
	// rolloutRolledBack: a Fail verdict.
	rolloutRolledBack
)

// rolloutOutcome is one simulated rollout: how and when (seconds since t=0)
// it ended, and the requests the canary served until then.
type rolloutOutcome struct {
	End            rolloutEnd
	At             int
	CanaryRequests int64
}

// rolloutSim is one rollout in progress: its random stream, traffic, the
// comparison's tallies, Judge's counters and the step it is at.
type rolloutSim struct {
	rule      judgementRule
	scenario  judgementScenario
	rng       *rand.Rand
	traffic   simTraffic
	tallies   []Tally
	readings  [1]Reading
	counters  Counters
	step      int // index into simCanaryPods
	stepStart int // seconds
	series    map[string]float64
	results   []CheckResult
}

// splitmix64 is the SplitMix64 finaliser, to spread seeds over PCG's state.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// newRolloutSim starts the index'th rollout of rule on scenario.
func newRolloutSim(rule judgementRule, scenario judgementScenario, index uint64) *rolloutSim {
	return &rolloutSim{
		rule:     rule,
		scenario: scenario,
		rng:      rand.New(rand.NewPCG(splitmix64(scenario.seed), splitmix64(index^0xa5a5_a5a5_a5a5_a5a5))),
		series:   make(map[string]float64, 4),
		results:  make([]CheckResult, 0, 2),
	}
}

// run plays the rollout to its end: serve an interval (none at t=0),
// evaluate, judge, and end the step, roll back or promote as the router
// would.
func (s *rolloutSim) run() rolloutOutcome {
	for t := 0; t <= simMaxTime; t += simInterval {
		if t > 0 {
			s.traffic.serve(s.rng, simCanaryPods[s.step], s.scenario.canaryRate)
		}
		held := t-s.stepStart >= simHold
		var v Verdict
		v, s.counters = Judge(Evaluation{Results: s.evaluate()}, s.counters, s.rule.analysis, held)
		switch {
		case v.Result == Fail:
			return rolloutOutcome{End: rolloutRolledBack, At: t, CanaryRequests: s.traffic.total[simCanaryRequests]}
		case v.Result == Pass && held:
			s.step++
			s.stepStart = t
			if s.step == len(simCanaryPods) {
				return rolloutOutcome{End: rolloutPromoted, At: t, CanaryRequests: s.traffic.total[simCanaryRequests]}
			}
		}
	}
	return rolloutOutcome{End: rolloutStuck, At: simMaxTime, CanaryRequests: s.traffic.total[simCanaryRequests]}
}

// evaluate is one evaluation of the rule's analysis, turned into the
// results Judge is given exactly as the router turns it (router/plan.go,
// analyse): the fixed checks' results, read from the 1m window, then
// Analysis.FoldComparisons, which folds the comparison's reading of the
// cumulative counters into the attempt's tally (Comparison.Count), judges
// it (Comparison.Judge) and adds the step's minimum of requests while it is
// not met (Analysis.MinRequestsResult).
func (s *rolloutSim) evaluate() []CheckResult {
	a := s.rule.analysis
	e := Evaluation{Results: s.results[:0]}
	for _, c := range a.Checks {
		e.Results = append(e.Results, windowResult(c, s.traffic.window))
	}
	if len(a.Compare) > 0 {
		s.readings[0] = s.reading()
		e.Readings = s.readings[:]
	}
	results, tallies := a.FoldComparisons(e, s.tallies, int32(s.step), time.Time{}, 0)
	if len(a.Compare) > 0 {
		s.tallies = tallies
	}
	s.results = e.Results
	return results
}

// reading is the comparison's reading of the cumulative counters: one
// series per side and query. Count copies what it keeps, so the map is
// reused.
func (s *rolloutSim) reading() Reading {
	tot := s.traffic.total
	s.series[canaryRequests+"canary"] = float64(tot[simCanaryRequests])
	s.series[canaryErrors+"canary"] = float64(tot[simCanaryErrors])
	s.series[stableRequests+"stable"] = simStableBefore + float64(tot[simStableRequests])
	s.series[stableErrors+"stable"] = simStableBefore*simStableErrorRate + float64(tot[simStableErrors])
	return Reading{Series: s.series}
}

// windowResult is fixed check c evaluated on the window's counts, as
// querier.check evaluates it on Prometheus's answers: no canary requests
// in the window is no data (the error-rate query's 0/0), a max is the
// canary's rate against the bound, a maxRatio the canary's rate over the
// stable pods' through judgeRatio.
func windowResult(c Check, window [4]int64) CheckResult {
	t, ok := thresholdOf(c)
	if !ok {
		return inconclusive(c, "check "+c.Name+" must set exactly one finite max, min or maxRatio")
	}
	r := CheckResult{Check: c.Name, Bound: t.bound, Op: t.op()}
	canary := Counts{Requests: float64(window[simCanaryRequests]), Errors: float64(window[simCanaryErrors])}
	if canary.Requests <= 0 {
		return withGap(r, *noDataFor(c.Name))
	}
	if t.kind != thresholdMaxRatio {
		return t.judge(r, c.Name, canary.Rate())
	}
	stable := Counts{Requests: float64(window[simStableRequests]), Errors: float64(window[simStableErrors])}
	if stable.Requests <= 0 {
		return withGap(r, *noDataFor(c.Name + " on stable pods"))
	}
	return judgeRatio(r, t, c.Name, canary.Rate(), stable.Rate())
}

// simulateRollouts plays n rollouts of rule on scenario on workers
// goroutines. Rollout i always has the same random stream, so the outcomes
// do not depend on workers.
func simulateRollouts(rule judgementRule, scenario judgementScenario, n, workers int) []rolloutOutcome {
	out := make([]rolloutOutcome, n)
	const chunk = 64
	var next atomic.Int64
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Go(func() {
			for {
				start := int(next.Add(chunk)) - chunk
				if start >= n {
					return
				}
				for i := start; i < min(start+chunk, n); i++ {
					out[i] = newRolloutSim(rule, scenario, uint64(i)).run()
				}
			}
		})
	}
	wg.Wait()
	return out
}

// judgementSummary is what a rule did to a scenario's rollouts. Times are
// in seconds since t=0; a percentile of nothing is -1.
type judgementSummary struct {
	Rule, Scenario         string
	Healthy                bool
	Rollouts               int
	RolledBack             int
	Promoted               int
	Stuck                  int
	RollbackLo, RollbackHi float64 // exact 95% interval of the rolled-back share
	RollbackP50            float64
	RollbackP95            float64
	CanaryRequestsP50      float64 // canary requests served until the rollback
	PromoteP50             float64
}

// summarize sums up the outcomes of one rule and scenario.
func summarize(rule judgementRule, scenario judgementScenario, outcomes []rolloutOutcome) judgementSummary {
	s := judgementSummary{Rule: rule.name, Scenario: scenario.name, Healthy: scenario.healthy(), Rollouts: len(outcomes)}
	var rollbackAt, rollbackRequests, promoteAt []float64
	for _, o := range outcomes {
		switch o.End {
		case rolloutRolledBack:
			s.RolledBack++
			rollbackAt = append(rollbackAt, float64(o.At))
			rollbackRequests = append(rollbackRequests, float64(o.CanaryRequests))
		case rolloutPromoted:
			s.Promoted++
			promoteAt = append(promoteAt, float64(o.At))
		default:
			s.Stuck++
		}
	}
	s.RollbackLo, s.RollbackHi = clopperPearson(s.RolledBack, s.Rollouts)
	s.RollbackP50 = nearestRank(rollbackAt, 0.50)
	s.RollbackP95 = nearestRank(rollbackAt, 0.95)
	s.CanaryRequestsP50 = nearestRank(rollbackRequests, 0.50)
	s.PromoteP50 = nearestRank(promoteAt, 0.50)
	return s
}

// nearestRank is the nearest-rank q-quantile of values (sorted in place);
// -1 when there are none.
func nearestRank(values []float64, q float64) float64 {
	if len(values) == 0 {
		return -1
	}
	slices.Sort(values)
	rank := int(math.Ceil(q*float64(len(values)))) - 1
	return values[min(max(rank, 0), len(values)-1)]
}

// simPercent is 100·k/n.
func simPercent(k, n int) float64 {
	if n == 0 {
		return 0
	}
	return 100 * float64(k) / float64(n)
}

// report reports the summary as the benchmark's metrics: false rollbacks
// and promotion for a healthy canary, detection for a bad one.
func (s judgementSummary) report(b *testing.B) {
	if s.Healthy {
		b.ReportMetric(simPercent(s.RolledBack, s.Rollouts), "false_rollbacks_pct")
		b.ReportMetric(100*s.RollbackLo, "false_rollbacks_ci95_lo_pct")
		b.ReportMetric(100*s.RollbackHi, "false_rollbacks_ci95_hi_pct")
		b.ReportMetric(simPercent(s.Promoted, s.Rollouts), "promoted_pct")
		b.ReportMetric(s.PromoteP50, "promote_p50_s")
		return
	}
	b.ReportMetric(simPercent(s.RolledBack, s.Rollouts), "detected_pct")
	b.ReportMetric(s.RollbackP50, "detect_p50_s")
	b.ReportMetric(s.RollbackP95, "detect_p95_s")
	b.ReportMetric(s.CanaryRequestsP50, "canary_requests_p50")
}

// judgementTable renders summaries side by side, one row per rule and
// scenario. "rolled back" is false rollbacks for the healthy canary and
// detections for the others.
func judgementTable(rows []judgementSummary) string {
	var sb strings.Builder
	w := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "rule\tscenario\trollouts\trolled back %\tci95 lo %\tci95 hi %\tpromoted %\tstuck\tpromote p50 s\trollback p50 s\trollback p95 s\tcanary requests p50\t")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%s\t%s\t%s\t%s\t\n",
			r.Rule, r.Scenario, r.Rollouts,
			simPercent(r.RolledBack, r.Rollouts), 100*r.RollbackLo, 100*r.RollbackHi,
			simPercent(r.Promoted, r.Rollouts), r.Stuck,
			simFigure(r.PromoteP50), simFigure(r.RollbackP50), simFigure(r.RollbackP95), simFigure(r.CanaryRequestsP50))
	}
	w.Flush()
	return sb.String()
}

// simFigure formats a figure, or "-" for the -1 of none.
func simFigure(f float64) string {
	if f < 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", f)
}

// binomialCDF is P(X ≤ k) for X ~ Binomial(n, p), summed term by term in
// log space.
func binomialCDF(k, n int, p float64) float64 {
	switch {
	case k < 0:
		return 0
	case k >= n || p <= 0:
		return 1
	case p >= 1:
		return 0
	}
	lp, lq := math.Log(p), math.Log1p(-p)
	lgn, _ := math.Lgamma(float64(n + 1))
	var sum float64
	for i := 0; i <= k; i++ {
		li, _ := math.Lgamma(float64(i + 1))
		lr, _ := math.Lgamma(float64(n - i + 1))
		sum += math.Exp(lgn - li - lr + float64(i)*lp + float64(n-i)*lq)
	}
	return min(sum, 1)
}

// clopperPearson is the exact (Clopper–Pearson) 95% interval of a share of
// k in n, found by bisection on the binomial CDF.
func clopperPearson(k, n int) (lo, hi float64) {
	if n == 0 {
		return 0, 1
	}
	// bisect finds the p in [0, 1] where below(p) turns false.
	bisect := func(below func(p float64) bool) float64 {
		a, b := 0.0, 1.0
		for range 60 {
			m := (a + b) / 2
			if below(m) {
				a = m
			} else {
				b = m
			}
		}
		return (a + b) / 2
	}
	lo, hi = 0, 1
	if k > 0 { // P(X ≥ k; lo) = 2.5%
		lo = bisect(func(p float64) bool { return 1-binomialCDF(k-1, n, p) < 0.025 })
	}
	if k < n { // P(X ≤ k; hi) = 2.5%
		hi = bisect(func(p float64) bool { return binomialCDF(k, n, p) > 0.025 })
	}
	return lo, hi
}

// BenchmarkCanaryJudgement simulates simBenchRollouts rollouts of each rule
// on each scenario per iteration, reports the figures as metrics, and
// prints them as one table at the end.
func BenchmarkCanaryJudgement(b *testing.B) {
	var rows []judgementSummary
	for _, rule := range judgementRules() {
		b.Run(rule.name, func(b *testing.B) {
			for _, scenario := range judgementScenarios {
				b.Run(scenario.name, func(b *testing.B) {
					var outcomes []rolloutOutcome
					for b.Loop() {
						outcomes = simulateRollouts(rule, scenario, simBenchRollouts, runtime.GOMAXPROCS(0))
					}
					s := summarize(rule, scenario, outcomes)
					s.report(b)
					i := slices.IndexFunc(rows, func(r judgementSummary) bool { return r.Rule == s.Rule && r.Scenario == s.Scenario })
					if i < 0 {
						rows = append(rows, s)
					} else {
						rows[i] = s
					}
				})
			}
		})
	}
	if len(rows) > 0 {
		// Printed rather than logged: a parent benchmark's log shows only
		// with -v.
		fmt.Fprintf(os.Stdout, "\nBenchmarkCanaryJudgement: %d rollouts per rule and scenario; times in seconds since the canary was Ready\n%s\n",
			simBenchRollouts, judgementTable(rows))
	}
}

// TestCanaryJudgementSimulationIsDeterministic plays the same rollouts twice,
// on one worker and on several, and wants the same outcomes: the figures
// of the benchmark depend on the seeds alone.
func TestCanaryJudgementSimulationIsDeterministic(t *testing.T) {
	for _, rule := range judgementRules() {
		for _, name := range []string{"healthy", "errors-5pct"} {
			scenario := judgementScenarioNamed(name)
			one := simulateRollouts(rule, scenario, 200, 1)
			several := simulateRollouts(rule, scenario, 200, 4)
			require.Equal(t, one, several, "%s/%s", rule.name, name)
		}
	}
}

// TestSequentialJudgementKeepsItsPromises holds the sequential rule to what
// it promises, on rollouts cheap enough for every test run: a healthy
// canary is rolled back no more often than alpha allows (the count of
// false rollbacks of n is at most Binomial(n, alpha), and the bound is its
// 1e-6 upper tail), the others are promoted, and a canary failing 20% of
// its requests is caught in at least 99% of rollouts.
func TestSequentialJudgementKeepsItsPromises(t *testing.T) {
	rule := judgementRuleNamed("sequential")
	alpha := rule.analysis.Compare[0].Alpha
	workers := runtime.GOMAXPROCS(0)

	const healthyRollouts = 2000
	healthy := summarize(rule, judgementScenarioNamed("healthy"),
		simulateRollouts(rule, judgementScenarioNamed("healthy"), healthyRollouts, workers))
	limit := binomialUpperBound(healthyRollouts, alpha, 1e-6)
	require.LessOrEqual(t, healthy.RolledBack, limit,
		"false rollbacks of %d healthy canaries, at most %d for alpha %g", healthyRollouts, limit, alpha)
	require.Equal(t, healthyRollouts, healthy.RolledBack+healthy.Promoted, "every healthy canary not rolled back is promoted")

	const badRollouts = 500
	bad := summarize(rule, judgementScenarioNamed("errors-20pct"),
		simulateRollouts(rule, judgementScenarioNamed("errors-20pct"), badRollouts, workers))
	require.GreaterOrEqual(t, bad.RolledBack, badRollouts*99/100, "canaries with 20%% errors caught, of %d", badRollouts)
	t.Logf("healthy: %d of %d rolled back (limit %d), promoted at %.0f s (p50); 20%% errors: %d of %d caught at %.0f s (p50), %.0f s (p95)",
		healthy.RolledBack, healthyRollouts, limit, healthy.PromoteP50, bad.RolledBack, badRollouts, bad.RollbackP50, bad.RollbackP95)
}

// binomialUpperBound is the smallest k with P(X > k) ≤ tail for
// X ~ Binomial(n, p).
func binomialUpperBound(n int, p, tail float64) int {
	for k := 0; k < n; k++ {
		if 1-binomialCDF(k, n, p) <= tail {
			return k
		}
	}
	return n
}

// TestBinomialSamplerMatchesItsDistribution checks the sampler's mean and
// variance, and a few exact CDF and interval values the benchmark's
// figures rest on.
func TestBinomialSamplerMatchesItsDistribution(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct {
		n int64
		p float64
	}{{400, 1.0 / 11}, {400, 0.5}, {200, 0.2}, {364, 0.005}, {400, 0.9}} {
		const draws = 20000
		var sum, sumSq float64
		for range draws {
			x := float64(drawBinomial(rng, c.n, c.p))
			sum += x
			sumSq += x * x
		}
		mean := sum / draws
		variance := sumSq/draws - mean*mean
		wantMean, wantVar := float64(c.n)*c.p, float64(c.n)*c.p*(1-c.p)
		require.InDelta(t, wantMean, mean, 5*math.Sqrt(wantVar/draws)+1e-9, "mean of Binomial(%d, %g)", c.n, c.p)
		require.InEpsilon(t, wantVar, variance, 0.1, "variance of Binomial(%d, %g)", c.n, c.p)
	}
	require.InDelta(t, 0.5, binomialCDF(4, 9, 0.5), 1e-12)
	lo, hi := clopperPearson(0, 10000)
	require.Equal(t, 0.0, lo)
	require.InDelta(t, 3.6882e-4, hi, 1e-7) // 1 − 0.025^(1/10000)
	lo, hi = clopperPearson(5, 10)
	require.InDelta(t, 0.187086, lo, 1e-6)
	require.InDelta(t, 0.812914, hi, 1e-6)
}
