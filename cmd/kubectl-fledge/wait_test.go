package main

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fledge-dev/fledge/rollout"
)

func outcomeFor(attempt int32, canary string, phase rollout.Phase, finished time.Duration) *rollout.Outcome {
	o := rolledBackAtStep3()
	o.Attempt, o.CanaryRevision, o.Phase, o.FinishedAt = attempt, canary, phase, *at(finished)
	if phase == rollout.Succeeded {
		o.Reason = nil
	}
	return o
}

func TestWaiter(t *testing.T) {
	running := runningAtStep2() // attempt 2, canary revision 8c7b6a5d4e
	older := outcomeFor(1, "0000000000", rollout.Succeeded, time.Minute)
	firstAttempt := outcomeFor(1, "8c7b6a5d4e", rollout.RolledBack, time.Minute)
	unnumbered := func(s *rollout.State) *rollout.State { s.Attempt = 0; return s }
	for _, tc := range []struct {
		name  string
		views []statusView // seen in this order, the wait started at now
		ends  bool
	}{{
		name:  "a rollout in progress does not end the wait",
		views: []statusView{{State: running, Outcome: older}},
	}, {
		name:  "the outcome of the rollout seen running ends it",
		views: []statusView{{State: running, Outcome: older}, {Outcome: outcomeFor(2, "8c7b6a5d4e", rollout.RolledBack, time.Minute)}},
		ends:  true,
	}, {
		name:  "an older outcome left while the state was already removed does not end it",
		views: []statusView{{State: running, Outcome: older}, {Outcome: older}},
	}, {
		name:  "the outcome of an earlier attempt of the same revision does not end it (a retry)",
		views: []statusView{{State: running, Outcome: firstAttempt}, {Outcome: firstAttempt}},
	}, {
		name:  "the outcome of the retry seen running ends it",
		views: []statusView{{State: running, Outcome: firstAttempt}, {Outcome: outcomeFor(2, "8c7b6a5d4e", rollout.RolledBack, time.Minute)}},
		ends:  true,
	}, {
		name: "rollouts from before attempts were numbered are told by revision",
		views: []statusView{
			{State: unnumbered(runningAtStep2()), Outcome: older},
			{Outcome: outcomeFor(0, "8c7b6a5d4e", rollout.Succeeded, time.Minute)},
		},
		ends: true,
	}, {
		name:  "an outcome from before the wait, of a rollout not seen, does not end it",
		views: []statusView{{Outcome: older}},
	}, {
		name:  "an outcome finished after the wait began ends it, even unseen",
		views: []statusView{{Outcome: older}, {Outcome: outcomeFor(2, "1111111111", rollout.Succeeded, 200*time.Second)}},
		ends:  true,
	}, {
		name: "a superseded canary's outcome still counts",
		views: []statusView{
			{State: running},
			{State: func() *rollout.State { s := runningAtStep2(); s.Attempt, s.CanaryRevision = 3, "2222222222"; return s }()},
			{Outcome: outcomeFor(3, "2222222222", rollout.Succeeded, time.Minute)},
		},
		ends: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWaiter(now)
			var got *rollout.Outcome
			for _, v := range tc.views {
				got = w.observe(v)
			}
			if (got != nil) != tc.ends {
				t.Errorf("ended = %v, want %v", got != nil, tc.ends)
			}
		})
	}
}

