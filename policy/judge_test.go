package policy

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// Check results as Analyze writes them, for Judge's inputs.
var (
	errorRatePasses = CheckResult{Check: "error-rate", Result: Pass, Value: num(0.004), Bound: 0.01, Op: "<=", Reason: "error-rate 0.004 <= 0.01"}
	errorRateFails  = CheckResult{Check: "error-rate", Result: Fail, Value: num(0.072), Bound: 0.01, Op: "<=", Reason: "error-rate 0.072 > 0.01"}
	errorRateNoData = CheckResult{Check: "error-rate", Result: Inconclusive, Bound: 0.01, Op: "<=", Reason: "no data for error-rate", NoData: true}
	latencyPasses   = CheckResult{Check: "p99-latency", Result: Pass, Value: num(1.1), Bound: 1.2, Op: "<=", Reason: "p99-latency 1.1× stable <= 1.2×"}
	latencyFails    = CheckResult{Check: "p99-latency", Result: Fail, Value: num(3.02), Bound: 1.2, Op: "<=", Reason: "p99-latency 3.02× stable > 1.2×"}
	latencyNoData   = CheckResult{Check: "p99-latency", Result: Inconclusive, Bound: 1.2, Op: "<=", Reason: "no data for p99-latency on stable pods", NoData: true}
	latencyUnreach  = CheckResult{Check: "p99-latency", Result: Inconclusive, Bound: 1.2, Op: "<=",
		Reason: "p99-latency: prometheus unreachable: dial tcp 10.96.0.9:9090: connect: connection refused"}
	// latencyLookalike reads like absence but is not: Judge goes by NoData,
	// never by the words.
	latencyLookalike = CheckResult{Check: "p99-latency", Result: Inconclusive, Bound: 1.2, Op: "<=",
		Reason: "no data for p99-latency could be read: the query returned a string"}
)

// limited is an analysis with the given limits; Judge reads nothing else.
func limited(failureLimit, noDataLimit int32) *Analysis {
	return &Analysis{FailureLimit: failureLimit, NoDataLimit: noDataLimit}
}

// checked is an evaluation of the given results.
func checked(results ...CheckResult) Evaluation {
	return Evaluation{At: time.Unix(1764096000, 0), Results: results}
}

// failed is a Verdict.Failed value.
func failed(r CheckResult) *CheckResult { return &r }

