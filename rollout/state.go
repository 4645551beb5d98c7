package rollout

import (
	"encoding/json"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fledge-dev/fledge/policy"
)

// Phase is where a rollout stands (ARCHITECTURE.md, "Router: the state machine").
type Phase string

const (
	// Progressing: at a step, waiting for canary pods to be Ready, then
	// holding while checks run.
	Progressing Phase = "Progressing"
	// Paused: a manual approval step or a pause command; waits for a person.
	Paused Phase = "Paused"
	// Promoting: the stable Deployment is unpaused and rolls to the new
	// template while canary pods keep serving.
	Promoting Phase = "Promoting"
	// RollingBack: the canary is being cut; the Deployment then holds the
	// failed revision (see Holds).
	RollingBack Phase = "RollingBack"
	// Aborted: a person reverted the template or sent abort; the router
	// cuts the canary as for a rollback, and the Deployment holds the
	// revision unless its template is back to the stable one.
	Aborted Phase = "Aborted"
	// Succeeded and RolledBack are outcomes, recorded in AnnotationLast.
	Succeeded  Phase = "Succeeded"
	RolledBack Phase = "RolledBack"
)

// Live reports whether the rollout is at a step: its canary serves, its
// checks run and commands steer it.
func (p Phase) Live() bool { return p == Progressing || p == Paused }

// KeepsPaused reports whether the Deployment stays paused in this phase:
// in every phase but Promoting, where it rolls to the new template. The
// webhook keeps it so against a user's resume.
func (p Phase) KeepsPaused() bool { return p != Promoting }

// Ended says how a finished rollout ended, for a sentence: "succeeded",
// "rolled back", "aborted".
func (p Phase) Ended() string {
	if p == RolledBack {
		return "rolled back"
	}
	return strings.ToLower(string(p))
}

// Finishing reports whether the router is already bringing the rollout to an
// end, so a new template cannot be taken into it.
func (p Phase) Finishing() bool {
	return p == Promoting || p == RollingBack || p == Aborted
}

// State is the rollout in progress, kept as JSON in AnnotationState. It is
// the only place the rollout's state lives: a restarted manager resumes from it.
// Times are MicroTime: a hold of a few seconds must not lose up to a second
// to metav1.Time's whole-second encoding.
type State struct {
	Phase Phase `json:"phase"`
	// Step indexes Policy.Steps.
	Step int32 `json:"step"`
	// Attempt numbers the rollouts of this Deployment: one more than the
	// last outcome's, for a new revision, a re-release and a retry alike.
	// Canary pods carry it (LabelAttempt), so that an attempt is judged on
	// its own pods only.
	Attempt int32 `json:"attempt"`
	// StableRevision and CanaryRevision are TemplateHash values of the
	// template that served before the rollout and of the one being rolled out.
	StableRevision string `json:"stableRevision"`
	CanaryRevision string `json:"canaryRevision"`
	// Policy is a snapshot: editing the ConfigMap does not change a running rollout.
	Policy       policy.Policy    `json:"policy"`
	PolicySource string           `json:"policySource"`
	StartedAt    metav1.MicroTime `json:"startedAt"`
	// StepStartedAt is when the current step began (its canary pods were
	// scaled); HoldingSince is when they were all Ready and in the traffic
	// path, which starts the hold. Time the step spends stalled (see
	// StalledSince) is added to HoldingSince when the stall ends: it does
	// not count toward the hold.
	StepStartedAt *metav1.MicroTime `json:"stepStartedAt,omitempty"`
	HoldingSince  *metav1.MicroTime `json:"holdingSince,omitempty"`
	// NotReadySince is when the canary last had fewer Ready pods than
	// wanted (the step started, a scale, an HPA, a replaced pod):
	// health.readyTimeout counts from it, never from the start of the step.
	NotReadySince *metav1.MicroTime `json:"notReadySince,omitempty"`
	// StalledSince is when a holding step stopped being judged: canary pods
	// not Ready, no pods wanted, a Service that misses the canary, the
	// stable ReplicaSet gone. Message says which.
	StalledSince *metav1.MicroTime `json:"stalledSince,omitempty"`
	// Replicas is the user's total for capacity shift, remembered because
	// the stable Deployment's own count is lowered during the rollout.
	Replicas int32 `json:"replicas,omitempty"`
	// StableSet is the stable count fledge last wrote under capacity shift:
	// a different count on the Deployment is a person's (or a tool's) new
	// total.
	StableSet int32 `json:"stableSet,omitempty"`
	// PassedSince is when the step last began to have passing evidence. It
	// changes only when the verdict does; the figures of every evaluation
	// are Evidence, on the canary.
	PassedSince *metav1.MicroTime `json:"passedSince,omitempty"`
	// FailedAt is when the verdict that ends the rollout was reached.
	FailedAt *metav1.MicroTime `json:"failedAt,omitempty"`
	// Reason says why the rollout is rolling back or aborted.
	Reason *Reason `json:"reason,omitempty"`
	// History records each step that was reached.
	History []StepRecord `json:"history,omitempty"`
	// Message says what the rollout waits for, in a person's words. It
	// names conditions, not figures that change at every look, so that it
	// changes only on transitions.
	Message string `json:"message,omitempty"`
	// Seal authenticates the state: fledge's MAC over the rest of it and
	// the Deployment's UID (see SealState). It is the last member of the JSON.
	Seal string `json:"seal,omitempty"`
}

