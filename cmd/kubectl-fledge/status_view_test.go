package main

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/fledge-dev/fledge/policy"
	"github.com/fledge-dev/fledge/rollout"
)

// The three shapes of the seed's process table: a rollout at its second
// step, one that was rolled back at its third and one that succeeded.
func TestFormatStatus(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state *rollout.State
		last  *rollout.Outcome
		want  string
	}{{
		name:  "running at step 2 of its second attempt with passing checks shows both checks and the hold left",
		state: runningAtStep2(),
		last:  rolledBackAtStep3(), // an older outcome: the running rollout wins
		want: `Rollout:     team-a/web
Revisions:   5d8f7c6b9a (stable) → 8c7b6a5d4e (canary)
Attempt:     2
Policy:      configmap/fledge-policy (5% → 25% → 50% → 100%)
Phase:       Progressing at step 2 of 3 (25%)
Message:     canary pods Ready; holding 1m0s
Started:     2026-05-04T10:00:00Z (3m20s ago)

STEP   ACTION                DEPLOYMENT STATE   USER GROUP           MONITORING RESULT                    NEXT STEP
  1    apply canary          canary running     5% (1 of 21 pods)    no issues                            increase user group
▶ 2    increase user group   canary running     25% (7 of 27 pods)   error-rate 0.002 <= 0.01 ✓           increase user group in 30s
                                                                     p99-latency 1.05× stable <= 1.2× ✓
  3    increase user group   -                  50%                  -                                    -
  4    promote               -                  100%                 -                                    end
`,
	}, {
		name: "rolled back at step 3 names the check, its value and bound on the failing step",
		last: rolledBackAtStep3(),
		want: `Rollout:     team-a/web (finished)
Revisions:   5d8f7c6b9a (stable) → 8c7b6a5d4e (canary)
Outcome:     RolledBack
Reason:      error-rate 0.072 > 0.01 at step 3 (50%)
Started:     2026-05-04T10:00:00Z
Finished:    2026-05-04T10:03:00Z (20s ago), after 3m

STEP   ACTION                DEPLOYMENT STATE          USER GROUP            MONITORING RESULT                          NEXT STEP
  1    apply canary          canary running            5% (1 of 21 pods)     no issues                                  increase user group
  2    increase user group   canary running            25% (7 of 27 pods)    no issues                                  increase user group
  3    increase user group   canary running            50% (20 of 40 pods)   issues detected: error-rate 0.072 > 0.01   rollback canary
  4    rollback canary       stable version restored   100% stable           n/a                                        end
`,
	}, {
		name: "succeeded ends with the promotion to all pods",
		last: succeeded(),
		want: `Rollout:     team-a/web (finished)
Revisions:   5d8f7c6b9a (stable) → 8c7b6a5d4e (canary)
Outcome:     Succeeded
Started:     2026-05-04T10:00:00Z
Finished:    2026-05-04T10:03:00Z (20s ago), after 3m

STEP   ACTION                DEPLOYMENT STATE          USER GROUP            MONITORING RESULT   NEXT STEP
  1    apply canary          canary running            5% (1 of 21 pods)     no issues           increase user group
  2    increase user group   canary running            25% (7 of 27 pods)    no issues           increase user group
  3    increase user group   canary running            50% (20 of 40 pods)   no issues           promote
  4    promote               new version on all pods   100%                  n/a                 end
`,
	}, {
		name:  "rolling back marks the rollback row and says why on the failing step",
		state: rollingBackAtStep3(),
		want: `Rollout:     team-a/web
Revisions:   5d8f7c6b9a (stable) → 8c7b6a5d4e (canary)
Attempt:     2
Policy:      configmap/fledge-policy (5% → 25% → 50% → 100%)
Phase:       RollingBack at step 3 of 3 (50%)
Reason:      error-rate 0.072 > 0.01 at step 3 (50%)
Started:     2026-05-04T10:00:00Z (3m20s ago)

STEP   ACTION                DEPLOYMENT STATE           USER GROUP            MONITORING RESULT                          NEXT STEP
  1    apply canary          canary running             5% (1 of 21 pods)     no issues                                  increase user group
  2    increase user group   canary running             25% (7 of 27 pods)    no issues                                  increase user group
  3    increase user group   canary scaled to 0         50% (20 of 40 pods)   issues detected: error-rate 0.072 > 0.01   rollback canary
▶ 4    rollback canary       restoring stable version   100% stable           n/a                                        end
`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			stable := deployment(t, "web", 20, tc.state, tc.last)
			v := newStatusView(stable, withEvidence(t, canaryOf(stable, 7, 7), passingAtStep2()), now)
			if got := formatStatus(v); got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func rollingBackAtStep3() *rollout.State {
	s := runningAtStep2()
	s.Phase, s.Step, s.Message = rollout.RollingBack, 2, ""
	s.Reason = rolledBackAtStep3().Reason
	s.History = rolledBackAtStep3().History
	return s
}

// currentRowCells is the marked row of a step table, its cells joined
// with " | ".
func currentRowCells(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, markCurrent) {
			return strings.Join(regexp.MustCompile(`\s{3,}`).Split(line, -1), " | ")
		}
	}
	return ""
}

