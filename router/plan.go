package router

import (
	"fmt"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/fledge-dev/fledge/policy"
	"github.com/fledge-dev/fledge/rollout"
)

// Observed is what one reconcile read of a rollout: the stable Deployment
// and its state, the canary, its pods, and, when it was due, an evaluation
// of the Prometheus checks.
type Observed struct {
	Now        time.Time
	Deployment *appsv1.Deployment
	State      *rollout.State
	// Command is the fledge.dev/command annotation, if any.
	Command string
	// Canary is the <name>-canary Deployment; nil when there is none.
	Canary *appsv1.Deployment
	// CanaryPods are the pods of the canary (not terminating).
	CanaryPods []corev1.Pod
	// StableTemplate is the template of the stable ReplicaSet, to restore on
	// rollback; nil when that ReplicaSet is gone.
	StableTemplate *corev1.PodTemplateSpec
	// HPA is true when a HorizontalPodAutoscaler targets the Deployment.
	HPA bool
	// Evaluation is the analysis made in this reconcile; nil when none was due.
	Evaluation *policy.Evaluation
}

// Plan is what a reconcile must do. apply carries it out.
type Plan struct {
	// State is the rollout state to write; nil removes the annotation (the
	// rollout is over).
	State *rollout.State
	// Outcome, when set, is written as the last rollout.
	Outcome *rollout.Outcome
	// CanaryReplicas is the canary's replica count; nil means the canary
	// Deployment is not wanted (deleted if it exists).
	CanaryReplicas *int32
	// StableReplicas, when set, is the stable Deployment's replica count
	// (capacity shift).
	StableReplicas *int32
	// Paused is the stable Deployment's spec.paused.
	Paused bool
	// Template, when set, replaces the stable Deployment's template (rollback).
	Template *corev1.PodTemplateSpec
	// ClearCommand removes the fledge.dev/command annotation.
	ClearCommand bool
	// Events to emit on the Deployment, in order.
	Events []Event
	// CanaryGone is set on the reconcile that saw the failed canary reach
	// zero pods, to measure how long cutting it took.
	CanaryGone bool
	// RequeueAfter is when to look again without a change to wait for.
	RequeueAfter time.Duration
}

// Event is one Kubernetes Event to emit.
type Event struct {
	Type    string // corev1.EventTypeNormal or corev1.EventTypeWarning
	Reason  string
	Message string
}

// Requeue intervals when nothing else wakes the reconciler.
const (
	pollWaiting = 2 * time.Second // waiting for pods or the Deployment controller
)

// planner builds one Plan.
type planner struct {
	o    Observed
	s    rollout.State // the state being planned; a copy
	plan Plan
}

// plan decides what to do with a rollout. It is pure: everything it needs is
// in o, and it only returns what apply must write.
func plan(o Observed) Plan {
	p := &planner{o: o, s: copyState(o.State)}
	p.plan.Paused = true
	p.command()
	if p.o.Deployment.Annotations[rollout.AnnotationSkip] == "true" {
		p.handBack()
		return p.result()
	}
	switch p.s.Phase {
	case rollout.Progressing, rollout.Paused:
		p.progress()
	case rollout.Promoting:
		p.promote()
	case rollout.RollingBack, rollout.Aborted:
		p.rollBack()
	default:
		p.fail(rollout.Reason{Check: "state", Message: fmt.Sprintf("unknown phase %q in fledge.dev/rollout", p.s.Phase)})
		p.rollBack()
	}
	return p.result()
}

// result is the plan, with the planned state unless the rollout ended.
func (p *planner) result() Plan {
	if p.plan.State == nil && p.plan.Outcome == nil {
		// The rollout goes on: write the planned state.
		p.plan.State = &p.s
	}
	return p.plan
}

func copyState(s *rollout.State) rollout.State {
	c := *s
	c.History = slices.Clone(s.History)
	c.Checks = slices.Clone(s.Checks)
	return c
}

func (p *planner) event(typ, reason, format string, args ...any) {
	p.plan.Events = append(p.plan.Events, Event{Type: typ, Reason: reason, Message: fmt.Sprintf(format, args...)})
}

