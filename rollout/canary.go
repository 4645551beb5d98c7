package rollout

import (
	"maps"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
)

// CanaryName is the name of a Deployment's canary: <name>-canary.
func CanaryName(deployment string) string { return deployment + canarySuffix }

// StableName is the name of the Deployment whose canary is named canary;
// false when canary is not a canary's name.
func StableName(canary string) (string, bool) {
	name, ok := strings.CutSuffix(canary, canarySuffix)
	if !ok || name == "" {
		return "", false
	}
	return name, true
}

// StableOfCanaryPod is the name of the Deployment, in the pod's namespace,
// that a canary pod serves: its ReplicaSet is the canary's, named
// <name>-canary-<pod-template-hash>. false for a pod that is not a canary
// pod, or not controlled by a canary's ReplicaSet.
func StableOfCanaryPod(pod metav1.Object) (string, bool) {
	if pod.GetLabels()[LabelTrack] != TrackCanary {
		return "", false
	}
	owner := metav1.GetControllerOf(pod)
	if owner == nil || owner.Kind != "ReplicaSet" {
		return "", false
	}
	i := strings.LastIndexByte(owner.Name, '-')
	if i < 0 {
		return "", false
	}
	return StableName(owner.Name[:i])
}

// CanaryTemplate is the pod template the canary of attempt runs: the
// Deployment's new template with fledge.dev/track: canary and
// fledge.dev/attempt: <attempt> added to its labels.
//
// The attempt label makes every attempt's pods new: their ReplicaSet (named
// after the template's hash) and so their names and Prometheus series differ
// from those of an earlier attempt of the same revision, which must never
// count as this attempt's evidence.
func CanaryTemplate(d *appsv1.Deployment, attempt int32) *corev1.PodTemplateSpec {
	t := d.Spec.Template.DeepCopy()
	t.Labels = withTrack(t.Labels)
	t.Labels[LabelAttempt] = strconv.Itoa(int(attempt))
	return t
}

// CanarySelector is the canary's selector: the Deployment's plus
// fledge.dev/track: canary, so the canary never adopts stable pods while the
// Service, selecting on the app's own labels, sends traffic to both. It
// leaves the attempt out: a selector cannot change, and the canary
// Deployment outlives a superseded revision.
func CanarySelector(d *appsv1.Deployment) *metav1.LabelSelector {
	s := d.Spec.Selector.DeepCopy()
	s.MatchLabels = withTrack(s.MatchLabels)
	return s
}

// CanaryPodLabels are the labels of the pods that the canary of attempt
// runs, without the ReplicaSet's pod-template-hash: what a Service must
// select to reach them.
func CanaryPodLabels(d *appsv1.Deployment, attempt int32) labels.Set {
	return PodLabels(CanaryTemplate(d, attempt))
}

// IsCanary reports whether a Deployment is a fledge canary.
func IsCanary(d *appsv1.Deployment) bool { return d.Labels[LabelTrack] == TrackCanary }

// PodAttempt is the attempt a canary pod belongs to, from its label.
func PodAttempt(p *corev1.Pod) string { return p.Labels[LabelAttempt] }

func withTrack(labels map[string]string) map[string]string {
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	out[LabelTrack] = TrackCanary
	return out
}

// SetCanarySpec makes c the canary of d for attempt with replicas pods. The
// selector is only set on creation: it is immutable.
func SetCanarySpec(c, d *appsv1.Deployment, attempt, replicas int32) {
	c.Labels = withTrack(d.Labels)
	if c.Annotations == nil {
		c.Annotations = map[string]string{}
	}
	// The canary is fledge's own: the webhook must never take a change to
	// it for a release of its own.
	c.Annotations[AnnotationSkip] = "true"
	if c.Spec.Selector == nil {
		c.Spec.Selector = CanarySelector(d)
	}
	c.Spec.Replicas = &replicas
	c.Spec.Template = *CanaryTemplate(d, attempt)
	c.Spec.MinReadySeconds = d.Spec.MinReadySeconds
	c.Spec.ProgressDeadlineSeconds = d.Spec.ProgressDeadlineSeconds
	c.Spec.Paused = false
}

// ReplicaSetOf finds, among rss, the ReplicaSet controlled by owner (its
// UID) whose template has hash: the stable ReplicaSet of a revision, or a
// canary's current one. Nil when there is none (deleted, or never made).
func ReplicaSetOf(rss []appsv1.ReplicaSet, owner types.UID, hash string) *appsv1.ReplicaSet {
	for i := range rss {
		ref := metav1.GetControllerOf(&rss[i])
		if ref != nil && ref.UID == owner && TemplateHash(&rss[i].Spec.Template) == hash {
			return &rss[i]
		}
	}
	return nil
}
