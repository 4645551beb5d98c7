package router

import (
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	"github.com/fledge-dev/fledge/policy"
	"github.com/fledge-dev/fledge/rollout"
)

// observed is what one reconcile read of a rollout: the stable Deployment
// and its state, the canary, its pods, the Services of the namespace, and,
// when it was due, an evaluation of the Prometheus checks.
type observed struct {
	Now        time.Time
	Deployment *appsv1.Deployment
	State      *rollout.State
	// Command is the fledge.dev/command annotation, if any.
	Command string
	// Canary is the <name>-canary Deployment; nil when there is none, or
	// when it is being deleted (CanaryDeleting).
	Canary         *appsv1.Deployment
	CanaryDeleting bool
	// CanaryPods are the pods of the canary, of every attempt, not
	// terminating.
	CanaryPods []corev1.Pod
	// Evidence is the current attempt's evidence, from the canary.
	Evidence rollout.Evidence
	// StableLabels are the labels of the stable ReplicaSet's pods; nil when
	// that ReplicaSet is gone (StableGone).
	StableLabels labels.Set
	StableGone   bool
	// Services are the Services of the namespace.
	Services []corev1.Service
	// HPA is true when a HorizontalPodAutoscaler targets the Deployment.
	HPA bool
	// Evaluation is the analysis made in this reconcile; nil when none was due.
	Evaluation *policy.Evaluation
}

// planned is what a reconcile must do. apply carries it out.
type planned struct {
	// State is the rollout state to write; nil removes the annotation (the
	// rollout is over).
	State *rollout.State
	// Outcome, when set, is written as the last rollout.
	Outcome *rollout.Outcome
	// CanaryReplicas is the canary's replica count; nil means the canary
	// Deployment is not wanted (deleted if it exists).
	CanaryReplicas *int32
	// Evidence, when set, is written to the canary's annotation.
	Evidence *rollout.Evidence
	// StableReplicas, when set, is the stable Deployment's replica count
	// (capacity shift).
	StableReplicas *int32
	// Paused is the stable Deployment's spec.paused.
	Paused bool
	// ClearCommand removes the fledge.dev/command annotation.
	ClearCommand bool
	// Events to emit on the Deployment, in order.
	Events []event
	// Cutting is set while a rollback (RollingBack: checks or pod health
	// failed) cuts the canary; CanaryGone on a reconcile that saw it at
	// zero pods. They time fledge_rollback_seconds, so an abort or a
	// hand-back, which cut the canary the same way, sets neither: a
	// person's choice is not a rollback.
	Cutting, CanaryGone bool
	// RequeueAfter is when to look again without a change to wait for.
	RequeueAfter time.Duration
}

// Event is one Kubernetes Event to emit.
type event struct {
	Type    string // corev1.EventTypeNormal or corev1.EventTypeWarning
	Reason  string
	Message string
}

// action is the Event's action: "Rollout" and a hash of its message. The
// events.k8s.io recorder folds Events of the same type, action, reason and
// object into one series that keeps the first note, and fledge's Events
// are transitions, each with news of its own ("no data 2 of 4 tolerated"
// after "1 of 4", while the Deployment itself does not change). The hash
// keeps them apart; the same message twice is still one series.
func (e event) action() string {
	h := fnv.New32a()
	h.Write([]byte(e.Message))
	return fmt.Sprintf("Rollout-%08x", h.Sum32())
}

// Requeue intervals when nothing else wakes the reconciler.
const (
	pollWaiting = 2 * time.Second // waiting for pods or the Deployment controller
	pollStalled = 5 * time.Second // a stall that a person has to lift
)

// planner builds the planned actions of one reconcile.
type planner struct {
	o    observed
	s    rollout.State // the state being planned; a copy
	plan planned
}