// Evidence is the last evaluation of a rollout's Prometheus checks, kept as
// JSON in AnnotationEvidence on the canary Deployment. It changes at every
// evaluation, which is why it is not part of State.
type Evidence struct {
	// Attempt and Step say which attempt and step it was gathered for;
	// evidence of another attempt is none at all.
	Attempt int32 `json:"attempt"`
	Step    int32 `json:"step"`
	// At is when the checks were evaluated; the next evaluation is due an
	// interval later, also after a manager restart.
	At metav1.MicroTime `json:"at"`
	// Counters are the consecutive failed and inconclusive evaluations of
	// this attempt; they carry over from step to step.
	Counters policy.Counters      `json:"counters,omitzero"`
	Checks   []policy.CheckResult `json:"checks,omitempty"`
	// Tallies are what each comparison of the policy counted of this
	// attempt, in policy order; like Counters they carry over from step to
	// step.
	Tallies []policy.Tally `json:"tallies,omitempty"`
	// Result and Verdict are the judgement of the evaluation, and why, in
	// a person's words.
	Result  policy.Result `json:"result,omitempty"`
	Verdict string        `json:"verdict,omitempty"`
	// Gathering marks an Inconclusive verdict that only waits for more
	// requests (policy.Verdict.Gathering).
	Gathering bool `json:"gathering,omitempty"`
	// UnderServed is set once the step's canary was seen serving far less
	// than its share of pods (see UnderServed), so that it is said once.
	UnderServed bool `json:"underServed,omitempty"`
	// Seal authenticates the evidence for its canary (see SealEvidence).
	Seal string `json:"seal,omitempty"`
}

// For returns the evidence of s's current attempt: its counters, and its
// checks and time only when they are of the current step. Evidence of
// another attempt, or none, is the zero Evidence of s.
func (e *Evidence) For(s *State) Evidence {
	if e == nil || e.Attempt != s.Attempt {
		return Evidence{Attempt: s.Attempt, Step: s.Step}
	}
	if e.Step != s.Step {
		return Evidence{Attempt: s.Attempt, Step: s.Step, Counters: e.Counters, Tallies: e.Tallies}
	}
	return *e
}

// Measured is the share of the current step's requests the canary
// served, in percent, and how many requests that is, from the first
// comparison's counts; ok is false without any, or when they are of
// another step.
func (e *Evidence) Measured() (share, requests float64, ok bool) {
	if e == nil || len(e.Tallies) == 0 || e.Tallies[0].Step != e.Step {
		return 0, 0, false
	}
	return e.Tallies[0].MeasuredShare()
}

// Thresholds of UnderServed: the canary should have had at least
// underServedExpected requests by its share of pods, and got under
// underServedFraction of them. At 40 expected requests, half of them is
// more than 3 standard deviations below what kube-proxy's uniform choice
// of endpoints gives, so chance alone rarely says so.
const (
	underServedExpected = 40
	underServedFraction = 0.5
)

// UnderServed reports whether a canary that served share percent of
// requests stays far below its effective weight (its share of pods):
// typically clients that keep connections open (HTTP keep-alive, HTTP/2,
// gRPC), which kube-proxy balances by connection, pinned to stable pods.
func UnderServed(share, requests, effective float64) bool {
	expected := requests * effective / 100
	return expected >= underServedExpected && share < underServedFraction*effective
}

