package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fledge-dev/fledge/rollout"
)

func newListCommand(e *env) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the Deployments with a rollout in progress or a recorded outcome",
		Long: `Lists the Deployments of the namespace (all namespaces with -A) that have a
rollout in progress or the outcome of a finished one, one line each:

  PHASE         Progressing, Paused, Promoting, RollingBack, Aborted for a rollout
                in progress; Succeeded, RolledBack, Aborted for the last outcome,
                "(held)" while the Deployment holds that failed revision, paused
                (kubectl fledge undo or retry); "(not written by fledge)" for a
                fledge.dev/rollout that does not parse or has no seal, which fledge
                does not act on and drops; "(namespace not opted in)" for a rollout
                in a namespace fledge does not act in; Unknown when the last
                outcome does not parse (REASON says why)
  STEP          current step of all steps (2/3); - once finished
  WEIGHT        the step's target share and the effective share of ready pods
  AGE/FINISHED  how long the rollout has run, or how long ago it finished
  REASON        why it rolls back or failed, else what it is waiting for`,
		Example: `  kubectl fledge list
  kubectl fledge list -A`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runList(cmd.Context(), e, all)
		},
	}
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list rollouts in all namespaces")
	return cmd
}

func runList(ctx context.Context, e *env, all bool) error {
	cs, ns, err := e.connect()
	if err != nil {
		return err
	}
	if all {
		ns = metav1.NamespaceAll
	}
	deps, err := cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		if all {
			return fmt.Errorf("list deployments in all namespaces: %w", err)
		}
		return fmt.Errorf("list deployments in namespace %s: %w", ns, err)
	}
	ignored := map[string]bool{}
	for _, d := range deps.Items {
		if _, seen := ignored[d.Namespace]; !seen && d.Annotations[rollout.AnnotationState] != "" {
			ignored[d.Namespace] = namespaceIgnored(ctx, cs, d.Namespace)
		}
	}
	entries := listEntries(deps.Items, ignored, e.clock.Now())
	if len(entries) == 0 {
		if all {
			fmt.Fprintln(e.errOut, "No rollouts found.")
		} else {
			fmt.Fprintf(e.errOut, "No rollouts found in namespace %s.\n", ns)
		}
		return nil
	}
	fmt.Fprint(e.out, formatList(entries, all))
	return nil
}

// listEntry is one line of `list`.
type listEntry struct {
	namespace, name, phase, step, weight, age, reason string
}

// listEntries builds the lines of `list` from the Deployments of one or all
// namespaces; the canaries among them give the effective weights. ignored
// holds the namespaces read and found not opted in.
func listEntries(deps []appsv1.Deployment, ignored map[string]bool, now time.Time) []listEntry {
	byKey := make(map[string]*appsv1.Deployment, len(deps))
	for i := range deps {
		byKey[deps[i].Namespace+"/"+deps[i].Name] = &deps[i]
	}
	var entries []listEntry
	for i := range deps {
		d := &deps[i]
		if d.Labels[rollout.LabelTrack] == rollout.TrackCanary {
			continue
		}
		canary := byKey[d.Namespace+"/"+rollout.CanaryName(d.Name)]
		v := newStatusView(d, canary, now)
		v.NamespaceIgnored = ignored[d.Namespace]
		entry := listEntry{namespace: d.Namespace, name: d.Name}
		switch {
		case v.Rejected != "":
			entry.phase, entry.step, entry.weight, entry.age = "(not written by fledge)", "-", "-", "-"
			entry.reason = fmt.Sprintf("%s: %s; fledge does not act on it", rollout.AnnotationState, v.Rejected)
			if !v.NamespaceIgnored {
				entry.reason += " and drops it"
			}
		case v.State != nil && v.NamespaceIgnored:
			entry.phase, entry.step, entry.weight, entry.age = "(namespace not opted in)", "-", "-", "-"
			entry.reason = fmt.Sprintf("fledge does not act in namespace %s: nothing advances until it is labelled %s=true", d.Namespace, rollout.LabelEnabled)
		case v.State != nil:
			entry.phase, entry.step, entry.weight = string(v.State.Phase), stepOf(v.State), weightOf(v)
			entry.age, entry.reason = since(now, v.State.StartedAt.Time), stateReason(v.State)
		case v.OutcomeUnreadable != "":
			entry.phase, entry.step, entry.weight, entry.age = "Unknown", "-", "-", "-"
			entry.reason = rollout.AnnotationLast + " is unreadable: " + v.OutcomeUnreadable
		case v.Outcome != nil:
			entry.phase, entry.step, entry.weight = string(v.Outcome.Phase), "-", "0%"
			if v.Outcome.Phase == rollout.Succeeded {
				entry.weight = "100%"
			}
			if v.Holding {
				entry.phase += " (held)"
			}
			entry.age, entry.reason = since(now, v.Outcome.FinishedAt.Time)+" ago", "-"
			if v.Outcome.Reason != nil {
				entry.reason = reasonText(v.Outcome.Reason)
			}
		default:
			continue
		}
		entries = append(entries, entry)
	}
	slices.SortFunc(entries, func(a, b listEntry) int {
		return cmp.Or(cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
	})
	return entries
}

// stepOf is "2/3": the current step of all steps, counted from 1.
func stepOf(s *rollout.State) string {
	n := len(s.Policy.Steps)
	return fmt.Sprintf("%d/%d", min(int(s.Step)+1, n), n)
}

// weightOf is "25% (eff 23.8%)": the target share of the current step and
// the share the ready pods give. While promoting the target is 100%; while
// rolling back or aborting it is 0%, and the effective share shows how much
// canary is left.
func weightOf(v statusView) string {
	s := v.State
	eff := rollout.EffectiveWeight(v.CanaryReady, v.StableReady)
	switch {
	case s.Phase == rollout.Promoting:
		return "100%"
	case s.Phase == rollout.RollingBack || s.Phase == rollout.Aborted:
		return fmt.Sprintf("0%% (eff %.1f%%)", eff)
	case stepIn(s):
		return fmt.Sprintf("%d%% (eff %.1f%%)", s.TargetWeight(), eff)
	default:
		return fmt.Sprintf("eff %.1f%%", eff)
	}
}

// stateReason is why a running rollout fails, else what it waits for.
func stateReason(s *rollout.State) string {
	switch {
	case s.Reason != nil:
		return reasonText(s.Reason)
	case s.Message != "":
		return s.Message
	default:
		return "-"
	}
}

func formatList(entries []listEntry, withNamespace bool) string {
	var t table
	header := []string{"NAME", "PHASE", "STEP", "WEIGHT", "AGE/FINISHED", "REASON"}
	if withNamespace {
		header = append([]string{"NAMESPACE"}, header...)
	}
	t.add(header...)
	for _, en := range entries {
		cells := []string{en.name, en.phase, en.step, en.weight, en.age, en.reason}
		if withNamespace {
			cells = append([]string{en.namespace}, cells...)
		}
		t.add(cells...)
	}
	return t.String()
}
