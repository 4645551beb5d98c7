package main

import (
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	"github.com/fledge-dev/fledge/policy"
	"github.com/fledge-dev/fledge/rollout"
)

// comparingPolicy is teamPolicy with its error-rate check replaced by the
// comparison of canary and stable on request counts, and a minimum of
// 500 canary requests a step.
func comparingPolicy() policy.Policy {
	p := teamPolicy()
	p.Analysis.Checks = p.Analysis.Checks[1:] // p99-latency
	p.Analysis.Compare = []policy.Comparison{{Name: "errors", Requests: "qr", Errors: "qe", Tolerance: 0.5, Alpha: 0.05}}
	p.Analysis.MinRequests = 500
	return p
}

// comparingAtStep2 is runningAtStep2 under comparingPolicy: its first
// step ended with the canary serving 5.1% of 2,180 requests.
func comparingAtStep2() *rollout.State {
	s := runningAtStep2()
	s.Policy = comparingPolicy()
	s.History[0].Measured, s.History[0].Requests = ptr.To(5.1), 2180
	return s
}

// comparingEvidence is the last evaluation of comparingAtStep2: p99-latency
// and the comparison pass. Over the attempt the canary served 1,000
// requests (7 errors) and the stable pods 12,000 (60 errors); at step 2
// they served canary and stable of them.
func comparingEvidence(canary, stable float64) *rollout.Evidence {
	ev := passingAtStep2()
	ev.Checks = []policy.CheckResult{
		ev.Checks[1],
		{Check: "errors", Result: policy.Pass, Value: ptr.To(1.4), Bound: 1.5, Op: "<=", EValue: ptr.To(1.3),
			Reason: "errors: canary 0.7% (7 of 1,000) vs stable 0.5% (60 of 12,000), 1.4× stable's rate; e-value 1.3 < 20 (tolerance 1.5× stable, alpha 0.05)"},
	}
	ev.Tallies = []policy.Tally{{
		Canary: policy.Counts{Requests: 1000, Errors: 7}, Stable: policy.Counts{Requests: 12000, Errors: 60},
		Step: 1, Based: true, StepCanary: 1000 - canary, StepStable: 12000 - stable, Readings: 9,
	}}
	return ev
}

// minRequestsShort is the result of analysis.minRequests while the
// step's canary served 120 of its 500 requests.
func minRequestsShort() policy.CheckResult {
	return policy.CheckResult{Check: "min-requests", Result: policy.Inconclusive, Gathering: true,
		Value: ptr.To(120.0), Bound: 500, Op: ">=", Reason: "canary served 120 of the 500 requests a step needs (minRequests)"}
}