// Reason is why a rollout failed: which check, which value against which
// bound, at which step and weight.
type Reason struct {
	// Check is the failing check's name, or a Kubernetes health check:
	// "ready-timeout", "restarts", "pod-failed"; "user" for an abort.
	Check   string   `json:"check"`
	Value   *float64 `json:"value,omitempty"`
	Bound   *float64 `json:"bound,omitempty"`
	Step    int32    `json:"step"`
	Weight  int32    `json:"weight"`
	Message string   `json:"message"`
}

// StepRecord is one step of a rollout as it happened.
type StepRecord struct {
	Step   int32 `json:"step"`
	Weight int32 `json:"weight"`
	// Effective is the canary's share of pods that the counts gave, in percent.
	Effective float64 `json:"effective"`
	// Measured is the share of the step's requests the canary served, in
	// percent, and Requests how many that is, by the policy's first
	// comparison; unset without one.
	Measured *float64         `json:"measured,omitempty"`
	Requests int64            `json:"requests,omitempty"`
	Canary   int32            `json:"canary"`
	Stable   int32            `json:"stable"`
	Started  metav1.MicroTime `json:"started"`
	// Ready is when the step's canary pods were all Ready: its hold began.
	Ready *metav1.MicroTime `json:"ready,omitempty"`
	Ended *metav1.MicroTime `json:"ended,omitempty"`
}

// Outcome is the summary of a finished rollout, kept as JSON in
// AnnotationLast.
type Outcome struct {
	// Phase is Succeeded, RolledBack or Aborted.
	Phase Phase `json:"phase"`
	// Attempt is the finished rollout's State.Attempt.
	Attempt        int32            `json:"attempt,omitempty"`
	StableRevision string           `json:"stableRevision"`
	CanaryRevision string           `json:"canaryRevision"`
	Reason         *Reason          `json:"reason,omitempty"`
	StartedAt      metav1.MicroTime `json:"startedAt"`
	FinishedAt     metav1.MicroTime `json:"finishedAt"`
	History        []StepRecord     `json:"history,omitempty"`
}

// Failed reports whether the rollout ended without its revision promoted.
func (o *Outcome) Failed() bool {
	return o != nil && (o.Phase == RolledBack || o.Phase == Aborted)
}

// Holds reports whether Deployment d holds the failed revision of outcome
// o (ARCHITECTURE.md, "Rollback"): the rollout ended without promoting,
// and d's template is still the one it rolled out. d stays paused, its
// stable ReplicaSet serving, until a person or git applies another
// template, or retries.
func Holds(d *appsv1.Deployment, o *Outcome) bool {
	return o.Failed() && o.CanaryRevision != "" && TemplateHash(&d.Spec.Template) == o.CanaryRevision
}

// NextAttempt is the attempt number of a rollout that starts after o.
func NextAttempt(o *Outcome) int32 {
	if o == nil {
		return 1
	}
	return o.Attempt + 1
}

// ParseOutcome reads the last outcome of a Deployment; nil when none.
func ParseOutcome(d *appsv1.Deployment) (*Outcome, error) {
	return decode[Outcome](d, AnnotationLast, "rollout outcome")
}

// ParseState reads the rollout state of a Deployment, without any check of
// its seal; nil when none runs. Tests look with it; what acts on a state
// opens it (OpenState), and what shows one reads it (ReadState).
func ParseState(d *appsv1.Deployment) (*State, error) {
	return decode[State](d, AnnotationState, "rollout state")
}

// decode reads the JSON of annotation key of d; nil when it is absent.
func decode[T any](d *appsv1.Deployment, key, what string) (*T, error) {
	raw := d.Annotations[key]
	if raw == "" {
		return nil, nil
	}
	var v T
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		return nil, fmt.Errorf("annotation %s of %s/%s is not a %s: %w", key, d.Namespace, d.Name, what, err)
	}
	return &v, nil
}

// Encode renders the outcome for AnnotationLast.
func (o *Outcome) Encode() (string, error) { return encode(o, "rollout outcome") }

// encode renders v as an annotation value.
func encode(v any, what string) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode %s: %w", what, err)
	}
	return string(b), nil
}
