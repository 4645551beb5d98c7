package main

import (
	"encoding/json"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/fledge-dev/fledge/policy"
	"github.com/fledge-dev/fledge/rollout"
)

// now is the fixed time of every test; the rollouts below started at t0.
var (
	t0  = time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	now = t0.Add(3*time.Minute + 20*time.Second)
)

func at(d time.Duration) *metav1.MicroTime {
	t := metav1.NewMicroTime(t0.Add(d))
	return &t
}

func minute(n int) metav1.Duration { return metav1.Duration{Duration: time.Duration(n) * time.Minute} }

// teamPolicy is the example policy of manifests/examples: 5/25/50 with an
// error-rate max and a p99 latency maxRatio check.
func teamPolicy() policy.Policy {
	return policy.Policy{
		Steps:    []policy.Step{{Weight: 5, Hold: minute(1)}, {Weight: 25, Hold: minute(1)}, {Weight: 50, Hold: minute(2)}},
		Capacity: policy.CapacitySurge,
		Health:   policy.Health{ReadyTimeout: minute(5)},
		Analysis: &policy.Analysis{
			Interval: metav1.Duration{Duration: 15 * time.Second}, FailureLimit: 1, NoDataLimit: 4,
			Prometheus: policy.Prometheus{URL: "http://prometheus.monitoring.svc:9090"},
			Checks: []policy.Check{
				{Name: "error-rate", Query: "q1", Max: ptr.To(0.01)},
				{Name: "p99-latency", Query: "q2", MaxRatio: ptr.To(1.2)},
			},
		},
	}
}

// runningAtStep2 is a rollout holding at 25% with both checks passing,
// 20 stable pods and 7 canary pods ready (25.9%). It is the second
// attempt: rolledBackAtStep3 was the first.
func runningAtStep2() *rollout.State {
	return &rollout.State{
		Phase:          rollout.Progressing,
		Step:           1,
		Attempt:        2,
		StableRevision: "5d8f7c6b9a",
		CanaryRevision: "8c7b6a5d4e",
		Policy:         teamPolicy(),
		PolicySource:   "configmap/fledge-policy",
		StartedAt:      *at(0),
		StepStartedAt:  at(90 * time.Second),
		HoldingSince:   at(170 * time.Second),
		PassedSince:    at(180 * time.Second),
		History: []rollout.StepRecord{
			{Step: 0, Weight: 5, Effective: 4.8, Canary: 1, Stable: 20, Started: *at(0), Ended: at(90 * time.Second)},
			{Step: 1, Weight: 25, Effective: 25.9, Canary: 7, Stable: 20, Started: *at(90 * time.Second)},
		},
		Message: "canary pods Ready; holding 1m0s",
		Seal:    fixtureSeal,
	}
}

// fixtureSeal stands for fledge's seal: the plugin, without the key,
// cannot verify one, only tell a state that has one from a state that has
// none.
const fixtureSeal = "k1:fixture-mac"

// passingAtStep2 is the canary's evidence of runningAtStep2: both checks
// pass at its last evaluation.
func passingAtStep2() *rollout.Evidence {
	return &rollout.Evidence{
		Attempt: 2, Step: 1, At: *at(195 * time.Second),
		Checks: []policy.CheckResult{
			{Check: "error-rate", Result: policy.Pass, Value: ptr.To(0.002), Bound: 0.01, Op: "<="},
			{Check: "p99-latency", Result: policy.Pass, Value: ptr.To(1.05), Bound: 1.2, Op: "<="},
		},
		Verdict: "all checks pass",
		Seal:    fixtureSeal,
	}
}

// rolledBackAtStep3 failed its error-rate check at 50%.
func rolledBackAtStep3() *rollout.Outcome {
	return &rollout.Outcome{
		Phase:          rollout.RolledBack,
		Attempt:        1,
		StableRevision: "5d8f7c6b9a",
		CanaryRevision: "8c7b6a5d4e",
		Reason: &rollout.Reason{Check: "error-rate", Value: ptr.To(0.072), Bound: ptr.To(0.01), Step: 2, Weight: 50,
			Message: "error-rate 0.072 > 0.01"},
		StartedAt:  *at(0),
		FinishedAt: *at(3 * time.Minute),
		History: []rollout.StepRecord{
			{Step: 0, Weight: 5, Effective: 4.8, Canary: 1, Stable: 20, Started: *at(0), Ended: at(70 * time.Second)},
			{Step: 1, Weight: 25, Effective: 25.9, Canary: 7, Stable: 20, Started: *at(70 * time.Second), Ended: at(140 * time.Second)},
			{Step: 2, Weight: 50, Effective: 50, Canary: 20, Stable: 20, Started: *at(140 * time.Second), Ended: at(175 * time.Second)},
		},
	}
}

