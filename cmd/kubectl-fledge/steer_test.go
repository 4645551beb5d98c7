package main

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fledge-dev/fledge/rollout"
)

// takeCommands plays a router that consumes fledge.dev/command: it records
// the value and clears the annotation, as the real router does.
func takeCommands(t *testing.T, h *harness) <-chan string {
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
			if _, err := h.cs.AppsV1().Deployments("team-a").Update(ctx, d, metav1.UpdateOptions{}); err == nil {
				taken <- cmd
				return
			}
		}
	}()
	return taken
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
			d, _ := h.cs.AppsV1().Deployments("team-a").Get(context.Background(), "web", metav1.GetOptions{})
			if v, ok := d.Annotations[rollout.AnnotationCommand]; ok {
				t.Errorf("a refused command was sent: %s=%s", rollout.AnnotationCommand, v)
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
		name:      "namespace not opted in",
		namespace: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}},
		wantErr: `error: the router did not take "pause" for deployment web within 100ms; the command was withdrawn. ` +
			`Is fledge running (kubectl -n fledge-system get pods)? ` +
			"Namespace team-a is not labelled fledge.dev/enabled=true, so fledge ignores it: kubectl label namespace team-a fledge.dev/enabled=true\n",
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
