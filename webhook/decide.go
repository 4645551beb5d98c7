package webhook

import (
	"fmt"
	"maps"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/fledge-dev/fledge/policy"
	"github.com/fledge-dev/fledge/rollout"
)

// Update is what the mutating webhook decides on: one Deployment UPDATE.
type Update struct {
	Old, New *appsv1.Deployment
	// FromFledge is true when fledge's own identity sent the request.
	FromFledge bool
	// Policy is the policy resolved for New (its annotation, the namespace's
	// fledge-policy ConfigMap, or the built-in default).
	Policy Resolved
	Now    time.Time
}

// Resolved is the outcome of resolving a Deployment's policy.
type Resolved struct {
	Policy *policy.Policy
	Source string
	Err    error
}

// Decision is the webhook's answer.
type Decision struct {
	// Denied, when not empty, refuses the update with this message.
	Denied string
	// Object is the Deployment to admit in place of Update.New; nil admits
	// it unchanged.
	Object *appsv1.Deployment
	// Warnings are shown by kubectl to the person who applied.
	Warnings []string
}

// bypass tells a refused user how to deploy without fledge.
const bypass = "to deploy without fledge, set the annotation fledge.dev/skip: \"true\" on the Deployment or remove the label fledge.dev/enabled from the namespace"

// Decide implements ARCHITECTURE.md, "Webhook: what an UPDATE does". It is a
// pure function of the update: no clock, no client.
func Decide(u Update) Decision {
	if u.FromFledge || u.New.Annotations[rollout.AnnotationSkip] == "true" {
		return Decision{}
	}
	name := u.New.Name
	out := u.New.DeepCopy()
	warnings := keepOwnedAnnotations(u.Old, out)

	state, err := rollout.ParseState(u.Old)
	if err != nil {
		// Only fledge writes the state, so this is a bug or a hand edit that
		// got past the webhook. Admitting keeps the Deployment usable; the
		// router reports the broken state.
		warnings = append(warnings, fmt.Sprintf("fledge: %v", err))
	}
	running := state != nil
	if running && !out.Spec.Paused {
		out.Spec.Paused = true
		warnings = append(warnings, fmt.Sprintf("fledge: %s stays paused while its rollout runs; use kubectl fledge pause|resume|promote|abort %s", name, name))
	}
	if u.Old.Annotations[policy.Annotation] != u.New.Annotations[policy.Annotation] && u.Policy.Err != nil {
		return deny(name, u.Policy.Err)
	}

	stableHash := rollout.TemplateHash(&u.Old.Spec.Template)
	newHash := rollout.TemplateHash(&u.New.Spec.Template)
	switch {
	case stableHash == newHash:
		return admit(u.New, out, warnings)
	case !running:
		if ptr.Deref(u.New.Spec.Replicas, 1) == 0 || u.Old.Status.ReadyReplicas == 0 {
			// Nothing serves yet, so there is nothing to protect: roll out natively.
			return admit(u.New, out, warnings)
		}
		if u.Policy.Err != nil {
			return deny(name, u.Policy.Err)
		}
		s := newState(u, stableHash, newHash)
		return start(out, s, warnings, fmt.Sprintf("fledge: canary rollout started for %s: %s", name, u.Policy.Policy.StepsString()))
	case state.Phase.Finishing():
		return Decision{Denied: fmt.Sprintf("fledge: %s is finishing a rollout (%s); apply again when it is done (kubectl fledge status %s), or %s", name, state.Phase, name, bypass)}
	case newHash == state.StableRevision:
		s := *state
		s.Phase = rollout.Aborted
		s.Message = "aborted by user: the template is back to the stable version"
		return start(out, &s, warnings, fmt.Sprintf("fledge: rollout of %s aborted: the template is back to the stable version; the canary is being removed", name))
	case newHash == state.CanaryRevision:
		return admit(u.New, out, warnings)
	default:
		if u.Policy.Err != nil {
			return deny(name, u.Policy.Err)
		}
		s := newState(u, state.StableRevision, newHash)
		return start(out, s, warnings, fmt.Sprintf("fledge: a new revision of %s supersedes the canary; restarting at step 1: %s", name, u.Policy.Policy.StepsString()))
	}
}

// newState is the state of a rollout that starts now at its first step.
func newState(u Update, stable, canary string) *rollout.State {
	return &rollout.State{
		Phase:          rollout.Progressing,
		StableRevision: stable,
		CanaryRevision: canary,
		Policy:         *u.Policy.Policy,
		PolicySource:   u.Policy.Source,
		StartedAt:      metav1.NewMicroTime(u.Now),
	}
}

// start writes the state into the Deployment and pauses it.
func start(out *appsv1.Deployment, s *rollout.State, warnings []string, msg string) Decision {
	encoded, err := s.Encode()
	if err != nil {
		return Decision{Denied: fmt.Sprintf("fledge: %v", err)}
	}
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[rollout.AnnotationState] = encoded
	out.Spec.Paused = true
	return Decision{Object: out, Warnings: append(warnings, msg)}
}

// keepOwnedAnnotations puts back the fledge-owned annotations of old into
// out, and says so when a user had changed them.
func keepOwnedAnnotations(old, out *appsv1.Deployment) []string {
	var warnings []string
	for _, key := range rollout.OwnedAnnotations {
		was, had := old.Annotations[key]
		now, has := out.Annotations[key]
		if was == now && had == has {
			continue
		}
		if had {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[key] = was
		} else {
			delete(out.Annotations, key)
		}
		warnings = append(warnings, fmt.Sprintf("fledge: annotation %s is written by fledge only; your change to it was undone", key))
	}
	return warnings
}

// admit admits out, or the request unchanged when out is no different.
func admit(in, out *appsv1.Deployment, warnings []string) Decision {
	if out.Spec.Paused == in.Spec.Paused && maps.Equal(out.Annotations, in.Annotations) {
		return Decision{Warnings: warnings}
	}
	return Decision{Object: out, Warnings: warnings}
}

func deny(name string, err error) Decision {
	return Decision{Denied: fmt.Sprintf("fledge: %s: %v; fix the policy, or %s", name, err, bypass)}
}
