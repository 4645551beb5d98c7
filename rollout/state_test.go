package rollout

import (
	"testing"

	"github.com/stretchr/testify/assert"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/fledge-dev/fledge/policy"
)

func deployment(image string) *appsv1.Deployment {
	return &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
	}}}
}

func TestHolds(t *testing.T) {
	v3 := deployment("demo:v3")
	failed := &Outcome{Phase: RolledBack, CanaryRevision: TemplateHash(&v3.Spec.Template)}
	assert.True(t, Holds(v3, failed), "rolled back, template still the failed one")
	assert.True(t, Holds(v3, &Outcome{Phase: Aborted, CanaryRevision: failed.CanaryRevision}), "an abort holds too")
	assert.False(t, Holds(deployment("demo:v1"), failed), "the template was reverted")
	assert.False(t, Holds(v3, &Outcome{Phase: Succeeded, CanaryRevision: failed.CanaryRevision}), "a promoted revision is not held")
	assert.False(t, Holds(v3, nil))
}

func TestNextAttempt(t *testing.T) {
	assert.Equal(t, int32(1), NextAttempt(nil))
	assert.Equal(t, int32(4), NextAttempt(&Outcome{Attempt: 3}))
}

func TestEvidenceFor(t *testing.T) {
	s := &State{Attempt: 2, Step: 1}
	at := metav1.NewMicroTime(metav1.Now().Time)
	checks := []policy.CheckResult{{Check: "error-rate", Result: policy.Pass}}
	tests := []struct {
		name string
		e    *Evidence
		want Evidence
	}{
		{"none", nil, Evidence{Attempt: 2, Step: 1}},
		{"an earlier attempt's evidence is none at all", &Evidence{Attempt: 1, Step: 1, At: at, Counters: policy.Counters{Failures: 1}, Checks: checks}, Evidence{Attempt: 2, Step: 1}},
		{"an earlier step's keeps its counters only", &Evidence{Attempt: 2, Step: 0, At: at, Counters: policy.Counters{Failures: 1}, Checks: checks}, Evidence{Attempt: 2, Step: 1, Counters: policy.Counters{Failures: 1}}},
		{"this step's is kept whole", &Evidence{Attempt: 2, Step: 1, At: at, Checks: checks}, Evidence{Attempt: 2, Step: 1, At: at, Checks: checks}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { assert.Equal(t, tt.want, tt.e.For(s)) })
	}
}

func TestCanaryTemplateIsNewForEveryAttempt(t *testing.T) {
	d := deployment("demo:v3")
	one, two := CanaryTemplate(d, 1), CanaryTemplate(d, 2)
	assert.Equal(t, map[string]string{"app": "web", LabelTrack: TrackCanary, LabelAttempt: "1"}, one.Labels)
	assert.NotEqual(t, TemplateHash(one), TemplateHash(two), "a new ReplicaSet, so new pod names and series")
	assert.Equal(t, map[string]string{"app": "web"}, d.Spec.Template.Labels, "the Deployment's own template is untouched")
}

func TestServiceGaps(t *testing.T) {
	svc := func(name string, sel map[string]string) corev1.Service {
		return corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{Selector: sel}}
	}
	stable := labels.Set{"app": "web", "version": "v1"}
	canary := labels.Set{"app": "web", "version": "v2", LabelTrack: TrackCanary}
	services := []corev1.Service{
		svc("web", map[string]string{"app": "web", "version": "v1"}),
		svc("web-all", map[string]string{"app": "web"}),
		svc("web-new", map[string]string{"version": "v2"}),
		svc("other", map[string]string{"app": "db"}),
		svc("manual", nil),
		svc("web-tier", map[string]string{"app": "web", "tier": "front"}),
	}
	matches := MatchServices(services, stable, canary)
	var names []string
	for _, m := range matches {
		names = append(names, m.Service)
	}
	assert.Equal(t, []string{"web", "web-all", "web-new"}, names, "only Services that select either version")
	gaps := ServiceGaps(services, stable, canary)
	if assert.Len(t, gaps, 1) {
		assert.Equal(t, []MissingLabel{{Key: "version", Want: "v1", Has: true, Canary: "v2"}}, gaps[0].Missing)
		assert.Equal(t, "Service web selects version=v1 (canary pods: version=v2): it sends the canary no traffic and would have no endpoints after the promotion; remove version from its selector so that it selects both versions", gaps[0].Gap())
	}
	assert.True(t, matches[2].Canary && !matches[2].Stable, "web-new selects only the canary")
}