func succeeded() *rollout.Outcome {
	o := rolledBackAtStep3()
	o.Phase, o.Reason = rollout.Succeeded, nil
	return o
}

// deployment builds NAME in team-a with ready pods and fledge annotations.
func deployment(t *testing.T, name string, ready int32, state *rollout.State, last *rollout.Outcome) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team-a", UID: types.UID("uid-" + name), Annotations: map[string]string{}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(ready),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "fledge/demo:v2"}}},
			},
		},
		Status: appsv1.DeploymentStatus{ReadyReplicas: ready, Replicas: ready},
	}
	if state != nil {
		d.Spec.Paused = true
		d.Annotations[rollout.AnnotationState] = mustJSON(t, state)
	}
	if last != nil {
		d.Annotations[rollout.AnnotationLast] = mustJSON(t, last)
	}
	return d
}

// withImage sets the image of a template's container and the version
// label to match: "v1" for fledge/demo:v1.
func withImage(t corev1.PodTemplateSpec, version string) corev1.PodTemplateSpec {
	t = *t.DeepCopy()
	t.Labels["version"] = version
	t.Spec.Containers[0].Image = "fledge/demo:" + version
	return t
}

// replicaSetOf builds the ReplicaSet of template that d controls, with
// the pod-template-hash label the Deployment controller adds.
func replicaSetOf(d *appsv1.Deployment, template corev1.PodTemplateSpec, replicas int32) *appsv1.ReplicaSet {
	hash := rollout.TemplateHash(&template)
	t := *template.DeepCopy()
	t.Labels[appsv1.DefaultDeploymentUniqueLabelKey] = hash
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{
			Name: d.Name + "-" + hash, Namespace: d.Namespace, UID: types.UID("uid-rs-" + hash), Labels: t.Labels,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(d, appsv1.SchemeGroupVersion.WithKind("Deployment"))},
		},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptr.To(replicas),
			Selector: d.Spec.Selector.DeepCopy(),
			Template: t,
		},
		Status: appsv1.ReplicaSetStatus{Replicas: replicas, ReadyReplicas: replicas},
	}
}

// heldWeb is web after the rollback of rolledBackAtStep3, holding its
// failed revision: paused on the template of fledge/demo:v2 while the
// ReplicaSet of fledge/demo:v1, the stable revision, serves its 20 pods.
// The outcome's revisions are the two templates' real hashes.
func heldWeb(t *testing.T) (*appsv1.Deployment, *appsv1.ReplicaSet) {
	t.Helper()
	web := deployment(t, "web", 20, nil, nil)
	web.Spec.Template = withImage(web.Spec.Template, "v2")
	stable := withImage(web.Spec.Template, "v1")
	o := rolledBackAtStep3()
	o.StableRevision, o.CanaryRevision = rollout.TemplateHash(&stable), rollout.TemplateHash(&web.Spec.Template)
	web.Annotations[rollout.AnnotationLast] = mustJSON(t, o)
	web.Spec.Paused = true
	return web, replicaSetOf(web, stable, 20)
}

// canaryOf builds NAME-canary with the given desired and ready replicas.
func canaryOf(stable *appsv1.Deployment, desired, ready int32) *appsv1.Deployment {
	c := stable.DeepCopy()
	c.Name = rollout.CanaryName(stable.Name)
	c.Annotations = nil
	c.Labels = map[string]string{rollout.LabelTrack: rollout.TrackCanary}
	c.Spec.Paused = false
	c.Spec.Replicas = ptr.To(desired)
	c.Spec.Selector.MatchLabels[rollout.LabelTrack] = rollout.TrackCanary
	c.Spec.Template.Labels[rollout.LabelTrack] = rollout.TrackCanary
	c.Status = appsv1.DeploymentStatus{ReadyReplicas: ready, Replicas: desired}
	return c
}

// withEvidence puts the evidence of an evaluation on a canary.
func withEvidence(t *testing.T, canary *appsv1.Deployment, ev *rollout.Evidence) *appsv1.Deployment {
	t.Helper()
	if canary.Annotations == nil {
		canary.Annotations = map[string]string{}
	}
	canary.Annotations[rollout.AnnotationEvidence] = mustJSON(t, ev)
	return canary
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
