package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/fledge-dev/fledge/rollout"
)

// defaultSteerTimeout is how long a command waits for the router to take it.
const defaultSteerTimeout = 30 * time.Second

func newPromoteCommand(e *env) *cobra.Command {
	var full bool
	timeout := defaultSteerTimeout
	cmd := &cobra.Command{
		Use:   "promote NAME",
		Short: "Advance the rollout to its next step now, or with --full to 100%",
		Long: `Asks the router to advance the rollout of NAME to its next step without waiting
for the rest of the hold; on a step with approval: manual this is the approval.
With --full the remaining steps are skipped and the new version is promoted to
all pods.

The command sets the annotation fledge.dev/command on the Deployment (promote or
promote-full) and waits until the router takes it and clears the annotation.
If the router does not within --timeout, the annotation is removed again and
the command fails: a late router must not act on a command reported as failed.`,
		Example: `  kubectl fledge promote web
  kubectl fledge promote --full web`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			command := rollout.CommandPromote
			if full {
				command = rollout.CommandPromoteFull
			}
			return runSteer(cmd.Context(), e, args[0], command, timeout)
		},
	}
	cmd.Flags().BoolVar(&full, "full", false, "skip the remaining steps and promote to 100%")
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
not within --timeout, the annotation is removed again and the command fails.`,
		Example: "  kubectl fledge " + use + " web",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSteer(cmd.Context(), e, args[0], command, timeout)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", timeout, "how long to wait for the router to take the command")
	return cmd
}

// runSteer sends command to the router through the Deployment's
// fledge.dev/command annotation and waits for the router to clear it.
func runSteer(ctx context.Context, e *env, name, command string, timeout time.Duration) error {
	cs, ns, err := e.connect()
	if err != nil {
		return err
	}
	v, err := getStatusView(ctx, cs, ns, name, e.clock.Now())
	if err != nil {
		return err
	}
	if err := steerable(v, command); err != nil {
		return err
	}
	if err := setCommand(ctx, cs, ns, name, command); err != nil {
		return err
	}
	taken, err := waitTaken(ctx, cs, ns, name, command, timeout, e.poll)
	if err != nil {
		return err
	}
	if !taken {
		return notTaken(ctx, cs, ns, name, command, timeout)
	}
	fmt.Fprintf(e.out, "%s: %s accepted\n", name, command)
	return nil
}

// steerable refuses, before sending it, a command the router would only
// clear and ignore: no rollout, a rollout already ending, resume of a
// rollout that is not paused.
func steerable(v statusView, command string) error {
	verb := strings.TrimSuffix(command, "-full")
	if v.State == nil {
		msg := fmt.Sprintf("%s has no rollout in progress; nothing to %s", v.Name, verb)
		if v.Outcome != nil {
			msg += fmt.Sprintf(" (the last one ended %s)", rolloutSummary(v))
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

// waitTaken polls until the annotation no longer holds command: the router
// consumed it. It reports false when timeout passed first.
func waitTaken(ctx context.Context, cs kubernetes.Interface, ns, name, command string, timeout, poll time.Duration) (bool, error) {
	err := wait.PollUntilContextTimeout(ctx, poll, timeout, false, func(ctx context.Context) (bool, error) {
		d, err := getDeployment(ctx, cs, ns, name)
		if err != nil {
			return false, err
		}
		return d.Annotations[rollout.AnnotationCommand] != command, nil
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
	return fmt.Errorf("the router did not take %q for deployment %s within %s; %s. Is fledge running (kubectl -n fledge-system get pods)? %s",
		command, name, timeout, withdrawn, namespaceHint(ctx, cs, ns))
}

// namespaceHint says whether the namespace opted in, when the user may
// read it; the router ignores namespaces without the label.
func namespaceHint(ctx context.Context, cs kubernetes.Interface, ns string) string {
	n, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		return fmt.Sprintf("Is namespace %s labelled %s=true?", ns, rollout.LabelEnabled)
	}
	if n.Labels[rollout.LabelEnabled] != "true" {
		return fmt.Sprintf("Namespace %s is not labelled %s=true, so fledge ignores it: kubectl label namespace %s %s=true", ns, rollout.LabelEnabled, ns, rollout.LabelEnabled)
	}
	return fmt.Sprintf("Namespace %s is labelled %s=true; look at the router's logs (kubectl -n fledge-system logs deployment/fledge).", ns, rollout.LabelEnabled)
}
