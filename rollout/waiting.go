package rollout

import (
	"time"

	"github.com/fledge-dev/fledge/policy"
)

// What a rollout at a step is waiting for, as pure functions of its state
// and the time (ARCHITECTURE.md, "Router: the state machine"). The router
// decides with them and the plugin shows them, so both tell the same story:
//
//   - the canary's pods to be Ready: health.readyTimeout counts from
//     NotReadySince, and the rollout rolls back when it runs out
//     (ReadyTimeoutLeft);
//   - the hold: it runs from HoldingSince, the moment all canary pods were
//     Ready and in the traffic path, and stands still while the step is
//     stalled (HoldLeft);
//   - passing checks: with an analysis the hold ends only on passing
//     evidence, never on inconclusive (AwaitsPass);
//   - a person: a step with approval: manual pauses once its hold passed
//     (AwaitsApproval), a paused one waits for resume.

// CurrentStep is the policy step the rollout is at; false when Step is
// outside the policy's steps.
func (s *State) CurrentStep() (policy.Step, bool) {
	if s.Step < 0 || int(s.Step) >= len(s.Policy.Steps) {
		return policy.Step{}, false
	}
	return s.Policy.Steps[s.Step], true
}

// HoldLeft is how much of the current step's hold is still to run at now:
// the whole hold before it began (HoldingSince unset), zero once it
// passed. While the step is stalled the hold stands still at StalledSince;
// the router adds the stall to HoldingSince when it ends.
func (s *State) HoldLeft(now time.Time) time.Duration {
	step, _ := s.CurrentStep()
	if s.HoldingSince == nil {
		return step.Hold.Duration
	}
	if s.StalledSince != nil && s.StalledSince.Time.Before(now) {
		now = s.StalledSince.Time
	}
	return max(step.Hold.Duration-now.Sub(s.HoldingSince.Time), 0)
}

// HoldPassed reports whether the current step began its hold and held it
// to the end by now.
func (s *State) HoldPassed(now time.Time) bool {
	return s.HoldingSince != nil && s.HoldLeft(now) == 0
}

// AwaitsPass reports whether the step's hold cannot end for want of
// passing evidence: the policy has an analysis and the step's checks do
// not pass (yet, or any more). Inconclusive never counts as a pass.
func (s *State) AwaitsPass() bool {
	return s.Policy.Analysis != nil && s.PassedSince == nil
}

// AwaitsApproval reports whether the rollout is paused for a person's
// approval (kubectl fledge promote): its step has approval: manual and
// held its hold by now. A paused step that did not is paused by a person,
// and waits for resume.
func (s *State) AwaitsApproval(now time.Time) bool {
	step, ok := s.CurrentStep()
	return ok && s.Phase == Paused && step.Approval == policy.ApprovalManual && s.HoldPassed(now)
}

// ReadyTimeoutLeft is how long the canary may still have fewer Ready pods
// than wanted before the rollout rolls back: health.readyTimeout, counted
// from NotReadySince, never from the start of the step; zero once it ran
// out. counting is false while no pod is missing (NotReadySince unset).
func (s *State) ReadyTimeoutLeft(now time.Time) (left time.Duration, counting bool) {
	if s.NotReadySince == nil {
		return 0, false
	}
	return max(s.Policy.Health.ReadyTimeout.Duration-now.Sub(s.NotReadySince.Time), 0), true
}
