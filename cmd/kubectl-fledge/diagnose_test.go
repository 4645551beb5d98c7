package main

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/fledge-dev/fledge/rollout"
)

func namespace(labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Labels: labels}}
}

func optedIn() map[string]string { return map[string]string{rollout.LabelEnabled: "true"} }

func service(name string, selector map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team-a"},
		Spec:       corev1.ServiceSpec{Selector: selector},
	}
}

// pod is a Running and Ready pod with labels.
func pod(name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team-a", Labels: labels},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		},
	}
}

// versionedWeb is the seed's quiz: web's pods carried version: v1 and
// the new template says version: v2.
func versionedWeb(t *testing.T) (*appsv1.Deployment, *appsv1.Deployment) {
	web := deployment(t, "web", 2, runningAtStep2(), nil)
	web.Spec.Template.Labels["version"] = "v2"
	canary := canaryOf(web, 2, 1)
	return web, canary
}

func versionedPods() []runtime.Object {
	stable := map[string]string{"app": "web", "version": "v1", appsv1.DefaultDeploymentUniqueLabelKey: "abc"}
	canary := map[string]string{"app": "web", "version": "v2", rollout.LabelTrack: rollout.TrackCanary, appsv1.DefaultDeploymentUniqueLabelKey: "def"}
	pending := pod("web-canary-def-2", canary)
	pending.Status = corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{
		Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: "0/2 nodes are available: 2 Insufficient cpu.",
	}}}
	return []runtime.Object{pod("web-abc-1", stable), pod("web-abc-2", stable), pod("web-canary-def-1", canary), pending}
}

func TestDiagnoseFlagsAServiceSelectingTheOldVersion(t *testing.T) {
	web, canary := versionedWeb(t)
	objects := append(versionedPods(), namespace(optedIn()), web, canary,
		service("web", map[string]string{"app": "web"}),
		service("web-v1", map[string]string{"app": "web", "version": "v1"}),
		service("db", map[string]string{"app": "db"}),
		service("external", nil))
	h := newHarness(objects...)
	if code := h.run(t, "diagnose", "web"); code != 0 {
		t.Fatalf("exit code %d; stderr: %s", code, h.errOut)
	}
	want := `Diagnosis of deployment team-a/web

ok        namespace team-a is labelled fledge.dev/enabled=true
ok        deployment web does not carry fledge.dev/skip
info      rollout Progressing at step 2 of 3 (25%)
warning   canary web-canary: 2 desired, 1 ready: the canary gets less than its share until all are ready; 1 of 3 ready pods in all (33.3%)
ok        Service web selects both versions: the canary gets its share of its traffic
problem   Service web-v1 sends no traffic to the canary: it selects version=v1 (canary pods: version=v2)
          fix: remove version from the selector of Service web-v1 so that it selects what both versions share (app=web): kubectl edit -n team-a service web-v1
problem   pod web-canary-def-2 (canary) is Pending (Unschedulable: 0/2 nodes are available: 2 Insufficient cpu.)

SERVICE   SELECTOR             STABLE PODS   CANARY PODS
web       app=web              yes           yes
web-v1    app=web,version=v1   yes           no

2 problems found.
`
	if h.out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", h.out, want)
	}
}

// findingsText renders findings one per line as "level: text".
func findingsText(fs []finding) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString(string(f.level) + ": " + f.text + "\n")
		if f.fix != "" {
			b.WriteString("  fix: " + f.fix + "\n")
		}
	}
	return b.String()
}

func TestDiagnoseFindings(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(d *diagnosis)
		want   string // a finding, as findingsText renders it
	}{{
		name:   "namespace without the opt-in label",
		change: func(d *diagnosis) { d.NamespaceLabels = nil },
		want:   "problem: namespace team-a is not labelled fledge.dev/enabled=true: fledge leaves its Deployments alone, they roll out natively\n  fix: kubectl label namespace team-a fledge.dev/enabled=true\n",
	}, {
		name:   "namespace the user may not read",
		change: func(d *diagnosis) { d.NamespaceLabels, d.NamespaceErr = nil, errString("forbidden") },
		want:   "warning: could not read namespace team-a (forbidden); fledge acts only if it is labelled fledge.dev/enabled=true\n",
	}, {
		name:   "deployment that skips fledge",
		change: func(d *diagnosis) { d.Stable.Annotations[rollout.AnnotationSkip] = "true" },
		want:   "problem: deployment web carries fledge.dev/skip: \"true\": it rolls out natively, without a canary\n  fix: kubectl annotate -n team-a deployment web fledge.dev/skip-\n",
	}, {
		name: "canary scaled to zero while progressing",
		change: func(d *diagnosis) {
			d.Canary.Spec.Replicas = ptr.To[int32](0)
			d.View.CanaryDesired, d.View.CanaryReady = 0, 0
		},
		want: "problem: canary web-canary has 0 replicas: it serves no traffic\n  fix: the router sets the canary's replicas; check its logs: kubectl -n fledge-system logs deployment/fledge\n",
	}, {
		name: "canary not created",
		change: func(d *diagnosis) {
			d.Canary = nil
		},
		want: "problem: canary deployment web-canary does not exist: the router has not created it\n  fix: check that fledge runs: kubectl -n fledge-system get pods\n",
	}, {
		name: "no Service selects the pods",
		change: func(d *diagnosis) {
			d.Services = nil
		},
		want: "warning: no Service in namespace team-a selects the pods of web (app=web,version=v1): the canary's share applies to the traffic of a Service that selects both versions\n",
	}, {
		name: "a Service selecting only the new version",
		change: func(d *diagnosis) {
			d.Services = []corev1.Service{*service("web-v2", map[string]string{"app": "web", "version": "v2"})}
		},
		want: "warning: Service web-v2 selects only the canary pods: its traffic goes to the new version whatever the step\n",
	}, {
		name: "a Service with client IP affinity",
		change: func(d *diagnosis) {
			d.Services[0].Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		},
		want: "warning: Service web has sessionAffinity: ClientIP: a client stays on one pod, so a step moves only new clients to the canary\n",
	}, {
		name: "a crash-looping canary pod",
		change: func(d *diagnosis) {
			d.CanaryPods[0].Status.Conditions[0].Status = corev1.ConditionFalse
			d.CanaryPods[0].Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app",
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 40s restarting failed container"}}}}
		},
		want: "problem: pod web-canary-def-1 (canary) is Running but not Ready (app CrashLoopBackOff: back-off 40s restarting failed container)\n",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			d := versionedDiagnosis(t)
			tc.change(&d)
			if got := findingsText(findings(d)); !strings.Contains(got, tc.want) {
				t.Errorf("no finding\n%s\nin:\n%s", tc.want, got)
			}
		})
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// versionedDiagnosis is the quiz's cluster as diagnose gathers it.
func versionedDiagnosis(t *testing.T) diagnosis {
	web, canary := versionedWeb(t)
	v := newStatusView(web, canary, now)
	d := diagnosis{Namespace: "team-a", NamespaceLabels: optedIn(), Stable: web, Canary: canary, View: v,
		traffic: traffic{Services: []corev1.Service{*service("web", map[string]string{"app": "web"})}}}
	for _, o := range versionedPods() {
		p := o.(*corev1.Pod)
		if p.Labels[rollout.LabelTrack] == rollout.TrackCanary {
			d.CanaryPods = append(d.CanaryPods, *p)
		} else {
			d.StablePods = append(d.StablePods, *p)
		}
	}
	return d
}

