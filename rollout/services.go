package rollout

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// ServiceMatch says which versions of a Deployment a Service selects. The
// share of pods is the share of traffic only for a Service that selects
// both: one that selects the stable pods and not the canary's sends the
// canary nothing, and after a promotion it has no endpoints at all.
type ServiceMatch struct {
	Service  string
	Selector map[string]string
	// Stable and Canary say whether the selector matches each version's
	// pod labels.
	Stable, Canary bool
	// Sticky is sessionAffinity: ClientIP: a client stays on one pod.
	Sticky bool
	// Missing lists the selector's labels the canary pods do not carry, in
	// key order.
	Missing []MissingLabel
}

// MissingLabel is one label of a Service's selector that the canary pods
// do not carry: they have another value (Has) or none.
type MissingLabel struct {
	Key, Want string
	Has       bool
	Canary    string
}

func (m MissingLabel) String() string {
	if m.Has {
		return fmt.Sprintf("%s=%s (canary pods: %s=%s)", m.Key, m.Want, m.Key, m.Canary)
	}
	return fmt.Sprintf("%s=%s (canary pods have no %s label)", m.Key, m.Want, m.Key)
}

// MatchServices matches the Services of a namespace against the stable
// and canary pod labels, and returns those that select either, in the
// order given. Services without a selector (endpoints managed by hand) are
// left out: fledge cannot tell what they send where.
func MatchServices(services []corev1.Service, stable, canary labels.Set) []ServiceMatch {
	var out []ServiceMatch
	for _, svc := range services {
		sel := svc.Spec.Selector
		if len(sel) == 0 {
			continue
		}
		selector := labels.SelectorFromSet(sel)
		m := ServiceMatch{
			Service: svc.Name, Selector: sel,
			Stable: selector.Matches(stable), Canary: selector.Matches(canary),
			Sticky: svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP,
		}
		if !m.Stable && !m.Canary {
			continue
		}
		for _, k := range slices.Sorted(maps.Keys(sel)) {
			if got, ok := canary[k]; !ok || got != sel[k] {
				m.Missing = append(m.Missing, MissingLabel{Key: k, Want: sel[k], Has: ok, Canary: got})
			}
		}
		out = append(out, m)
	}
	return out
}

// MissesCanary reports whether the Service sends its traffic to the stable
// pods only.
func (m ServiceMatch) MissesCanary() bool { return m.Stable && !m.Canary }

// Gap says in one line why the Service misses the canary and what to do:
// "Service web selects version=v1 (canary pods: version=v2): it sends the
// canary no traffic, and would have no endpoints after the promotion;
// remove version from its selector".
func (m ServiceMatch) Gap() string {
	keys := make([]string, len(m.Missing))
	missing := make([]string, len(m.Missing))
	for i, l := range m.Missing {
		keys[i] = l.Key
		missing[i] = l.String()
	}
	return fmt.Sprintf("Service %s selects %s: it sends the canary no traffic and would have no endpoints after the promotion; remove %s from its selector so that it selects both versions",
		m.Service, strings.Join(missing, ", "), strings.Join(keys, ", "))
}

// ServiceGaps returns the Services that select the stable pods but not the
// canary's: a rollout holds while there is one, and never promotes.
func ServiceGaps(services []corev1.Service, stable, canary labels.Set) []ServiceMatch {
	var gaps []ServiceMatch
	for _, m := range MatchServices(services, stable, canary) {
		if m.MissesCanary() {
			gaps = append(gaps, m)
		}
	}
	return gaps
}

// PodLabels are the labels of a template's pods without the ReplicaSet's
// pod-template-hash, which no Service selects on.
func PodLabels(t *corev1.PodTemplateSpec) labels.Set {
	l := labels.Set(maps.Clone(t.Labels))
	if l == nil {
		l = labels.Set{}
	}
	delete(l, appsv1.DefaultDeploymentUniqueLabelKey)
	return l
}