// plan decides what to do with a rollout. It is pure: everything it needs is
// in o, and it only returns what apply must write.
func plan(o observed) planned {
	p := &planner{o: o, s: copyState(o.State)}
	p.plan.Paused = true
	p.command()
	if rollout.Skipped(p.o.Deployment) {
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
func (p *planner) result() planned {
	if p.plan.State == nil && p.plan.Outcome == nil {
		// The rollout goes on: write the planned state.
		p.plan.State = &p.s
	}
	return p.plan
}

func copyState(s *rollout.State) rollout.State {
	c := *s
	c.History = slices.Clone(s.History)
	return c
}

func (p *planner) event(typ, reason, format string, args ...any) {
	p.plan.Events = append(p.plan.Events, event{Type: typ, Reason: reason, Message: fmt.Sprintf(format, args...)})
}

func (p *planner) requeue(d time.Duration) {
	if d <= 0 {
		d = time.Second
	}
	if p.plan.RequeueAfter == 0 || d < p.plan.RequeueAfter {
		p.plan.RequeueAfter = d
	}
}

func (p *planner) now() *metav1.MicroTime { return ptr.To(metav1.NewMicroTime(p.o.Now)) }

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
	live := p.s.Phase.Live()
	switch {
	case cmd == rollout.CommandAbort && !p.s.Phase.Finishing():
		p.s.Phase = rollout.Aborted
		p.s.Reason = &rollout.Reason{Check: "user", Step: p.s.Step, Weight: p.s.TargetWeight(), Message: "aborted by user"}
		p.event(corev1.EventTypeNormal, "Command", "abort: aborting the rollout of %s at step %d (%d%%)", p.name(), p.s.Step+1, p.s.TargetWeight())
	case cmd == rollout.CommandPause && live:
		p.s.Phase = rollout.Paused
		p.s.Message = "paused by user: kubectl fledge resume " + p.name()
		p.event(corev1.EventTypeNormal, "Command", "pause: %s holds at step %d (%d%%)", p.name(), p.s.Step+1, p.s.TargetWeight())
	case cmd == rollout.CommandResume && p.s.Phase == rollout.Paused:
		p.s.Phase = rollout.Progressing
		p.s.Message = ""
		p.event(corev1.EventTypeNormal, "Command", "resume: %s goes on at step %d (%d%%)", p.name(), p.s.Step+1, p.s.TargetWeight())
	case cmd == rollout.CommandPromote && live:
		p.event(corev1.EventTypeNormal, "Command", "promote: %s leaves step %d (%d%%) now", p.name(), p.s.Step+1, p.s.TargetWeight())
		p.s.Phase = rollout.Progressing
		p.advance()
	case cmd == rollout.CommandPromoteFull && live:
		p.event(corev1.EventTypeNormal, "Command", "promote-full: %s skips to promotion", p.name())
		p.endStep()
		p.startPromotion()
	case cmd == rollout.CommandRetry:
		p.event(corev1.EventTypeWarning, "CommandIgnored", "retry: a rollout of %s is running (%s); retry applies to a failed revision the Deployment holds", p.name(), p.s.Phase)
	case cmd == rollout.CommandAbort || cmd == rollout.CommandPause || cmd == rollout.CommandResume || cmd == rollout.CommandPromote || cmd == rollout.CommandPromoteFull:
		p.event(corev1.EventTypeWarning, "CommandIgnored", "%s: the rollout of %s is %s; nothing to do", cmd, p.name(), p.s.Phase)
	default:
		p.event(corev1.EventTypeWarning, "CommandIgnored", "unknown command %q; use %s", cmd, rollout.Commands)
	}
}

// stableReplicas is the user's replica count for the stable version.
func (p *planner) stableReplicas() int32 {
	return ptr.Deref(p.o.Deployment.Spec.Replicas, 1)
}

// shift reports whether this rollout moves pods from stable to canary.
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
	if total := p.stableReplicas(); total != expected {
		p.s.Replicas = total
		p.s.StableSet = 0
		p.event(corev1.EventTypeNormal, "Scaled", "%s was scaled to %d replicas: the rollout now shares %d pods between stable and canary", p.name(), total, total)
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
		return shiftReplicas(p.total(), p.s.TargetWeight())
	}
	s := p.stableReplicas()
	return surgeReplicas(s, p.s.TargetWeight()), s
}

