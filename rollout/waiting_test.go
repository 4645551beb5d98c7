package rollout

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fledge-dev/fledge/policy"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// at is t0 plus d, as a state's time.
func at(d time.Duration) *metav1.MicroTime {
	m := metav1.NewMicroTime(t0.Add(d))
	return &m
}

// waiting is a rollout at its second step (25%, hold 2m, approval
// manual), with readyTimeout 5m.
func waiting(phase Phase, mutate func(*State)) *State {
	s := &State{Phase: phase, Step: 1, Policy: policy.Policy{
		Steps: []policy.Step{
			{Weight: 5, Hold: metav1.Duration{Duration: time.Minute}},
			{Weight: 25, Hold: metav1.Duration{Duration: 2 * time.Minute}, Approval: policy.ApprovalManual},
		},
		Health: policy.Health{ReadyTimeout: metav1.Duration{Duration: 5 * time.Minute}},
	}}
	if mutate != nil {
		mutate(s)
	}
	return s
}

func TestHoldLeft(t *testing.T) {
	tests := []struct {
		name  string
		state *State
		now   time.Duration // after t0
		left  time.Duration
		held  bool // HoldPassed
	}{
		{"before the pods are Ready the whole hold is to run",
			waiting(Progressing, nil), 10 * time.Minute, 2 * time.Minute, false},
		{"30s into a hold of 2m",
			waiting(Progressing, func(s *State) { s.HoldingSince = at(0) }), 30 * time.Second, 90 * time.Second, false},
		{"the hold passes at its end exactly",
			waiting(Progressing, func(s *State) { s.HoldingSince = at(0) }), 2 * time.Minute, 0, true},
		{"long past the hold it is zero, not negative",
			waiting(Progressing, func(s *State) { s.HoldingSince = at(0) }), time.Hour, 0, true},
		{"a stalled step's hold stands still where the stall began",
			waiting(Progressing, func(s *State) { s.HoldingSince, s.StalledSince = at(0), at(30*time.Second) }), time.Hour, 90 * time.Second, false},
		{"a step outside the policy has no hold",
			waiting(Progressing, func(s *State) { s.Step, s.HoldingSince = 7, at(0) }), 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := t0.Add(tt.now)
			assert.Equal(t, tt.left, tt.state.HoldLeft(now))
			assert.Equal(t, tt.held, tt.state.HoldPassed(now))
		})
	}
}

func TestAwaitsApproval(t *testing.T) {
	holding := func(s *State) { s.HoldingSince = at(0) }
	tests := []struct {
		name  string
		state *State
		now   time.Duration
		want  bool
	}{
		{"a manual step paused once its hold passed awaits approval",
			waiting(Paused, holding), 2 * time.Minute, true},
		{"paused during its hold, a person paused it",
			waiting(Paused, holding), time.Minute, false},
		{"paused before its pods were Ready, a person paused it",
			waiting(Paused, nil), time.Hour, false},
		{"a step without approval: manual never awaits one",
			waiting(Paused, func(s *State) { holding(s); s.Policy.Steps[1].Approval = "" }), time.Hour, false},
		{"still progressing: the router has not paused it yet",
			waiting(Progressing, holding), time.Hour, false},
		{"a step outside the policy awaits nothing",
			waiting(Paused, func(s *State) { holding(s); s.Step = 2 }), time.Hour, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.state.AwaitsApproval(t0.Add(tt.now)))
		})
	}
}

func TestAwaitsPass(t *testing.T) {
	analysis := &policy.Analysis{Interval: metav1.Duration{Duration: 10 * time.Second}}
	tests := []struct {
		name  string
		state *State
		want  bool
	}{
		{"without an analysis the hold needs no checks", waiting(Progressing, nil), false},
		{"with an analysis and no passing evidence it waits",
			waiting(Progressing, func(s *State) { s.Policy.Analysis = analysis }), true},
		{"passing evidence lets the hold end",
			waiting(Progressing, func(s *State) { s.Policy.Analysis, s.PassedSince = analysis, at(0) }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { assert.Equal(t, tt.want, tt.state.AwaitsPass()) })
	}
}

func TestReadyTimeoutLeft(t *testing.T) {
	tests := []struct {
		name     string
		state    *State
		now      time.Duration
		left     time.Duration
		counting bool
	}{
		{"all pods Ready: nothing counts",
			waiting(Progressing, nil), time.Hour, 0, false},
		{"50s after a pod went missing, of 5m",
			waiting(Progressing, func(s *State) { s.NotReadySince = at(0) }), 50 * time.Second, 4*time.Minute + 10*time.Second, true},
		{"it counts from NotReadySince, not from the start of the step",
			waiting(Progressing, func(s *State) { s.StepStartedAt, s.NotReadySince = at(0), at(10*time.Minute) }), 11 * time.Minute, 4 * time.Minute, true},
		{"it runs out at readyTimeout exactly",
			waiting(Progressing, func(s *State) { s.NotReadySince = at(0) }), 5 * time.Minute, 0, true},
		{"long after it is zero, not negative",
			waiting(Progressing, func(s *State) { s.NotReadySince = at(0) }), time.Hour, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			left, counting := tt.state.ReadyTimeoutLeft(t0.Add(tt.now))
			assert.Equal(t, tt.left, left)
			assert.Equal(t, tt.counting, counting)
		})
	}
}
