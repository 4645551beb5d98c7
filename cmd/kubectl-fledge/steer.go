package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/fledge-dev/fledge/rollout"
)

// defaultSteerTimeout is how long a command waits for fledge to take it,
// and undo for the Deployment to be unpaused.
const defaultSteerTimeout = 30 * time.Second

func newPromoteCommand(e *env) *cobra.Command {
	var full, force bool
	timeout := defaultSteerTimeout
	cmd := &cobra.Command{
		Use:   "promote NAME",
		Short: "Advance the rollout to its next step now, or with --full to 100%",
		Long: `Asks the router to advance the rollout of NAME to its next step without waiting
for the rest of the hold; on a step with approval: manual this is the approval.
With --full the remaining steps are skipped and the new version is promoted to
all pods.

Before it asks, it checks every Service of the namespace that selects the
stable pods: one that does not also select the canary pods (its selector has a
label the new version changed, such as version: v1) sends the canary no
traffic, so the canary was never judged on it, and after the promotion it would
have no endpoints at all. The router holds such a rollout and never promotes it
on its own; promote refuses too, naming the Service and the label, unless
--force.

The command sets the annotation fledge.dev/command on the Deployment (promote or
promote-full) and waits until the router takes it and clears the annotation.
If the router does not within --timeout, the annotation is removed again and
the command fails: a late router must not act on a command reported as failed.
Nothing is sent in a namespace fledge does not act in, nor when the
Deployment's fledge.dev/rollout was not written by fledge (it does not parse
or has no seal): no rollout runs then.`,
		Example: `  kubectl fledge promote web
  kubectl fledge promote --full web`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			command := rollout.CommandPromote
			if full {
				command = rollout.CommandPromoteFull
			}
			return runSteer(cmd.Context(), e, args[0], command, steerOptions{timeout: timeout, force: force})
		},
	}
	cmd.Flags().BoolVar(&full, "full", false, "skip the remaining steps and promote to 100%")
	cmd.Flags().BoolVar(&force, "force", false, "promote even when a Service that selects the stable pods does not select the canary pods")
	cmd.Flags().DurationVar(&timeout, "timeout", timeout, "how long to wait for the router to take the command")
	return cmd
}

