package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fledge-dev/fledge/rollout"
)

type statusOptions struct {
	watch   bool
	wait    bool
	timeout time.Duration
}

func newStatusCommand(e *env) *cobra.Command {
	o := statusOptions{timeout: defaultWaitFor}
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "Show the rollout of a Deployment step by step",
		Long: `Shows the rollout of Deployment NAME as a table with one row per policy step:
the action, the state of the canary, the user group (the step's target weight and
the ready pods that carry it: canary ready pods of all ready pods of NAME and
NAME-canary), the monitoring result (each check's value against its bound, from
the last evaluation of this attempt's step; a maxRatio check as a multiple of
the stable pods' value, "1.31× stable > 1.2×") and what comes next. The current
step is marked with ▶. The header says which attempt runs when it is not the
first (a retry, a re-release of the same revision).

A policy with analysis.compare counts the requests each side serves, and the
table gains a CANARY SHARE column: the canary's share of ready pods beside the
share of the step's requests it served, "4.8% of pods, 5.1% of 2,180 requests"
(as recorded when a step ended; live for the current one). A comparison reads
as the error rates it compares over the attempt and its e-value against the
limit it fails at (1/alpha), "errors 0.7% vs stable 0.5% (tolerated 1.5×),
e-value 1.3 < 20 ✓". A step whose canary has served too few requests so far
(none yet, or fewer than analysis.minRequests) reads "waiting for requests":
it is not missing data, the step holds for them. When the canary serves far
less than its share of pods, a Traffic line says so: clients that keep their
connections open (HTTP keep-alive, HTTP/2, gRPC) stay on the stable pods.

What comes next is the time left in the hold, or why the hold does not count
down: checks without data ("no data") never let a hold complete, nor do too few
requests once the hold has run (they count as no data), and while the step is
stalled (canary pods not Ready, no pods wanted, a Service that misses the
canary, the stable ReplicaSet gone: the Message line says which) its hold is
paused.

Without a rollout in progress it shows the last finished one: its outcome, the
reason and the steps it went through. When NAME holds the failed revision of
that rollout (paused on its template while the stable version serves), the
Holding and Next lines say so and name the ways out: kubectl fledge undo NAME,
kubectl fledge retry NAME, or applying a new version.

A namespace that is not labelled fledge.dev/enabled=true is named at the top:
fledge ignores its Deployments, and a rollout state there is not shown as live
(a State: line says where it stood).

fledge seals every state it writes. A fledge.dev/rollout that does not parse or
has no seal is not fledge's: no rollout runs, and a State: line says "not
written by fledge" and why; fledge does not act on it, and the router drops it.
An unreadable fledge.dev/last-rollout is shown as such on a Last: line.

--watch redraws whenever NAME or NAME-canary changes: in place on a terminal,
as a new table after a blank line otherwise. Stop it with Ctrl-C.

--wait blocks until the rollout in progress (or, when none runs yet, the next
one) finishes, prints its final status and exits with
  0  Succeeded
  1  RolledBack or Aborted (also any other error)
  2  --timeout passed first
  130  interrupted (Ctrl-C)
An outcome recorded before the wait began by an earlier rollout does not count.
It is the gate for CI: kubectl rollout status never reports a rolled-back
release as rolled out, but it only says so by failing at its own --timeout.`,
		Example: `  kubectl fledge status web
  kubectl fledge status web -n team-a --watch
  kubectl apply -f web.yaml && kubectl fledge status web --wait --timeout 15m`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("timeout") && !o.wait {
				return errors.New("--timeout applies to --wait; add --wait")
			}
			return runStatus(cmd.Context(), e, args[0], o)
		},
	}
	cmd.Flags().BoolVarP(&o.watch, "watch", "w", false, "redraw the status whenever NAME or NAME-canary changes")
	cmd.Flags().BoolVar(&o.wait, "wait", false, "wait for the rollout to finish; exit 0 Succeeded, 1 RolledBack or Aborted, 2 timeout")
	cmd.Flags().DurationVar(&o.timeout, "timeout", o.timeout, "how long --wait waits")
	return cmd
}

func runStatus(ctx context.Context, e *env, name string, o statusOptions) error {
	cs, ns, err := e.connect()
	if err != nil {
		return err
	}
	v, err := getStatusView(ctx, cs, ns, name, e.clock.Now())
	if err != nil {
		return err
	}
	v.NamespaceIgnored = namespaceIgnored(ctx, cs, ns)
	if !o.watch && !o.wait {
		fmt.Fprint(e.out, colourise(formatStatus(v), e.color))
		return nil
	}
	return follow(ctx, e, cs, ns, name, o, v)
}

// getStatusView reads NAME and NAME-canary once.
func getStatusView(ctx context.Context, cs kubernetes.Interface, ns, name string, now time.Time) (statusView, error) {
	stable, canary, err := getDeployments(ctx, cs, ns, name)
	if err != nil {
		return statusView{}, err
	}
	return newStatusView(stable, canary, now), nil
}

