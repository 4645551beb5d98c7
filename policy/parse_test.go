package policy

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseArchitectureExample(t *testing.T) {
	p, err := Parse(readExample(t))
	require.NoError(t, err)
	assert.Equal(t, examplePolicy(), p)
}

func TestParseFillsDefaults(t *testing.T) {
	twoSteps := "steps:\n- {weight: 10, hold: 30s}\n- {weight: 60, hold: 2m}\n"
	checks := "  prometheus: {url: http://prom:9090}\n  checks:\n  - {name: errors, query: 'up{pod=~\"{{.Pods}}\"}', max: 1}\n"
	tests := []struct {
		name string
		doc  string
		want func(p *Policy)
	}{
		{
			name: "only steps gives surge, 5m ready timeout, no restarts and no analysis",
			doc:  twoSteps,
			want: func(p *Policy) {},
		},
		{
			name: "an analysis section gets a 15s interval, failure limit 1 and no-data limit 4",
			doc:  twoSteps + "analysis:\n" + checks,
			want: func(p *Policy) {
				p.Analysis = &Analysis{
					Interval: dur(15 * time.Second), FailureLimit: 1, NoDataLimit: 4,
					Prometheus: Prometheus{URL: "http://prom:9090"},
					Checks:     []Check{{Name: "errors", Query: `up{pod=~"{{.Pods}}"}`, Max: num(1)}},
				}
			},
		},
		{
			name: "explicit zero limits are kept, not replaced by the defaults",
			doc:  twoSteps + "analysis:\n  failureLimit: 0\n  noDataLimit: 0\n" + checks,
			want: func(p *Policy) {
				p.Analysis = &Analysis{
					Interval: dur(15 * time.Second), FailureLimit: 0, NoDataLimit: 0,
					Prometheus: Prometheus{URL: "http://prom:9090"},
					Checks:     []Check{{Name: "errors", Query: `up{pod=~"{{.Pods}}"}`, Max: num(1)}},
				}
			},
		},
		{
			name: "a written health field keeps the default of the other one",
			doc:  twoSteps + "capacity: shift\nhealth:\n  maxRestarts: 2\n",
			want: func(p *Policy) {
				p.Capacity = CapacityShift
				p.Health.MaxRestarts = 2
			},
		},
		{
			name: "null fields count as left out",
			doc:  twoSteps + "capacity:\nhealth:\n  readyTimeout: ~\nanalysis: null\n",
			want: func(p *Policy) {},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := &Policy{
				Steps:    []Step{{Weight: 10, Hold: dur(30 * time.Second)}, {Weight: 60, Hold: dur(2 * time.Minute)}},
				Capacity: CapacitySurge,
				Health:   Health{ReadyTimeout: dur(5 * time.Minute)},
			}
			tt.want(want)
			p, err := Parse([]byte(tt.doc))
			require.NoError(t, err)
			assert.Equal(t, want, p)
		})
	}
}

