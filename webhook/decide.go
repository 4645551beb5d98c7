package webhook

import (
	"fmt"
	"maps"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
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
	// Services are the Services of the namespace, to warn at apply about
	// one that would send the canary no traffic.
	Services []corev1.Service
	// Keys seal the state a new rollout starts with, and tell the state
	// fledge wrote from any other.
	Keys rollout.Keys
	Now  time.Time
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
	if u.FromFledge {
		return Decision{}
	}
	name := u.New.Name
	out := u.New.DeepCopy()
	warnings := keepOwnedAnnotations(u.Old, out)
	if rollout.Skipped(u.New) {
		// Skipping fledge bypasses its rollout, never its ownership of
		// its keys.
		return admit(u.New, out, warnings)
	}

	state, err := rollout.OpenState(u.Old, u.Keys)
	if err != nil {
		// A state fledge did not write (written before the namespace opted
		// in, or while the webhook was bypassed) is no rollout: the update
		// is decided as if there were none, and the router drops it.
		warnings = append(warnings, fmt.Sprintf("fledge: %v; fledge ignores it", err))
		state = nil
	}
	last, err := rollout.ParseOutcome(u.Old)
	if err != nil {
		warnings = append(warnings, fmt.Sprintf("fledge: %v", err))
	}
	if u.Old.Annotations[policy.Annotation] != u.New.Annotations[policy.Annotation] && u.Policy.Err != nil {
		return deny(name, u.Policy.Err)
	}
	if state == nil && rollout.Holds(u.Old, last) {
		return decideHeld(u, out, last, warnings)
	}
	stableHash := rollout.TemplateHash(&u.Old.Spec.Template)
	newHash := rollout.TemplateHash(&u.New.Spec.Template)
	if state != nil && state.Phase.KeepsPaused() && !out.Spec.Paused {
		// Paused until the router has cut the canary, even for a revert
		// (kubectl fledge undo), which is not told to use the plugin.
		out.Spec.Paused = true
		if newHash != state.StableRevision {
			warnings = append(warnings, fmt.Sprintf("fledge: %s stays paused while its rollout runs; use kubectl fledge pause|resume|promote|abort %s", name, name))
		}
	}
	switch {
	case stableHash == newHash:
		return admit(u.New, out, warnings)
	case state == nil:
		if ptr.Deref(u.New.Spec.Replicas, 1) == 0 || u.Old.Status.ReadyReplicas == 0 {
			// Nothing serves yet, so there is nothing to protect: roll out natively.
			return admit(u.New, out, warnings)
		}
		if u.Policy.Err != nil {
			return deny(name, u.Policy.Err)
		}
		s := newState(u, stableHash, newHash, rollout.NextAttempt(last))
		return start(u, out, s, rollout.PodLabels(&u.Old.Spec.Template), warnings,
			fmt.Sprintf("fledge: canary rollout started for %s: %s", name, u.Policy.Policy.StepsString()))
	case state.Phase.Finishing():
		return Decision{Denied: fmt.Sprintf("fledge: %s is finishing a rollout (%s)%s; apply again when it is done (kubectl fledge status %s), or %s",
			name, state.Phase, promotionWait(u.Old, state), name, bypass)}
	case newHash == state.StableRevision:
		s := *state
		s.Phase = rollout.Aborted
		s.Message = "aborted by user: the template is back to the stable version"
		return start(u, out, &s, nil, warnings, fmt.Sprintf("fledge: rollout of %s aborted: the template is back to the stable version; the canary is being removed", name))
	case newHash == state.CanaryRevision:
		return admit(u.New, out, warnings)
	default:
		if u.Policy.Err != nil {
			return deny(name, u.Policy.Err)
		}
		s := newState(u, state.StableRevision, newHash, state.Attempt+1)
		return start(u, out, s, rollout.PodLabels(&u.Old.Spec.Template), warnings,
			fmt.Sprintf("fledge: a new revision of %s supersedes the canary; restarting at step 1: %s", name, u.Policy.Policy.StepsString()))
	}
}

