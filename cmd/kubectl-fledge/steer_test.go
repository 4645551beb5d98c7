package main

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/fledge-dev/fledge/rollout"
)

// takeCommands plays a router that consumes fledge.dev/command: it records
// the value and clears the annotation, as the real router does.
func takeCommands(t *testing.T, h *harness) <-chan string {
	return takeCommandsWith(t, h, func(*appsv1.Deployment) {})
}

// takeCommandsWith plays the part of fledge that takes a command: it
// records the value, clears the annotation and changes the Deployment with
// act in the same write, as the webhook does with a retry.
func takeCommandsWith(t *testing.T, h *harness, act func(d *appsv1.Deployment)) <-chan string {
	t.Helper()
	taken := make(chan string, 1)
	go func() {
		ctx := t.Context()
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
			d, err := h.cs.AppsV1().Deployments("team-a").Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				continue
			}
			cmd, ok := d.Annotations[rollout.AnnotationCommand]
			if !ok {
				continue
			}
			delete(d.Annotations, rollout.AnnotationCommand)
			act(d)
			if _, err := h.cs.AppsV1().Deployments("team-a").Update(ctx, d, metav1.UpdateOptions{}); err == nil {
				taken <- cmd
				return
			}
		}
	}()
	return taken
}

// commandLeft fails the test when a refused command reached the Deployment.
func commandLeft(t *testing.T, h *harness) {
	t.Helper()
	d, err := h.cs.AppsV1().Deployments("team-a").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := d.Annotations[rollout.AnnotationCommand]; ok {
		t.Errorf("a refused command was sent: %s=%s", rollout.AnnotationCommand, v)
	}
}

func TestSteerCommandsTakenByTheRouter(t *testing.T) {
	paused := runningAtStep2()
	paused.Phase = rollout.Paused
	for _, tc := range []struct {
		args  []string
		state *rollout.State
		sent  string
		out   string
	}{
		{[]string{"promote", "web"}, runningAtStep2(), "promote", "web: promote accepted\n"},
		{[]string{"promote", "--full", "web"}, runningAtStep2(), "promote-full", "web: promote-full accepted\n"},
		{[]string{"abort", "web"}, runningAtStep2(), "abort", "web: abort accepted\n"},
		{[]string{"pause", "web"}, runningAtStep2(), "pause", "web: pause accepted\n"},
		{[]string{"resume", "web"}, paused, "resume", "web: resume accepted\n"},
	} {
		t.Run(tc.sent, func(t *testing.T) {
			web := deployment(t, "web", 20, tc.state, nil)
			h := newHarness(web)
			taken := takeCommands(t, h)
			if code := h.run(t, tc.args...); code != 0 {
				t.Fatalf("exit code %d; stderr: %s", code, h.errOut)
			}
			select {
			case got := <-taken:
				if got != tc.sent {
					t.Errorf("the router got %q, want %q", got, tc.sent)
				}
			case <-time.After(5 * time.Second):
				t.Error("the router got no command")
			}
			if h.out.String() != tc.out {
				t.Errorf("output %q, want %q", h.out, tc.out)
			}
		})
	}
}

func TestSteerRefusals(t *testing.T) {
	finishing := runningAtStep2()
	finishing.Phase = rollout.RollingBack
	for _, tc := range []struct {
		name    string
		state   *rollout.State
		last    *rollout.Outcome
		args    []string
		wantErr string
	}{{
		name:    "no rollout in progress, with a last outcome",
		last:    succeeded(),
		args:    []string{"promote", "web"},
		wantErr: "error: web has no rollout in progress; nothing to promote (the last one ended Succeeded 20s ago)\n",
	}, {
		name:    "no rollout ever",
		args:    []string{"pause", "web"},
		wantErr: "error: web has no rollout in progress; nothing to pause\n",
	}, {
		name:    "resume of a rollout that is not paused",
		state:   runningAtStep2(),
		args:    []string{"resume", "web"},
		wantErr: "error: the rollout of web is Progressing, not paused; nothing to resume\n",
	}, {
		name:    "a rollout already rolling back",
		state:   finishing,
		args:    []string{"abort", "web"},
		wantErr: "error: the rollout of web is already RollingBack; it can no longer be steered (kubectl fledge status web)\n",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(deployment(t, "web", 20, tc.state, tc.last))
			if code := h.run(t, tc.args...); code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			if h.errOut.String() != tc.wantErr {
				t.Errorf("stderr %q, want %q", h.errOut, tc.wantErr)
			}
			commandLeft(t, h)
		})
	}
}

