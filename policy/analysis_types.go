package policy

import "time"

// Result is what one evaluation of a check, or of all of them, found.
type Result string

const (
	Pass Result = "Pass"
	Fail Result = "Fail"
	// Inconclusive: no series, NaN, Inf, Prometheus unreachable, erroring or
	// too slow. Never a pass: a rollout is never promoted on missing evidence.
	Inconclusive Result = "Inconclusive"
)

// CheckResult is one check evaluated once.
type CheckResult struct {
	Check  string `json:"check"`
	Result Result `json:"result"`
	// Value is the canary's value (for maxRatio: canary / stable); nil when
	// there was none.
	Value *float64 `json:"value,omitempty"`
	// Bound is the threshold the value was held to; Op is "<=" for max and
	// maxRatio, ">=" for min.
	Bound float64 `json:"bound"`
	Op    string  `json:"op"`
	// Reason says why, in a person's words: "error-rate 0.072 > 0.01",
	// "no data for error-rate".
	Reason string `json:"reason,omitempty"`
	// NoData marks an Inconclusive result whose query found no series at
	// all, as opposed to one that could not be asked or answered badly
	// (Prometheus unreachable, several series, NaN). Judge words the two
	// differently, and reads this field rather than the Reason, which is
	// for people.
	NoData bool `json:"noData,omitempty"`
	// Gathering marks an Inconclusive result that has data but not yet
	// enough: a canary that has served too few requests so far. Judge
	// holds the step on it rather than count missing evidence, until the
	// step's hold has run.
	Gathering bool `json:"gathering,omitempty"`
	// EValue is a comparison's e-value: the evidence against "the canary
	// is within the tolerance"; it fails at 1/alpha.
	EValue *float64 `json:"eValue,omitempty"`
}

// Evaluation is every check of an analysis evaluated once.
type Evaluation struct {
	At      time.Time
	Results []CheckResult
	// Readings are the counters read for each comparison, in policy
	// order; the router folds them into the attempt's tallies (see
	// Comparison.Count and Comparison.Judge) and adds the verdicts to
	// Results.
	Readings []Reading
}

// Counters are the consecutive failed and inconclusive evaluations so far.
// They are kept in the rollout state so that they survive a restart.
type Counters struct {
	Failures int32 `json:"failures,omitempty"`
	NoData   int32 `json:"noData,omitempty"`
}

// Verdict is what the analysis says of the canary after an evaluation.
type Verdict struct {
	Result Result
	// Failed is the check that ended the rollout (Result Fail).
	Failed *CheckResult
	Reason string
	// Gathering marks an Inconclusive verdict that only waits for more
	// requests while the hold runs; it counts nothing against the canary.
	Gathering bool
}

// Subject is what an analysis is about: a Deployment's canary and stable
// pods, each as a regex matching exactly that side's pod names.
type Subject struct {
	Namespace  string
	Deployment string
	CanaryPods string
	StablePods string
}
