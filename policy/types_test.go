package policy

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

func TestDefault(t *testing.T) {
	assert.Equal(t, &Policy{
		Steps: []Step{
			{Weight: 5, Hold: dur(time.Minute)},
			{Weight: 25, Hold: dur(time.Minute)},
			{Weight: 50, Hold: dur(time.Minute)},
		},
		Capacity: CapacitySurge,
		Health:   Health{ReadyTimeout: dur(5 * time.Minute), MaxRestarts: 0},
	}, Default())
}

func TestDefaultReturnsAFreshPolicyEachTime(t *testing.T) {
	p := Default()
	p.Steps[0].Weight = 42
	assert.Equal(t, int32(5), Default().Steps[0].Weight)
}

func TestStepsString(t *testing.T) {
	tests := []struct {
		name string
		p    *Policy
		want string
	}{
		{"the default ends with the promotion to 100%", Default(), "5% → 25% → 50% → 100%"},
		{"a manual step is marked", examplePolicy(), "5% → 25% → 50% (manual) → 100%"},
		{"no steps is the promotion alone", &Policy{}, "100%"},
		{"no policy is empty", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.p.StepsString())
		})
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	strict := examplePolicy()
	strict.Analysis.FailureLimit, strict.Analysis.NoDataLimit = 0, 0
	strict.Analysis.Checks[1].MaxRatio, strict.Analysis.Checks[1].Min = nil, num(0)
	tests := []struct {
		name string
		p    *Policy
	}{
		{"the architecture example", examplePolicy()},
		{"the default", Default()},
		{"zero limits and a zero threshold", strict},
	}
	for _, tt := range tests {
		t.Run(tt.name+" survives JSON", func(t *testing.T) {
			data, err := json.Marshal(tt.p)
			require.NoError(t, err)
			var got Policy
			require.NoError(t, json.Unmarshal(data, &got))
			assert.Equal(t, tt.p, &got)
		})
		t.Run(tt.name+" read back with Parse is the same policy", func(t *testing.T) {
			data, err := json.Marshal(tt.p)
			require.NoError(t, err)
			got, err := Parse(data)
			require.NoError(t, err)
			assert.Equal(t, tt.p, got)
		})
		t.Run(tt.name+" survives YAML", func(t *testing.T) {
			data, err := yaml.Marshal(tt.p)
			require.NoError(t, err)
			got, err := Parse(data)
			require.NoError(t, err)
			assert.Equal(t, tt.p, got)
		})
	}
}

func TestSnapshotIsCompact(t *testing.T) {
	data, err := json.Marshal(Default())
	require.NoError(t, err)
	assert.JSONEq(t, `{
		"steps": [{"weight": 5, "hold": "1m0s"}, {"weight": 25, "hold": "1m0s"}, {"weight": 50, "hold": "1m0s"}],
		"capacity": "surge",
		"health": {"readyTimeout": "5m0s"}
	}`, string(data))
}

func TestSnapshotKeepsZeroLimits(t *testing.T) {
	data, err := json.Marshal(&Analysis{Interval: dur(time.Second)})
	require.NoError(t, err)
	assert.JSONEq(t, `{"interval": "1s", "failureLimit": 0, "noDataLimit": 0}`, string(data))
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                              "0s",
		500 * time.Millisecond:         "500ms",
		90 * time.Second:               "1m30s",
		time.Minute:                    "1m",
		24 * time.Hour:                 "24h",
		time.Hour + 30*time.Minute:     "1h30m",
		time.Hour + 30*time.Second:     "1h0m30s",
		-time.Minute:                   "-1m",
		time.Hour + time.Minute + 10e6: "1h1m0.01s",
	} {
		assert.Equal(t, want, formatDuration(d), "formatDuration(%d)", d)
	}
}

func TestErrorsRenderOneLine(t *testing.T) {
	errs := Errors{
		{Field: "steps[1].weight", Detail: "120 is not between 1 and 99"},
		{Detail: "policy.yaml is empty"},
	}
	assert.Equal(t, "steps[1].weight: 120 is not between 1 and 99; policy.yaml is empty", errs.Error())
	assert.NoError(t, Errors(nil).orNil())
}
