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
// running (its canary revision) or finished after the wait began.
type waiter struct {
	// started is when the wait began.
	started time.Time
	// seen holds the canary revisions of the rollouts seen running; a new
	// revision superseding the canary adds one.
	seen map[string]bool
}

func newWaiter(started time.Time) *waiter {
	return &waiter{started: started, seen: map[string]bool{}}
}

// observe takes one view of the Deployment and returns the outcome that
// ends the wait, or nil to keep waiting.
func (w *waiter) observe(v statusView) *rollout.Outcome {
	if v.State != nil {
		w.seen[v.State.CanaryRevision] = true
		return nil
	}
	o := v.Outcome
	if o == nil {
		return nil
	}
	if w.seen[o.CanaryRevision] || !o.FinishedAt.Time.Before(w.started) {
		return o
	}
	return nil
}

// outcomeError maps a finished rollout to the exit of `status --wait`: nil
// for Succeeded, exit code 1 with the reason otherwise.
func outcomeError(name string, o *rollout.Outcome) error {
	if o.Phase == rollout.Succeeded {
		return nil
	}
	msg := fmt.Sprintf("the rollout of %s ended %s", name, o.Phase)
	if o.Reason != nil {
		msg += ": " + reasonText(o.Reason)
	}
	return &exitError{code: exitFailed, msg: msg}
}

// waitingNote is said once when --wait starts without a rollout running,
// so that a person who typed the wrong name does not wait in silence.
func waitingNote(v statusView, timeout time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s has no rollout in progress", v.Name)
	if v.Outcome != nil {
		fmt.Fprintf(&b, " (the last one ended %s)", rolloutSummary(v))
	}
	fmt.Fprintf(&b, "; waiting up to %s for one to start and finish\n", timeout)
	return b.String()
}