// A Deployment paused because it holds a failed revision is not "paused
// with no rollout": kubectl rollout resume would not unpause it.
func TestDiagnoseOfAHeldFailedRevision(t *testing.T) {
	web, rs := heldWeb(t)
	o, _ := rollout.ParseOutcome(web)
	stable := map[string]string{"app": "web", "version": "v1", appsv1.DefaultDeploymentUniqueLabelKey: o.StableRevision}
	h := newHarness(web, rs, namespace(optedIn()), pod("web-abc-1", stable), pod("web-abc-2", stable),
		service("web", map[string]string{"app": "web"}),
		service("web-v1", map[string]string{"app": "web", "version": "v1"}))
	if code := h.run(t, "diagnose", "web"); code != 0 {
		t.Fatalf("exit code %d; stderr: %s", code, h.errOut)
	}
	want := `Diagnosis of deployment team-a/web

ok        namespace team-a is labelled fledge.dev/enabled=true
ok        deployment web does not carry fledge.dev/skip
info      no rollout in progress; the last one ended RolledBack 20s ago
warning   deployment web holds the failed revision ` + o.CanaryRevision + ` (rolled back 20s ago): it stays paused on that template while the stable revision ` + o.StableRevision + ` serves all pods
          fix: kubectl fledge undo web | kubectl fledge retry web | apply a new version
ok        Service web selects both versions: the canary gets its share of its traffic
problem   Service web-v1 sends no traffic to the canary: it selects version=v1 (canary pods: version=v2)
          fix: remove version from the selector of Service web-v1 so that it selects what both versions share (app=web): kubectl edit -n team-a service web-v1

SERVICE   SELECTOR             STABLE PODS   CANARY PODS
web       app=web              yes           yes
web-v1    app=web,version=v1   yes           no

1 problem found.
`
	if h.out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", h.out, want)
	}
}

// The stable labels come from the stable ReplicaSet when it is there, so
// that a Deployment scaled to 0 is still matched against its Services.
func TestDiagnoseMatchesServicesOnTheStableReplicaSet(t *testing.T) {
	web, rs := heldWeb(t)
	h := newHarness(web, rs, namespace(optedIn()), service("db", map[string]string{"app": "db"}))
	if code := h.run(t, "diagnose", "web"); code != 0 {
		t.Fatalf("exit code %d; stderr: %s", code, h.errOut)
	}
	want := "warning   no Service in namespace team-a selects the pods of web (app=web,version=v1): the canary's share applies to the traffic of a Service that selects both versions\n"
	if !strings.Contains(h.out.String(), want) {
		t.Errorf("no\n%s\nin:\n%s", want, h.out)
	}
}

// The fix names the selector's keys the canary lacks from the match's
// Missing labels (rollout.MissingLabel.Key), never from the text of the
// finding: a prefixed key, or one the canary has with another value, comes
// out exactly as the selector has it.
func TestNoCanaryFixNamesTheMissingKeys(t *testing.T) {
	web, _ := versionedWeb(t)
	d := diagnosis{Namespace: "team-a", Stable: web}
	selector := map[string]string{"app": "web", "app.kubernetes.io/version": "v1", "example.com/tier": "gold"}
	canary := map[string]string{"app": "web", "app.kubernetes.io/version": "v2"}
	matches := rollout.MatchServices([]corev1.Service{*service("web-v1", selector)}, labels.Set(selector), labels.Set(canary))
	if len(matches) != 1 {
		t.Fatalf("matches: %+v", matches)
	}
	want := "remove app.kubernetes.io/version, example.com/tier from the selector of Service web-v1 so that it selects what both versions share (app=web): kubectl edit -n team-a service web-v1"
	if got := noCanaryFix(d, matches[0]); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}