// newSteerCommand builds abort, pause and resume, which differ only in the
// command they send.
func newSteerCommand(e *env, use, command, short, long string) *cobra.Command {
	timeout := defaultSteerTimeout
	cmd := &cobra.Command{
		Use:   use + " NAME",
		Short: short,
		Long: long + `

The command sets the annotation fledge.dev/command=` + command + ` on the Deployment and
waits until the router takes it and clears the annotation. If the router does
not within --timeout, the annotation is removed again and the command fails.
Nothing is sent in a namespace fledge does not act in, nor when the
Deployment's fledge.dev/rollout was not written by fledge (it does not parse
or has no seal): no rollout runs then, so abort exits 0 and the others exit 1.`,
		Example: "  kubectl fledge " + use + " web",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSteer(cmd.Context(), e, args[0], command, steerOptions{timeout: timeout})
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", timeout, "how long to wait for the router to take the command")
	return cmd
}

func newRetryCommand(e *env) *cobra.Command {
	timeout := defaultSteerTimeout
	cmd := &cobra.Command{
		Use:   "retry NAME",
		Short: "Roll out the failed revision NAME holds again, as a new attempt on fresh evidence",
		Long: `Starts a new rollout of the failed revision that Deployment NAME holds after a
rollback or an abort: the same pod template, from the first step, as a new
attempt. The attempt is judged on fresh evidence only: new canary pods
(labelled fledge.dev/attempt with the attempt's number, so they get new names
and new Prometheus series) and none of an earlier attempt's metrics or pod
restarts. Use it once what made the revision fail is fixed outside its template
(a dependency, a database, a configuration the pods read), or to rule out a
fluke.

Retry applies only while NAME holds a failed revision; it is refused while a
rollout runs and after a success. To leave the failed revision instead:
kubectl fledge undo NAME, or apply another template.

The command sets the annotation fledge.dev/command=retry on the Deployment.
fledge's webhook takes it, since it resolves the policy (as the namespace has it
now), starts the new rollout and clears the annotation in the same write. If
that does not happen within --timeout, the annotation is removed again and the
command fails.`,
		Example: "  kubectl fledge retry web",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSteer(cmd.Context(), e, args[0], rollout.CommandRetry, steerOptions{timeout: timeout})
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", timeout, "how long to wait for fledge to take the command")
	return cmd
}

// steerOptions are the flags of the commands that steer a rollout.
type steerOptions struct {
	// timeout is how long to wait for fledge to take the command.
	timeout time.Duration
	// force sends a promotion although a Service misses the canary.
	force bool
}

// runSteer sends command to fledge through the Deployment's
// fledge.dev/command annotation and waits for fledge to clear it: the
// router takes every command but retry, which the webhook takes.
func runSteer(ctx context.Context, e *env, name, command string, o steerOptions) error {
	cs, ns, err := e.connect()
	if err != nil {
		return err
	}
	stable, canary, err := getDeployments(ctx, cs, ns, name)
	if err != nil {
		return err
	}
	v := newStatusView(stable, canary, e.clock.Now())
	v.NamespaceIgnored = namespaceIgnored(ctx, cs, ns)
	if v.Rejected != "" && command != rollout.CommandRetry {
		return notFledges(e, v, command)
	}
	if err := steerable(v, command); err != nil {
		return err
	}
	if (command == rollout.CommandPromote || command == rollout.CommandPromoteFull) && !o.force {
		t, err := getTraffic(ctx, cs, stable)
		if err != nil {
			return fmt.Errorf("%w (promote checks that every Service reaches the canary; --force skips the check)", err)
		}
		if err := serviceGaps(stable, canary, v, t); err != nil {
			return err
		}
	}
	if err := setCommand(ctx, cs, ns, name, command); err != nil {
		return err
	}
	taken, err := waitTaken(ctx, cs, ns, name, command, o.timeout, e.poll)
	if err != nil {
		return err
	}
	if !taken {
		return notTaken(ctx, cs, ns, name, command, o.timeout)
	}
	if command == rollout.CommandRetry {
		return retryStarted(ctx, e, cs, ns, name, v)
	}
	fmt.Fprintf(e.out, "%s: %s accepted\n", name, command)
	return nil
}

// retryStarted says which attempt the retry started, from the state the
// webhook wrote as it took the command. A retry cleared without a new
// attempt was ignored: the router clears commands it cannot act on.
func retryStarted(ctx context.Context, e *env, cs kubernetes.Interface, ns, name string, before statusView) error {
	v, err := getStatusView(ctx, cs, ns, name, e.clock.Now())
	if err != nil {
		return err
	}
	if v.State == nil || v.State.Attempt <= before.Outcome.Attempt {
		return fmt.Errorf("the retry of %s was cleared, but no new attempt started; its Events say why: kubectl -n %s events --for deployment/%s", name, ns, name)
	}
	fmt.Fprintf(e.out, "%s: retry accepted: attempt %d of revision %s started\n", name, v.State.Attempt, v.State.CanaryRevision)
	return nil
}

// notFledges answers a command on a Deployment whose fledge.dev/rollout
// fledge did not write: no rollout of fledge's runs, so nothing is sent.
// An abort succeeds, since what it is for, no rollout, already holds; the
// other commands have nothing to steer and fail.
func notFledges(e *env, v statusView, command string) error {
	msg := fmt.Sprintf("%s has no rollout in progress: its %s was not written by fledge (%s), and fledge does not act on it", v.Name, rollout.AnnotationState, v.Rejected)
	if !v.NamespaceIgnored {
		msg += " but drops it"
	}
	if command == rollout.CommandAbort {
		fmt.Fprintf(e.out, "%s; nothing to abort\n", msg)
		return nil
	}
	return fmt.Errorf("%s; nothing to %s", msg, strings.TrimSuffix(command, "-full"))
}

// steerable refuses, before sending it, a command fledge would only clear
// and ignore: a namespace fledge does not act in, no rollout, a rollout
// already ending, resume of a rollout that is not paused, retry of a
// revision that is not held.
func steerable(v statusView, command string) error {
	if v.NamespaceIgnored {
		taker := "the router"
		if command == rollout.CommandRetry {
			taker = "fledge's webhook"
		}
		return fmt.Errorf("namespace %s is not labelled %s=true: fledge does not act in it, so %s would not take %s for %s; kubectl label namespace %s %s=true first",
			v.Namespace, rollout.LabelEnabled, taker, command, v.Name, v.Namespace, rollout.LabelEnabled)
	}
	if command == rollout.CommandRetry {
		return retryable(v)
	}
	verb := strings.TrimSuffix(command, "-full")
	if v.State == nil {
		msg := fmt.Sprintf("%s has no rollout in progress; nothing to %s", v.Name, verb)
		if v.Outcome != nil {
			msg += fmt.Sprintf(" (the last one ended %s)", rolloutSummary(v))
		}
		if v.Holding {
			msg += fmt.Sprintf("; %s holds the failed revision %s: kubectl fledge retry %s releases it again, kubectl fledge undo %s goes back to the stable revision",
				v.Name, v.Outcome.CanaryRevision, v.Name, v.Name)
		}
		return errors.New(msg)
	}
	if v.State.Phase.Finishing() {
		return fmt.Errorf("the rollout of %s is already %s; it can no longer be steered (kubectl fledge status %s)", v.Name, v.State.Phase, v.Name)
	}
	if command == rollout.CommandResume && v.State.Phase != rollout.Paused {
		return fmt.Errorf("the rollout of %s is %s, not paused; nothing to resume", v.Name, v.State.Phase)
	}
	return nil
}

// retryable refuses a retry unless the Deployment holds a failed revision.
func retryable(v statusView) error {
	switch {
	case v.State != nil:
		return fmt.Errorf("a rollout of %s is running (%s): nothing to retry; retry releases again a failed revision that %s holds after a rollback or an abort",
			v.Name, phaseLine(v.State), v.Name)
	case v.Holding:
		return nil
	case v.Outcome == nil:
		return fmt.Errorf("%s holds no failed revision: nothing to retry (no rollout recorded)", v.Name)
	case v.Outcome.Failed():
		return fmt.Errorf("%s holds no failed revision: nothing to retry (the last rollout ended %s, and %s no longer has its template, revision %s)",
			v.Name, rolloutSummary(v), v.Name, v.Outcome.CanaryRevision)
	default:
		return fmt.Errorf("%s holds no failed revision: nothing to retry (the last rollout ended %s)", v.Name, rolloutSummary(v))
	}
}

// setCommand writes the annotation with a merge patch, which leaves every
// other annotation alone and needs no resourceVersion.
func setCommand(ctx context.Context, cs kubernetes.Interface, ns, name, command string) error {
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{rollout.AnnotationCommand: command}},
	})
	if err != nil {
		return err
	}
	if _, err := cs.AppsV1().Deployments(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("set annotation %s=%s on deployment %s in namespace %s: %w", rollout.AnnotationCommand, command, name, ns, err)
	}
	return nil
}