func TestParseRefusesDocumentsThatDoNotDecode(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{"an empty document is refused", "", "policy.yaml is empty"},
		{"a document of comments only is empty", "# nothing yet\n\n", "policy.yaml is empty"},
		{"a YAML null document is empty", "~\n", "policy.yaml is empty"},
		{
			"a syntax error names its line",
			"steps:\n  - weight: 5\n    hold: 1m: x\n",
			"policy.yaml: line 3: mapping values are not allowed in this context",
		},
		{
			"a syntax error on the first line says line 1",
			"steps: a: b\n",
			"policy.yaml: line 1: mapping values are not allowed in this context",
		},
		{
			"a duplicate key is refused with its line",
			"steps:\n  - weight: 5\n    weight: 6\n",
			`policy.yaml: line 3: key "weight" already set in map`,
		},
		{
			"a second YAML document is refused",
			"steps: []\n---\ncapacity: shift\n",
			"policy.yaml: line 2: starts a second YAML document; keep one policy per ConfigMap",
		},
		{"infinite numbers are refused", "analysis:\n  checks:\n  - max: .inf\n", "policy.yaml: .inf and .nan are not allowed; use a finite number"},
		{"a list document is refused", "- weight: 5\n", "policy.yaml: must be a mapping with steps, capacity, health, analysis, got a list"},
		{
			"a misspelt step field is named with its path and the allowed fields",
			"steps:\n  - wieght: 5\n    hold: 1m\n",
			"steps[0].wieght: unknown field; allowed: weight, hold, approval",
		},
		{
			"field names are case-sensitive",
			"Capacity: surge\n",
			"Capacity: unknown field; allowed: steps, capacity, health, analysis",
		},
		{
			"every unknown field is reported, in the order of the document's sections",
			"steps:\n- {weight: 5, hold: 1m, pause: true}\nhealth: {timeout: 1m}\nanalysis:\n  prometheus: {address: x}\n  checks:\n  - {name: a, threshold: 1}\nextra: 1\n",
			"steps[0].pause: unknown field; allowed: weight, hold, approval; " +
				"health.timeout: unknown field; allowed: readyTimeout, maxRestarts; " +
				"analysis.prometheus.address: unknown field; allowed: url; " +
				"analysis.checks[0].threshold: unknown field; allowed: name, query, max, min, maxRatio; " +
				"extra: unknown field; allowed: steps, capacity, health, analysis",
		},
		{"a weight must be a whole number", "steps:\n- {weight: 5.5, hold: 1m}\n", "steps[0].weight: must be a whole number, got 5.5"},
		{"a weight given as text is refused", "steps:\n- {weight: five, hold: 1m}\n", `steps[0].weight: must be a whole number, got "five"`},
		{"a weight beyond int32 is out of range", "steps:\n- {weight: 5000000000, hold: 1m}\n", "steps[0].weight: 5000000000 is out of range"},
		{"a hold without a unit is refused", "steps:\n- {weight: 5, hold: 60}\n", "steps[0].hold: must be a duration such as 30s or 1m, got 60"},
		{
			"a hold in words is refused",
			"steps:\n- {weight: 5, hold: 1 minute}\n",
			`steps[0].hold: "1 minute" is not a duration; use a number and a unit, such as 30s, 1m or 1h`,
		},
		{"steps must be a list", "steps: {weight: 5}\n", "steps: must be a list, got a mapping"},
		{"an empty list item is refused", "steps:\n-\n", `steps[0]: is empty; remove the "-" or fill it in`},
		{"health must be a mapping", "health: 5m\n", `health: must be a mapping with readyTimeout, maxRestarts, got "5m"`},
		{"an unquoted yes is not an approval", "steps:\n- {weight: 5, hold: 1m, approval: yes}\n", "steps[0].approval: must be a string, got true"},
		{"a threshold must be a number", "analysis:\n  checks:\n  - max: 1%\n", `analysis.checks[0].max: must be a number, got "1%"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.doc))
			require.Error(t, err)
			assert.Nil(t, p)
			assert.Equal(t, tt.want, err.Error())
			var errs Errors
			assert.True(t, errors.As(err, &errs), "the error is an Errors")
		})
	}
}

func TestParseReportsEveryValidationErrorAtOnce(t *testing.T) {
	doc := "steps:\n- {weight: 120, hold: 1m}\n- {weight: 20, hold: 0s, approval: auto}\ncapacity: fast\nhealth: {readyTimeout: 2h}\n"
	_, err := Parse([]byte(doc))
	var errs Errors
	require.True(t, errors.As(err, &errs))
	assert.Equal(t, Errors{
		{Field: "steps[0].weight", Detail: "120 is not between 1 and 99"},
		{Field: "steps[1].hold", Detail: "0s is not above 0s; set how long to stay at this weight, at most 24h"},
		{Field: "steps[1].approval", Detail: `"auto" is not allowed; use "manual" or leave it out`},
		{Field: "capacity", Detail: `"fast" is not allowed; use "surge" or "shift"`},
		{Field: "health.readyTimeout", Detail: "2h is not between 10s and 1h"},
	}, errs)
	assert.Equal(t, strings.Join([]string{
		"steps[0].weight: 120 is not between 1 and 99",
		"steps[1].hold: 0s is not above 0s; set how long to stay at this weight, at most 24h",
		`steps[1].approval: "auto" is not allowed; use "manual" or leave it out`,
		`capacity: "fast" is not allowed; use "surge" or "shift"`,
		"health.readyTimeout: 2h is not between 10s and 1h",
	}, "; "), err.Error())
}

func TestSecondDocumentLine(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want int
	}{
		{"a single document has none", "steps: []\n", 0},
		{"a leading marker is the first document", "# policy\n---\nsteps: []\n", 0},
		{"a trailing marker without content is no document", "steps: []\n---\n# end\n", 0},
		{"a document end marker is no content", "steps: []\n...\n", 0},
		{"content after a second marker is a second document", "steps: []\n---\n\ncapacity: shift\n", 2},
		{"content on the marker line counts", "steps: []\n--- {capacity: shift}\n", 2},
		{"an indented dash line is content, not a marker", "query: |\n  a\n  ---\n", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, secondDocumentLine([]byte(tt.doc)))
		})
	}
}