// The step table shows the canary's share of pods and of requests beside
// the user group when the policy measures it; the header says when the
// canary serves far less than its share of pods.
func TestFormatStatusWithMeasuredShares(t *testing.T) {
	for _, tc := range []struct {
		name   string
		state  *rollout.State
		last   *rollout.Outcome
		ev     *rollout.Evidence
		change func(s *rollout.State, ev *rollout.Evidence)
		want   string
	}{{
		name:  "the step that ended and the live step show the canary's share of pods and of requests",
		state: comparingAtStep2(),
		ev:    comparingEvidence(820, 2580),
		want: `Rollout:     team-a/web
Revisions:   5d8f7c6b9a (stable) → 8c7b6a5d4e (canary)
Attempt:     2
Policy:      configmap/fledge-policy (5% → 25% → 50% → 100%)
Phase:       Progressing at step 2 of 3 (25%)
Message:     canary pods Ready; holding 1m0s
Started:     2026-05-04T10:00:00Z (3m20s ago)

STEP   ACTION                DEPLOYMENT STATE   USER GROUP           CANARY SHARE                             MONITORING RESULT                                                 NEXT STEP
  1    apply canary          canary running     5% (1 of 21 pods)    4.8% of pods, 5.1% of 2,180 requests     no issues                                                         increase user group
▶ 2    increase user group   canary running     25% (7 of 27 pods)   25.9% of pods, 24.1% of 3,400 requests   p99-latency 1.05× stable <= 1.2× ✓                                increase user group in 30s
                                                                                                              errors 0.7% vs stable 0.5% (tolerated 1.5×), e-value 1.3 < 20 ✓
  3    increase user group   -                  50%                  -                                        -                                                                 -
  4    promote               -                  100%                 -                                        -                                                                 end
`,
	}, {
		name:  "an under-served canary is said in the header, with the numbers and the likely cause",
		state: comparingAtStep2(),
		ev:    comparingEvidence(41, 3359),
		want: `Rollout:     team-a/web
Revisions:   5d8f7c6b9a (stable) → 8c7b6a5d4e (canary)
Attempt:     2
Policy:      configmap/fledge-policy (5% → 25% → 50% → 100%)
Phase:       Progressing at step 2 of 3 (25%)
Message:     canary pods Ready; holding 1m0s
Traffic:     the canary served 1.2% of 3,400 requests at this step, far below its 25.9% of pods: clients that keep connections open (HTTP keep-alive, HTTP/2, gRPC) stay on the stable pods they reached first
Started:     2026-05-04T10:00:00Z (3m20s ago)

STEP   ACTION                DEPLOYMENT STATE   USER GROUP           CANARY SHARE                            MONITORING RESULT                                                 NEXT STEP
  1    apply canary          canary running     5% (1 of 21 pods)    4.8% of pods, 5.1% of 2,180 requests    no issues                                                         increase user group
▶ 2    increase user group   canary running     25% (7 of 27 pods)   25.9% of pods, 1.2% of 3,400 requests   p99-latency 1.05× stable <= 1.2× ✓                                increase user group in 30s
                                                                                                             errors 0.7% vs stable 0.5% (tolerated 1.5×), e-value 1.3 < 20 ✓
  3    increase user group   -                  50%                  -                                       -                                                                 -
  4    promote               -                  100%                 -                                       -                                                                 end
`,
	}, {
		name:  "a step short of its minimum of requests waits for them, and it is not missing data",
		state: comparingAtStep2(),
		ev:    comparingEvidence(120, 360),
		change: func(s *rollout.State, ev *rollout.Evidence) {
			s.PassedSince = nil
			ev.Checks = append(ev.Checks, minRequestsShort())
			ev.Result, ev.Gathering = policy.Inconclusive, true
		},
		want: `Rollout:     team-a/web
Revisions:   5d8f7c6b9a (stable) → 8c7b6a5d4e (canary)
Attempt:     2
Policy:      configmap/fledge-policy (5% → 25% → 50% → 100%)
Phase:       Progressing at step 2 of 3 (25%)
Message:     canary pods Ready; holding 1m0s
Started:     2026-05-04T10:00:00Z (3m20s ago)

STEP   ACTION                DEPLOYMENT STATE   USER GROUP           CANARY SHARE                           MONITORING RESULT                                                 NEXT STEP
  1    apply canary          canary running     5% (1 of 21 pods)    4.8% of pods, 5.1% of 2,180 requests   no issues                                                         increase user group
▶ 2    increase user group   canary running     25% (7 of 27 pods)   25.9% of pods, 25.0% of 480 requests   p99-latency 1.05× stable <= 1.2× ✓                                increase user group in 30s, once the canary has served enough requests
                                                                                                            errors 0.7% vs stable 0.5% (tolerated 1.5×), e-value 1.3 < 20 ✓
                                                                                                            min-requests waiting for requests (120 of 500 served)
  3    increase user group   -                  50%                  -                                      -                                                                 -
  4    promote               -                  100%                 -                                      -                                                                 end
`,
	}, {
		name: "a finished rollout shows the share each step measured",
		last: func() *rollout.Outcome {
			o := succeeded()
			o.History[0].Measured, o.History[0].Requests = ptr.To(5.1), 2180
			o.History[1].Measured, o.History[1].Requests = ptr.To(24.6), 3400
			o.History[2].Measured, o.History[2].Requests = ptr.To(49.2), 6010
			return o
		}(),
		ev: passingAtStep2(),
		want: `Rollout:     team-a/web (finished)
Revisions:   5d8f7c6b9a (stable) → 8c7b6a5d4e (canary)
Outcome:     Succeeded
Started:     2026-05-04T10:00:00Z
Finished:    2026-05-04T10:03:00Z (20s ago), after 3m

STEP   ACTION                DEPLOYMENT STATE          USER GROUP            CANARY SHARE                             MONITORING RESULT   NEXT STEP
  1    apply canary          canary running            5% (1 of 21 pods)     4.8% of pods, 5.1% of 2,180 requests     no issues           increase user group
  2    increase user group   canary running            25% (7 of 27 pods)    25.9% of pods, 24.6% of 3,400 requests   no issues           increase user group
  3    increase user group   canary running            50% (20 of 40 pods)   50.0% of pods, 49.2% of 6,010 requests   no issues           promote
  4    promote               new version on all pods   100%                  -                                        n/a                 end
`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.change != nil {
				tc.change(tc.state, tc.ev)
			}
			stable := deployment(t, "web", 20, tc.state, tc.last)
			v := newStatusView(stable, withEvidence(t, canaryOf(stable, 7, 7), tc.ev), now)
			if got := formatStatus(v); got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

// The current row of a rollout under a policy with a comparison, as one
// line (currentRowCells), in its other situations.
func TestCurrentRowWithComparisons(t *testing.T) {
	for _, tc := range []struct {
		name        string
		change      func(s *rollout.State, ev *rollout.Evidence)
		canaryReady int32
		want        string
	}{{
		name: "before the step's first evaluation nothing is measured yet",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			ev.Step, ev.At = 0, *at(80 * time.Second)
		},
		canaryReady: 7,
		want:        "▶ 2 | increase user group | canary running | 25% (7 of 27 pods) | - | pending | increase user group in 30s",
	}, {
		name: "evidence evaluated before the step started measures nothing of it",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			ev.At = *at(80 * time.Second)
		},
		canaryReady: 7,
		want:        "▶ 2 | increase user group | canary running | 25% (7 of 27 pods) | - | pending | increase user group in 30s",
	}, {
		name: "a comparison failing shows its e-value at the limit it reached",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			ev.Checks = ev.Checks[1:]
			ev.Checks[0].Result, ev.Checks[0].EValue = policy.Fail, ptr.To(25.3)
		},
		canaryReady: 7,
		want:        "▶ 2 | increase user group | canary running | 25% (7 of 27 pods) | 25.9% of pods, 24.1% of 3,400 requests | errors 0.7% vs stable 0.5% (tolerated 1.5×), e-value 25.3 >= 20 ✗ | increase user group in 30s",
	}, {
		name: "a comparison without a reading is no data, against its tolerance",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			s.PassedSince = nil
			ev.Checks = []policy.CheckResult{{Check: "errors", Result: policy.Inconclusive, Bound: 1.5, Op: "<=", NoData: true,
				Reason: "no data for errors on canary pods"}}
		},
		canaryReady: 7,
		want:        "▶ 2 | increase user group | canary running | 25% (7 of 27 pods) | 25.9% of pods, 24.1% of 3,400 requests | errors no data (want <= 1.5× stable) | hold cannot complete until the checks pass (no data)",
	}, {
		name: "a comparison before the canary served any request waits for requests",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			s.PassedSince = nil
			ev.Tallies[0].Canary = policy.Counts{}
			ev.Tallies[0].StepCanary = 0
			ev.Checks = []policy.CheckResult{{Check: "errors", Result: policy.Inconclusive, Gathering: true, Bound: 1.5, Op: "<=",
				Reason: "errors: no requests counted on the canary pods yet"}}
		},
		canaryReady: 7,
		want:        "▶ 2 | increase user group | canary running | 25% (7 of 27 pods) | 25.9% of pods, 0.0% of 2,580 requests | errors waiting for requests (none counted on the canary pods yet) | increase user group in 30s, once the canary has served enough requests",
	}, {
		name: "still short of requests after the hold: it cannot complete, and counts as no data",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			s.HoldingSince, s.PassedSince = at(100*time.Second), nil
			ev.Checks = append(ev.Checks, minRequestsShort())
		},
		canaryReady: 7,
		want:        "▶ 2 | increase user group | canary running | 25% (7 of 27 pods) | 25.9% of pods, 24.1% of 3,400 requests | p99-latency 1.05× stable <= 1.2× ✓ | hold cannot complete until the canary has served enough requests (counted as no data)",
	}, {
		name: "no data beside a result gathering requests is no data",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			s.PassedSince = nil
			ev.Checks = []policy.CheckResult{
				{Check: "p99-latency", Result: policy.Inconclusive, Bound: 1.2, Op: "<="},
				ev.Checks[1], minRequestsShort(),
			}
		},
		canaryReady: 7,
		want:        "▶ 2 | increase user group | canary running | 25% (7 of 27 pods) | 25.9% of pods, 24.1% of 3,400 requests | p99-latency no data (want <= 1.2× stable) | hold cannot complete until the checks pass (no data)",
	}, {
		name: "the share of pods is the ready pods' now",
		change: func(s *rollout.State, ev *rollout.Evidence) {
			s.StalledSince, s.NotReadySince = at(185*time.Second), at(185*time.Second)
		},
		canaryReady: 5,
		want:        "▶ 2 | increase user group | canary not ready (5 of 7 ready) | 25% (5 of 25 pods) | 20.0% of pods, 24.1% of 3,400 requests | p99-latency 1.05× stable <= 1.2× ✓ | hold paused for 15s (readyTimeout in 4m45s)",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			s, ev := comparingAtStep2(), comparingEvidence(820, 2580)
			tc.change(s, ev)
			stable := deployment(t, "web", 20, s, nil)
			v := newStatusView(stable, withEvidence(t, canaryOf(stable, 7, tc.canaryReady), ev), now)
			got := formatStatus(v)
			if row := currentRowCells(got); row != tc.want {
				t.Errorf("current row %q, want %q in:\n%s", row, tc.want, got)
			}
		})
	}
}