// waitTaken polls until the annotation no longer holds command: fledge
// consumed it. It reports false when timeout passed first.
func waitTaken(ctx context.Context, cs kubernetes.Interface, ns, name, command string, timeout, poll time.Duration) (bool, error) {
	return waitDeployment(ctx, cs, ns, name, timeout, poll, false, func(d *appsv1.Deployment) bool {
		return d.Annotations[rollout.AnnotationCommand] != command
	})
}

// waitDeployment polls Deployment name until done holds of it (checking at
// once when immediate), and reports false when timeout passed first.
func waitDeployment(ctx context.Context, cs kubernetes.Interface, ns, name string, timeout, poll time.Duration, immediate bool, done func(*appsv1.Deployment) bool) (bool, error) {
	err := wait.PollUntilContextTimeout(ctx, poll, timeout, immediate, func(ctx context.Context) (bool, error) {
		d, err := getDeployment(ctx, cs, ns, name)
		if err != nil {
			return false, err
		}
		return done(d), nil
	})
	switch {
	case err == nil:
		return true, nil
	case wait.Interrupted(err) && ctx.Err() == nil:
		return false, nil
	default:
		return false, err
	}
}

// notTaken withdraws a command the router did not take and says what to
// look at. The withdrawal is a JSON patch that tests the value first, so it
// never removes a command that someone sent since.
func notTaken(ctx context.Context, cs kubernetes.Interface, ns, name, command string, timeout time.Duration) error {
	path := "/metadata/annotations/" + strings.ReplaceAll(rollout.AnnotationCommand, "/", "~1")
	patch, err := json.Marshal([]map[string]string{
		{"op": "test", "path": path, "value": command},
		{"op": "remove", "path": path},
	})
	if err != nil {
		return err
	}
	withdrawn := "the command was withdrawn"
	if _, err := cs.AppsV1().Deployments(ns).Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{}); err != nil {
		withdrawn = fmt.Sprintf("withdrawing it failed (%v): remove it with kubectl annotate -n %s deployment %s %s-", err, ns, name, rollout.AnnotationCommand)
	}
	taker := "the router"
	if command == rollout.CommandRetry {
		taker = "fledge's webhook"
	}
	return fmt.Errorf("%s did not take %q for deployment %s within %s; %s. Is fledge running (kubectl -n fledge-system get pods)? %s",
		taker, command, name, timeout, withdrawn, namespaceHint(ctx, cs, ns))
}

// namespaceHint says whether the namespace opted in, when the user may
// read it; the router ignores namespaces without the label.
func namespaceHint(ctx context.Context, cs kubernetes.Interface, ns string) string {
	n, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		return fmt.Sprintf("Is namespace %s labelled %s=true?", ns, rollout.LabelEnabled)
	}
	if !rollout.OptedIn(n.Labels) {
		return fmt.Sprintf("Namespace %s is not labelled %s=true, so fledge ignores it: kubectl label namespace %s %s=true", ns, rollout.LabelEnabled, ns, rollout.LabelEnabled)
	}
	return fmt.Sprintf("Namespace %s is labelled %s=true; look at the router's logs (kubectl -n fledge-system logs deployment/fledge).", ns, rollout.LabelEnabled)
}