// progress runs the current step: canary pods up and Ready, in the traffic
// path, health watched, held, then the next step. A step is judged only
// while its canary really serves: anything else stalls it (see stalled).
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
	if p.stalled(canary) {
		return
	}
	p.unstall()
	if p.s.HoldingSince == nil {
		p.startHolding(canary, stable)
	}
	p.recordCounts(canary, stable)
	if p.shift() {
		// Stable gives up pods only once the canary's are Ready.
		p.plan.StableReplicas = ptr.To(stable)
		p.s.StableSet = stable
	}
	if !p.analyse() {
		return
	}
	if p.s.Phase == rollout.Paused {
		p.s.Message = p.pausedMessage()
		return
	}
	p.s.Message = p.holdMessage()
	p.hold()
}

func (p *planner) startStep() {
	p.s.StepStartedAt = p.now()
	p.s.HoldingSince = nil
	p.s.StalledSince = nil
	// The step's pods are not Ready yet: its readyTimeout starts now, in
	// the same write as the step.
	p.s.NotReadySince = p.now()
	p.s.PassedSince = nil
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
		p.s.Step+1, len(p.s.Policy.Steps), p.name(), p.s.TargetWeight(), canary, stable, rollout.EffectiveWeight(canary, stable))
}

// attemptPods are the canary pods of the current attempt: pods of an
// earlier attempt of the same revision are never this attempt's evidence.
func (p *planner) attemptPods() []corev1.Pod {
	attempt := fmt.Sprint(p.s.Attempt)
	var out []corev1.Pod
	for _, pod := range p.o.CanaryPods {
		if rollout.PodAttempt(&pod) == attempt {
			out = append(out, pod)
		}
	}
	return out
}

