package rollout

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/fledge-dev/fledge/policy"
)

func TestEffectiveWeight(t *testing.T) {
	tests := []struct {
		name           string
		canary, stable int32
		want           float64
	}{
		{"one canary pod beside 20 stable", 1, 20, 100.0 / 21}, // 4.76%
		{"seven beside 20", 7, 20, 700.0 / 27},                 // 25.9%
		{"as many canary as stable pods", 4, 4, 50},            // 50%
		{"canary pods only", 3, 0, 100},                        // 100%
		{"no pods at all", 0, 0, 0},                            // 0%
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, EffectiveWeight(tt.canary, tt.stable))
		})
	}
}

func TestTargetWeight(t *testing.T) {
	steps := []policy.Step{{Weight: 5}, {Weight: 25}, {Weight: 50}}
	tests := []struct {
		name  string
		state State
		want  int32
	}{
		{"the first step's weight", State{Step: 0}, 5},
		{"the current step's weight", State{Step: 2}, 50},
		{"a rollback names the weight of the step it failed at", State{Phase: RollingBack, Step: 1}, 25},
		{"past the last step the canary takes everything", State{Step: 3}, 100},
		{"a step before the first is none of the policy's", State{Step: -1}, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.state
			s.Policy.Steps = steps
			assert.Equal(t, tt.want, s.TargetWeight())
		})
	}
}
