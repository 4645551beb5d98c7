package router

import (
	"testing"

	"github.com/stretchr/testify/assert"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

func TestStripUnreadKeepsWhatFledgeReads(t *testing.T) {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{
		Name: "web",
		Annotations: map[string]string{
			corev1.LastAppliedConfigAnnotation: `{"kind":"Deployment"}`,
			"fledge.dev/rollout":               "sealed",
		},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationUpdate}},
	}}
	out, err := StripUnread(d)
	assert.NoError(t, err)
	assert.Same(t, d, out)
	assert.Nil(t, d.ManagedFields)
	assert.Equal(t, map[string]string{"fledge.dev/rollout": "sealed"}, d.Annotations)

	tombstone := cache.DeletedFinalStateUnknown{Key: "ns/web", Obj: d}
	out, err = StripUnread(tombstone)
	assert.NoError(t, err)
	assert.Equal(t, tombstone, out)
}