// podHealth applies the Kubernetes-native checks to this attempt's canary
// pods: a failed or crash-looping pod fails at once, restarts beyond
// maxRestarts fail.
func (p *planner) podHealth() *rollout.Reason {
	var restarts int32
	for _, pod := range p.attemptPods() {
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
	return &rollout.Reason{Check: check, Value: value, Bound: bound, Step: p.s.Step, Weight: p.s.TargetWeight(), Message: fmt.Sprintf(format, args...)}
}

// stalled reports whether the step cannot be judged now, and holds it:
// nothing to judge (no pods wanted), nothing to compare with (the stable
// ReplicaSet gone), canary pods not all Ready, or a Service that sends the
// canary nothing. The first that applies is the stall's message; its event
// is emitted when the stall begins or changes. Time stalled does not count
// toward the hold, and a stalled step never passes.
func (p *planner) stalled(want int32) bool {
	if want == 0 {
		p.s.NotReadySince = nil
		p.stall(pollStalled, corev1.EventTypeWarning, "NoPods",
			fmt.Sprintf("%s is scaled to 0: no canary pods to judge; the rollout holds until it has replicas again", p.name()))
		return true
	}
	if p.o.StableGone {
		p.s.NotReadySince = nil
		p.stall(pollStalled, corev1.EventTypeWarning, "StableReplicaSetGone",
			fmt.Sprintf("the stable ReplicaSet of %s (revision %s) is gone, so the canary cannot be judged against it and the Deployment controller may run an older revision: the rollout holds; "+
				"to go back, kubectl fledge abort %s and apply the stable manifest; to release the new version anyway, kubectl fledge promote --full %s",
				p.name(), p.s.StableRevision, p.name(), p.name()))
		return true
	}
	if (p.o.Canary == nil || p.o.CanaryDeleting) && p.s.HoldingSince != nil {
		// The canary served at this step and is gone, or going: someone
		// deleted it. It is re-created (once gone) and waited for again.
		if p.s.NotReadySince == nil {
			p.s.NotReadySince = p.now()
		}
		p.stall(pollWaiting, corev1.EventTypeWarning, "CanaryRecreated",
			fmt.Sprintf("canary %s was deleted; re-creating it with %d pods: the time without it does not count toward the hold", rollout.CanaryName(p.name()), want))
		return true
	}
	if ready := p.readyPods(want); ready < want {
		if p.s.NotReadySince == nil {
			p.s.NotReadySince = p.now()
		}
		timeout := p.s.Policy.Health.ReadyTimeout.Duration
		left, _ := p.s.ReadyTimeoutLeft(p.o.Now)
		if left == 0 {
			p.fail(*p.reason("ready-timeout", ptr.To(float64(ready)), ptr.To(float64(want)),
				"%d of %d canary pods Ready after %s (readyTimeout)", ready, want, timeout))
			p.rollBack()
			return true
		}
		p.stall(min(pollWaiting, left), "", "", fmt.Sprintf("waiting for %d canary pods to be Ready", want))
		return true
	}
	p.s.NotReadySince = nil
	if gaps := rollout.ServiceGaps(p.o.Services, p.o.StableLabels, rollout.CanaryPodLabels(p.o.Deployment, p.s.Attempt)); len(gaps) > 0 {
		p.stall(pollStalled, corev1.EventTypeWarning, "ServiceMissesCanary", gaps[0].Gap()+"; the rollout holds until it does (kubectl fledge diagnose "+p.name()+")")
		return true
	}
	return false
}

// stall holds the step with msg, pausing the hold clock, and emits the
// Event (when reason is set) only when the message changes: a stall is a
// transition, not something to say at every look.
func (p *planner) stall(requeue time.Duration, typ, reason, msg string) {
	if p.s.HoldingSince != nil && p.s.StalledSince == nil {
		p.s.StalledSince = p.now()
	}
	if p.s.Message != msg {
		p.s.Message = msg
		if reason != "" {
			p.event(typ, reason, "%s", msg)
		}
	}
	p.requeue(requeue)
}

// unstall restarts the hold clock after a stall: the time stalled is added
// to HoldingSince, so it does not count toward the hold.
func (p *planner) unstall() {
	if p.s.StalledSince == nil {
		return
	}
	if p.s.HoldingSince != nil {
		p.s.HoldingSince = ptr.To(metav1.NewMicroTime(p.s.HoldingSince.Add(p.o.Now.Sub(p.s.StalledSince.Time))))
	}
	p.s.StalledSince = nil
}

// readyPods counts the canary pods that serve the current step: the canary
// runs want pods of this attempt's template, and this many of them are
// Running and Ready. Readiness is read from the pods, not from the canary
// Deployment's status, which lags its every spec or annotation change.
func (p *planner) readyPods(want int32) int32 {
	c := p.o.Canary
	if c == nil || ptr.Deref(c.Spec.Replicas, 0) != want {
		return 0
	}
	if rollout.TemplateHash(&c.Spec.Template) != rollout.TemplateHash(rollout.CanaryTemplate(p.o.Deployment, p.s.Attempt)) {
		return 0
	}
	var ready int32
	for _, pod := range p.attemptPods() {
		if podReady(&pod) {
			ready++
		}
	}
	if int32(servingPods(p.o.CanaryPods)) > want {
		// Pods of an earlier template or attempt still serve.
		return min(ready, want-1)
	}
	return ready
}

func podReady(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (p *planner) startHolding(canary, stable int32) {
	p.s.HoldingSince = p.now()
	p.s.History = append(p.s.History, rollout.StepRecord{
		Step: p.s.Step, Weight: p.s.TargetWeight(), Effective: rollout.EffectiveWeight(canary, stable),
		Canary: canary, Stable: stable, Started: *p.s.StepStartedAt, Ready: p.s.HoldingSince,
	})
}

// recordCounts keeps the step's history at the pod counts it has now: a
// scale during the step changes them.
func (p *planner) recordCounts(canary, stable int32) {
	n := len(p.s.History)
	if n == 0 || p.s.History[n-1].Step != p.s.Step {
		return
	}
	r := &p.s.History[n-1]
	if r.Canary != canary || r.Stable != stable {
		r.Canary, r.Stable, r.Effective = canary, stable, rollout.EffectiveWeight(canary, stable)
	}
}

// pausedMessage says what a paused step waits for: an approval once a
// step with approval: manual has held, else the person who paused it.
func (p *planner) pausedMessage() string {
	if p.s.AwaitsApproval(p.o.Now) {
		return "waiting for approval: kubectl fledge promote " + p.name()
	}
	return "paused by user: kubectl fledge resume " + p.name()
}

// holdMessage says what a judged step waits for.
func (p *planner) holdMessage() string {
	hold := p.s.Policy.Steps[p.s.Step].Hold.Duration
	switch {
	case p.s.Policy.Analysis == nil:
		return fmt.Sprintf("canary pods Ready; holding %s", hold)
	case p.s.PassedSince != nil:
		return fmt.Sprintf("checks pass; holding %s", hold)
	default:
		return fmt.Sprintf("canary pods Ready; holding %s once the checks pass", hold)
	}
}

// analyse folds this reconcile's evaluation of the Prometheus checks and
// comparisons into the evidence, and into the state when the verdict
// changes. It returns false when the rollout fails.
func (p *planner) analyse() bool {
	a := p.s.Policy.Analysis
	if a == nil {
		return true
	}
	ev := p.o.Evidence
	if e := p.o.Evaluation; e != nil {
		prev := ev
		var stepFrom time.Time
		if p.s.HoldingSince != nil {
			stepFrom = p.s.HoldingSince.Add(a.Interval.Duration)
		}
		results, tallies := a.FoldComparisons(*e, ev.Tallies, p.s.Step, stepFrom, int(ptr.Deref(p.plan.CanaryReplicas, 0)))
		e := policy.Evaluation{At: e.At, Results: results}
		verdict, counters := policy.Judge(e, ev.Counters, a, p.s.HoldPassed(p.o.Now))
		ev = rollout.Evidence{
			Attempt: p.s.Attempt, Step: p.s.Step, At: metav1.NewMicroTime(e.At), Counters: counters,
			Checks: e.Results, Tallies: tallies, Result: verdict.Result, Verdict: verdict.Reason,
			Gathering: verdict.Gathering, UnderServed: prev.UnderServed,
		}
		p.plan.Evidence = &ev
		p.underServed(&ev)
		changed := verdict.Result != prev.Result || verdict.Gathering != prev.Gathering
		if changed && verdict.Result != policy.Fail && !verdict.Gathering {
			// A verdict that changes is an Event; one that stays is not,
			// and neither is a step still gathering its requests.
			typ := corev1.EventTypeNormal
			if verdict.Result == policy.Inconclusive {
				typ = corev1.EventTypeWarning
			}
			p.event(typ, "Checks"+string(verdict.Result), "checks of %s at step %d (%d%%): %s", p.name(), p.s.Step+1, p.s.TargetWeight(), verdict.Reason)
		}
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
				p.s.PassedSince = &ev.At
			}
		default:
			p.s.PassedSince = nil
		}
	}
	next := a.Interval.Duration
	if !ev.At.IsZero() {
		next = ev.At.Add(a.Interval.Duration).Sub(p.o.Now)
	}
	p.requeue(next)
	return true
}

