package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/fledge-dev/fledge/rollout"
)

func newUndoCommand(e *env) *cobra.Command {
	timeout := defaultSteerTimeout
	cmd := &cobra.Command{
		Use:   "undo NAME",
		Short: "Put the stable template back into a Deployment and unpause it",
		Long: `Writes the pod template of the stable version back into Deployment NAME and
unpauses it.

After a rollback or an abort, NAME holds the failed revision: it stays paused on
the template that was applied while its stable ReplicaSet serves every pod.
undo takes the template of that ReplicaSet (the revision the rollout started
from, which the Deployment owns) and makes it NAME's template again: the
Deployment adopts the ReplicaSet as it is, and no pod is replaced. During a
rollout at a step, undo is an abort by revert: the router removes the canary
and ends the rollout Aborted. A rollout that is promoting or already rolling
back is refused: wait for it to end. kubectl rollout undo refuses a paused
Deployment; use this.

The write carries the resourceVersion undo read, so it never overwrites a
change it did not see; on a conflict it reads NAME again and retries. Then it
waits up to --timeout until NAME is unpaused with no rollout in progress.

GitOps: undo changes the live Deployment only. The manifest in git (or
wherever NAME is applied from) still has the failed template: revert it there
too, or the next sync releases it again, as a new rollout.

undo refuses when NAME holds no failed revision and no rollout runs, and when
the stable ReplicaSet is gone (apply the stable manifest instead).`,
		Example: "  kubectl fledge undo web",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runUndo(cmd.Context(), e, args[0], timeout)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", timeout, "how long to wait for NAME to be unpaused with no rollout in progress")
	return cmd
}

// undo is what `kubectl fledge undo` writes into a Deployment.
type undo struct {
	// Template is the stable ReplicaSet's, without its pod-template-hash.
	Template corev1.PodTemplateSpec
	// Stable is the revision put back; Replaced the one the Deployment had.
	Stable, Replaced string
	// StableImages and ReplacedImages are the two templates' images.
	StableImages, ReplacedImages []string
}

// planUndo decides what undo writes into Deployment d, given the
// ReplicaSets of its selector: the template of its stable revision (the
// one the rollout in progress started from, or the one a held failed
// revision was rolled back to), read from the ReplicaSet d controls. A
// state fledge did not write counts for nothing: its stable revision is
// anyone's word.
func planUndo(d *appsv1.Deployment, rss []appsv1.ReplicaSet) (undo, error) {
	state, rejected := readState(d)
	outcome, err := rollout.ParseOutcome(d)
	if err != nil && state == nil {
		return undo{}, fmt.Errorf("annotation %s of %s/%s does not parse (%s), so undo cannot tell which revision %s holds: apply the stable manifest",
			rollout.AnnotationLast, d.Namespace, d.Name, cause(err), d.Name)
	}
	var revision string
	switch {
	case state != nil && state.Phase == rollout.Promoting:
		return undo{}, fmt.Errorf("the rollout of %s is Promoting: the Deployment rolls to the new version and is no longer paused; once it is done, kubectl rollout undo deployment/%s goes back", d.Name, d.Name)
	case state != nil && state.Phase.Finishing() && rollout.TemplateHash(&d.Spec.Template) == state.StableRevision:
		return undo{}, fmt.Errorf("the rollout of %s is %s and its template is already the stable revision %s: the router unpauses it once the canary is gone (kubectl fledge status %s)",
			d.Name, state.Phase, state.StableRevision, d.Name)
	case state != nil && state.Phase.Finishing():
		// The webhook refuses a new template while the canary is cut.
		return undo{}, fmt.Errorf("the rollout of %s is %s: fledge is removing its canary, and %s then holds the revision; run kubectl fledge undo %s again once it has ended (kubectl fledge status %s --wait)",
			d.Name, state.Phase, d.Name, d.Name, d.Name)
	case state != nil:
		revision = state.StableRevision
	case rollout.Holds(d, outcome):
		revision = outcome.StableRevision
	case rejected != "":
		return undo{}, fmt.Errorf("%s holds no failed revision and no rollout runs: its %s was not written by fledge (%s), and fledge does not act on it but drops it; nothing to undo",
			d.Name, rollout.AnnotationState, rejected)
	default:
		return undo{}, fmt.Errorf("%s holds no failed revision and no rollout runs: nothing to undo", d.Name)
	}
	rs := rollout.ReplicaSetOf(rss, d.UID, revision)
	if rs == nil {
		return undo{}, fmt.Errorf("the stable ReplicaSet of %s (revision %s) is gone, so undo has no template to put back: apply the stable manifest", d.Name, revision)
	}
	t := rs.Spec.Template.DeepCopy()
	delete(t.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	return undo{
		Template: *t, Stable: revision, Replaced: rollout.TemplateHash(&d.Spec.Template),
		StableImages: images(t), ReplacedImages: images(&d.Spec.Template),
	}, nil
}

// images lists the images of a template's containers.
func images(t *corev1.PodTemplateSpec) []string {
	out := make([]string, len(t.Spec.Containers))
	for i, c := range t.Spec.Containers {
		out[i] = c.Image
	}
	return out
}

// imagesText is "image a" or "images a, b".
func imagesText(images []string) string {
	if len(images) == 1 {
		return "image " + images[0]
	}
	return "images " + strings.Join(images, ", ")
}

// undoDone says what undo did, and that git still has what it replaced.
func undoDone(name string, u undo) string {
	msg := fmt.Sprintf("%s: back on the stable revision %s (%s), unpaused", name, u.Stable, imagesText(u.StableImages))
	if u.Replaced == u.Stable {
		return msg
	}
	held := strings.Join(u.ReplacedImages, ", ")
	if slices.Equal(u.ReplacedImages, u.StableImages) {
		held = "revision " + u.Replaced
	}
	return msg + fmt.Sprintf("; git still holds %s: revert it there too, or the next sync releases it again", held)
}

func runUndo(ctx context.Context, e *env, name string, timeout time.Duration) error {
	cs, ns, err := e.connect()
	if err != nil {
		return err
	}
	var u undo
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := getDeployment(ctx, cs, ns, name)
		if err != nil {
			return err
		}
		rss, err := listReplicaSets(ctx, cs, d)
		if err != nil {
			return err
		}
		if u, err = planUndo(d, rss); err != nil {
			return err
		}
		d.Spec.Template = u.Template
		d.Spec.Paused = false
		if _, err := cs.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("write the stable template into deployment %s in namespace %s: %w", name, ns, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	done, err := waitUndone(ctx, cs, ns, name, timeout, e.poll)
	if err != nil {
		return err
	}
	if !done {
		v, err := getStatusView(ctx, cs, ns, name, e.clock.Now())
		if err != nil {
			return err
		}
		still := "it is still paused"
		if v.State != nil {
			still = "its rollout has not ended yet (" + phaseLine(v.State) + ")"
		}
		return fmt.Errorf("timed out after %s waiting for %s to be unpaused with no rollout in progress: the stable template (revision %s) is written, but %s. Is fledge running (kubectl -n fledge-system get pods)?",
			timeout, name, u.Stable, still)
	}
	fmt.Fprintln(e.out, undoDone(name, u))
	return nil
}

// waitUndone polls until the Deployment is unpaused and no rollout runs:
// the webhook unpauses a held Deployment as the stable template comes
// back; during a rollout the router first finishes the abort. A state
// fledge did not write is no rollout. It reports false when timeout passed
// first.
func waitUndone(ctx context.Context, cs kubernetes.Interface, ns, name string, timeout, poll time.Duration) (bool, error) {
	return waitDeployment(ctx, cs, ns, name, timeout, poll, true, func(d *appsv1.Deployment) bool {
		s, _ := readState(d)
		return !d.Spec.Paused && s == nil
	})
}