func TestJudge(t *testing.T) {
	tests := []struct {
		name         string
		eval         Evaluation
		counters     Counters
		analysis     *Analysis
		want         Verdict
		wantCounters Counters
	}{
		{
			name:         "every check passing is a pass that lists the numbers and clears both counters",
			eval:         checked(errorRatePasses, latencyPasses),
			counters:     Counters{Failures: 1, NoData: 3},
			analysis:     limited(1, 4),
			want:         Verdict{Result: Pass, Reason: "error-rate 0.004 <= 0.01; p99-latency 1.1× stable <= 1.2×"},
			wantCounters: Counters{},
		},
		{
			name:         "a failure within failureLimit is tolerated, counted, and inconclusive rather than a pass",
			eval:         checked(errorRateFails, latencyPasses),
			analysis:     limited(1, 4),
			want:         Verdict{Result: Inconclusive, Reason: "error-rate 0.072 > 0.01 (failure 1 of 1 tolerated)"},
			wantCounters: Counters{Failures: 1},
		},
		{
			name:         "one failure more than failureLimit fails the rollout with the check's own reason",
			eval:         checked(errorRateFails, latencyPasses),
			counters:     Counters{Failures: 1},
			analysis:     limited(1, 4),
			want:         Verdict{Result: Fail, Failed: failed(errorRateFails), Reason: "error-rate 0.072 > 0.01"},
			wantCounters: Counters{Failures: 2},
		},
		{
			name:         "failureLimit 0 fails the rollout at the first failure",
			eval:         checked(latencyFails),
			analysis:     limited(0, 4),
			want:         Verdict{Result: Fail, Failed: failed(latencyFails), Reason: "p99-latency 3.02× stable > 1.2×"},
			wantCounters: Counters{Failures: 1},
		},
		{
			name:         "the tolerated count says which failure this is",
			eval:         checked(latencyFails),
			counters:     Counters{Failures: 1},
			analysis:     limited(3, 4),
			want:         Verdict{Result: Inconclusive, Reason: "p99-latency 3.02× stable > 1.2× (failure 2 of 3 tolerated)"},
			wantCounters: Counters{Failures: 2},
		},
		{
			name:         "the first failing check in policy order names the verdict",
			eval:         checked(errorRatePasses, latencyFails, errorRateFails),
			analysis:     limited(0, 4),
			want:         Verdict{Result: Fail, Failed: failed(latencyFails), Reason: "p99-latency 3.02× stable > 1.2×"},
			wantCounters: Counters{Failures: 1},
		},
		{
			name:         "a failure outweighs a check without data and clears the no-data count",
			eval:         checked(errorRateNoData, latencyFails),
			counters:     Counters{NoData: 4},
			analysis:     limited(1, 4),
			want:         Verdict{Result: Inconclusive, Reason: "p99-latency 3.02× stable > 1.2× (failure 1 of 1 tolerated)"},
			wantCounters: Counters{Failures: 1},
		},
		{
			name:         "no data within noDataLimit is tolerated and counted",
			eval:         checked(errorRateNoData, latencyPasses),
			counters:     Counters{NoData: 1},
			analysis:     limited(1, 4),
			want:         Verdict{Result: Inconclusive, Reason: "no data for error-rate (no data 2 of 4 tolerated)"},
			wantCounters: Counters{NoData: 2},
		},
		{
			name:     "no data keeps the failure count: going quiet does not clear a failure",
			eval:     checked(errorRateNoData),
			counters: Counters{Failures: 1},
			analysis: limited(1, 4),
			want:     Verdict{Result: Inconclusive, Reason: "no data for error-rate (no data 1 of 4 tolerated)"},
			// The next failure is the second and fails the rollout.
			wantCounters: Counters{Failures: 1, NoData: 1},
		},
		{
			name:         "one evaluation without data more than noDataLimit fails the rollout",
			eval:         checked(errorRateNoData, latencyPasses),
			counters:     Counters{NoData: 4},
			analysis:     limited(1, 4),
			want:         Verdict{Result: Fail, Failed: failed(errorRateNoData), Reason: "no data for error-rate in 5 consecutive evaluations (noDataLimit 4)"},
			wantCounters: Counters{NoData: 5},
		},
		{
			name:         "noDataLimit 0 fails the rollout at the first evaluation without data",
			eval:         checked(latencyNoData),
			analysis:     limited(1, 0),
			want:         Verdict{Result: Fail, Failed: failed(latencyNoData), Reason: "no data for p99-latency on stable pods in 1 evaluation (noDataLimit 0)"},
			wantCounters: Counters{NoData: 1},
		},
		{
			name:     "running out of data names the last cause when it is more than absence",
			eval:     checked(errorRatePasses, latencyUnreach),
			counters: Counters{NoData: 4},
			analysis: limited(1, 4),
			want: Verdict{Result: Fail, Failed: failed(latencyUnreach),
				Reason: "no data for p99-latency in 5 consecutive evaluations (noDataLimit 4); last: p99-latency: prometheus unreachable: dial tcp 10.96.0.9:9090: connect: connection refused"},
			wantCounters: Counters{NoData: 5},
		},
		{
			name:     "running out of data on a cause that only reads like absence still names it as the last cause",
			eval:     checked(latencyLookalike),
			counters: Counters{NoData: 4},
			analysis: limited(1, 4),
			want: Verdict{Result: Fail, Failed: failed(latencyLookalike),
				Reason: "no data for p99-latency in 5 consecutive evaluations (noDataLimit 4); last: no data for p99-latency could be read: the query returned a string"},
			wantCounters: Counters{NoData: 5},
		},
		{
			name:         "one check without data makes the evaluation inconclusive even when the others pass",
			eval:         checked(errorRatePasses, latencyUnreach),
			analysis:     limited(1, 4),
			want:         Verdict{Result: Inconclusive, Reason: "p99-latency: prometheus unreachable: dial tcp 10.96.0.9:9090: connect: connection refused (no data 1 of 4 tolerated)"},
			wantCounters: Counters{NoData: 1},
		},
		{
			name:         "an evaluation without results is inconclusive, never a pass",
			eval:         checked(),
			analysis:     limited(1, 4),
			want:         Verdict{Result: Inconclusive, Reason: "no checks were evaluated (no data 1 of 4 tolerated)"},
			wantCounters: Counters{NoData: 1},
		},
		{
			name:         "evaluations without results count toward noDataLimit",
			eval:         Evaluation{},
			counters:     Counters{Failures: 1, NoData: 4},
			analysis:     limited(1, 4),
			want:         Verdict{Result: Fail, Reason: "no data in 5 consecutive evaluations (noDataLimit 4); last: no checks were evaluated"},
			wantCounters: Counters{Failures: 1, NoData: 5},
		},
		{
			name:         "without an analysis nothing is tolerated",
			eval:         checked(errorRateFails),
			analysis:     nil,
			want:         Verdict{Result: Fail, Failed: failed(errorRateFails), Reason: "error-rate 0.072 > 0.01"},
			wantCounters: Counters{Failures: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, counters := Judge(tt.eval, tt.counters, tt.analysis, false)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.wantCounters, counters)
		})
	}
}

