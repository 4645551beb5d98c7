package router

import (
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fledge-dev/fledge/rollout"
)

// CanaryName is the name of a Deployment's canary.
func CanaryName(deployment string) string { return deployment + rollout.CanarySuffix }

// CanaryTemplate is the pod template the canary runs: the Deployment's new
// template with fledge.dev/track: canary added to its labels.
func CanaryTemplate(d *appsv1.Deployment) *corev1.PodTemplateSpec {
	t := d.Spec.Template.DeepCopy()
	t.Labels = withTrack(t.Labels)
	return t
}

// CanarySelector is the canary's selector: the Deployment's plus
// fledge.dev/track: canary, so the canary never adopts stable pods while the
// Service, selecting on the app's own labels, sends traffic to both.
func CanarySelector(d *appsv1.Deployment) *metav1.LabelSelector {
	s := d.Spec.Selector.DeepCopy()
	s.MatchLabels = withTrack(s.MatchLabels)
	return s
}

func withTrack(labels map[string]string) map[string]string {
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	out[rollout.LabelTrack] = rollout.TrackCanary
	return out
}

// setCanarySpec makes c the canary of d with replicas pods. The selector is
// only set on creation: it is immutable.
func setCanarySpec(c, d *appsv1.Deployment, replicas int32) {
	c.Labels = withTrack(d.Labels)
	if c.Annotations == nil {
		c.Annotations = map[string]string{}
	}
	// The canary is fledge's own: the webhook must never take a change to
	// it for a release of its own.
	c.Annotations[rollout.AnnotationSkip] = "true"
	if c.Spec.Selector == nil {
		c.Spec.Selector = CanarySelector(d)
	}
	c.Spec.Replicas = &replicas
	c.Spec.Template = *CanaryTemplate(d)
	c.Spec.MinReadySeconds = d.Spec.MinReadySeconds
	c.Spec.ProgressDeadlineSeconds = d.Spec.ProgressDeadlineSeconds
	c.Spec.Paused = false
}
