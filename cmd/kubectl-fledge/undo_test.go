package main

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"

	"github.com/fledge-dev/fledge/rollout"
)

// stableOf is the template undo must write back into heldWeb: the stable
// ReplicaSet's, without the pod-template-hash label.
func stableOf(web *appsv1.Deployment) corev1.PodTemplateSpec {
	return withImage(web.Spec.Template, "v1")
}

func TestPlanUndo(t *testing.T) {
	type fixture struct {
		web *appsv1.Deployment
		rss []appsv1.ReplicaSet
	}
	held := func(t *testing.T) fixture {
		web, rs := heldWeb(t)
		return fixture{web, []appsv1.ReplicaSet{*replicaSetOf(web, web.Spec.Template, 0), *rs}}
	}
	inRollout := func(phase rollout.Phase) func(t *testing.T) fixture {
		return func(t *testing.T) fixture {
			web, rs := versionedRollout(t)
			s, _ := rollout.ParseState(web)
			s.Phase = phase
			web.Annotations[rollout.AnnotationState] = mustJSON(t, s)
			return fixture{web, []appsv1.ReplicaSet{*rs}}
		}
	}
	for _, tc := range []struct {
		name    string
		fixture func(t *testing.T) fixture
		wantErr string // with %s for the stable revision
	}{{
		name:    "a held failed revision goes back to the stable ReplicaSet's template",
		fixture: held,
	}, {
		name:    "a live rollout goes back to the revision it started from: an abort by revert",
		fixture: inRollout(rollout.Progressing),
	}, {
		name:    "a paused rollout too",
		fixture: inRollout(rollout.Paused),
	}, {
		name:    "a rollout rolling back is refused: the webhook takes no template while the canary is cut",
		fixture: inRollout(rollout.RollingBack),
		wantErr: "the rollout of web is RollingBack: fledge is removing its canary, and web then holds the revision; run kubectl fledge undo web again once it has ended (kubectl fledge status web --wait)",
	}, {
		name: "an abort by revert needs no undo: the router unpauses",
		fixture: func(t *testing.T) fixture {
			f := inRollout(rollout.Aborted)(t)
			f.web.Spec.Template = stableOf(f.web)
			return f
		},
		wantErr: "the rollout of web is Aborted and its template is already the stable revision %s: the router unpauses it once the canary is gone (kubectl fledge status web)",
	}, {
		name:    "a promotion is refused: the new version is replacing the stable one",
		fixture: inRollout(rollout.Promoting),
		wantErr: "the rollout of web is Promoting: the Deployment rolls to the new version and is no longer paused; once it is done, kubectl rollout undo deployment/web goes back",
	}, {
		name: "a success holds nothing",
		fixture: func(t *testing.T) fixture {
			f := held(t)
			f.web.Annotations[rollout.AnnotationLast] = mustJSON(t, succeeded())
			f.web.Spec.Paused = false
			return f
		},
		wantErr: "web holds no failed revision and no rollout runs: nothing to undo",
	}, {
		name: "a failed revision already reverted holds nothing",
		fixture: func(t *testing.T) fixture {
			f := held(t)
			f.web.Spec.Template, f.web.Spec.Paused = stableOf(f.web), false
			return f
		},
		wantErr: "web holds no failed revision and no rollout runs: nothing to undo",
	}, {
		name: "the stable ReplicaSet gone",
		fixture: func(t *testing.T) fixture {
			f := held(t)
			f.rss = f.rss[:1]
			return f
		},
		wantErr: "the stable ReplicaSet of web (revision %s) is gone, so undo has no template to put back: apply the stable manifest",
	}, {
		name: "a ReplicaSet of the stable template that web does not control is not its stable ReplicaSet",
		fixture: func(t *testing.T) fixture {
			f := held(t)
			f.rss[1].OwnerReferences[0].UID = "uid-other"
			return f
		},
		wantErr: "the stable ReplicaSet of web (revision %s) is gone, so undo has no template to put back: apply the stable manifest",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.fixture(t)
			stable := stableOf(f.web)
			stableRev, replacedRev := rollout.TemplateHash(&stable), rollout.TemplateHash(&f.web.Spec.Template)
			u, err := planUndo(f.web, f.rss)
			if tc.wantErr != "" {
				want := strings.ReplaceAll(tc.wantErr, "%s", stableRev)
				if err == nil || err.Error() != want {
					t.Errorf("error %v, want %s", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !apiequality.Semantic.DeepEqual(u.Template, stable) {
				t.Errorf("template %+v, want the stable one %+v", u.Template, stable)
			}
			if u.Stable != stableRev || u.Replaced != replacedRev {
				t.Errorf("revisions %s → %s, want %s → %s", u.Replaced, u.Stable, replacedRev, stableRev)
			}
			if strings.Join(u.StableImages, ",") != "fledge/demo:v1" || strings.Join(u.ReplacedImages, ",") != "fledge/demo:v2" {
				t.Errorf("images %v → %v", u.ReplacedImages, u.StableImages)
			}
		})
	}
}

func TestUndoDone(t *testing.T) {
	for _, tc := range []struct {
		name string
		u    undo
		want string
	}{{
		name: "another image: git still has it",
		u:    undo{Stable: "5d8f7c6b9a", Replaced: "8c7b6a5d4e", StableImages: []string{"fledge/demo:v1"}, ReplacedImages: []string{"fledge/demo:v2"}},
		want: "web: back on the stable revision 5d8f7c6b9a (image fledge/demo:v1), unpaused; git still holds fledge/demo:v2: revert it there too, or the next sync releases it again",
	}, {
		name: "the same image, another template: git still has that revision",
		u:    undo{Stable: "5d8f7c6b9a", Replaced: "8c7b6a5d4e", StableImages: []string{"fledge/demo:v1"}, ReplacedImages: []string{"fledge/demo:v1"}},
		want: "web: back on the stable revision 5d8f7c6b9a (image fledge/demo:v1), unpaused; git still holds revision 8c7b6a5d4e: revert it there too, or the next sync releases it again",
	}, {
		name: "several containers",
		u: undo{Stable: "5d8f7c6b9a", Replaced: "8c7b6a5d4e",
			StableImages: []string{"fledge/demo:v1", "envoy:1.30"}, ReplacedImages: []string{"fledge/demo:v2", "envoy:1.30"}},
		want: "web: back on the stable revision 5d8f7c6b9a (images fledge/demo:v1, envoy:1.30), unpaused; git still holds fledge/demo:v2, envoy:1.30: revert it there too, or the next sync releases it again",
	}, {
		name: "already on the stable template (reverted during the rollout): nothing in git to revert",
		u:    undo{Stable: "5d8f7c6b9a", Replaced: "5d8f7c6b9a", StableImages: []string{"fledge/demo:v1"}, ReplacedImages: []string{"fledge/demo:v1"}},
		want: "web: back on the stable revision 5d8f7c6b9a (image fledge/demo:v1), unpaused",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := undoDone("web", tc.u); got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

// undoLine is what undo prints for heldWeb and versionedRollout.
func undoLine(web *appsv1.Deployment) string {
	stable := stableOf(web)
	return "web: back on the stable revision " + rollout.TemplateHash(&stable) +
		" (image fledge/demo:v1), unpaused; git still holds fledge/demo:v2: revert it there too, or the next sync releases it again\n"
}

// getWeb reads web back from the fake cluster.
func getWeb(t *testing.T, h *harness) *appsv1.Deployment {
	t.Helper()
	d, err := h.cs.AppsV1().Deployments("team-a").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// onStableTemplate fails the test unless web runs the stable template,
// unpaused.
func onStableTemplate(t *testing.T, h *harness, want corev1.PodTemplateSpec) {
	t.Helper()
	d := getWeb(t, h)
	if !apiequality.Semantic.DeepEqual(d.Spec.Template, want) {
		t.Errorf("template %+v, want the stable one %+v", d.Spec.Template, want)
	}
	if d.Spec.Paused {
		t.Error("web is still paused")
	}
}

func TestUndoOfAHeldFailedRevision(t *testing.T) {
	web, rs := heldWeb(t)
	h := newHarness(web, rs)
	if code := h.run(t, "undo", "web"); code != 0 {
		t.Fatalf("exit code %d; stderr: %s", code, h.errOut)
	}
	if want := undoLine(web); h.out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", h.out, want)
	}
	onStableTemplate(t, h, stableOf(web))
	if got := getWeb(t, h).Annotations[rollout.AnnotationLast]; got != web.Annotations[rollout.AnnotationLast] {
		t.Errorf("undo changed the last outcome: %s", got)
	}
}

func TestUndoRetriesOnAConflict(t *testing.T) {
	web, rs := heldWeb(t)
	h := newHarness(web, rs)
	var updates atomic.Int32
	h.cs.PrependReactor("update", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
		if updates.Add(1) == 1 {
			return true, nil, apierrors.NewConflict(schema.GroupResource{Group: "apps", Resource: "deployments"}, "web", errors.New("the object has been modified"))
		}
		return false, nil, nil
	})
	if code := h.run(t, "undo", "web"); code != 0 {
		t.Fatalf("exit code %d; stderr: %s", code, h.errOut)
	}
	if n := updates.Load(); n != 2 {
		t.Errorf("%d updates, want 2: one refused, one after reading web again", n)
	}
	onStableTemplate(t, h, stableOf(web))
}

// During a rollout the webhook keeps web paused, and the router ends the
// rollout Aborted; undo waits for that.
func TestUndoDuringARolloutWaitsForTheAbort(t *testing.T) {
	web, rs := versionedRollout(t)
	h := newHarness(web, rs, canaryOf(web, 7, 7))
	stable := stableOf(web)
	// The webhook: a Deployment with a rollout running stays paused.
	h.cs.PrependReactor("update", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if d := a.(k8stesting.UpdateAction).GetObject().(*appsv1.Deployment); d.Annotations[rollout.AnnotationState] != "" {
			d.Spec.Paused = true
		}
		return false, nil, nil
	})
	// The router: the template is the stable one again, so it aborts, and
	// unpauses web once the canary is gone.
	go func() {
		ctx := t.Context()
		for ; ctx.Err() == nil; time.Sleep(5 * time.Millisecond) {
			d, err := h.cs.AppsV1().Deployments("team-a").Get(ctx, "web", metav1.GetOptions{})
			if err == nil && rollout.TemplateHash(&d.Spec.Template) == rollout.TemplateHash(&stable) {
				o := rolledBackAtStep3()
				o.Phase, o.Attempt = rollout.Aborted, 2
				delete(d.Annotations, rollout.AnnotationState)
				d.Annotations[rollout.AnnotationLast] = mustJSON(t, o)
				d.Spec.Paused = false
				if _, err := h.cs.AppsV1().Deployments("team-a").Update(ctx, d, metav1.UpdateOptions{}); err == nil {
					return
				}
			}
		}
	}()
	if code := h.run(t, "undo", "web"); code != 0 {
		t.Fatalf("exit code %d; stderr: %s", code, h.errOut)
	}
	if want := undoLine(web); h.out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", h.out, want)
	}
	onStableTemplate(t, h, stable)
	if s := getWeb(t, h).Annotations[rollout.AnnotationState]; s != "" {
		t.Errorf("the rollout still runs: %s", s)
	}
}

func TestUndoTimesOutWhileTheRolloutDoesNotEnd(t *testing.T) {
	web, rs := versionedRollout(t)
	h := newHarness(web, rs, canaryOf(web, 7, 7))
	if code := h.run(t, "undo", "web", "--timeout", "100ms"); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	stable := stableOf(web)
	want := "error: timed out after 100ms waiting for web to be unpaused with no rollout in progress: the stable template (revision " + rollout.TemplateHash(&stable) +
		") is written, but its rollout has not ended yet (Progressing at step 2 of 3 (25%)). Is fledge running (kubectl -n fledge-system get pods)?\n"
	if h.errOut.String() != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", h.errOut, want)
	}
	if h.out.String() != "" {
		t.Errorf("output %q, want none", h.out)
	}
}

func TestUndoRefusalsWriteNothing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		objects func(t *testing.T) []runtime.Object
		wantErr string
	}{{
		name: "nothing held, no rollout",
		objects: func(t *testing.T) []runtime.Object {
			return []runtime.Object{deployment(t, "web", 20, nil, succeeded())}
		},
		wantErr: "error: web holds no failed revision and no rollout runs: nothing to undo\n",
	}, {
		name: "the stable ReplicaSet gone",
		objects: func(t *testing.T) []runtime.Object {
			web, _ := heldWeb(t)
			return []runtime.Object{web, replicaSetOf(web, web.Spec.Template, 0)} // no stable ReplicaSet
		},
		wantErr: "error: the stable ReplicaSet of web (revision %s) is gone, so undo has no template to put back: apply the stable manifest\n",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			objects := tc.objects(t)
			before := objects[0].(*appsv1.Deployment).DeepCopy()
			h := newHarness(objects...)
			if code := h.run(t, "undo", "web"); code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			stable := stableOf(before)
			if want := strings.ReplaceAll(tc.wantErr, "%s", rollout.TemplateHash(&stable)); h.errOut.String() != want {
				t.Errorf("stderr:\n%s\nwant:\n%s", h.errOut, want)
			}
			after := getWeb(t, h)
			if !apiequality.Semantic.DeepEqual(after.Spec, before.Spec) {
				t.Errorf("a refused undo changed web's spec")
			}
		})
	}
}