func (p *planner) requeue(d time.Duration) {
	if d <= 0 {
		d = time.Second
	}
	if p.plan.RequeueAfter == 0 || d < p.plan.RequeueAfter {
		p.plan.RequeueAfter = d
	}
}

// name is the Deployment's name, for messages.
func (p *planner) name() string { return p.o.Deployment.Name }

// command consumes the fledge.dev/command annotation. It only changes the
// state; the phase switch of plan then acts on it.
func (p *planner) command() {
	cmd := p.o.Command
	if cmd == "" {
		return
	}
	p.plan.ClearCommand = true
	live := p.s.Phase == rollout.Progressing || p.s.Phase == rollout.Paused
	switch {
	case cmd == rollout.CommandAbort && !p.s.Phase.Finishing():
		p.s.Phase = rollout.Aborted
		p.s.Reason = &rollout.Reason{Check: "user", Step: p.s.Step, Weight: p.weight(), Message: "aborted by user"}
		p.event(corev1.EventTypeNormal, "Command", "abort: aborting the rollout of %s at step %d (%d%%)", p.name(), p.s.Step+1, p.weight())
	case cmd == rollout.CommandPause && live:
		p.s.Phase = rollout.Paused
		p.s.Message = "paused by user: kubectl fledge resume " + p.name()
		p.event(corev1.EventTypeNormal, "Command", "pause: %s holds at step %d (%d%%)", p.name(), p.s.Step+1, p.weight())
	case cmd == rollout.CommandResume && p.s.Phase == rollout.Paused:
		p.s.Phase = rollout.Progressing
		p.s.Message = ""
		p.event(corev1.EventTypeNormal, "Command", "resume: %s goes on at step %d (%d%%)", p.name(), p.s.Step+1, p.weight())
	case cmd == rollout.CommandPromote && live:
		p.event(corev1.EventTypeNormal, "Command", "promote: %s leaves step %d (%d%%) now", p.name(), p.s.Step+1, p.weight())
		p.s.Phase = rollout.Progressing
		p.advance()
	case cmd == rollout.CommandPromoteFull && live:
		p.event(corev1.EventTypeNormal, "Command", "promote-full: %s skips to promotion", p.name())
		p.endStep()
		p.startPromotion()
	case cmd == rollout.CommandAbort || cmd == rollout.CommandPause || cmd == rollout.CommandResume || cmd == rollout.CommandPromote || cmd == rollout.CommandPromoteFull:
		p.event(corev1.EventTypeWarning, "CommandIgnored", "%s: the rollout of %s is %s; nothing to do", cmd, p.name(), p.s.Phase)
	default:
		p.event(corev1.EventTypeWarning, "CommandIgnored", "unknown command %q; use promote, promote-full, abort, pause or resume", cmd)
	}
}

// weight is the target weight of the current step.
func (p *planner) weight() int32 {
	if int(p.s.Step) < len(p.s.Policy.Steps) {
		return p.s.Policy.Steps[p.s.Step].Weight
	}
	return 100
}

// stableReplicas is the user's replica count for the stable version.
func (p *planner) stableReplicas() int32 {
	return ptr.Deref(p.o.Deployment.Spec.Replicas, 1)
}

// shift reports whether this rollout moves pods from stable to canary, and
// says once why not when the policy asked for it but cannot have it.
func (p *planner) shift() bool {
	if p.s.Policy.Capacity != policy.CapacityShift {
		return false
	}
	return !p.o.HPA && p.total() > 1
}

// followScale takes a change of the Deployment's replicas during a shift
// rollout as the user's new total. (A count read from a cache that lags
// fledge's own write looks the same; the write planned from it carries the
// stale resourceVersion and is refused, so the next reconcile sees better.)
func (p *planner) followScale() {
	if p.s.Policy.Capacity != policy.CapacityShift || p.s.Replicas == 0 {
		return
	}
	expected := p.s.Replicas
	if p.s.StableSet > 0 {
		expected = p.s.StableSet
	}
	if observed := p.stableReplicas(); observed != expected {
		p.s.Replicas = observed
		p.s.StableSet = 0
		p.event(corev1.EventTypeNormal, "Scaled", "%s was scaled to %d replicas: the rollout now shares %d pods between stable and canary", p.name(), observed, observed)
	}
}