// A Deployment that holds a failed revision has no rollout to steer; the
// refusal names the ways out.
func TestSteerRefusalsWhileHeld(t *testing.T) {
	for _, verb := range []string{"promote", "abort", "pause", "resume"} {
		t.Run(verb, func(t *testing.T) {
			web, rs := heldWeb(t)
			h := newHarness(web, rs)
			if code := h.run(t, verb, "web"); code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			o, _ := rollout.ParseOutcome(web)
			want := "error: web has no rollout in progress; nothing to " + verb + " (the last one ended RolledBack 20s ago); " +
				"web holds the failed revision " + o.CanaryRevision + ": kubectl fledge retry web releases it again, kubectl fledge undo web goes back to the stable revision\n"
			if h.errOut.String() != want {
				t.Errorf("stderr:\n%s\nwant:\n%s", h.errOut, want)
			}
			commandLeft(t, h)
		})
	}
}

func TestRetryStartsANewAttempt(t *testing.T) {
	web, rs := heldWeb(t)
	o, _ := rollout.ParseOutcome(web)
	h := newHarness(web, rs)
	// The webhook takes the retry and starts attempt 2 in the same write.
	taken := takeCommandsWith(t, h, func(d *appsv1.Deployment) {
		s := runningAtStep2()
		s.Step, s.Attempt, s.StableRevision, s.CanaryRevision = 0, o.Attempt+1, o.StableRevision, o.CanaryRevision
		d.Annotations[rollout.AnnotationState] = mustJSON(t, s)
	})
	if code := h.run(t, "retry", "web"); code != 0 {
		t.Fatalf("exit code %d; stderr: %s", code, h.errOut)
	}
	select {
	case got := <-taken:
		if got != rollout.CommandRetry {
			t.Errorf("fledge got %q, want %q", got, rollout.CommandRetry)
		}
	case <-time.After(5 * time.Second):
		t.Error("fledge got no command")
	}
	if want := "web: retry accepted: attempt 2 of revision " + o.CanaryRevision + " started\n"; h.out.String() != want {
		t.Errorf("output %q, want %q", h.out, want)
	}
}

func TestRetryClearedWithoutANewAttemptFails(t *testing.T) {
	web, rs := heldWeb(t)
	h := newHarness(web, rs)
	// A router that clears a command no rollout can take, as the real one
	// does when the webhook did not take the retry.
	takeCommands(t, h)
	if code := h.run(t, "retry", "web"); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	want := "error: the retry of web was cleared, but no new attempt started; its Events say why: kubectl -n team-a events --for deployment/web\n"
	if h.errOut.String() != want {
		t.Errorf("stderr %q, want %q", h.errOut, want)
	}
	if h.out.String() != "" {
		t.Errorf("output %q, want none", h.out)
	}
}

func TestRetryNotTakenIsWithdrawn(t *testing.T) {
	web, rs := heldWeb(t)
	h := newHarness(web, rs, namespace(optedIn()))
	if code := h.run(t, "retry", "web", "--timeout", "100ms"); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	want := `error: fledge's webhook did not take "retry" for deployment web within 100ms; the command was withdrawn. ` +
		`Is fledge running (kubectl -n fledge-system get pods)? ` +
		"Namespace team-a is labelled fledge.dev/enabled=true; look at the router's logs (kubectl -n fledge-system logs deployment/fledge).\n"
	if h.errOut.String() != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", h.errOut, want)
	}
	commandLeft(t, h)
}

