package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/fledge-dev/fledge/rollout"
)

// Exit codes of `status --wait`.
const (
	exitSucceeded   = 0
	exitFailed      = 1 // rolled back or aborted (and any other error)
	exitTimeout     = 2
	exitInterrupted = 130
	defaultWaitFor  = 10 * time.Minute
)

// waiter decides when `status --wait` is over. fledge.dev/last-rollout
// holds the outcome of the previous rollout while a new one runs, so an
// outcome ends the wait only when it belongs to a rollout this wait saw
// running or finished after the wait began. A rollout is told by its
// attempt: a retry rolls out the same revision as the outcome it follows.
// States and outcomes written before attempts were numbered (attempt 0)
// are told by their canary revision.
type waiter struct {
	// started is when the wait began.
	started time.Time
	// seen holds the rollouts seen running (see rolloutKey); a new
	// revision superseding the canary adds one.
	seen map[string]bool
}

func newWaiter(started time.Time) *waiter {
	return &waiter{started: started, seen: map[string]bool{}}
}

// rolloutKey names one rollout of a Deployment: its attempt, else its
// canary revision.
func rolloutKey(attempt int32, revision string) string {
	if attempt > 0 {
		return fmt.Sprintf("attempt %d", attempt)
	}
	return "revision " + revision
}

// observe takes one view of the Deployment and returns the outcome that
// ends the wait, or nil to keep waiting.
func (w *waiter) observe(v statusView) *rollout.Outcome {
	if v.State == nil && v.Holding {
		// The Deployment holds a failed revision and no rollout runs: the
		// release the caller waits for is not live, and re-applying it
		// starts nothing. A CI gate must fail now, not at its timeout.
		return v.Outcome
	}
	if v.State != nil {
		w.seen[rolloutKey(v.State.Attempt, v.State.CanaryRevision)] = true
		return nil
	}
	o := v.Outcome
	if o == nil {
		return nil
	}
	if w.seen[rolloutKey(o.Attempt, o.CanaryRevision)] || !o.FinishedAt.Time.Before(w.started) {
		return o
	}
	return nil
}

// outcomeError maps a finished rollout to the exit of `status --wait`: nil
// for Succeeded, exit code 1 with the reason otherwise, and the ways out
// when the Deployment holds the failed revision.
func outcomeError(name string, o *rollout.Outcome, holding bool) error {
	if o.Phase == rollout.Succeeded {
		return nil
	}
	msg := fmt.Sprintf("the rollout of %s ended %s", name, o.Phase)
	if o.Reason != nil {
		msg += ": " + reasonText(o.Reason)
	}
	if holding {
		msg += fmt.Sprintf("; %s holds revision %s, paused, and applying it again releases nothing: kubectl fledge retry %s releases it again, kubectl fledge undo %s goes back",
			name, o.CanaryRevision, name, name)
	}
	return &exitError{code: exitFailed, msg: msg}
}

// waitingNote is said once when --wait starts without a rollout running,
// so that a person who typed the wrong name does not wait in silence.
func waitingNote(v statusView, timeout time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s has no rollout in progress", v.Name)
	if v.Rejected != "" {
		fmt.Fprintf(&b, " (its %s was not written by fledge: %s; fledge does not act on it)", rollout.AnnotationState, v.Rejected)
	}
	if v.Outcome != nil {
		fmt.Fprintf(&b, " (the last one ended %s)", rolloutSummary(v))
	}
	fmt.Fprintf(&b, "; waiting up to %s for one to start and finish\n", timeout)
	return b.String()
}
