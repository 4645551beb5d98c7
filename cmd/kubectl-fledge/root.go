package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/fledge-dev/fledge/rollout"
)

// run executes the plugin with args and returns the process's exit code.
func run(ctx context.Context, args []string, e *env) int {
	kc := newKubeconfig()
	kc.warnings = e.errOut
	e.cluster = kc
	root := newRootCommand(e)
	kc.bind(root.PersistentFlags())
	root.SetArgs(args)
	return exitCode(root.ExecuteContext(ctx), e.errOut)
}

// newRootCommand builds the command tree. The kubeconfig flags are bound
// by run, so that tests can give e a fake cluster.
func newRootCommand(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "kubectl-fledge",
		Short: "Show and steer fledge's progressive rollouts of Deployments",
		Long: `kubectl fledge shows and steers the canary rollouts that fledge runs for
Deployments in namespaces labelled fledge.dev/enabled=true.

A changed pod template does not reach every pod at once: fledge pauses the
Deployment, starts NAME-canary beside it and grows the canary's share of the
ready pods step by step (by default 5%, 25%, 50%), watching health checks at
every step. A healthy canary is promoted; a failing one is rolled back.

After a rollback or an abort the Deployment holds the failed revision: it stays
paused on the template that was applied, while the stable version serves every
pod, and applying the same manifest again changes nothing. undo puts the
stable template back; retry rolls the same revision out again as a new attempt;
applying another template starts a new rollout.`,
		Example: `  kubectl fledge status web --watch
  kubectl fledge status web --wait --timeout 15m
  kubectl fledge list -A
  kubectl fledge promote web
  kubectl fledge undo web
  kubectl fledge retry web
  kubectl fledge policy lint policy.yaml
  kubectl fledge diagnose web`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl fledge"},
	}
	root.SetIn(e.in)
	root.SetOut(e.out)
	root.SetErr(e.errOut)
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(
		newStatusCommand(e),
		newListCommand(e),
		newPromoteCommand(e),
		newSteerCommand(e, "abort", rollout.CommandAbort, "Abort the rollout: remove the canary and keep the stable version",
			"Asks the router to abort the rollout of NAME: the canary is scaled to zero and\nremoved, and the stable version serves every pod. NAME then holds the aborted\nrevision: it stays paused on the template that was applied, so that the live\nspec still matches what was applied (and git). To go back to the stable\ntemplate: kubectl fledge undo NAME (undo during a rollout is an abort too);\nto roll the revision out again: kubectl fledge retry NAME."),
		newSteerCommand(e, "pause", rollout.CommandPause, "Pause the rollout at its current step",
			"Asks the router to pause the rollout of NAME: the canary keeps its current\nshare and the rollout does not advance until `kubectl fledge resume NAME`.\nHealth checks and the analysis keep running while paused: a failing canary is\nstill rolled back."),
		newSteerCommand(e, "resume", rollout.CommandResume, "Resume a paused rollout",
			"Asks the router to resume the paused rollout of NAME from the step it was\npaused at. A rollout that is not paused is refused without asking the router."),
		newUndoCommand(e),
		newRetryCommand(e),
		newPolicyCommand(e),
		newDiagnoseCommand(e),
	)
	return root
}
