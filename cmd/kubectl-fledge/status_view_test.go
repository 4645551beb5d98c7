package main

import (
	"regexp"
	"strings"
	"testing"
	"time"

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
		name:  "running at step 2 with passing checks shows both checks and the hold left",
		state: runningAtStep2(),
		last:  rolledBackAtStep3(), // an older outcome: the running rollout wins
		want: `Rollout:     team-a/web
Revisions:   5d8f7c6b9a (stable) → 8c7b6a5d4e (canary)
Policy:      configmap/fledge-policy (5% → 25% → 50% → 100%)
Phase:       Progressing at step 2 of 3 (25%)
Message:     canary pods Ready; holding 1m0s
Started:     2026-05-04T10:00:00Z (3m20s ago)

STEP   ACTION                DEPLOYMENT STATE   USER GROUP           MONITORING RESULT            NEXT STEP
  1    apply canary          canary running     5% (1 of 21 pods)    no issues                    increase user group
▶ 2    increase user group   canary running     25% (7 of 27 pods)   error-rate 0.002 <= 0.01 ✓   increase user group in 30s
                                                                     p99-latency 1.05 <= 1.2 ✓
  3    increase user group   -                  50%                  -                            -
  4    promote               -                  100%                 -                            end
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
			v, err := newStatusView(stable, canaryOf(stable, 7, 7), now)
			if err != nil {
				t.Fatal(err)
			}
			if got := formatStatus(v); got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func rollingBackAtStep3() *rollout.State {
	s := runningAtStep2()
	s.Phase, s.Step, s.Message, s.Checks = rollout.RollingBack, 2, "", nil
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
		change       func(s *rollout.State)
		canaryReady  int32
		canaryWanted int32
		want         string
	}{{
		name: "canary pods not ready yet: starting, checks pending",
		change: func(s *rollout.State) {
			s.Step, s.HoldingSince, s.Checks, s.History = 0, nil, nil, nil
		},
		canaryReady: 0, canaryWanted: 1,
		want: "▶ 1 | apply canary | canary starting (0 of 1 ready) | 5% (0 of 20 pods) | pending | wait for canary pods to be ready",
	}, {
		name: "checks of an earlier step are not shown for this one",
		change: func(s *rollout.State) {
			s.LastAnalysis = at(80 * time.Second)
		},
		canaryReady: 7, canaryWanted: 7,
		want: "▶ 2 | increase user group | canary running | 25% (7 of 27 pods) | pending | increase user group in 30s",
	}, {
		name: "a hold that passed without passing evidence waits for it",
		change: func(s *rollout.State) {
			s.HoldingSince, s.PassedSince = at(100*time.Second), nil
			s.Checks[1] = policy.CheckResult{Check: "p99-latency", Result: policy.Inconclusive, Bound: 1.2, Op: "<="}
		},
		canaryReady: 7, canaryWanted: 7,
		want: "▶ 2 | increase user group | canary running | 25% (7 of 27 pods) | error-rate 0.002 <= 0.01 ✓ | wait for passing checks, then increase user group",
	}, {
		name: "a failing check shows the bound it broke",
		change: func(s *rollout.State) {
			s.Checks[0] = policy.CheckResult{Check: "error-rate", Result: policy.Fail, Value: ptr.To(0.072), Bound: 0.01, Op: "<="}
		},
		canaryReady: 7, canaryWanted: 7,
		want: "▶ 2 | increase user group | canary running | 25% (7 of 27 pods) | error-rate 0.072 > 0.01 ✗ | increase user group in 30s",
	}, {
		name: "paused by a person waits for resume",
		change: func(s *rollout.State) {
			s.Phase = rollout.Paused
		},
		canaryReady: 7, canaryWanted: 7,
		want: "▶ 2 | increase user group | canary paused | 25% (7 of 27 pods) | error-rate 0.002 <= 0.01 ✓ | resume: kubectl fledge resume web",
	}, {
		name: "paused on a manual approval step after its hold waits for promote",
		change: func(s *rollout.State) {
			s.Phase, s.HoldingSince, s.Message = rollout.Paused, at(100*time.Second), "waiting for approval: kubectl fledge promote web"
			s.Policy.Steps[1].Approval = policy.ApprovalManual
		},
		canaryReady: 7, canaryWanted: 7,
		want: "▶ 2 | increase user group | canary paused | 25% (7 of 27 pods) | error-rate 0.002 <= 0.01 ✓ | approve: kubectl fledge promote web",
	}, {
		name: "a manual step paused by a person during its hold waits for resume",
		change: func(s *rollout.State) {
			s.Phase = rollout.Paused
			s.Policy.Steps[1].Approval = policy.ApprovalManual
		},
		canaryReady: 7, canaryWanted: 7,
		want: "▶ 2 | increase user group | canary paused | 25% (7 of 27 pods) | error-rate 0.002 <= 0.01 ✓ | resume: kubectl fledge resume web",
	}, {
		name: "a manual step holding says approval follows",
		change: func(s *rollout.State) {
			s.Policy.Steps[1].Approval = policy.ApprovalManual
		},
		canaryReady: 7, canaryWanted: 7,
		want: "▶ 2 | increase user group | canary running | 25% (7 of 27 pods) | error-rate 0.002 <= 0.01 ✓ | approval (kubectl fledge promote web) in 30s",
	}, {
		name: "promoting marks the promotion row",
		change: func(s *rollout.State) {
			s.Phase, s.Step = rollout.Promoting, 2
		},
		canaryReady: 20, canaryWanted: 20,
		want: "▶ 4 | promote | stable rolling to new version | 100% | n/a | end",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			s := runningAtStep2()
			tc.change(s)
			stable := deployment(t, "web", 20, s, nil)
			v, err := newStatusView(stable, canaryOf(stable, tc.canaryWanted, tc.canaryReady), now)
			if err != nil {
				t.Fatal(err)
			}
			got := formatStatus(v)
			if row := currentRowCells(got); row != tc.want {
				t.Errorf("current row %q, want %q in:\n%s", row, tc.want, got)
			}
		})
	}
}

func TestFormatCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   policy.CheckResult
		want string
	}{
		{"pass under a max", policy.CheckResult{Check: "error-rate", Result: policy.Pass, Value: ptr.To(0.002), Bound: 0.01, Op: "<="}, "error-rate 0.002 <= 0.01 ✓"},
		{"fail over a max", policy.CheckResult{Check: "error-rate", Result: policy.Fail, Value: ptr.To(0.072), Bound: 0.01, Op: "<="}, "error-rate 0.072 > 0.01 ✗"},
		{"fail under a min", policy.CheckResult{Check: "throughput", Result: policy.Fail, Value: ptr.To(3.5), Bound: 10, Op: ">="}, "throughput 3.5 < 10 ✗"},
		{"no data", policy.CheckResult{Check: "error-rate", Result: policy.Inconclusive, Bound: 0.01, Op: "<="}, "error-rate no data (want <= 0.01)"},
		{"long values keep four digits", policy.CheckResult{Check: "p99-latency", Result: policy.Pass, Value: ptr.To(1.0512345), Bound: 1.2, Op: "<="}, "p99-latency 1.051 <= 1.2 ✓"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := formatCheck(tc.in); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFormatStatusWithoutRollout(t *testing.T) {
	v, err := newStatusView(deployment(t, "web", 3, nil, nil), nil, now)
	if err != nil {
		t.Fatal(err)
	}
	want := "team-a/web has no rollout in progress and none recorded: fledge starts one when the pod template changes in a namespace labelled fledge.dev/enabled=true\n"
	if got := formatStatus(v); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestBrokenAnnotationIsAnError(t *testing.T) {
	d := deployment(t, "web", 3, nil, nil)
	d.Annotations[rollout.AnnotationState] = "{not json"
	_, err := newStatusView(d, nil, now)
	if err == nil || !strings.Contains(err.Error(), "annotation fledge.dev/rollout of team-a/web is not a rollout state") {
		t.Errorf("got %v", err)
	}
}