func TestRetryRefusals(t *testing.T) {
	reverted := func(t *testing.T) *appsv1.Deployment {
		web, _ := heldWeb(t)
		web.Spec.Template, web.Spec.Paused = withImage(web.Spec.Template, "v1"), false
		return web
	}
	for _, tc := range []struct {
		name    string
		web     func(t *testing.T) *appsv1.Deployment
		wantErr string
	}{{
		name: "a rollout runs",
		web: func(t *testing.T) *appsv1.Deployment {
			return deployment(t, "web", 20, runningAtStep2(), rolledBackAtStep3())
		},
		wantErr: "error: a rollout of web is running (Progressing at step 2 of 3 (25%)): nothing to retry; retry releases again a failed revision that web holds after a rollback or an abort\n",
	}, {
		name:    "the last rollout succeeded",
		web:     func(t *testing.T) *appsv1.Deployment { return deployment(t, "web", 20, nil, succeeded()) },
		wantErr: "error: web holds no failed revision: nothing to retry (the last rollout ended Succeeded 20s ago)\n",
	}, {
		name:    "no rollout ever",
		web:     func(t *testing.T) *appsv1.Deployment { return deployment(t, "web", 20, nil, nil) },
		wantErr: "error: web holds no failed revision: nothing to retry (no rollout recorded)\n",
	}, {
		name: "the failed template was reverted",
		web:  reverted,
		wantErr: "error: web holds no failed revision: nothing to retry (the last rollout ended RolledBack 20s ago, and web no longer has its template, revision " +
			rollout.TemplateHash(func() *corev1.PodTemplateSpec { w, _ := heldWeb(t); return &w.Spec.Template }()) + ")\n",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(tc.web(t))
			if code := h.run(t, "retry", "web"); code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			if h.errOut.String() != tc.wantErr {
				t.Errorf("stderr:\n%s\nwant:\n%s", h.errOut, tc.wantErr)
			}
			commandLeft(t, h)
		})
	}
}

// versionedRollout is web rolling out a template that changed the version
// label the Service web-v1 selects on; the stable ReplicaSet (v1) serves.
func versionedRollout(t *testing.T) (*appsv1.Deployment, *appsv1.ReplicaSet) {
	t.Helper()
	s := runningAtStep2()
	web := deployment(t, "web", 20, s, nil)
	web.Spec.Template = withImage(web.Spec.Template, "v2")
	stable := withImage(web.Spec.Template, "v1")
	s.StableRevision, s.CanaryRevision = rollout.TemplateHash(&stable), rollout.TemplateHash(&web.Spec.Template)
	web.Annotations[rollout.AnnotationState] = mustJSON(t, s)
	return web, replicaSetOf(web, stable, 20)
}

func TestPromoteRefusesWhileAServiceMissesTheCanary(t *testing.T) {
	gap := "error: Service web-v1 selects version=v1 (canary pods: version=v2): it sends the canary no traffic and would have no endpoints after the promotion; " +
		"remove version from its selector so that it selects both versions; use --force to promote anyway\n"
	stablePods := func() []runtime.Object {
		labels := map[string]string{"app": "web", "version": "v1", appsv1.DefaultDeploymentUniqueLabelKey: "abc"}
		return []runtime.Object{pod("web-abc-1", labels), pod("web-abc-2", labels)}
	}
	for _, tc := range []struct {
		name    string
		args    []string
		objects func(web *appsv1.Deployment, rs *appsv1.ReplicaSet) []runtime.Object
		wantErr string
	}{{
		name:    "promote, stable labels from the stable ReplicaSet",
		args:    []string{"promote", "web"},
		objects: func(web *appsv1.Deployment, rs *appsv1.ReplicaSet) []runtime.Object { return []runtime.Object{rs} },
		wantErr: gap,
	}, {
		name:    "promote --full, stable labels from the stable ReplicaSet",
		args:    []string{"promote", "--full", "web"},
		objects: func(web *appsv1.Deployment, rs *appsv1.ReplicaSet) []runtime.Object { return []runtime.Object{rs} },
		wantErr: gap,
	}, {
		name:    "promote --full, stable ReplicaSet gone: stable labels from the stable pods",
		args:    []string{"promote", "--full", "web"},
		objects: func(web *appsv1.Deployment, rs *appsv1.ReplicaSet) []runtime.Object { return stablePods() },
		wantErr: gap,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			web, rs := versionedRollout(t)
			objects := append(tc.objects(web, rs), web, canaryOf(web, 7, 7),
				service("web", map[string]string{"app": "web"}),
				service("web-v1", map[string]string{"app": "web", "version": "v1"}))
			h := newHarness(objects...)
			if code := h.run(t, tc.args...); code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			if h.errOut.String() != tc.wantErr {
				t.Errorf("stderr:\n%s\nwant:\n%s", h.errOut, tc.wantErr)
			}
			commandLeft(t, h)
		})
	}
}