// underServed says once per step, with the numbers, when the canary
// serves far less than its share of pods: kube-proxy balances
// connections, not requests, so clients that keep theirs open stay on the
// pods they first reached.
func (p *planner) underServed(ev *rollout.Evidence) {
	share, requests, ok := ev.Measured()
	rec := p.stepRecord()
	if !ok || ev.UnderServed || rec == nil || !rollout.UnderServed(share, requests, rec.Effective) {
		return
	}
	ev.UnderServed = true
	p.event(corev1.EventTypeWarning, "CanaryUnderServed",
		"the canary of %s served %.1f%% of %.0f requests at step %d, far below its %.1f%% of pods: clients that keep connections open (HTTP keep-alive, HTTP/2, gRPC) stay on the stable pods they reached first; the comparison judges only the requests the canary served",
		p.name(), share, requests, p.s.Step+1, rec.Effective)
}

// stepRecord is the history record of the current step; nil before its
// hold began.
func (p *planner) stepRecord() *rollout.StepRecord {
	if n := len(p.s.History); n > 0 && p.s.History[n-1].Step == p.s.Step {
		return &p.s.History[n-1]
	}
	return nil
}

// evidence is the current attempt's latest evidence: this reconcile's, or
// the one it read.
func (p *planner) evidence() *rollout.Evidence {
	if p.plan.Evidence != nil {
		return p.plan.Evidence
	}
	return &p.o.Evidence
}

