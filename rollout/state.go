package rollout

import (
	"encoding/json"
	"fmt"

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
	// RollingBack: the canary is cut and the stable template restored.
	RollingBack Phase = "RollingBack"
	// Aborted: a person reverted the template or sent abort; the router
	// cleans up as for a rollback.
	Aborted Phase = "Aborted"
	// Succeeded and RolledBack are outcomes, recorded in AnnotationLast.
	Succeeded  Phase = "Succeeded"
	RolledBack Phase = "RolledBack"
)

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
	// StableRevision and CanaryRevision are TemplateHash values of the
	// template that served before the rollout and of the one being rolled out.
	StableRevision string `json:"stableRevision"`
	CanaryRevision string `json:"canaryRevision"`
	// Policy is a snapshot: editing the ConfigMap does not change a running rollout.
	Policy       policy.Policy    `json:"policy"`
	PolicySource string           `json:"policySource"`
	StartedAt    metav1.MicroTime `json:"startedAt"`
	// StepStartedAt is when the current step began (its canary pods were
	// scaled); HoldingSince is when they were all Ready, which starts the hold.
	StepStartedAt *metav1.MicroTime `json:"stepStartedAt,omitempty"`
	HoldingSince  *metav1.MicroTime `json:"holdingSince,omitempty"`
	// Replicas is the user's total for capacity shift, remembered because
	// the stable Deployment's own count is lowered during the rollout.
	Replicas int32 `json:"replicas,omitempty"`
	// StableSet is the stable count fledge last wrote under capacity shift:
	// a different count on the Deployment is a person's (or a tool's) new
	// total.
	StableSet int32 `json:"stableSet,omitempty"`
	// Analysis counts consecutive failed and inconclusive evaluations of the
	// Prometheus checks; LastAnalysis is when they were last evaluated and
	// Checks what that evaluation found. They live here so that a restarted
	// manager neither forgets a failure nor evaluates early.
	Analysis     policy.Counters      `json:"analysis,omitzero"`
	LastAnalysis *metav1.MicroTime    `json:"lastAnalysis,omitempty"`
	Checks       []policy.CheckResult `json:"checks,omitempty"`
	// PassedSince is when the step last began to have passing evidence.
	PassedSince *metav1.MicroTime `json:"passedSince,omitempty"`
	// FailedAt is when the verdict that ends the rollout was reached, to
	// measure how long cutting the canary took.
	FailedAt *metav1.MicroTime `json:"failedAt,omitempty"`
	// Reason says why the rollout is rolling back or aborted.
	Reason *Reason `json:"reason,omitempty"`
	// History records each step that was reached.
	History []StepRecord `json:"history,omitempty"`
	// Message says what the rollout waits for, in a person's words.
	Message string `json:"message,omitempty"`
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
	Effective float64          `json:"effective"`
	Canary    int32            `json:"canary"`
	Stable    int32            `json:"stable"`
	Started   metav1.MicroTime `json:"started"`
	// Ready is when the step's canary pods were all Ready: its hold began.
	Ready *metav1.MicroTime `json:"ready,omitempty"`
	Ended *metav1.MicroTime `json:"ended,omitempty"`
}

// Outcome is the summary of a finished rollout, kept as JSON in
// AnnotationLast.
type Outcome struct {
	// Phase is Succeeded, RolledBack or Aborted.
	Phase          Phase            `json:"phase"`
	StableRevision string           `json:"stableRevision"`
	CanaryRevision string           `json:"canaryRevision"`
	Reason         *Reason          `json:"reason,omitempty"`
	StartedAt      metav1.MicroTime `json:"startedAt"`
	FinishedAt     metav1.MicroTime `json:"finishedAt"`
	History        []StepRecord     `json:"history,omitempty"`
}

// ParseOutcome reads the last outcome of a Deployment; nil when none.
func ParseOutcome(d *appsv1.Deployment) (*Outcome, error) {
	return decode[Outcome](d, AnnotationLast, "rollout outcome")
}

// ParseState reads the rollout state of a Deployment; nil when none runs.
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

// Encode renders the state for AnnotationState.
func (s *State) Encode() (string, error) { return encode(s, "rollout state") }

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
