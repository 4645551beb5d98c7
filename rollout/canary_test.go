package rollout

import (
	"testing"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestCanaryNameAndBack(t *testing.T) {
	assert.Equal(t, "web-canary", CanaryName("web"))
	tests := []struct {
		canary, stable string
		ok             bool
	}{
		{"web-canary", "web", true},
		{"web-canary-canary", "web-canary", true},
		{"web", "", false},
		{"-canary", "", false},
		{"web-canary-7d9f", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.canary, func(t *testing.T) {
			stable, ok := StableName(tt.canary)
			assert.Equal(t, tt.ok, ok)
			assert.Equal(t, tt.stable, stable)
		})
	}
}

func TestStableOfCanaryPod(t *testing.T) {
	pod := func(track, kind, owner string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-canary-7d9f-x2k", Namespace: "team-a", Labels: map[string]string{}}}
		if track != "" {
			p.Labels[LabelTrack] = track
		}
		if kind != "" {
			p.OwnerReferences = []metav1.OwnerReference{{Kind: kind, Name: owner, Controller: ptr.To(true)}}
		}
		return p
	}
	tests := []struct {
		name   string
		pod    *corev1.Pod
		stable string
		ok     bool
	}{
		{"a canary pod of web's canary ReplicaSet serves web", pod(TrackCanary, "ReplicaSet", "web-canary-7d9f"), "web", true},
		{"a hyphenated name keeps its hyphens", pod(TrackCanary, "ReplicaSet", "api-v2-canary-5c6b8"), "api-v2", true},
		{"a stable pod serves no canary", pod("", "ReplicaSet", "web-7d9f"), "", false},
		{"a canary-labelled pod of another ReplicaSet", pod(TrackCanary, "ReplicaSet", "web-7d9f"), "", false},
		{"a canary-labelled pod no ReplicaSet controls", pod(TrackCanary, "", ""), "", false},
		{"a canary-labelled pod of a Job", pod(TrackCanary, "Job", "web-canary-7d9f"), "", false},
		{"a ReplicaSet name without a hash", pod(TrackCanary, "ReplicaSet", "canary"), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stable, ok := StableOfCanaryPod(tt.pod)
			assert.Equal(t, tt.ok, ok)
			assert.Equal(t, tt.stable, stable)
		})
	}
}

func TestOptedInAndSkipped(t *testing.T) {
	assert.True(t, OptedIn(map[string]string{LabelEnabled: "true"}))
	assert.False(t, OptedIn(map[string]string{LabelEnabled: "false"}))
	assert.False(t, OptedIn(nil))
	assert.True(t, Skipped(&metav1.ObjectMeta{Annotations: map[string]string{AnnotationSkip: "true"}}))
	assert.False(t, Skipped(&metav1.ObjectMeta{Annotations: map[string]string{AnnotationSkip: "yes"}}))
	assert.False(t, Skipped(&metav1.ObjectMeta{}))
}

func TestCanaryPodLabels(t *testing.T) {
	d := deployment("demo:v3")
	d.Spec.Template.Labels["pod-template-hash"] = "7d9f"
	assert.Equal(t, map[string]string{"app": "web", LabelTrack: TrackCanary, LabelAttempt: "2"}, map[string]string(CanaryPodLabels(d, 2)))
}