// Create is a Deployment CREATE that carries fledge-owned annotations (a
// restored backup, a copied manifest): the apiserver calls the webhook for
// no other.
type Create struct {
	New        *appsv1.Deployment
	FromFledge bool
}

// DecideCreate strips the fledge-owned annotations from a new Deployment:
// a state or an outcome is fledge's record of one Deployment, and a new one
// (a new UID) has had no rollout. A Deployment restored from a backup taken
// mid-rollout therefore starts clean; the pause that came with its state
// was fledge's, so it is lifted, and with nothing serving yet the
// Deployment rolls out natively, as any new one does.
func DecideCreate(c Create) Decision {
	if c.FromFledge {
		return Decision{}
	}
	out := c.New.DeepCopy()
	var stripped []string
	for _, key := range rollout.OwnedAnnotations {
		if _, ok := out.Annotations[key]; ok {
			delete(out.Annotations, key)
			stripped = append(stripped, key)
		}
	}
	if len(stripped) == 0 {
		return Decision{}
	}
	msg := fmt.Sprintf("fledge: removed %s from the new Deployment %s: only fledge writes them, for the Deployment it rolls out; a new Deployment starts with no rollout",
		strings.Join(stripped, " and "), c.New.Name)
	if _, had := c.New.Annotations[rollout.AnnotationState]; had && out.Spec.Paused {
		out.Spec.Paused = false
		msg += ", so the pause that came with its rollout state is lifted"
	}
	return Decision{Object: out, Warnings: []string{msg}}
}

// DecideStatus puts back the fledge-owned annotations that a write through
// the deployments/status subresource, which can change metadata, tried to
// change. The apiserver calls the webhook for no other status write.
func DecideStatus(old, cur *appsv1.Deployment, fromFledge bool) Decision {
	if fromFledge {
		return Decision{}
	}
	out := cur.DeepCopy()
	warnings := keepOwnedAnnotations(old, out)
	return admit(cur, out, warnings)
}

// decideHeld decides on an update of a Deployment that holds the failed
// revision of last (ARCHITECTURE.md, "Webhook", case 6): the stable
// template unpauses it, the failed one again changes nothing, a retry or
// any other template starts a new rollout from the stable revision.
func decideHeld(u Update, out *appsv1.Deployment, last *rollout.Outcome, warnings []string) Decision {
	name := u.New.Name
	newHash := rollout.TemplateHash(&u.New.Spec.Template)
	retry := u.New.Annotations[rollout.AnnotationCommand] == rollout.CommandRetry
	switch {
	case newHash == last.StableRevision:
		out.Spec.Paused = false
		return admit(u.New, out, append(warnings, fmt.Sprintf("fledge: %s is back on the stable revision %s and unpaused; the failed revision %s is no longer held", name, last.StableRevision, last.CanaryRevision)))
	case newHash == last.CanaryRevision && !retry:
		out.Spec.Paused = true
		return admit(u.New, out, append(warnings, heldWarning(name, last)))
	case ptr.Deref(u.New.Spec.Replicas, 1) == 0 || u.Old.Status.ReadyReplicas == 0:
		// Nothing serves: a new template (or a retry) rolls out natively,
		// as for any Deployment without a stable version to protect.
		out.Spec.Paused = false
		delete(out.Annotations, rollout.AnnotationCommand)
		return admit(u.New, out, append(warnings, fmt.Sprintf("fledge: %s has no ready pods to protect: it rolls out natively, unpaused", name)))
	case u.Policy.Err != nil:
		return deny(name, u.Policy.Err)
	}
	s := newState(u, last.StableRevision, newHash, rollout.NextAttempt(last))
	msg := fmt.Sprintf("fledge: canary rollout started for %s from the stable revision %s: %s", name, last.StableRevision, u.Policy.Policy.StepsString())
	if retry {
		delete(out.Annotations, rollout.AnnotationCommand)
		msg = fmt.Sprintf("fledge: retrying revision %s of %s as attempt %d, on new canary pods: %s", newHash, name, s.Attempt, u.Policy.Policy.StepsString())
	}
	// The stable pods are the stable ReplicaSet's, which the webhook does
	// not read; the router checks the Services at the first step.
	return start(u, out, s, nil, warnings, msg)
}