func TestPromoteGoesThroughWhenEveryServiceReachesTheCanaryOrWithForce(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		services []runtime.Object
		sent     string
	}{{
		name:     "a Service on the labels both versions share",
		args:     []string{"promote", "--full", "web"},
		services: []runtime.Object{service("web", map[string]string{"app": "web"})},
		sent:     rollout.CommandPromoteFull,
	}, {
		name:     "a Service that misses the canary, with --force",
		args:     []string{"promote", "--full", "--force", "web"},
		services: []runtime.Object{service("web-v1", map[string]string{"app": "web", "version": "v1"})},
		sent:     rollout.CommandPromoteFull,
	}, {
		name:     "promote with --force",
		args:     []string{"promote", "--force", "web"},
		services: []runtime.Object{service("web-v1", map[string]string{"app": "web", "version": "v1"})},
		sent:     rollout.CommandPromote,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			web, rs := versionedRollout(t)
			h := newHarness(append(tc.services, web, rs, canaryOf(web, 7, 7))...)
			taken := takeCommands(t, h)
			if code := h.run(t, tc.args...); code != 0 {
				t.Fatalf("exit code %d; stderr: %s", code, h.errOut)
			}
			select {
			case got := <-taken:
				if got != tc.sent {
					t.Errorf("the router got %q, want %q", got, tc.sent)
				}
			case <-time.After(5 * time.Second):
				t.Error("the router got no command")
			}
		})
	}
}

func TestSteerNotTakenIsWithdrawnAndExplained(t *testing.T) {
	for _, tc := range []struct {
		name      string
		namespace *corev1.Namespace
		wantErr   string
	}{{
		name:      "namespace not opted in: refused before it is sent, since nothing would take it",
		namespace: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}},
		wantErr: "error: namespace team-a is not labelled fledge.dev/enabled=true: fledge does not act in it, so the router would not take pause for web; " +
			"kubectl label namespace team-a fledge.dev/enabled=true first\n",
	}, {
		name: "namespace opted in",
		namespace: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a",
			Labels: map[string]string{rollout.LabelEnabled: "true"}}},
		wantErr: `error: the router did not take "pause" for deployment web within 100ms; the command was withdrawn. ` +
			`Is fledge running (kubectl -n fledge-system get pods)? ` +
			"Namespace team-a is labelled fledge.dev/enabled=true; look at the router's logs (kubectl -n fledge-system logs deployment/fledge).\n",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(deployment(t, "web", 20, runningAtStep2(), nil), tc.namespace)
			if code := h.run(t, "pause", "web", "--timeout", "100ms"); code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			if h.errOut.String() != tc.wantErr {
				t.Errorf("stderr:\n%s\nwant:\n%s", h.errOut, tc.wantErr)
			}
			d, err := h.cs.AppsV1().Deployments("team-a").Get(context.Background(), "web", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if v, ok := d.Annotations[rollout.AnnotationCommand]; ok {
				t.Errorf("the command was left behind: %s=%s", rollout.AnnotationCommand, v)
			}
			if _, ok := d.Annotations[rollout.AnnotationState]; !ok {
				t.Error("the withdrawal removed the rollout state")
			}
		})
	}
}
