package webhook

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/fledge-dev/fledge/policy"
	"github.com/fledge-dev/fledge/rollout"
)

// now is in time.Local, as metav1.Time decodes.
var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC).Local()

// web is a serving Deployment "web" with 4 ready replicas of image.
func web(image string) *appsv1.Deployment {
	labels := map[string]string{"app": "web"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team-a", UID: "uid-web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](4),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
			},
		},
		Status: appsv1.DeploymentStatus{Replicas: 4, ReadyReplicas: 4},
	}
}

// held is web paused on the failed template demo:v3 after attempt 1 was
// rolled back, its stable ReplicaSet (demo:v1) serving.
func held() *appsv1.Deployment {
	d := web("demo:v3")
	d.Spec.Paused = true
	o := rollout.Outcome{
		Phase: rollout.RolledBack, Attempt: 1,
		StableRevision: rollout.TemplateHash(&web("demo:v1").Spec.Template),
		CanaryRevision: rollout.TemplateHash(&d.Spec.Template),
		Reason:         &rollout.Reason{Check: "error-rate", Step: 2, Weight: 50, Message: "error-rate 0.3 > 0.05"},
		StartedAt:      metav1.NewMicroTime(now.Add(-10 * time.Minute)),
		FinishedAt:     metav1.NewMicroTime(time.Date(2026, 11, 25, 11, 55, 0, 0, time.UTC)),
	}
	encoded, err := o.Encode()
	if err != nil {
		panic(err)
	}
	d.Annotations = map[string]string{rollout.AnnotationLast: encoded}
	return d
}

// heldWarning is what every update of held() that releases nothing says.
var heldWarn = "fledge: web holds revision " + rollout.TemplateHash(&web("demo:v3").Spec.Template) +
	", rolled back at 2026-11-25T11:55:00Z (error-rate 0.3 > 0.05 at step 3 (50%)): applying it again releases nothing; web stays paused and the stable revision " +
	rollout.TemplateHash(&web("demo:v1").Spec.Template) + " serves. To release it again: kubectl fledge retry web; to go back: kubectl fledge undo web, or apply the stable manifest"

// testKeys seal the states of these tests.
var testKeys = rollout.StaticKeys{{ID: "20261125T000000Z", Secret: []byte("a-test-key-of-thirty-two-bytes!!")}}

// running is web with the canary image in its template and a rollout of it
// in phase.
func running(phase rollout.Phase) *appsv1.Deployment {
	d := web("demo:v2")
	d.Spec.Paused = true
	s := rollout.State{
		Phase:          phase,
		Step:           1,
		Attempt:        1,
		StableRevision: rollout.TemplateHash(&web("demo:v1").Spec.Template),
		CanaryRevision: rollout.TemplateHash(&d.Spec.Template),
		Policy:         *policy.Default(),
		PolicySource:   "default",
		StartedAt:      metav1.NewMicroTime(now.Add(-time.Minute)),
	}
	encoded, err := rollout.SealState(&s, testKeys, d.UID)
	if err != nil {
		panic(err)
	}
	d.Annotations = map[string]string{rollout.AnnotationState: encoded}
	return d
}

func with(d *appsv1.Deployment, change func(*appsv1.Deployment)) *appsv1.Deployment {
	d = d.DeepCopy()
	change(d)
	return d
}

func image(img string) func(*appsv1.Deployment) {
	return func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = img }
}

var defaultPolicy = Resolved{Policy: policy.Default(), Source: "default"}

