package rollout

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// TemplateHash identifies a pod template as a release: two templates with the
// same hash run the same version. The `kubectl rollout restart` annotation
// and the ReplicaSet's pod-template-hash label are left out, so a restart or
// a template read back from a ReplicaSet does not count as a change.
//
// The apiserver defaults a template before admission and in storage alike,
// so the hash of an admitted object and of a stored one agree.
func TemplateHash(t *corev1.PodTemplateSpec) string {
	c := t.DeepCopy()
	delete(c.Annotations, AnnotationRestartedAt)
	if len(c.Annotations) == 0 {
		c.Annotations = nil
	}
	delete(c.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	if len(c.Labels) == 0 {
		c.Labels = nil
	}
	b, err := json.Marshal(c)
	if err != nil {
		// A PodTemplateSpec always encodes.
		panic(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:5])
}
