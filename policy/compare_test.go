package policy

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestThresholdJudge(t *testing.T) {
	tests := []struct {
		name  string
		check Check
		value float64
		want  CheckResult
	}{
		{
			name:  "a max is failed by a value above it",
			check: Check{Name: "error-rate", Max: num(0.01)},
			value: 0.072,
			want:  CheckResult{Check: "error-rate", Result: Fail, Value: num(0.072), Bound: 0.01, Op: "<=", Reason: "error-rate 0.072 > 0.01"},
		},
		{
			name:  "a value exactly at a max passes",
			check: Check{Name: "error-rate", Max: num(0.01)},
			value: 0.01,
			want:  CheckResult{Check: "error-rate", Result: Pass, Value: num(0.01), Bound: 0.01, Op: "<=", Reason: "error-rate 0.01 <= 0.01"},
		},
		{
			name:  "a min is failed by a value below it",
			check: Check{Name: "success-rate", Min: num(0.99)},
			value: 0.91,
			want:  CheckResult{Check: "success-rate", Result: Fail, Value: num(0.91), Bound: 0.99, Op: ">=", Reason: "success-rate 0.91 < 0.99"},
		},
		{
			name:  "a value exactly at a min passes",
			check: Check{Name: "success-rate", Min: num(0.99)},
			value: 0.99,
			want:  CheckResult{Check: "success-rate", Result: Pass, Value: num(0.99), Bound: 0.99, Op: ">=", Reason: "success-rate 0.99 >= 0.99"},
		},
		{
			name:  "a maxRatio is failed by a ratio above it",
			check: Check{Name: "p99-latency", MaxRatio: num(1.2)},
			value: 3.02,
			want:  CheckResult{Check: "p99-latency", Result: Fail, Value: num(3.02), Bound: 1.2, Op: "<=", Reason: "p99-latency 3.02× stable > 1.2×"},
		},
		{
			name:  "a ratio under a maxRatio passes",
			check: Check{Name: "p99-latency", MaxRatio: num(1.2)},
			value: 0.9,
			want:  CheckResult{Check: "p99-latency", Result: Pass, Value: num(0.9), Bound: 1.2, Op: "<=", Reason: "p99-latency 0.9× stable <= 1.2×"},
		},
		{
			name:  "the value keeps its full precision while the reason shows three digits",
			check: Check{Name: "error-rate", Max: num(0.01)},
			value: 0.07234118503937008,
			want: CheckResult{Check: "error-rate", Result: Fail, Value: num(0.07234118503937008), Bound: 0.01, Op: "<=",
				Reason: "error-rate 0.0723 > 0.01"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th, ok := thresholdOf(tt.check)
			assert.True(t, ok)
			r := CheckResult{Check: tt.check.Name, Bound: th.bound, Op: th.op()}
			assert.Equal(t, tt.want, th.judge(r, tt.check.Name, tt.value))
		})
	}
}

func TestThresholdOfRefusesAmbiguousChecks(t *testing.T) {
	tests := []struct {
		name  string
		check Check
	}{
		{"no threshold", Check{Name: "x"}},
		{"two thresholds", Check{Name: "x", Max: num(1), Min: num(0)}},
		{"a NaN bound", Check{Name: "x", Max: num(math.NaN())}},
		{"an infinite bound", Check{Name: "x", MaxRatio: num(math.Inf(1))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ok := thresholdOf(tt.check)
			assert.False(t, ok)
		})
	}
}

func TestFormatValue(t *testing.T) {
	tests := []struct {
		name  string
		value float64
		bound float64
		want  string
	}{
		{"a short value is shown as it is", 0.072, 0.01, "0.072"},
		{"a long value is cut to three significant digits", 0.07234118503937008, 0.01, "0.0723"},
		{"a ratio's float noise is rounded away", 3.0199999999999996, 1.2, "3.02"},
		{"a large value is written out, not in exponent form", 12345.678, 100, "12300"},
		{"a huge value uses the exponent form of 'g'", 1234567890, 100, "1.23e+09"},
		{"digits are added when three would land on the bound", 0.010004, 0.01, "0.010004"},
		{"digits are added until the shown value is on the right side of the bound", 0.012349, 0.012345, "0.01235"},
		{"a value under a min keeps enough digits to stay under it", 0.98999, 0.99, "0.98999"},
		{"a value equal to a long bound is shown equal to it", 0.012345, 0.012345, "0.012345"},
		{"zero is 0", 0, 0.01, "0"},
		{"a negative value keeps its sign", -0.5, 1.2, "-0.5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, formatValue(tt.value, tt.bound))
		})
	}
}