// The current row of a running rollout in its other situations, as one line.
func TestCurrentRow(t *testing.T) {
	for _, tc := range []struct {
		name         string
		change       func(s *rollout.State, ev *rollout.Evidence)
		canaryReady  int32
		canaryWanted int32
		want         string
	}{{
		name: "canary pods not ready yet: starting, checks pending",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			s.Step, s.HoldingSince, s.History = 0, nil, nil
			ev.Checks = nil
		},
		canaryReady: 0, canaryWanted: 1,
		want: "▶ 1 | apply canary | canary starting (0 of 1 ready) | 5% (0 of 20 pods) | pending | wait for canary pods to be ready",
	}, {
		name: "canary pods not ready yet: the readyTimeout counts from when they last were not",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			s.Step, s.HoldingSince, s.History, s.NotReadySince = 0, nil, nil, at(180*time.Second)
			ev.Checks = nil
		},
		canaryReady: 0, canaryWanted: 1,
		want: "▶ 1 | apply canary | canary starting (0 of 1 ready) | 5% (0 of 20 pods) | pending | wait for canary pods to be ready (readyTimeout in 4m40s)",
	}, {
		name: "checks of an earlier step are not shown for this one",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			ev.Step, ev.At = 0, *at(80 * time.Second)
		},
		canaryReady: 7, canaryWanted: 7,
		want: "▶ 2 | increase user group | canary running | 25% (7 of 27 pods) | pending | increase user group in 30s",
	}, {
		name: "checks of an earlier attempt of the same revision are not shown",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			ev.Attempt = 1
		},
		canaryReady: 7, canaryWanted: 7,
		want: "▶ 2 | increase user group | canary running | 25% (7 of 27 pods) | pending | increase user group in 30s",
	}, {
		name: "checks evaluated before the step started are not shown",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			ev.At = *at(80 * time.Second)
		},
		canaryReady: 7, canaryWanted: 7,
		want: "▶ 2 | increase user group | canary running | 25% (7 of 27 pods) | pending | increase user group in 30s",
	}, {
		name: "no data during the hold: it cannot complete, no countdown",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			s.PassedSince = nil
			ev.Checks[1] = policy.CheckResult{Check: "p99-latency", Result: policy.Inconclusive, Bound: 1.2, Op: "<="}
		},
		canaryReady: 7, canaryWanted: 7,
		want: "▶ 2 | increase user group | canary running | 25% (7 of 27 pods) | error-rate 0.002 <= 0.01 ✓ | hold cannot complete until the checks pass (no data)",
	}, {
		name: "no data after the hold time: it still cannot complete",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			s.HoldingSince, s.PassedSince = at(100*time.Second), nil
			ev.Checks[0] = policy.CheckResult{Check: "error-rate", Result: policy.Inconclusive, Bound: 0.01, Op: "<="}
		},
		canaryReady: 7, canaryWanted: 7,
		want: "▶ 2 | increase user group | canary running | 25% (7 of 27 pods) | error-rate no data (want <= 0.01) | hold cannot complete until the checks pass (no data)",
	}, {
		name: "a tolerated failure after the hold time waits for passing checks",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			s.HoldingSince, s.PassedSince = at(100*time.Second), nil
			ev.Checks[0] = policy.CheckResult{Check: "error-rate", Result: policy.Fail, Value: ptr.To(0.072), Bound: 0.01, Op: "<="}
		},
		canaryReady: 7, canaryWanted: 7,
		want: "▶ 2 | increase user group | canary running | 25% (7 of 27 pods) | error-rate 0.072 > 0.01 ✗ | wait for passing checks, then increase user group",
	}, {
		name: "a failing check shows the bound it broke",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			ev.Checks[0] = policy.CheckResult{Check: "error-rate", Result: policy.Fail, Value: ptr.To(0.072), Bound: 0.01, Op: "<="}
		},
		canaryReady: 7, canaryWanted: 7,
		want: "▶ 2 | increase user group | canary running | 25% (7 of 27 pods) | error-rate 0.072 > 0.01 ✗ | increase user group in 30s",
	}, {
		name: "a stalled step shows how long its hold is paused, not a countdown",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			s.StalledSince = at(185 * time.Second)
			s.Message = "Service web-v1 selects version=v1 (canary pods: version=v2): it sends the canary no traffic"
		},
		canaryReady: 7, canaryWanted: 7,
		want: "▶ 2 | increase user group | canary running | 25% (7 of 27 pods) | error-rate 0.002 <= 0.01 ✓ | hold paused for 15s",
	}, {
		name: "a step stalled on canary pods not ready shows the readyTimeout left too",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			s.StalledSince, s.NotReadySince = at(185*time.Second), at(185*time.Second)
			s.Message = "waiting for 7 canary pods to be Ready"
		},
		canaryReady: 5, canaryWanted: 7,
		want: "▶ 2 | increase user group | canary not ready (5 of 7 ready) | 25% (5 of 25 pods) | error-rate 0.002 <= 0.01 ✓ | hold paused for 15s (readyTimeout in 4m45s)",
	}, {
		name: "paused by a person waits for resume",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			s.Phase = rollout.Paused
		},
		canaryReady: 7, canaryWanted: 7,
		want: "▶ 2 | increase user group | canary paused | 25% (7 of 27 pods) | error-rate 0.002 <= 0.01 ✓ | resume: kubectl fledge resume web",
	}, {
		name: "paused on a manual approval step after its hold waits for promote",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			s.Phase, s.HoldingSince, s.Message = rollout.Paused, at(100*time.Second), "waiting for approval: kubectl fledge promote web"
			s.Policy.Steps[1].Approval = policy.ApprovalManual
		},
		canaryReady: 7, canaryWanted: 7,
		want: "▶ 2 | increase user group | canary paused | 25% (7 of 27 pods) | error-rate 0.002 <= 0.01 ✓ | approve: kubectl fledge promote web",
	}, {
		name: "a manual step paused by a person during its hold waits for resume",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			s.Phase = rollout.Paused
			s.Policy.Steps[1].Approval = policy.ApprovalManual
		},
		canaryReady: 7, canaryWanted: 7,
		want: "▶ 2 | increase user group | canary paused | 25% (7 of 27 pods) | error-rate 0.002 <= 0.01 ✓ | resume: kubectl fledge resume web",
	}, {
		name: "a manual step holding says approval follows",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			s.Policy.Steps[1].Approval = policy.ApprovalManual
		},
		canaryReady: 7, canaryWanted: 7,
		want: "▶ 2 | increase user group | canary running | 25% (7 of 27 pods) | error-rate 0.002 <= 0.01 ✓ | approval (kubectl fledge promote web) in 30s",
	}, {
		name: "promoting marks the promotion row",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			s.Phase, s.Step = rollout.Promoting, 2
		},
		canaryReady: 20, canaryWanted: 20,
		want: "▶ 4 | promote | stable rolling to new version | 100% | n/a | end",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			s, ev := runningAtStep2(), passingAtStep2()
			tc.change(s, ev)
			stable := deployment(t, "web", 20, s, nil)
			canary := withEvidence(t, canaryOf(stable, tc.canaryWanted, tc.canaryReady), ev)
			v := newStatusView(stable, canary, now)
			got := formatStatus(v)
			if row := currentRowCells(got); row != tc.want {
				t.Errorf("current row %q, want %q in:\n%s", row, tc.want, got)
			}
		})
	}
}