func TestDecide(t *testing.T) {
	policyErr := errors.New(`policy team-policy named by annotation fledge.dev/policy does not exist in this namespace; create it or remove the annotation`)
	tests := []struct {
		name       string
		update     Update
		wantDenied string
		// wantState is the rollout state expected in the admitted object;
		// nil with wantUnchanged means the request is admitted as it came.
		wantUnchanged bool
		wantState     *rollout.State
		wantPaused    bool
		wantWarnings  []string
	}{
		{
			name:          "fledge's own identity passes as is",
			update:        Update{Old: running(rollout.Progressing), New: with(running(rollout.Progressing), func(d *appsv1.Deployment) { delete(d.Annotations, rollout.AnnotationState); d.Spec.Paused = false }), FromFledge: true},
			wantUnchanged: true,
		},
		{
			name:          "template unchanged passes",
			update:        Update{Old: web("demo:v1"), New: with(web("demo:v1"), func(d *appsv1.Deployment) { d.Spec.Replicas = ptr.To[int32](6) })},
			wantUnchanged: true,
		},
		{
			name: "kubectl rollout restart is not a release",
			update: Update{Old: web("demo:v1"), New: with(web("demo:v1"), func(d *appsv1.Deployment) {
				d.Spec.Template.Annotations = map[string]string{rollout.AnnotationRestartedAt: "2026-11-25T12:00:00Z"}
			})},
			wantUnchanged: true,
		},
		{
			name:         "a template change with a serving stable version starts a rollout",
			update:       Update{Old: web("demo:v1"), New: web("demo:v2")},
			wantPaused:   true,
			wantState:    &rollout.State{Phase: rollout.Progressing, Step: 0, Attempt: 1, StableRevision: rollout.TemplateHash(&web("demo:v1").Spec.Template), CanaryRevision: rollout.TemplateHash(&web("demo:v2").Spec.Template), Policy: *policy.Default(), PolicySource: "default", StartedAt: metav1.NewMicroTime(now)},
			wantWarnings: []string{"fledge: canary rollout started for web: 5% → 25% → 50% → 100%"},
		},
		{
			name:          "CREATE-like scale from zero: replicas 0 rolls out natively",
			update:        Update{Old: web("demo:v1"), New: with(web("demo:v2"), func(d *appsv1.Deployment) { d.Spec.Replicas = ptr.To[int32](0) })},
			wantUnchanged: true,
		},
		{
			name:          "no ready stable pod rolls out natively",
			update:        Update{Old: with(web("demo:v1"), func(d *appsv1.Deployment) { d.Status.ReadyReplicas = 0 }), New: web("demo:v2")},
			wantUnchanged: true,
		},
		{
			name:          "fledge.dev/skip rolls out natively",
			update:        Update{Old: web("demo:v1"), New: with(web("demo:v2"), func(d *appsv1.Deployment) { d.Annotations = map[string]string{rollout.AnnotationSkip: "true"} })},
			wantUnchanged: true,
		},
		{
			name:       "a missing policy refuses the release and says how to bypass",
			update:     Update{Old: web("demo:v1"), New: web("demo:v2"), Policy: Resolved{Err: policyErr}},
			wantDenied: "fledge: web: " + policyErr.Error() + `; fix the policy, or to deploy without fledge, set the annotation fledge.dev/skip: "true" on the Deployment or remove the label fledge.dev/enabled from the namespace`,
		},
		{
			name: "naming a missing policy is refused even without a release",
			update: Update{Old: web("demo:v1"), New: with(web("demo:v1"), func(d *appsv1.Deployment) {
				d.Annotations = map[string]string{policy.Annotation: "team-policy"}
			}), Policy: Resolved{Err: policyErr}},
			wantDenied: "fledge: web: " + policyErr.Error() + `; fix the policy, or to deploy without fledge, set the annotation fledge.dev/skip: "true" on the Deployment or remove the label fledge.dev/enabled from the namespace`,
		},
		{
			name:         "a user's removal of fledge.dev/rollout is put back",
			update:       Update{Old: running(rollout.Progressing), New: with(running(rollout.Progressing), func(d *appsv1.Deployment) { delete(d.Annotations, rollout.AnnotationState) })},
			wantPaused:   true,
			wantState:    stateOf(running(rollout.Progressing)),
			wantWarnings: []string{"fledge: annotation fledge.dev/rollout is written by fledge only; your change to it was undone"},
		},
		{
			name:         "a user's unpause during a rollout is undone",
			update:       Update{Old: running(rollout.Progressing), New: with(running(rollout.Progressing), func(d *appsv1.Deployment) { d.Spec.Paused = false })},
			wantPaused:   true,
			wantState:    stateOf(running(rollout.Progressing)),
			wantWarnings: []string{"fledge: web stays paused while its rollout runs; use kubectl fledge pause|resume|promote|abort web"},
		},
		{
			name:       "the template reverted mid-rollout aborts the canary",
			update:     Update{Old: running(rollout.Progressing), New: with(running(rollout.Progressing), image("demo:v1"))},
			wantPaused: true,
			wantState: withState(stateOf(running(rollout.Progressing)), func(s *rollout.State) {
				s.Phase = rollout.Aborted
				s.Message = "aborted by user: the template is back to the stable version"
			}),
			wantWarnings: []string{"fledge: rollout of web aborted: the template is back to the stable version; the canary is being removed"},
		},
		{
			name: "kubectl fledge undo mid-rollout (stable template, unpaused) aborts, paused until the canary is cut",
			update: Update{Old: running(rollout.Progressing), New: with(running(rollout.Progressing), func(d *appsv1.Deployment) {
				image("demo:v1")(d)
				d.Spec.Paused = false
			})},
			wantPaused: true,
			wantState: withState(stateOf(running(rollout.Progressing)), func(s *rollout.State) {
				s.Phase = rollout.Aborted
				s.Message = "aborted by user: the template is back to the stable version"
			}),
			wantWarnings: []string{"fledge: rollout of web aborted: the template is back to the stable version; the canary is being removed"},
		},
		{
			name: "a retry of a held revision with no ready pod rolls out natively and takes the command",
			update: Update{Old: with(held(), func(d *appsv1.Deployment) { d.Status.ReadyReplicas = 0 }), New: with(held(), func(d *appsv1.Deployment) {
				d.Annotations[rollout.AnnotationCommand] = rollout.CommandRetry
			})},
			wantPaused:   false,
			wantWarnings: []string{"fledge: web has no ready pods to protect: it rolls out natively, unpaused"},
		},
		{
			name:          "re-applying the canary's template mid-rollout changes nothing",
			update:        Update{Old: running(rollout.Progressing), New: running(rollout.Progressing)},
			wantUnchanged: true,
		},
		{
			name:       "a new revision mid-rollout supersedes the canary and restarts at step 0",
			update:     Update{Old: running(rollout.Paused), New: with(running(rollout.Paused), image("demo:v3"))},
			wantPaused: true,
			wantState: &rollout.State{Phase: rollout.Progressing, Step: 0, Attempt: 2,
				StableRevision: rollout.TemplateHash(&web("demo:v1").Spec.Template), CanaryRevision: rollout.TemplateHash(&web("demo:v3").Spec.Template),
				Policy: *policy.Default(), PolicySource: "default", StartedAt: metav1.NewMicroTime(now)},
			wantWarnings: []string{"fledge: a new revision of web supersedes the canary; restarting at step 1: 5% → 25% → 50% → 100%"},
		},
		{
			name:          "the held revision re-applied (server-side apply) changes nothing and says when and why",
			update:        Update{Old: held(), New: held()},
			wantUnchanged: true,
			wantWarnings:  []string{heldWarn},
		},
		{
			name:         "the held revision replaced (kubectl replace drops paused) stays paused",
			update:       Update{Old: held(), New: with(held(), func(d *appsv1.Deployment) { d.Spec.Paused = false })},
			wantPaused:   true,
			wantWarnings: []string{heldWarn},
		},
		{
			name:         "the stable template unpauses a held Deployment",
			update:       Update{Old: held(), New: with(held(), image("demo:v1"))},
			wantPaused:   false,
			wantWarnings: []string{"fledge: web is back on the stable revision " + rollout.TemplateHash(&web("demo:v1").Spec.Template) + " and unpaused; the failed revision " + rollout.TemplateHash(&web("demo:v3").Spec.Template) + " is no longer held"},
		},
		{
			name:       "a new template after a rollback starts a rollout from the stable revision, as attempt 2",
			update:     Update{Old: held(), New: with(held(), image("demo:v4"))},
			wantPaused: true,
			wantState: &rollout.State{Phase: rollout.Progressing, Attempt: 2,
				StableRevision: rollout.TemplateHash(&web("demo:v1").Spec.Template), CanaryRevision: rollout.TemplateHash(&web("demo:v4").Spec.Template),
				Policy: *policy.Default(), PolicySource: "default", StartedAt: metav1.NewMicroTime(now)},
			wantWarnings: []string{"fledge: canary rollout started for web from the stable revision " + rollout.TemplateHash(&web("demo:v1").Spec.Template) + ": 5% → 25% → 50% → 100%"},
		},
		{
			name: "retry starts attempt 2 of the held revision and takes the command",
			update: Update{Old: held(), New: with(held(), func(d *appsv1.Deployment) {
				d.Annotations[rollout.AnnotationCommand] = rollout.CommandRetry
			})},
			wantPaused: true,
			wantState: &rollout.State{Phase: rollout.Progressing, Attempt: 2,
				StableRevision: rollout.TemplateHash(&web("demo:v1").Spec.Template), CanaryRevision: rollout.TemplateHash(&web("demo:v3").Spec.Template),
				Policy: *policy.Default(), PolicySource: "default", StartedAt: metav1.NewMicroTime(now)},
			wantWarnings: []string{"fledge: retrying revision " + rollout.TemplateHash(&web("demo:v3").Spec.Template) + " of web as attempt 2, on new canary pods: 5% → 25% → 50% → 100%"},
		},
		{
			name: "a Service that would miss the canary is warned of at apply",
			update: Update{
				Old: with(web("demo:v1"), func(d *appsv1.Deployment) { d.Spec.Template.Labels = map[string]string{"app": "web", "version": "v1"} }),
				New: with(web("demo:v2"), func(d *appsv1.Deployment) { d.Spec.Template.Labels = map[string]string{"app": "web", "version": "v2"} }),
				Services: []corev1.Service{
					{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web", "version": "v1"}}},
					{ObjectMeta: metav1.ObjectMeta{Name: "web-all"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}}},
				},
			},
			wantPaused: true,
			wantState: &rollout.State{Phase: rollout.Progressing, Attempt: 1,
				StableRevision: rollout.TemplateHash(&with(web("demo:v1"), func(d *appsv1.Deployment) { d.Spec.Template.Labels = map[string]string{"app": "web", "version": "v1"} }).Spec.Template),
				CanaryRevision: rollout.TemplateHash(&with(web("demo:v2"), func(d *appsv1.Deployment) { d.Spec.Template.Labels = map[string]string{"app": "web", "version": "v2"} }).Spec.Template),
				Policy:         *policy.Default(), PolicySource: "default", StartedAt: metav1.NewMicroTime(now)},
			wantWarnings: []string{
				"fledge: canary rollout started for web: 5% → 25% → 50% → 100%",
				"fledge: Service web selects version=v1 (canary pods: version=v2): it sends the canary no traffic and would have no endpoints after the promotion; remove version from its selector so that it selects both versions; the rollout holds until it does",
			},
		},
		{
			name: "a state fledge did not write is no rollout: an unpause passes, with a warning",
			update: Update{
				Old: with(running(rollout.Progressing), func(d *appsv1.Deployment) { d.Annotations[rollout.AnnotationState] = `{"phase":"Promoting"}` }),
				New: with(running(rollout.Progressing), func(d *appsv1.Deployment) {
					d.Annotations[rollout.AnnotationState] = `{"phase":"Promoting"}`
					d.Spec.Paused = false
				}),
			},
			wantUnchanged: true,
			wantWarnings:  []string{"fledge: annotation fledge.dev/rollout of team-a/web was not written by fledge for it: it has no seal; fledge ignores it"},
		},
		{
			name: "a state copied from another Deployment is no rollout: a new template starts a fresh one",
			update: Update{
				Old: with(running(rollout.Progressing), func(d *appsv1.Deployment) { d.UID = "uid-other"; image("demo:v1")(d) }),
				New: with(running(rollout.Progressing), func(d *appsv1.Deployment) { d.UID = "uid-other"; image("demo:v4")(d) }),
			},
			wantPaused: true,
			wantState: &rollout.State{Phase: rollout.Progressing, Attempt: 1,
				StableRevision: rollout.TemplateHash(&web("demo:v1").Spec.Template), CanaryRevision: rollout.TemplateHash(&web("demo:v4").Spec.Template),
				Policy: *policy.Default(), PolicySource: "default", StartedAt: metav1.NewMicroTime(now)},
			wantWarnings: []string{
				"fledge: annotation fledge.dev/rollout of team-a/web was not written by fledge for it: its seal does not match: it was copied from another Deployment, restored from a backup, or changed by hand; fledge ignores it",
				"fledge: canary rollout started for web: 5% → 25% → 50% → 100%",
			},
		},
		{
			name:       "with no state key loaded, a release is refused rather than started unsealed",
			update:     Update{Old: web("demo:v1"), New: web("demo:v2"), Keys: rollout.StaticKeys{}},
			wantDenied: `fledge: web: fledge's state key is not loaded yet; try again in a few seconds, or to deploy without fledge, set the annotation fledge.dev/skip: "true" on the Deployment or remove the label fledge.dev/enabled from the namespace`,
		},
		{
			name: "fledge.dev/skip does not let a user write fledge's state",
			update: Update{Old: running(rollout.Progressing), New: with(running(rollout.Progressing), func(d *appsv1.Deployment) {
				d.Annotations[rollout.AnnotationSkip] = "true"
				d.Annotations[rollout.AnnotationState] = `{"phase":"Promoting"}`
			})},
			wantPaused:   true,
			wantState:    stateOf(running(rollout.Progressing)),
			wantWarnings: []string{"fledge: annotation fledge.dev/rollout is written by fledge only; your change to it was undone"},
		},
		{
			name:          "a user's edit during Promoting does not pause the Deployment again",
			update:        Update{Old: with(running(rollout.Promoting), func(d *appsv1.Deployment) { d.Spec.Paused = false }), New: with(running(rollout.Promoting), func(d *appsv1.Deployment) { d.Spec.Paused = false; d.Annotations[policy.Annotation] = "fledge-policy" })},
			wantUnchanged: true,
		},
		{
			name: "a release during a promotion with minReadySeconds says how long it may take",
			update: Update{
				Old: with(running(rollout.Promoting), func(d *appsv1.Deployment) { d.Spec.MinReadySeconds = 30; d.Spec.Replicas = ptr.To[int32](10) }),
				New: with(running(rollout.Promoting), func(d *appsv1.Deployment) {
					d.Spec.MinReadySeconds = 30
					d.Spec.Replicas = ptr.To[int32](10)
					image("demo:v3")(d)
				})},
			wantDenied: `fledge: web is finishing a rollout (Promoting): its minReadySeconds (30s) makes each new pod wait before it counts, so the promotion of 10 pods in batches of 3 may take up to about 2m0s; apply again when it is done (kubectl fledge status web), or to deploy without fledge, set the annotation fledge.dev/skip: "true" on the Deployment or remove the label fledge.dev/enabled from the namespace`,
		},
		{
			name:       "a release while the rollout is finishing is refused until it is done",
			update:     Update{Old: running(rollout.Promoting), New: with(running(rollout.Promoting), image("demo:v3"))},
			wantDenied: `fledge: web is finishing a rollout (Promoting); apply again when it is done (kubectl fledge status web), or to deploy without fledge, set the annotation fledge.dev/skip: "true" on the Deployment or remove the label fledge.dev/enabled from the namespace`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := tt.update
			u.Now = now
			if u.Keys == nil {
				u.Keys = testKeys
			}
			if u.Policy == (Resolved{}) {
				u.Policy = defaultPolicy
			}
			d := Decide(u)
			assert.Equal(t, tt.wantDenied, d.Denied)
			if tt.wantDenied != "" {
				assert.Nil(t, d.Object)
				return
			}
			assert.Equal(t, tt.wantWarnings, d.Warnings)
			if tt.wantUnchanged {
				assert.Nil(t, d.Object, "admitted unchanged")
				return
			}
			require.NotNil(t, d.Object)
			assert.Equal(t, tt.wantPaused, d.Object.Spec.Paused)
			assert.Equal(t, u.New.Spec.Template, d.Object.Spec.Template, "the template is the user's")
			assert.Equal(t, tt.wantState, stateOf(d.Object))
		})
	}
}

// stateOf is the state of d, which must be sealed for it with testKeys,
// without its seal.
func stateOf(d *appsv1.Deployment) *rollout.State {
	s, err := rollout.OpenState(d, testKeys)
	if err != nil {
		panic(err)
	}
	if s != nil {
		s.Seal = ""
	}
	return s
}

func withState(s *rollout.State, change func(*rollout.State)) *rollout.State {
	change(s)
	return s
}