// analysisDue reports whether the Prometheus checks of a rollout should be
// evaluated now: the step is holding (its canary pods Ready and in the
// traffic path) and an interval has passed since the last evaluation of
// this attempt's step.
func analysisDue(s *rollout.State, ev rollout.Evidence, now time.Time) bool {
	if s == nil || s.Policy.Analysis == nil || s.HoldingSince == nil || s.StalledSince != nil {
		return false
	}
	if !s.Phase.Live() {
		return false
	}
	return ev.At.IsZero() || !now.Before(ev.At.Add(s.Policy.Analysis.Interval.Duration))
}

// hold keeps the step until its hold has passed with passing evidence, then
// moves on (or waits for approval).
func (p *planner) hold() {
	step := p.s.Policy.Steps[p.s.Step]
	if left := p.s.HoldLeft(p.o.Now); left > 0 {
		p.requeue(left)
		return
	}
	if p.s.AwaitsPass() {
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

// endStep closes the current step's history record, with the share of
// requests the canary served when the policy counts them.
func (p *planner) endStep() {
	rec := p.stepRecord()
	if rec == nil || rec.Ended != nil {
		return
	}
	rec.Ended = p.now()
	if share, requests, ok := p.evidence().Measured(); ok {
		rec.Measured, rec.Requests = &share, int64(requests)
		p.event(corev1.EventTypeNormal, "Measured", "step %d of %s (%d%% target, %.1f%% of pods): the canary served %.1f%% of %d requests",
			rec.Step+1, p.name(), rec.Weight, rec.Effective, share, rec.Requests)
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
	p.s.StalledSince = nil
	p.s.NotReadySince = nil
	p.s.Message = "the Deployment rolls to the new version; canary pods serve until it is done"
	p.event(corev1.EventTypeNormal, "Promoting", "promoting %s: the Deployment rolls to the new version while the canary serves", p.name())
}

// promote waits for the stable Deployment to finish rolling to the new
// template, keeping the canary serving, then ends the rollout.
func (p *planner) promote() {
	p.plan.Paused = false
	p.restoreTotal()
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
	p.s.Phase = rollout.RollingBack
	p.s.Reason = &reason
	p.s.FailedAt = p.now()
	p.endStep()
	p.event(corev1.EventTypeWarning, "RollingBack", "rolling back %s: %s at step %d (%d%%)", p.name(), reason.Message, reason.Step+1, reason.Weight)
}

// rollBack cuts the canary first; once it has no pod left, the rollout
// ends and the Deployment holds the failed revision: it stays paused on
// the template that was applied, its stable ReplicaSet serving every user
// (ARCHITECTURE.md, "Rollback"). Only an abort by reverting the template
// unpauses: the template is the stable one again, and nothing rolls.
func (p *planner) rollBack() {
	if p.s.FailedAt == nil {
		p.s.FailedAt = p.now()
	}
	if p.s.Reason == nil {
		p.s.Reason = &rollout.Reason{Check: "user", Step: p.s.Step, Weight: p.s.TargetWeight(), Message: "aborted by user"}
	}
	if !p.cut() {
		return
	}
	reverted := rollout.TemplateHash(&p.o.Deployment.Spec.Template) == p.s.StableRevision
	p.plan.Paused = !reverted
	outcome := rollout.RolledBack
	if p.s.Phase == rollout.Aborted {
		outcome = rollout.Aborted
	}
	p.finish(outcome)
	r := p.s.Reason
	if reverted {
		p.event(corev1.EventTypeNormal, string(outcome), "%s %s: %s at step %d (%d%%); the template is the stable version again and %s is unpaused",
			outcome.Ended(), p.name(), r.Message, r.Step+1, r.Weight, p.name())
		return
	}
	p.event(corev1.EventTypeWarning, string(outcome), "%s %s: %s at step %d (%d%%); the stable version serves all %d pods and %s holds the failed revision %s, paused: "+
		"apply the stable manifest or kubectl fledge undo %s to go back, kubectl fledge retry %s to try it again",
		outcome.Ended(), p.name(), r.Message, r.Step+1, r.Weight, p.stableReplicas(), p.name(), p.s.CanaryRevision, p.name(), p.name())
}

// restoreTotal gives the stable Deployment back the user's replica count,
// which capacity shift lowered during the rollout.
func (p *planner) restoreTotal() {
	if p.s.Replicas > 0 && p.s.Policy.Capacity == policy.CapacityShift {
		p.plan.StableReplicas = ptr.To(p.s.Replicas)
	}
}

// cut scales the canary to zero and reports whether it has no pod left
// that could take traffic; then the canary Deployment goes. Until it has
// none, the rollout does not end: traffic is cut first. The stable count
// is restored in the same reconcile, so its ReplicaSet scales up while the
// canary goes.
func (p *planner) cut() bool {
	p.restoreTotal()
	p.plan.Cutting = p.s.Phase == rollout.RollingBack
	p.plan.CanaryReplicas = ptr.To[int32](0)
	if c := p.o.Canary; c != nil && (ptr.Deref(c.Spec.Replicas, 0) != 0 || c.Status.Replicas != 0 || servingPods(p.o.CanaryPods) > 0) {
		p.s.Message = "cutting the canary: waiting for its pods to stop"
		p.requeue(pollWaiting)
		return false
	}
	p.plan.CanaryGone = p.plan.Cutting
	p.plan.CanaryReplicas = nil
	return true
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
		p.s.Reason = &rollout.Reason{Check: "skip", Step: p.s.Step, Weight: p.s.TargetWeight(),
			Message: "fledge.dev/skip set during the rollout: the Deployment rolls out natively"}
		p.event(corev1.EventTypeWarning, "HandedBack", "%s: %s", p.name(), p.s.Reason.Message)
	}
	p.s.Phase = rollout.Aborted
	if !p.cut() {
		return
	}
	p.plan.Paused = false
	p.finish(rollout.Aborted)
}

// finish ends the rollout: the state goes, the outcome stays.
func (p *planner) finish(phase rollout.Phase) {
	p.endStep()
	p.plan.State = nil
	p.plan.Outcome = &rollout.Outcome{
		Phase:          phase,
		Attempt:        p.s.Attempt,
		StableRevision: p.s.StableRevision,
		CanaryRevision: p.s.CanaryRevision,
		Reason:         p.s.Reason,
		StartedAt:      p.s.StartedAt,
		FinishedAt:     metav1.NewMicroTime(p.o.Now),
		History:        p.s.History,
	}
	p.plan.RequeueAfter = 0
}