// total is the user's replica count, remembered for capacity shift.
func (p *planner) total() int32 {
	if p.s.Replicas > 0 {
		return p.s.Replicas
	}
	return p.stableReplicas()
}

// counts returns the planned canary and stable counts for the current step.
func (p *planner) counts() (canary, stable int32) {
	if p.shift() {
		return ShiftReplicas(p.total(), p.weight())
	}
	s := p.stableReplicas()
	return SurgeReplicas(s, p.weight()), s
}

// progress runs the current step: canary pods up, Ready, health watched,
// held, then the next step.
func (p *planner) progress() {
	if p.s.StepStartedAt == nil {
		p.startStep()
	}
	p.followScale()
	canary, stable := p.counts()
	p.plan.CanaryReplicas = ptr.To(canary)

	if reason := p.podHealth(); reason != nil {
		p.fail(*reason)
		p.rollBack()
		return
	}
	ready := p.canaryReady(canary)
	if !ready {
		p.waitReady(canary)
		return
	}
	if p.s.HoldingSince == nil {
		p.startHolding(canary, stable)
	}
	if p.shift() {
		// Stable gives up pods only once the canary's are Ready.
		p.plan.StableReplicas = ptr.To(stable)
		p.s.StableSet = stable
	}
	if !p.analyse() {
		return
	}
	if p.s.Phase == rollout.Paused {
		return
	}
	p.hold()
}

func (p *planner) startStep() {
	now := metav1.NewMicroTime(p.o.Now)
	p.s.StepStartedAt = &now
	p.s.HoldingSince = nil
	p.s.PassedSince = nil
	p.s.LastAnalysis = nil
	p.s.Checks = nil
	if p.s.Policy.Capacity == policy.CapacityShift && p.s.Replicas == 0 {
		p.s.Replicas = p.stableReplicas()
		if !p.shift() {
			why := "the Deployment has 1 replica"
			if p.o.HPA {
				why = "a HorizontalPodAutoscaler scales the Deployment"
			}
			p.event(corev1.EventTypeWarning, "CapacitySurge", "capacity shift falls back to surge for %s: %s", p.name(), why)
		}
	}
	canary, stable := p.counts()
	p.s.Message = fmt.Sprintf("waiting for %d canary pods to be Ready", canary)
	p.event(corev1.EventTypeNormal, "Step", "step %d of %d: %s canary at %d%% target: %d canary and %d stable pods (%.1f%% effective)",
		p.s.Step+1, len(p.s.Policy.Steps), p.name(), p.weight(), canary, stable, EffectiveWeight(canary, stable))
}

// podHealth applies the Kubernetes-native checks to the canary pods: a
// failed or crash-looping pod fails at once, restarts beyond maxRestarts fail.
func (p *planner) podHealth() *rollout.Reason {
	var restarts int32
	for _, pod := range p.o.CanaryPods {
		if pod.Status.Phase == corev1.PodFailed {
			return p.reason("pod-failed", nil, nil, "canary pod %s failed (%s)", pod.Name, failureReason(&pod))
		}
		for _, cs := range pod.Status.ContainerStatuses {
			restarts += cs.RestartCount
			if w := cs.State.Waiting; w != nil && w.Reason == "CrashLoopBackOff" {
				return p.reason("pod-failed", nil, nil, "canary pod %s is in CrashLoopBackOff", pod.Name)
			}
		}
	}
	if max := p.s.Policy.Health.MaxRestarts; restarts > max {
		return p.reason("restarts", ptr.To(float64(restarts)), ptr.To(float64(max)), "canary containers restarted %d times > %d", restarts, max)
	}
	return nil
}

// failureReason is the pod's reason for failing, or its first terminated
// container's.
func failureReason(pod *corev1.Pod) string {
	if pod.Status.Reason != "" {
		return pod.Status.Reason
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if t := cs.State.Terminated; t != nil && t.Reason != "" {
			return fmt.Sprintf("container %s: %s, exit code %d", cs.Name, t.Reason, t.ExitCode)
		}
	}
	return "no reason given"
}

// reason builds a failure reason at the current step.
func (p *planner) reason(check string, value, bound *float64, format string, args ...any) *rollout.Reason {
	return &rollout.Reason{Check: check, Value: value, Bound: bound, Step: p.s.Step, Weight: p.weight(), Message: fmt.Sprintf(format, args...)}
}