// A step that rolls back shows the share it measured against the pods it
// had, not the canary scaled to 0; so does a promotion's last step.
func TestMeasuredShareOfAnEndedStep(t *testing.T) {
	t.Run("rolling back, before the router recorded the step's share", func(t *testing.T) {
		s := comparingAtStep2()
		s.Phase, s.Reason, s.Message = rollout.RollingBack, &rollout.Reason{Check: "errors", Step: 1, Weight: 25, Message: "errors: e-value 25.3 >= 20"}, ""
		stable := deployment(t, "web", 20, s, nil)
		v := newStatusView(stable, withEvidence(t, canaryOf(stable, 0, 0), comparingEvidence(41, 3359)), now)
		got := formatStatus(v)
		want := "  2    increase user group   canary scaled to 0         25% (7 of 27 pods)   25.9% of pods, 1.2% of 3,400 requests   issues detected: errors: e-value 25.3 >= 20   rollback canary"
		if !containsLine(got, want) {
			t.Errorf("no line %q in:\n%s", want, got)
		}
		if containsLine(got, "Traffic:") {
			t.Errorf("a step that ended says it is under-served:\n%s", got)
		}
	})
	t.Run("promoting from the step, whose share is recorded", func(t *testing.T) {
		s := comparingAtStep2()
		s.Phase = rollout.Promoting
		s.History[1].Ended, s.History[1].Measured, s.History[1].Requests = at(190*time.Second), ptr.To(24.6), 3400
		stable := deployment(t, "web", 20, s, nil)
		v := newStatusView(stable, withEvidence(t, canaryOf(stable, 7, 7), comparingEvidence(41, 3359)), now)
		got := formatStatus(v)
		want := "  2    increase user group   canary running                  25% (7 of 27 pods)   25.9% of pods, 24.6% of 3,400 requests   no issues           promote"
		if !containsLine(got, want) {
			t.Errorf("no line %q in:\n%s", want, got)
		}
	})
}