// router plays fledge's router on the fake cluster: once the plugin
// watches, it applies each change to web in turn.
func router(t *testing.T, h *harness, started <-chan struct{}, changes ...func(annotations map[string]string)) {
	t.Helper()
	go func() {
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Error("the plugin never watched the deployments")
			return
		}
		for _, change := range changes {
			d, err := h.cs.AppsV1().Deployments("team-a").Get(context.Background(), "web", metav1.GetOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			change(d.Annotations)
			if _, err := h.cs.AppsV1().Deployments("team-a").Update(context.Background(), d, metav1.UpdateOptions{}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
}

func TestStatusWait(t *testing.T) {
	older := outcomeFor(1, "0000000000", rollout.RolledBack, time.Minute)
	for _, tc := range []struct {
		name     string
		changes  func(t *testing.T) []func(map[string]string)
		args     []string
		wantCode int
		wantOut  string // a line of the final status
		wantErr  string
	}{{
		name: "succeeded exits 0 although an older rolled-back outcome was there",
		changes: func(t *testing.T) []func(map[string]string) {
			return []func(map[string]string){
				// The router may remove the state before it writes the outcome.
				func(a map[string]string) { delete(a, rollout.AnnotationState) },
				func(a map[string]string) {
					a[rollout.AnnotationLast] = mustJSON(t, outcomeFor(2, "8c7b6a5d4e", rollout.Succeeded, time.Minute))
				},
			}
		},
		wantCode: 0,
		wantOut:  "Outcome:     Succeeded",
	}, {
		name: "rolled back exits 1 with the reason",
		changes: func(t *testing.T) []func(map[string]string) {
			return []func(map[string]string){func(a map[string]string) {
				delete(a, rollout.AnnotationState)
				a[rollout.AnnotationLast] = mustJSON(t, outcomeFor(2, "8c7b6a5d4e", rollout.RolledBack, time.Minute))
			}}
		},
		wantCode: 1,
		wantOut:  "Outcome:     RolledBack",
		wantErr:  "error: the rollout of web ended RolledBack: error-rate 0.072 > 0.01 at step 3 (50%)\n",
	}, {
		name: "a rollout still running at the timeout exits 2",
		changes: func(t *testing.T) []func(map[string]string) {
			return nil
		},
		args:     []string{"--timeout", "300ms"},
		wantCode: 2,
		wantOut:  "Phase:       Progressing at step 2 of 3 (25%)",
		wantErr:  "error: timed out after 300ms waiting for the rollout of web to finish: Progressing at step 2 of 3 (25%)\n",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			web := deployment(t, "web", 20, runningAtStep2(), older)
			h := newHarness(web, canaryOf(web, 7, 7))
			router(t, h, h.watchesStarted(2), tc.changes(t)...)
			code := h.run(t, append([]string{"status", "web", "--wait"}, tc.args...)...)
			if code != tc.wantCode {
				t.Errorf("exit code %d, want %d; stderr: %s", code, tc.wantCode, h.errOut)
			}
			if !strings.Contains(h.out.String(), tc.wantOut+"\n") {
				t.Errorf("no %q in the output:\n%s", tc.wantOut, h.out)
			}
			if h.errOut.String() != tc.wantErr {
				t.Errorf("stderr %q, want %q", h.errOut, tc.wantErr)
			}
		})
	}
}

func TestStatusWaitWithoutRolloutSaysSoAndTimesOut(t *testing.T) {
	h := newHarness(deployment(t, "web", 3, nil, outcomeFor(1, "0000000000", rollout.Succeeded, time.Minute)))
	code := h.run(t, "status", "web", "--wait", "--timeout", "200ms")
	if code != exitTimeout {
		t.Errorf("exit code %d, want %d", code, exitTimeout)
	}
	want := "web has no rollout in progress (the last one ended Succeeded 2m20s ago); waiting up to 200ms for one to start and finish\n" +
		"error: timed out after 200ms waiting for the rollout of web to finish: Succeeded 2m20s ago\n"
	if h.errOut.String() != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", h.errOut, want)
	}
}

func TestStatusWatchPrintsEachChangeAfterABlankLine(t *testing.T) {
	web := deployment(t, "web", 20, runningAtStep2(), nil)
	h := newHarness(web, canaryOf(web, 7, 7))
	router(t, h, h.watchesStarted(2),
		func(a map[string]string) {
			s := runningAtStep2()
			s.Phase = rollout.Paused
			a[rollout.AnnotationState] = mustJSON(t, s)
		},
		func(a map[string]string) {
			// Changes that come faster than the plugin draws are drawn once,
			// at their latest; this one waits for the paused table.
			waitForOutput(t, h, "Phase:       Paused")
			delete(a, rollout.AnnotationState)
			a[rollout.AnnotationLast] = mustJSON(t, outcomeFor(2, "8c7b6a5d4e", rollout.Aborted, time.Minute))
		},
	)
	// --wait ends the watch when the rollout ends.
	code := h.run(t, "status", "web", "--watch", "--wait")
	if code != exitFailed {
		t.Errorf("exit code %d, want %d", code, exitFailed)
	}
	tables := strings.Split(h.out.String(), "\n\nRollout:")
	if len(tables) != 3 {
		t.Fatalf("want 3 tables separated by blank lines, got %d:\n%s", len(tables), h.out)
	}
	for i, want := range []string{"Phase:       Progressing", "Phase:       Paused", "Outcome:     Aborted"} {
		if !strings.Contains(tables[i], want) {
			t.Errorf("table %d lacks %q:\n%s", i+1, want, tables[i])
		}
	}
}

func waitForOutput(t *testing.T, h *harness, text string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if strings.Contains(h.out.String(), text) {
			return
		}
	}
	t.Errorf("no %q in the output after 10s", text)
}

func TestStatusWaitOnAHeldRevisionFailsAtOnce(t *testing.T) {
	web, rs := heldWeb(t)
	o, _ := rollout.ParseOutcome(web)
	h := newHarness(web, rs)
	if code := h.run(t, "status", "web", "--wait", "--timeout", "1m"); code != exitFailed {
		t.Errorf("exit code %d, want %d: the applied version is not live, and applying it again starts nothing", code, exitFailed)
	}
	want := "error: the rollout of web ended RolledBack: " + reasonText(o.Reason) + "; web holds revision " + o.CanaryRevision +
		", paused, and applying it again releases nothing: kubectl fledge retry web releases it again, kubectl fledge undo web goes back\n"
	if h.errOut.String() != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", h.errOut, want)
	}
}

func TestStatusOfAMissingDeployment(t *testing.T) {
	h := newHarness()
	if code := h.run(t, "status", "web"); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if want := "error: deployment web not found in namespace team-a (use -n to pick the namespace)\n"; h.errOut.String() != want {
		t.Errorf("stderr %q, want %q", h.errOut, want)
	}
}

func TestTimeoutNeedsWait(t *testing.T) {
	h := newHarness(deployment(t, "web", 3, nil, nil))
	if code := h.run(t, "status", "web", "--timeout", "1m"); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if want := "error: --timeout applies to --wait; add --wait\n"; h.errOut.String() != want {
		t.Errorf("stderr %q, want %q", h.errOut, want)
	}
}
