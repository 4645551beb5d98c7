package main

import (
	"context"
	"fmt"
	"maps"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/fledge-dev/fledge/rollout"
)

// traffic is what decides which versions of a Deployment its Services
// reach: the pods and ReplicaSets of its selector and the Services of its
// namespace. diagnose and promote read it alike; the matching itself is
// rollout.MatchServices, which the router runs too.
type traffic struct {
	// ReplicaSets are those of the Deployment's selector, the canary's
	// among them; stableReplicaSet picks the one that counts.
	ReplicaSets []appsv1.ReplicaSet
	// StablePods and CanaryPods are the pods of the Deployment's selector,
	// told apart by the fledge.dev/track label.
	StablePods, CanaryPods []corev1.Pod
	Services               []corev1.Service
}

// getTraffic reads the ReplicaSets, pods and Services that decide where
// the traffic of Deployment d goes.
func getTraffic(ctx context.Context, cs kubernetes.Interface, d *appsv1.Deployment) (traffic, error) {
	var t traffic
	opts, err := selectorOf(d)
	if err != nil {
		return t, err
	}
	if t.ReplicaSets, err = listReplicaSets(ctx, cs, d); err != nil {
		return t, err
	}
	pods, err := cs.CoreV1().Pods(d.Namespace).List(ctx, opts)
	if err != nil {
		return t, fmt.Errorf("list pods of deployment %s in namespace %s: %w", d.Name, d.Namespace, err)
	}
	for _, p := range pods.Items {
		if p.Labels[rollout.LabelTrack] == rollout.TrackCanary {
			t.CanaryPods = append(t.CanaryPods, p)
		} else {
			t.StablePods = append(t.StablePods, p)
		}
	}
	services, err := cs.CoreV1().Services(d.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return t, fmt.Errorf("list services in namespace %s: %w", d.Namespace, err)
	}
	t.Services = services.Items
	return t, nil
}

// selectorOf lists what Deployment d's selector selects.
func selectorOf(d *appsv1.Deployment) (metav1.ListOptions, error) {
	selector, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return metav1.ListOptions{}, fmt.Errorf("deployment %s has an invalid selector: %w", d.Name, err)
	}
	return metav1.ListOptions{LabelSelector: selector.String()}, nil
}

// listReplicaSets lists the ReplicaSets of Deployment d's selector: its
// own, its canary's, and any other that carries its labels.
func listReplicaSets(ctx context.Context, cs kubernetes.Interface, d *appsv1.Deployment) ([]appsv1.ReplicaSet, error) {
	opts, err := selectorOf(d)
	if err != nil {
		return nil, err
	}
	rss, err := cs.AppsV1().ReplicaSets(d.Namespace).List(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("list replicasets of deployment %s in namespace %s: %w", d.Name, d.Namespace, err)
	}
	return rss.Items, nil
}

// stableRevision is the TemplateHash of the version that serves as stable:
// the one the rollout in progress started from, the one a held failed
// revision was rolled back to, else the Deployment's own template.
func stableRevision(d *appsv1.Deployment, v statusView) string {
	switch {
	case v.State != nil:
		return v.State.StableRevision
	case v.Holding:
		return v.Outcome.StableRevision
	default:
		return rollout.TemplateHash(&d.Spec.Template)
	}
}

// stableLabels are the labels of the stable pods, without the ReplicaSet's
// pod-template-hash: the template of the stable ReplicaSet, which is what
// the router matches Services against; without it, the labels every stable
// pod carries; without stable pods, the Deployment's template.
func stableLabels(d *appsv1.Deployment, v statusView, t traffic) labels.Set {
	if rs := rollout.ReplicaSetOf(t.ReplicaSets, d.UID, stableRevision(d, v)); rs != nil {
		return rollout.PodLabels(&rs.Spec.Template)
	}
	if len(t.StablePods) == 0 {
		return rollout.PodLabels(&d.Spec.Template)
	}
	common := labels.Set(maps.Clone(t.StablePods[0].Labels))
	for _, p := range t.StablePods[1:] {
		for k, val := range common {
			if p.Labels[k] != val {
				delete(common, k)
			}
		}
	}
	delete(common, appsv1.DefaultDeploymentUniqueLabelKey)
	return common
}

// canaryLabels are the labels of the canary pods: while a rollout runs,
// those of the template the router gives the canary of its attempt; else
// those of the canary Deployment; before there is one, those a canary of
// the Deployment's template would have.
func canaryLabels(d, canary *appsv1.Deployment, v statusView) labels.Set {
	switch {
	case v.State != nil:
		return rollout.CanaryPodLabels(d, v.State.Attempt)
	case canary != nil:
		return rollout.PodLabels(&canary.Spec.Template)
	default:
		return rollout.CanaryPodLabels(d, rollout.NextAttempt(v.Outcome))
	}
}

// serviceGaps refuses a promotion while a Service selects the stable pods
// of d but not its canary's: after the promotion it would have no
// endpoints. The router holds such a rollout and never promotes it on its
// own; a person may, with --force.
func serviceGaps(d, canary *appsv1.Deployment, v statusView, t traffic) error {
	gaps := rollout.ServiceGaps(t.Services, stableLabels(d, v, t), canaryLabels(d, canary, v))
	if len(gaps) == 0 {
		return nil
	}
	msgs := make([]string, len(gaps))
	for i, g := range gaps {
		msgs[i] = g.Gap()
	}
	return fmt.Errorf("%s; use --force to promote anyway", strings.Join(msgs, "; "))
}