func TestFormatCheck(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    policy.CheckResult
		ratio bool
		want  string
	}{
		{"pass under a max", policy.CheckResult{Check: "error-rate", Result: policy.Pass, Value: ptr.To(0.002), Bound: 0.01, Op: "<="}, false, "error-rate 0.002 <= 0.01 ✓"},
		{"fail over a max", policy.CheckResult{Check: "error-rate", Result: policy.Fail, Value: ptr.To(0.072), Bound: 0.01, Op: "<="}, false, "error-rate 0.072 > 0.01 ✗"},
		{"fail under a min", policy.CheckResult{Check: "throughput", Result: policy.Fail, Value: ptr.To(3.5), Bound: 10, Op: ">="}, false, "throughput 3.5 < 10 ✗"},
		{"no data", policy.CheckResult{Check: "error-rate", Result: policy.Inconclusive, Bound: 0.01, Op: "<="}, false, "error-rate no data (want <= 0.01)"},
		{"long values keep four digits", policy.CheckResult{Check: "p99-latency", Result: policy.Pass, Value: ptr.To(1.0512345), Bound: 1.2, Op: "<="}, true, "p99-latency 1.051× stable <= 1.2× ✓"},
		{"a maxRatio check passing is a ratio to stable", policy.CheckResult{Check: "p99-latency", Result: policy.Pass, Value: ptr.To(1.05), Bound: 1.2, Op: "<="}, true, "p99-latency 1.05× stable <= 1.2× ✓"},
		{"a maxRatio check failing is a ratio to stable", policy.CheckResult{Check: "p99-latency", Result: policy.Fail, Value: ptr.To(1.31), Bound: 1.2, Op: "<="}, true, "p99-latency 1.31× stable > 1.2× ✗"},
		{"a maxRatio check without data", policy.CheckResult{Check: "p99-latency", Result: policy.Inconclusive, Bound: 1.2, Op: "<="}, true, "p99-latency no data (want <= 1.2× stable)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := formatCheck(tc.in, tc.ratio); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFormatStatusWithoutRollout(t *testing.T) {
	v := newStatusView(deployment(t, "web", 3, nil, nil), nil, now)
	want := "team-a/web has no rollout in progress and none recorded: fledge starts one when the pod template changes in a namespace labelled fledge.dev/enabled=true\n"
	if got := formatStatus(v); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// A Deployment that holds a failed revision says so in the header, with
// the ways out.
func TestStatusOfAHeldFailedRevision(t *testing.T) {
	for _, tc := range []struct {
		name    string
		change  func(o *rollout.Outcome)
		outcome string // the header lines from Outcome: to Next:
	}{{
		name:   "rolled back",
		change: func(o *rollout.Outcome) {},
		outcome: `Outcome:     RolledBack
Reason:      error-rate 0.072 > 0.01 at step 3 (50%%)
Started:     2026-05-04T10:00:00Z
Finished:    2026-05-04T10:03:00Z (20s ago), after 3m
Holding:     revision %[2]s (rolled back 20s ago); the stable revision %[1]s serves all 20 pods
Next:        kubectl fledge undo web | kubectl fledge retry web | apply a new version
`,
	}, {
		name: "aborted on a second attempt",
		change: func(o *rollout.Outcome) {
			o.Phase, o.Attempt = rollout.Aborted, 2
			o.Reason = &rollout.Reason{Check: "user", Step: 2, Weight: 50, Message: "aborted by user"}
		},
		outcome: `Attempt:     2
Outcome:     Aborted
Reason:      aborted by user at step 3 (50%%)
Started:     2026-05-04T10:00:00Z
Finished:    2026-05-04T10:03:00Z (20s ago), after 3m
Holding:     revision %[2]s (aborted 20s ago); the stable revision %[1]s serves all 20 pods
Next:        kubectl fledge undo web | kubectl fledge retry web | apply a new version
`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			web, rs := heldWeb(t)
			o, err := rollout.ParseOutcome(web)
			if err != nil {
				t.Fatal(err)
			}
			tc.change(o)
			web.Annotations[rollout.AnnotationLast] = mustJSON(t, o)
			h := newHarness(web, rs, namespace(optedIn()))
			if code := h.run(t, "status", "web"); code != 0 {
				t.Fatalf("exit code %d; stderr: %s", code, h.errOut)
			}
			want := "Rollout:     team-a/web (finished)\n" +
				fmt.Sprintf("Revisions:   %s (stable) → %s (canary)\n", o.StableRevision, o.CanaryRevision) +
				fmt.Sprintf(tc.outcome, o.StableRevision, o.CanaryRevision) + "\n"
			if got, _, _ := strings.Cut(h.out.String(), "STEP"); got != want {
				t.Errorf("header:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// The same outcome without the failed template on the Deployment (it was
// reverted, or undone) holds nothing.
func TestStatusOfAFailedRevisionNoLongerHeld(t *testing.T) {
	web, rs := heldWeb(t)
	web.Spec.Template, web.Spec.Paused = withImage(web.Spec.Template, "v1"), false
	h := newHarness(web, rs, namespace(optedIn()))
	if code := h.run(t, "status", "web"); code != 0 {
		t.Fatalf("exit code %d; stderr: %s", code, h.errOut)
	}
	if strings.Contains(h.out.String(), "Holding:") || strings.Contains(h.out.String(), "Next:") {
		t.Errorf("a Deployment back on its stable template shows a hold:\n%s", h.out)
	}
}

func TestStatusInANamespaceNotOptedIn(t *testing.T) {
	forbidden := func(h *harness) {
		h.cs.PrependReactor("get", "namespaces", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "namespaces"}, "team-a", errors.New("no RBAC"))
		})
	}
	for _, tc := range []struct {
		name      string
		namespace *corev1.Namespace
		setup     func(h *harness)
		want      string // what comes before "Rollout:"
	}{{
		name:      "not labelled: said plainly at the top",
		namespace: namespace(nil),
		want:      "namespace team-a is not labelled fledge.dev/enabled=true: fledge ignores web; kubectl label namespace team-a fledge.dev/enabled=true\n\n",
	}, {
		name:      "labelled false: the same",
		namespace: namespace(map[string]string{rollout.LabelEnabled: "false"}),
		want:      "namespace team-a is not labelled fledge.dev/enabled=true: fledge ignores web; kubectl label namespace team-a fledge.dev/enabled=true\n\n",
	}, {
		name:      "labelled: nothing said",
		namespace: namespace(optedIn()),
	}, {
		name:      "not readable: nothing said",
		namespace: namespace(nil),
		setup:     forbidden,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			web := deployment(t, "web", 20, runningAtStep2(), nil)
			h := newHarness(web, canaryOf(web, 7, 7), tc.namespace)
			if tc.setup != nil {
				tc.setup(h)
			}
			if code := h.run(t, "status", "web"); code != 0 {
				t.Fatalf("exit code %d; stderr: %s", code, h.errOut)
			}
			if got, _, _ := strings.Cut(h.out.String(), "Rollout:"); got != tc.want {
				t.Errorf("before the header: %q, want %q", got, tc.want)
			}
		})
	}
}