// canaryReady reports whether the canary Deployment runs want pods of the
// current template, all Ready.
func (p *planner) canaryReady(want int32) bool {
	c := p.o.Canary
	if c == nil || ptr.Deref(c.Spec.Replicas, 0) != want || c.Status.ObservedGeneration < c.Generation {
		return false
	}
	if rollout.TemplateHash(&c.Spec.Template) != canaryTemplateHash(p.o.Deployment) {
		return false
	}
	st := c.Status
	return st.UpdatedReplicas == want && st.ReadyReplicas == want && st.Replicas == want
}

// waitReady waits for the canary pods, up to health.readyTimeout.
func (p *planner) waitReady(want int32) {
	timeout := p.s.Policy.Health.ReadyTimeout.Duration
	waited := p.o.Now.Sub(p.s.StepStartedAt.Time)
	if waited >= timeout {
		var ready int32
		if p.o.Canary != nil {
			ready = p.o.Canary.Status.ReadyReplicas
		}
		p.fail(*p.reason("ready-timeout", ptr.To(float64(ready)), ptr.To(float64(want)),
			"%d of %d canary pods Ready after %s (readyTimeout)", ready, want, timeout))
		p.rollBack()
		return
	}
	p.requeue(min(pollWaiting, timeout-waited))
}

func (p *planner) startHolding(canary, stable int32) {
	now := metav1.NewMicroTime(p.o.Now)
	p.s.HoldingSince = &now
	p.s.History = append(p.s.History, rollout.StepRecord{
		Step: p.s.Step, Weight: p.weight(), Effective: EffectiveWeight(canary, stable),
		Canary: canary, Stable: stable, Started: *p.s.StepStartedAt, Ready: &now,
	})
	hold := p.s.Policy.Steps[p.s.Step].Hold.Duration
	p.s.Message = fmt.Sprintf("canary pods Ready; holding %s", hold)
}

// analyse folds this reconcile's evaluation of the Prometheus checks into
// the state. It returns false when the rollout fails.
func (p *planner) analyse() bool {
	a := p.s.Policy.Analysis
	if a == nil {
		return true
	}
	if e := p.o.Evaluation; e != nil {
		verdict, counters := policy.Judge(*e, p.s.Analysis, a)
		at := metav1.NewMicroTime(e.At)
		p.s.Analysis = counters
		p.s.LastAnalysis = &at
		p.s.Checks = e.Results
		switch verdict.Result {
		case policy.Fail:
			r := p.reason("analysis", nil, nil, "%s", verdict.Reason)
			if f := verdict.Failed; f != nil {
				r.Check = f.Check
				r.Value = f.Value
				r.Bound = ptr.To(f.Bound)
			}
			p.fail(*r)
			p.rollBack()
			return false
		case policy.Pass:
			if p.s.PassedSince == nil {
				p.s.PassedSince = &at
			}
			p.s.Message = fmt.Sprintf("checks pass; holding %s", p.s.Policy.Steps[p.s.Step].Hold.Duration)
		default:
			p.s.PassedSince = nil
			p.s.Message = "waiting for conclusive checks: " + verdict.Reason
		}
	}
	next := a.Interval.Duration
	if p.s.LastAnalysis != nil {
		next = p.s.LastAnalysis.Add(a.Interval.Duration).Sub(p.o.Now)
	}
	p.requeue(next)
	return true
}

// AnalysisDue reports whether the Prometheus checks of a rollout should be
// evaluated now: the step's canary pods are Ready and an interval has passed
// since the last evaluation.
func AnalysisDue(s *rollout.State, now time.Time) bool {
	if s == nil || s.Policy.Analysis == nil || s.HoldingSince == nil {
		return false
	}
	if s.Phase != rollout.Progressing && s.Phase != rollout.Paused {
		return false
	}
	return s.LastAnalysis == nil || !now.Before(s.LastAnalysis.Add(s.Policy.Analysis.Interval.Duration))
}