// getDeployments reads NAME and NAME-canary (nil when it does not exist).
func getDeployments(ctx context.Context, cs kubernetes.Interface, ns, name string) (stable, canary *appsv1.Deployment, err error) {
	if stable, err = getDeployment(ctx, cs, ns, name); err != nil {
		return nil, nil, err
	}
	canary, err = cs.AppsV1().Deployments(ns).Get(ctx, rollout.CanaryName(name), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return stable, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read canary deployment %s in namespace %s: %w", rollout.CanaryName(name), ns, err)
	}
	return stable, canary, nil
}

// namespaceIgnored reports whether namespace ns lacks the opt-in label, so
// that fledge ignores its Deployments. A namespace the user may not read
// (it is cluster-scoped) is not reported: nothing is known of it.
func namespaceIgnored(ctx context.Context, cs kubernetes.Interface, ns string) bool {
	n, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	return err == nil && !rollout.OptedIn(n.Labels)
}

// getDeployment reads a Deployment with an error that names it and says
// where it was looked for.
func getDeployment(ctx context.Context, cs kubernetes.Interface, ns, name string) (*appsv1.Deployment, error) {
	d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("deployment %s not found in namespace %s (use -n to pick the namespace)", name, ns)
	}
	if err != nil {
		return nil, fmt.Errorf("read deployment %s in namespace %s: %w", name, ns, err)
	}
	return d, nil
}

// follow implements --watch and --wait on the same loop: the first view,
// then every change of the two Deployments, is one more view.
func follow(ctx context.Context, e *env, cs kubernetes.Interface, ns, name string, o statusOptions, first statusView) error {
	// The informers stop with waitCtx: at the --wait timeout, or on return.
	var waitCtx context.Context
	var cancel context.CancelFunc
	if o.wait {
		waitCtx, cancel = context.WithTimeout(ctx, o.timeout)
	} else {
		waitCtx, cancel = context.WithCancel(ctx)
	}
	defer cancel()
	f := follower{e: e, opts: o, name: name, waiter: newWaiter(e.clock.Now()), screen: &screen{e: e}}
	if done, err := f.step(first); done {
		return err
	}
	watched, err := watchDeployments(waitCtx, cs, ns, name, rollout.CanaryName(name))
	if err != nil {
		return f.end(ctx, first)
	}
	// On a terminal the elapsed times and hold countdown tick even when
	// nothing changes.
	var tick <-chan time.Time
	if o.watch && e.terminal {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		tick = t.C
	}
	for {
		stable := watched.get(name)
		if stable == nil {
			return fmt.Errorf("deployment %s was deleted from namespace %s", name, ns)
		}
		v := newStatusView(stable, watched.get(rollout.CanaryName(name)), e.clock.Now())
		v.NamespaceIgnored = first.NamespaceIgnored
		if done, err := f.step(v); done {
			return err
		}
		select {
		case <-watched.changed:
		case <-tick:
		case <-waitCtx.Done():
			return f.end(ctx, v)
		}
	}
}

// follower is the state of one follow loop.
type follower struct {
	e      *env
	opts   statusOptions
	name   string
	waiter *waiter
	screen *screen
	// last is the previous view rendered at a fixed time, so that a view
	// differing only in elapsed times is not printed again to a log.
	last  string
	noted bool
}

// step shows one view and reports whether the wait is over, with its exit.
func (f *follower) step(v statusView) (bool, error) {
	if f.opts.watch {
		fixed := v
		fixed.Now = time.Time{}
		if key := formatStatus(fixed); key != f.last || f.e.terminal {
			f.last = key
			f.screen.show(formatStatus(v))
		}
	}
	if !f.opts.wait {
		return false, nil
	}
	if o := f.waiter.observe(v); o != nil {
		// The view holds the outcome; --watch has just shown it.
		if !f.opts.watch {
			fmt.Fprint(f.e.out, colourise(formatStatus(v), f.e.color))
		}
		return true, outcomeError(f.name, o, v.Holding)
	}
	if v.State == nil && !f.noted {
		f.noted = true
		fmt.Fprint(f.e.errOut, waitingNote(v, f.opts.timeout))
	}
	return false, nil
}

// end is the exit when the loop's context ended: Ctrl-C, or the --wait
// timeout, which prints the status it got to.
func (f *follower) end(ctx context.Context, last statusView) error {
	if ctx.Err() != nil {
		if f.opts.wait {
			return &exitError{code: exitInterrupted, msg: "interrupted while waiting for the rollout of " + f.name}
		}
		return nil
	}
	if !f.opts.watch {
		fmt.Fprint(f.e.out, colourise(formatStatus(last), f.e.color))
	}
	return &exitError{code: exitTimeout, msg: fmt.Sprintf("timed out after %s waiting for the rollout of %s to finish: %s",
		f.opts.timeout, f.name, rolloutSummary(last))}
}
