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
type State struct {
	Phase Phase `json:"phase"`
	// Step indexes Policy.Steps.
	Step int32 `json:"step"`
	// StableRevision and CanaryRevision are TemplateHash values of the
	// template that served before the rollout and of the one being rolled out.
	StableRevision string `json:"stableRevision"`
	CanaryRevision string `json:"canaryRevision"`
	// Policy is a snapshot: editing the ConfigMap does not change a running rollout.
	Policy       policy.Policy `json:"policy"`
	PolicySource string        `json:"policySource"`
	StartedAt    metav1.Time   `json:"startedAt"`
	// StepStartedAt is when the current step began.
	StepStartedAt *metav1.Time `json:"stepStartedAt,omitempty"`
	// Message says why the phase is what it is, in a person's words.
	Message string `json:"message,omitempty"`
}

// ParseState reads the rollout state of a Deployment; nil when none runs.
func ParseState(d *appsv1.Deployment) (*State, error) {
	raw, ok := d.Annotations[AnnotationState]
	if !ok || raw == "" {
		return nil, nil
	}
	var s State
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return nil, fmt.Errorf("annotation %s of %s/%s is not a rollout state: %w", AnnotationState, d.Namespace, d.Name, err)
	}
	return &s, nil
}

// Encode renders the state for AnnotationState.
func (s *State) Encode() (string, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("encode rollout state: %w", err)
	}
	return string(b), nil
}
