package router

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
)

// StripUnread is the manager cache's transform: it takes from every object
// what fledge never reads, before the object is stored. The cache holds
// every Deployment of the cluster, and a Deployment's managedFields and
// kubectl's last-applied annotation are most of its size (4.6 of 7.4 KB
// measured on the lab's Deployments). fledge writes what it changes as
// patches, so what is stripped here is never written back or lost.
func StripUnread(obj any) (any, error) {
	a, err := meta.Accessor(obj)
	if err != nil {
		return obj, nil // a tombstone: passed on as it is
	}
	a.SetManagedFields(nil)
	if annotations := a.GetAnnotations(); annotations != nil {
		if _, ok := annotations[corev1.LastAppliedConfigAnnotation]; ok {
			delete(annotations, corev1.LastAppliedConfigAnnotation)
			a.SetAnnotations(annotations)
		}
	}
	return obj, nil
}