func TestJudgeVerdictDoesNotAliasTheEvaluation(t *testing.T) {
	eval := checked(errorRateFails)
	got, _ := Judge(eval, Counters{}, limited(0, 0), false)
	eval.Results[0].Reason = "changed later"
	assert.Equal(t, "error-rate 0.072 > 0.01", got.Failed.Reason)
}

func TestJudgeComparisonAndGathering(t *testing.T) {
	rejected := CheckResult{Check: "errors", Result: Fail, Value: num(35.4), Bound: 1.5, Op: "<=", EValue: num(7140), Reason: "errors: ... e-value 7140 >= 100"}
	accepted := CheckResult{Check: "errors", Result: Pass, Value: num(1), Bound: 1.5, Op: "<=", EValue: num(0.07), Reason: "errors: ... e-value 0.07 < 100"}
	gathering := CheckResult{Check: "min-requests", Result: Inconclusive, Gathering: true, Value: num(40), Bound: 100, Op: ">=",
		Reason: "canary served 40 of the 100 requests a step needs (minRequests)"}
	tests := []struct {
		name         string
		eval         Evaluation
		counters     Counters
		held         bool
		want         Verdict
		wantCounters Counters
	}{
		{
			name: "a comparison's rejection fails at once, whatever failureLimit tolerates",
			eval: checked(accepted, rejected), counters: Counters{NoData: 2},
			want:         Verdict{Result: Fail, Failed: failed(rejected), Reason: rejected.Reason},
			wantCounters: Counters{Failures: 1},
		},
		{
			name:         "a rejection beside a failed threshold fails at once too, with the rejection's reason",
			eval:         checked(errorRateFails, rejected),
			want:         Verdict{Result: Fail, Failed: failed(rejected), Reason: rejected.Reason},
			wantCounters: Counters{Failures: 1},
		},
		{
			name: "gathering during the hold holds without counting anything, and breaks a run of evaluations without data",
			eval: checked(errorRatePasses, accepted, gathering), counters: Counters{Failures: 1, NoData: 3},
			want:         Verdict{Result: Inconclusive, Gathering: true, Reason: gathering.Reason},
			wantCounters: Counters{Failures: 1},
		},
		{
			name: "gathering after the hold counts as missing evidence",
			eval: checked(accepted, gathering), counters: Counters{NoData: 1}, held: true,
			want:         Verdict{Result: Inconclusive, Reason: gathering.Reason + " (no data 2 of 4 tolerated)"},
			wantCounters: Counters{NoData: 2},
		},
		{
			name: "beyond noDataLimit after the hold it fails, saying what to do",
			eval: checked(accepted, gathering), counters: Counters{NoData: 4}, held: true,
			want: Verdict{Result: Fail, Failed: failed(gathering), Reason: gathering.Reason + " after the step's hold, in 5 consecutive evaluations (noDataLimit 4): " +
				"traffic does not reach the canary enough; check its Services with kubectl fledge diagnose, lengthen the hold or lower analysis.minRequests"},
			wantCounters: Counters{NoData: 5},
		},
		{
			name: "missing data is missing data, gathering or not",
			eval: checked(errorRateNoData, gathering), held: false,
			want:         Verdict{Result: Inconclusive, Reason: "no data for error-rate (no data 1 of 4 tolerated)"},
			wantCounters: Counters{NoData: 1},
		},
		{
			name:         "a failed threshold still has its failureLimit beside a comparison",
			eval:         checked(errorRateFails, accepted),
			want:         Verdict{Result: Inconclusive, Reason: "error-rate 0.072 > 0.01 (failure 1 of 1 tolerated)"},
			wantCounters: Counters{Failures: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, counters := Judge(tt.eval, tt.counters, limited(1, 4), tt.held)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.wantCounters, counters)
		})
	}
}
