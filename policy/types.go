package policy

import (
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Policy is how a team wants its Deployments rolled out: the canary steps,
// how canary capacity is found, the Kubernetes health checks that always run
// and the optional Prometheus analysis.
//
// The same type is the snapshot the webhook writes into the
// fledge.dev/rollout annotation, so its JSON form must round-trip exactly:
// fields are omitted only when their zero value and their absence mean the
// same thing.
type Policy struct {
	// Steps are the canary weights in increasing order; 100% is implied after
	// the last one.
	Steps []Step `json:"steps,omitempty"`
	// Capacity says whether the canary is added on top of the stable
	// replicas (surge) or taken out of them (shift).
	Capacity Capacity `json:"capacity,omitempty"`
	// Health holds the Kubernetes-native checks, which always run.
	Health Health `json:"health,omitzero"`
	// Analysis holds the Prometheus checks; nil means health checks only.
	Analysis *Analysis `json:"analysis,omitempty"`
}

// Step is one canary weight and how long it must stay healthy.
type Step struct {
	// Weight is the canary's share of traffic in percent, 1 to 99.
	Weight int32 `json:"weight,omitempty"`
	// Hold is how long the canary stays at Weight with all checks passing
	// before the next step.
	Hold metav1.Duration `json:"hold,omitzero"`
	// Approval is "" (advance on its own) or ApprovalManual (wait for
	// `kubectl fledge promote` once the hold passed).
	Approval string `json:"approval,omitempty"`
}

// ApprovalManual makes a step wait for `kubectl fledge promote`.
const ApprovalManual = "manual"

// Capacity is how the router finds room for canary pods.
type Capacity string

const (
	// CapacitySurge adds canary pods on top of the unchanged stable replicas,
	// so a rollback never waits for stable pods to come back.
	CapacitySurge Capacity = "surge"
	// CapacityShift keeps the total replica count and moves pods from stable
	// to canary, for namespaces short of quota.
	CapacityShift Capacity = "shift"
)

// Health holds the Kubernetes-native checks run on canary pods.
type Health struct {
	// ReadyTimeout is how long canary pods may take to become Ready before
	// the rollout is rolled back.
	ReadyTimeout metav1.Duration `json:"readyTimeout,omitzero"`
	// MaxRestarts is the number of container restarts tolerated across all
	// canary pods.
	MaxRestarts int32 `json:"maxRestarts,omitempty"`
}

// Analysis holds the Prometheus checks and how often they run.
type Analysis struct {
	// Interval is the time between two evaluations of the checks.
	Interval metav1.Duration `json:"interval,omitzero"`
	// FailureLimit is the number of failed evaluations tolerated; one more
	// rolls back. It is never omitted: 0 is a meaningful value that differs
	// from the default, and a snapshot re-read as a policy must keep it.
	FailureLimit int32 `json:"failureLimit"`
	// NoDataLimit is the number of evaluations without data tolerated; one
	// more rolls back. Never omitted, for the same reason as FailureLimit.
	NoDataLimit int32 `json:"noDataLimit"`
	// Prometheus is where the queries run.
	Prometheus Prometheus `json:"prometheus,omitzero"`
	// Checks are the queries and their thresholds.
	Checks []Check `json:"checks,omitempty"`
	// Compare are the comparisons of canary and stable on request counts,
	// each an anytime-valid sequential test (see Comparison).
	Compare []Comparison `json:"compare,omitempty"`
	// MinRequests is the fewest requests the canary must serve at a step
	// before the step passes, whatever the checks say. It needs a
	// comparison, whose requests query counts them; 0 sets no minimum.
	MinRequests int32 `json:"minRequests,omitempty"`
}

// Prometheus locates the Prometheus HTTP API.
type Prometheus struct {
	// URL is the base URL of the API, such as
	// http://prometheus.monitoring.svc:9090.
	URL string `json:"url,omitempty"`
}

// Check is one Prometheus query and the single threshold its canary value
// is judged against.
type Check struct {
	// Name identifies the check in events, metrics and status output.
	Name string `json:"name,omitempty"`
	// Query is a PromQL query written as a text/template over QueryVars.
	Query string `json:"query,omitempty"`
	// Max is the highest value the canary may show.
	Max *float64 `json:"max,omitempty"`
	// Min is the lowest value the canary may show.
	Min *float64 `json:"min,omitempty"`
	// MaxRatio is the highest canary value as a multiple of the same query
	// on the stable pods.
	MaxRatio *float64 `json:"maxRatio,omitempty"`
}

// Comparison judges the canary against the stable pods on counts: of all
// requests, and of those that failed. It rolls the canary back as soon as
// its error rate is, beyond chance, more than (1 + Tolerance) × the stable
// pods' rate, and its chance of doing so to a canary that is no worse is at
// most Alpha, however often it looks (sequential.go has the math).
type Comparison struct {
	// Name identifies the comparison, as a check's name does.
	Name string `json:"name,omitempty"`
	// Requests and Errors are PromQL templates over QueryVars for counters
	// of one side's pods: all requests, and the failed ones. Each must
	// return one series per pod or finer (each with a pod label), never a
	// sum across pods, so that a restarted pod's counter reset is seen as
	// that pod's.
	Requests string `json:"requests,omitempty"`
	Errors   string `json:"errors,omitempty"`
	// Tolerance is how much worse than stable the canary may be, relative:
	// 0.5 lets its error rate reach 1.5 × stable's. Never omitted, since 0
	// (no worse at all) is a value of its own.
	Tolerance float64 `json:"tolerance"`
	// Alpha bounds the chance of rolling back a canary that is within the
	// tolerance.
	Alpha float64 `json:"alpha,omitempty"`
}

// Built-in defaults, used when policy.yaml leaves a field out and by Default.
const (
	defaultHold         = time.Minute
	defaultReadyTimeout = 5 * time.Minute
	defaultInterval     = 15 * time.Second
	defaultFailureLimit = 1
	defaultNoDataLimit  = 4
	defaultTolerance    = 0.5
	defaultAlpha        = 0.01
	defaultMinRequests  = 100
)

// Default is the policy of a namespace without a policy ConfigMap: 5%, 25%
// and 50% held one minute each, judged by Kubernetes health alone, because
// fledge cannot assume a Prometheus it was not told about.
func Default() *Policy {
	hold := metav1.Duration{Duration: defaultHold}
	return &Policy{
		Steps:    []Step{{Weight: 5, Hold: hold}, {Weight: 25, Hold: hold}, {Weight: 50, Hold: hold}},
		Capacity: CapacitySurge,
		Health:   defaultHealth(),
	}
}

// defaultHealth is the health section when policy.yaml leaves it out.
func defaultHealth() Health {
	return Health{ReadyTimeout: metav1.Duration{Duration: defaultReadyTimeout}}
}

// defaultAnalysis is what an analysis section starts from before its
// written fields are decoded over it.
func defaultAnalysis() *Analysis {
	return &Analysis{
		Interval:     metav1.Duration{Duration: defaultInterval},
		FailureLimit: defaultFailureLimit,
		NoDataLimit:  defaultNoDataLimit,
	}
}

// StepsString renders the steps the way admission warnings and status output
// show them: "5% → 25% → 50% (manual) → 100%". The final 100% is the
// promotion every rollout ends with.
func (p *Policy) StepsString() string {
	if p == nil {
		return ""
	}
	parts := make([]string, 0, len(p.Steps)+1)
	for _, s := range p.Steps {
		part := fmt.Sprintf("%d%%", s.Weight)
		if s.Approval == ApprovalManual {
			part += " (manual)"
		}
		parts = append(parts, part)
	}
	parts = append(parts, "100%")
	return strings.Join(parts, " → ")
}

// formatDuration renders d as people write it in YAML: "1m" and "24h"
// rather than time.Duration's "1m0s" and "24h0m0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
