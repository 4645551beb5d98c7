package policy

import (
	"fmt"
	"strings"
)

// Judge turns one evaluation and the counters carried over from the
// previous ones into a verdict on the canary and the new counters. It is
// pure: the router keeps the counters in the rollout state and calls Judge
// after every Analyze. held says whether the step's hold has run.
//
//   - Any check failed: Failures+1 and NoData back to 0 (the evaluation had
//     evidence, and it was bad). Beyond a.FailureLimit the verdict is Fail,
//     with Failed set to the first failing check in policy order and its
//     Reason ("error-rate 0.072 > 0.01"); within it the verdict is
//     Inconclusive ("error-rate 0.072 > 0.01 (failure 1 of 1 tolerated)").
//   - A comparison that rejected fails at once, whatever failureLimit says
//     and whatever other check failed beside it: failureLimit is for
//     thresholds on noisy values, while the rejection already has its
//     error bounded by alpha. Waiting for a second one would be worse than
//     slow: the e-value can fall back under 1/alpha in the next interval,
//     and a regression that was caught would escape.
//   - Else any check inconclusive for want of data, or no check evaluated
//     at all: NoData+1, Failures unchanged. Beyond a.NoDataLimit the
//     verdict is Fail ("no data for error-rate in 5 consecutive evaluations
//     (noDataLimit 4)", with Failed the first inconclusive check, nil when
//     there was none); within it Inconclusive ("no data for error-rate (no
//     data 2 of 4 tolerated)").
//   - Else a check still gathering (the canary served too few requests so
//     far): while the hold runs, an Inconclusive verdict marked Gathering,
//     Failures unchanged and NoData back to 0, since evidence that is
//     still coming is not missing; once the hold has run, it counts as missing evidence, as
//     above, so a canary that traffic does not reach cannot hold a step
//     for ever.
//   - Else every check passed: both counters back to 0, verdict Pass.
//
// An inconclusive evaluation keeps Failures rather than clearing it:
// missing evidence says nothing good about the canary, and clearing would
// let a canary that fails, goes quiet, and fails again escape failureLimit
// forever. Only an evaluation where every check passes clears it. A nil
// Analysis tolerates neither failures nor missing data.
func Judge(e Evaluation, c Counters, a *Analysis, held bool) (Verdict, Counters) {
	failureLimit, noDataLimit := limits(a)
	if rejected := firstRejected(e.Results); rejected != nil {
		c.Failures++
		c.NoData = 0
		return judgeFailure(*rejected, c.Failures, 0), c
	}
	if failed := firstWith(e.Results, Fail); failed != nil {
		c.Failures++
		c.NoData = 0
		return judgeFailure(*failed, c.Failures, failureLimit), c
	}
	missing := firstMissing(e.Results)
	gathering := firstWith(e.Results, Inconclusive)
	if missing == nil && gathering != nil && !held {
		// The evaluation had data, just not enough yet: the evaluations
		// without data before it (a new canary pod Prometheus had not
		// scraped) are no longer consecutive.
		c.NoData = 0
		return Verdict{Result: Inconclusive, Gathering: true, Reason: gathering.Reason}, c
	}
	if missing == nil {
		missing = gathering
	}
	if missing != nil || len(e.Results) == 0 {
		c.NoData++
		return judgeNoData(missing, c.NoData, noDataLimit), c
	}
	return Verdict{Result: Pass, Reason: passReason(e.Results)}, Counters{}
}

// rejected reports whether r is a comparison's rejection: a failed result
// with an e-value, which only comparisons have.
func (r CheckResult) rejected() bool { return r.Result == Fail && r.EValue != nil }

// firstRejected returns a copy of the first comparison's rejection.
func firstRejected(results []CheckResult) *CheckResult {
	for _, res := range results {
		if res.rejected() {
			return &res
		}
	}
	return nil
}

// firstMissing returns a copy of the first result inconclusive for want of
// data, not for gathering it.
func firstMissing(results []CheckResult) *CheckResult {
	for _, res := range results {
		if res.Result == Inconclusive && !res.Gathering {
			return &res
		}
	}
	return nil
}

// limits reads the tolerated counts; without an analysis nothing is
// tolerated.
func limits(a *Analysis) (failureLimit, noDataLimit int32) {
	if a == nil {
		return 0, 0
	}
	return a.FailureLimit, a.NoDataLimit
}

// firstWith returns a copy of the first result with the given outcome, so
// that a Verdict never aliases the Evaluation's slice.
func firstWith(results []CheckResult, r Result) *CheckResult {
	for _, res := range results {
		if res.Result == r {
			return &res
		}
	}
	return nil
}

// judgeFailure decides on an evaluation with a failed check, the
// failures'th since the last all-pass evaluation.
func judgeFailure(failed CheckResult, failures, limit int32) Verdict {
	if failures > limit {
		return Verdict{Result: Fail, Failed: &failed, Reason: failed.Reason}
	}
	return Verdict{
		Result: Inconclusive,
		Reason: fmt.Sprintf("%s (failure %d of %d tolerated)", failed.Reason, failures, limit),
	}
}

// judgeNoData decides on an evaluation without a failure but with an
// inconclusive check (missing) or with no checks at all (missing nil), the
// noData'th such evaluation in a row.
func judgeNoData(missing *CheckResult, noData, limit int32) Verdict {
	cause := "no checks were evaluated"
	if missing != nil {
		cause = missing.Reason
	}
	if noData <= limit {
		return Verdict{
			Result: Inconclusive,
			Reason: fmt.Sprintf("%s (no data %d of %d tolerated)", cause, noData, limit),
		}
	}
	return Verdict{Result: Fail, Failed: missing, Reason: noDataReason(missing, cause, noData, limit)}
}

// noDataReason reads "no data for error-rate in 5 consecutive evaluations
// (noDataLimit 4)". When the last cause was plain absence (the result's
// NoData) it is the start of the reason, side included ("no data for
// p99-latency on stable pods in ..."); any other cause (an unreachable
// Prometheus, a query returning several series) follows as "; last:
// <cause>", because that is what the user has to fix.
func noDataReason(missing *CheckResult, cause string, noData, limit int32) string {
	count := fmt.Sprintf(" in %s (noDataLimit %d)", evaluations(noData), limit)
	if missing != nil && missing.NoData {
		return cause + count
	}
	if missing != nil && missing.Gathering {
		return cause + " after the step's hold," + count + ": traffic does not reach the canary enough; " +
			"check its Services with kubectl fledge diagnose, lengthen the hold or lower analysis.minRequests"
	}
	subject := ""
	if missing != nil {
		subject = " for " + missing.Check
	}
	return "no data" + subject + count + "; last: " + cause
}

// evaluations reads "1 evaluation" or "5 consecutive evaluations".
func evaluations(n int32) string {
	if n == 1 {
		return "1 evaluation"
	}
	return fmt.Sprintf("%d consecutive evaluations", n)
}

// passReason lists every check's own reason, so that a log line or Event
// about a step that advanced still carries the numbers.
func passReason(results []CheckResult) string {
	reasons := make([]string, 0, len(results))
	for _, r := range results {
		reasons = append(reasons, r.Reason)
	}
	return strings.Join(reasons, "; ")
}