// containsLine reports whether out has a line that is want, or starts
// with want followed by blanks.
func containsLine(out, want string) bool {
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, want); ok && strings.TrimLeft(rest, " ") != rest || line == want {
			return true
		}
	}
	return false
}

func TestFormatComparisonAndGathering(t *testing.T) {
	tally := &policy.Tally{Canary: policy.Counts{Requests: 1000, Errors: 7}, Stable: policy.Counts{Requests: 12000, Errors: 60}}
	for _, tc := range []struct {
		name string
		got  string
		want string
	}{
		{"a comparison passing", formatComparison(policy.CheckResult{Check: "errors", Result: policy.Pass, Value: ptr.To(1.4), Bound: 1.5, Op: "<=", EValue: ptr.To(1.3)}, 0.05, tally),
			"errors 0.7% vs stable 0.5% (tolerated 1.5×), e-value 1.3 < 20 ✓"},
		{"a comparison failing", formatComparison(policy.CheckResult{Check: "errors", Result: policy.Fail, Value: ptr.To(1.4), Bound: 1.5, Op: "<=", EValue: ptr.To(25.3)}, 0.05, tally),
			"errors 0.7% vs stable 0.5% (tolerated 1.5×), e-value 25.3 >= 20 ✗"},
		{"an e-value just under the limit does not read as it", formatComparison(policy.CheckResult{Check: "errors", Result: policy.Pass, Bound: 1.5, Op: "<=", EValue: ptr.To(19.99996)}, 0.05, tally),
			"errors 0.7% vs stable 0.5% (tolerated 1.5×), e-value 19.99996 < 20 ✓"},
		{"a huge e-value in exponent form", formatComparison(policy.CheckResult{Check: "errors", Result: policy.Fail, Bound: 1, Op: "<=", EValue: ptr.To(2.346e9)}, 0.01, tally),
			"errors 0.7% vs stable 0.5% (tolerated 1×), e-value 2.35e+09 >= 100 ✗"},
		{"without the tally, the ratio", formatComparison(policy.CheckResult{Check: "errors", Result: policy.Pass, Value: ptr.To(1.4), Bound: 1.5, Op: "<=", EValue: ptr.To(1.3)}, 0.05, nil),
			"errors 1.4× stable (tolerated 1.5×), e-value 1.3 < 20 ✓"},
		{"without the comparison in the policy, no limit", formatComparison(policy.CheckResult{Check: "errors", Result: policy.Pass, Bound: 1.5, Op: "<=", EValue: ptr.To(1.3)}, 0, nil),
			"errors (tolerated 1.5×), e-value 1.3 ✓"},
		{"the minimum of requests not met", formatGathering(minRequestsShort(), nil),
			"min-requests waiting for requests (120 of 500 served)"},
		{"a minimum of thousands", formatGathering(policy.CheckResult{Check: "min-requests", Result: policy.Inconclusive, Gathering: true, Value: ptr.To(1234.0), Bound: 10000, Op: ">="}, nil),
			"min-requests waiting for requests (1,234 of 10,000 served)"},
		{"a comparison without stable requests", formatGathering(policy.CheckResult{Check: "errors", Result: policy.Inconclusive, Gathering: true, Bound: 1.5, Op: "<="}, &policy.Tally{Canary: policy.Counts{Requests: 3}}),
			"errors waiting for requests (none counted on the stable pods yet)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

func TestFormatCount(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 7: "7", 999: "999", 1000: "1,000", 2180.4: "2,180", 1234567: "1,234,567", -4200: "-4,200"} {
		if got := policy.FormatCount(in); got != want {
			t.Errorf("policy.FormatCount(%v) = %q, want %q", in, got, want)
		}
	}
	if got := requestsOf(1); got != "1 request" {
		t.Errorf("requestsOf(1) = %q", got)
	}
}