// heldWarning says that an update of a Deployment holding a failed
// revision changes nothing, when and why it failed, and the ways out.
func heldWarning(name string, last *rollout.Outcome) string {
	why := string(last.Phase)
	if r := last.Reason; r != nil {
		why = fmt.Sprintf("%s at step %d (%d%%)", r.Message, r.Step+1, r.Weight)
	}
	return fmt.Sprintf("fledge: %s holds revision %s, %s at %s (%s): applying it again releases nothing; %s stays paused and the stable revision %s serves. "+
		"To release it again: kubectl fledge retry %s; to go back: kubectl fledge undo %s, or apply the stable manifest",
		name, last.CanaryRevision, last.Phase.Ended(), last.FinishedAt.UTC().Format(time.RFC3339), why, name, last.StableRevision, name, name)
}

// promotionWait says how long a promotion may still take when the
// Deployment's minReadySeconds makes each new pod wait before it counts.
func promotionWait(d *appsv1.Deployment, s *rollout.State) string {
	if s.Phase != rollout.Promoting || d.Spec.MinReadySeconds <= 0 {
		return ""
	}
	replicas := int(ptr.Deref(d.Spec.Replicas, 1))
	surge := 1
	if ru := d.Spec.Strategy.RollingUpdate; ru != nil && ru.MaxSurge != nil {
		if v, err := intstr.GetScaledValueFromIntOrPercent(ru.MaxSurge, replicas, true); err == nil && v > 0 {
			surge = v
		}
	} else if v := (replicas + 3) / 4; v > 0 {
		surge = v // the default maxSurge, 25% rounded up
	}
	batches := (replicas + surge - 1) / surge
	wait := time.Duration(batches*int(d.Spec.MinReadySeconds)) * time.Second
	return fmt.Sprintf(": its minReadySeconds (%ds) makes each new pod wait before it counts, so the promotion of %d pods in batches of %d may take up to about %s",
		d.Spec.MinReadySeconds, replicas, surge, wait)
}

// newState is the state of a rollout that starts now at its first step.
func newState(u Update, stable, canary string, attempt int32) *rollout.State {
	return &rollout.State{
		Phase:          rollout.Progressing,
		Attempt:        attempt,
		StableRevision: stable,
		CanaryRevision: canary,
		Policy:         *u.Policy.Policy,
		PolicySource:   u.Policy.Source,
		StartedAt:      metav1.NewMicroTime(u.Now),
	}
}

// start writes the state into the Deployment and pauses it. With the
// stable pods' labels, it warns of every Service that would send the canary
// no traffic: the rollout will hold until it does.
func start(u Update, out *appsv1.Deployment, s *rollout.State, stable labels.Set, warnings []string, msg string) Decision {
	encoded, err := rollout.SealState(s, u.Keys, u.Old.UID)
	if err != nil {
		return Decision{Denied: fmt.Sprintf("fledge: %s: %v; try again in a few seconds, or %s", u.New.Name, err, bypass)}
	}
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[rollout.AnnotationState] = encoded
	out.Spec.Paused = true
	warnings = append(warnings, msg)
	if stable != nil {
		canary := rollout.CanaryPodLabels(out, s.Attempt)
		for _, gap := range rollout.ServiceGaps(u.Services, stable, canary) {
			warnings = append(warnings, "fledge: "+gap.Gap()+"; the rollout holds until it does")
		}
	}
	return Decision{Object: out, Warnings: warnings}
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