// hold keeps the step until its hold has passed with passing evidence, then
// moves on (or waits for approval).
func (p *planner) hold() {
	step := p.s.Policy.Steps[p.s.Step]
	held := p.o.Now.Sub(p.s.HoldingSince.Time)
	if held < step.Hold.Duration {
		p.requeue(step.Hold.Duration - held)
		return
	}
	if p.s.Policy.Analysis != nil && p.s.PassedSince == nil {
		// Inconclusive never counts as a pass: the hold ends only with
		// passing evidence. analyse requeued for the next evaluation.
		return
	}
	if step.Approval == policy.ApprovalManual {
		p.s.Phase = rollout.Paused
		p.s.Message = "waiting for approval: kubectl fledge promote " + p.name()
		p.event(corev1.EventTypeNormal, "Approval", "%s held step %d (%d%%) for %s; waiting for approval: kubectl fledge promote %s",
			p.name(), p.s.Step+1, step.Weight, step.Hold.Duration, p.name())
		return
	}
	p.advance()
	if p.s.Phase == rollout.Promoting {
		p.promote()
	}
}

// endStep closes the current step's history record.
func (p *planner) endStep() {
	if n := len(p.s.History); n > 0 && p.s.History[n-1].Step == p.s.Step && p.s.History[n-1].Ended == nil {
		now := metav1.NewMicroTime(p.o.Now)
		p.s.History[n-1].Ended = &now
	}
}

// advance moves to the next step, or to promotion after the last.
func (p *planner) advance() {
	p.endStep()
	if int(p.s.Step)+1 >= len(p.s.Policy.Steps) {
		p.startPromotion()
		return
	}
	p.s.Step++
	p.s.StepStartedAt = nil
	p.startStep()
	canary, _ := p.counts()
	p.plan.CanaryReplicas = ptr.To(canary)
	p.requeue(time.Second)
}

// startPromotion unpauses the stable Deployment: its own rolling update
// brings it to the new template while the canary pods keep serving.
func (p *planner) startPromotion() {
	p.s.Phase = rollout.Promoting
	p.s.Message = "the Deployment rolls to the new version; canary pods serve until it is done"
	p.event(corev1.EventTypeNormal, "Promoting", "promoting %s: the Deployment rolls to the new version while the canary serves", p.name())
}

// promote waits for the stable Deployment to finish rolling to the new
// template, keeping the canary serving, then ends the rollout.
func (p *planner) promote() {
	p.plan.Paused = false
	if p.s.Replicas > 0 && p.s.Policy.Capacity == policy.CapacityShift {
		p.plan.StableReplicas = ptr.To(p.s.Replicas)
	}
	if c := p.o.Canary; c != nil {
		p.plan.CanaryReplicas = ptr.To(ptr.Deref(c.Spec.Replicas, 0))
	}
	if !rolledOut(p.o.Deployment, p.plan.StableReplicas) {
		p.requeue(pollWaiting)
		return
	}
	p.plan.CanaryReplicas = nil
	p.finish(rollout.Succeeded)
	p.event(corev1.EventTypeNormal, "Succeeded", "promoted %s: all %d pods run the new version", p.name(), p.stableReplicas())
}

// rolledOut reports whether a Deployment finished rolling out its current
// template: every replica updated and available, nothing old left.
func rolledOut(d *appsv1.Deployment, replicas *int32) bool {
	want := ptr.Deref(replicas, ptr.Deref(d.Spec.Replicas, 1))
	st := d.Status
	return !d.Spec.Paused && st.ObservedGeneration >= d.Generation &&
		st.UpdatedReplicas == want && st.Replicas == want && st.AvailableReplicas == want
}

// fail starts a rollback for reason.
func (p *planner) fail(reason rollout.Reason) {
	now := metav1.NewMicroTime(p.o.Now)
	p.s.Phase = rollout.RollingBack
	p.s.Reason = &reason
	p.s.FailedAt = &now
	p.endStep()
	p.event(corev1.EventTypeWarning, "RollingBack", "rolling back %s: %s at step %d (%d%%)", p.name(), reason.Message, reason.Step+1, reason.Weight)
}

