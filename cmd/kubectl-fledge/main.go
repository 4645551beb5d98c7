// Command kubectl-fledge is the kubectl plugin of fledge: `kubectl fledge
// status|list|promote|abort|pause|resume|undo|retry|policy lint|diagnose`.
//
// It reads what the webhook and the router keep on the Deployment (the
// fledge.dev/rollout and fledge.dev/last-rollout annotations, and the
// canary's fledge.dev/analysis) and steers a rollout through the
// fledge.dev/command annotation, which the router (the webhook, for retry)
// consumes and clears. It never writes replica counts or the rollout state
// itself: fledge is their only writer. The one spec it writes is undo's:
// the stable ReplicaSet's template and paused: false, as a person reverting
// the template would.
//
// The rendering is pure (a gathered view in, text out), so that every table
// is tested without a cluster.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], newTerminalEnv(os.Stdin, os.Stdout, os.Stderr))
	stop()
	os.Exit(code)
}