// rollBack cuts the canary first, then restores the stable template and
// unpauses, then removes the canary.
func (p *planner) rollBack() {
	if p.s.FailedAt == nil {
		now := metav1.NewMicroTime(p.o.Now)
		p.s.FailedAt = &now
	}
	if p.s.Reason == nil {
		p.s.Reason = &rollout.Reason{Check: "user", Step: p.s.Step, Weight: p.weight(), Message: "aborted by user"}
	}
	if !p.cutCanary() {
		return
	}
	p.plan.CanaryGone = true
	if p.o.StableTemplate == nil {
		p.s.Message = `the stable ReplicaSet is gone: set the Deployment's template back by hand, with the annotation fledge.dev/skip: "true" (fledge then hands it back)`
		p.event(corev1.EventTypeWarning, "RollbackBlocked", "cannot restore %s: no ReplicaSet of the stable revision %s remains", p.name(), p.s.StableRevision)
		p.requeue(time.Minute)
		return
	}
	p.plan.Template = p.o.StableTemplate
	p.releaseStable()
	outcome := rollout.RolledBack
	if p.s.Phase == rollout.Aborted {
		outcome = rollout.Aborted
	}
	p.finish(outcome)
	r := p.s.Reason
	p.event(corev1.EventTypeWarning, string(outcome), "%s %s: %s at step %d (%d%%); the stable version serves all %d pods",
		map[rollout.Phase]string{rollout.RolledBack: "rolled back", rollout.Aborted: "aborted"}[outcome], p.name(), r.Message, r.Step+1, r.Weight, p.stableReplicas())
}

// cutCanary scales the canary to zero and reports whether it has no pod
// left that could take traffic. Until it has none, nothing else is written:
// traffic is cut first.
func (p *planner) cutCanary() bool {
	p.plan.CanaryReplicas = ptr.To[int32](0)
	if c := p.o.Canary; c != nil && (ptr.Deref(c.Spec.Replicas, 0) != 0 || c.Status.Replicas != 0 || servingPods(p.o.CanaryPods) > 0) {
		p.s.Message = "cutting the canary: waiting for its pods to stop"
		p.requeue(pollWaiting)
		return false
	}
	return true
}

// releaseStable unpauses the Deployment, at the user's replica count, and
// lets the canary go.
func (p *planner) releaseStable() {
	p.plan.Paused = false
	p.plan.CanaryReplicas = nil
	if p.s.Replicas > 0 && p.s.Policy.Capacity == policy.CapacityShift {
		p.plan.StableReplicas = ptr.To(p.s.Replicas)
	}
}

// servingPods counts the pods that may still take traffic: not Failed or
// Succeeded (a failed pod stays until garbage-collected, and serves nothing).
func servingPods(pods []corev1.Pod) int {
	n := 0
	for _, p := range pods {
		if p.Status.Phase != corev1.PodFailed && p.Status.Phase != corev1.PodSucceeded {
			n++
		}
	}
	return n
}

// handBack gives the Deployment back to Kubernetes when someone sets
// fledge.dev/skip during a rollout (the documented bypass, for example while
// fledge's webhook is down): the canary is cut first, then the Deployment
// is unpaused with whatever template it has now, and rolls out natively.
// Nothing is restored: the person who set skip chose the template.
func (p *planner) handBack() {
	if p.s.Reason == nil {
		p.s.Reason = &rollout.Reason{Check: "skip", Step: p.s.Step, Weight: p.weight(),
			Message: "fledge.dev/skip set during the rollout: the Deployment rolls out natively"}
		p.event(corev1.EventTypeWarning, "HandedBack", "%s: %s", p.name(), p.s.Reason.Message)
	}
	p.s.Phase = rollout.Aborted
	if !p.cutCanary() {
		return
	}
	p.releaseStable()
	p.finish(rollout.Aborted)
}

// finish ends the rollout: the state goes, the outcome stays.
func (p *planner) finish(phase rollout.Phase) {
	p.endStep()
	p.plan.State = nil
	p.plan.Outcome = &rollout.Outcome{
		Phase:          phase,
		StableRevision: p.s.StableRevision,
		CanaryRevision: p.s.CanaryRevision,
		Reason:         p.s.Reason,
		StartedAt:      p.s.StartedAt,
		FinishedAt:     metav1.NewMicroTime(p.o.Now),
		History:        p.s.History,
	}
	p.plan.RequeueAfter = 0
}

// canaryTemplateHash is the hash of the template the canary must run: the
// stable Deployment's (new) template.
func canaryTemplateHash(d *appsv1.Deployment) string {
	return rollout.TemplateHash(CanaryTemplate(d))
}
