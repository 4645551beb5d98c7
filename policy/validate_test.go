package policy

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(p *Policy)
		want   string // "" means valid
	}{
		{"the architecture example is valid", func(p *Policy) {}, ""},
		{"the default policy is valid", func(p *Policy) { *p = *Default() }, ""},
		{"a policy without analysis is valid", func(p *Policy) { p.Analysis = nil }, ""},
		{"a single step is valid", func(p *Policy) { p.Steps = p.Steps[:1] }, ""},
		{"weights 1 and 99 are the bounds", func(p *Policy) { p.Steps[0].Weight, p.Steps[2].Weight = 1, 99 }, ""},
		{"a 24h hold is the longest", func(p *Policy) { p.Steps[0].Hold = dur(24 * time.Hour) }, ""},
		{"readyTimeout from 10s", func(p *Policy) { p.Health.ReadyTimeout = dur(10 * time.Second) }, ""},
		{"readyTimeout up to 1h", func(p *Policy) { p.Health.ReadyTimeout = dur(time.Hour) }, ""},
		{"interval from 1s", func(p *Policy) { p.Analysis.Interval = dur(time.Second) }, ""},
		{"zero limits are valid", func(p *Policy) { p.Analysis.FailureLimit, p.Analysis.NoDataLimit = 0, 0 }, ""},
		{"an https URL is valid", func(p *Policy) { p.Analysis.Prometheus.URL = "https://prom.example.com/prometheus" }, ""},
		{"a min threshold is valid", func(p *Policy) { p.Analysis.Checks[0].Max, p.Analysis.Checks[0].Min = nil, num(0.5) }, ""},
		{"a max of 0 is valid", func(p *Policy) { p.Analysis.Checks[0].Max = num(0) }, ""},

		{"no steps is refused", func(p *Policy) { p.Steps = nil }, "steps: none given; add at least one step, such as {weight: 5, hold: 1m}"},
		{"a weight of 0 is refused", func(p *Policy) { p.Steps[0].Weight = 0 }, "steps[0].weight: 0 is not between 1 and 99"},
		{"a weight above 99 is refused", func(p *Policy) { p.Steps[1].Weight = 120 }, "steps[1].weight: 120 is not between 1 and 99"},
		{"a weight of 100 is refused: 100% is the promotion", func(p *Policy) { p.Steps[2].Weight = 100 }, "steps[2].weight: 100 is not between 1 and 99"},
		{
			"a repeated weight is refused",
			func(p *Policy) { p.Steps[1].Weight = 5 },
			"steps[1].weight: 5 is not above 5 of steps[0].weight; weights must increase from step to step",
		},
		{
			"a falling weight is refused",
			func(p *Policy) { p.Steps[2].Weight = 10 },
			"steps[2].weight: 10 is not above 25 of steps[1].weight; weights must increase from step to step",
		},
		{
			"an out-of-range weight is not compared with its neighbours",
			func(p *Policy) { p.Steps[1].Weight = 120 },
			"steps[1].weight: 120 is not between 1 and 99",
		},
		{
			"a missing hold is refused",
			func(p *Policy) { p.Steps[0].Hold = dur(0) },
			"steps[0].hold: 0s is not above 0s; set how long to stay at this weight, at most 24h",
		},
		{
			"a negative hold is refused",
			func(p *Policy) { p.Steps[0].Hold = dur(-time.Minute) },
			"steps[0].hold: -1m is not above 0s; set how long to stay at this weight, at most 24h",
		},
		{"a hold above 24h is refused", func(p *Policy) { p.Steps[1].Hold = dur(25 * time.Hour) }, "steps[1].hold: 25h is above the maximum of 24h"},
		{"an unknown approval is refused", func(p *Policy) { p.Steps[2].Approval = "Manual" }, `steps[2].approval: "Manual" is not allowed; use "manual" or leave it out`},
		{"an unknown capacity is refused", func(p *Policy) { p.Capacity = "burst" }, `capacity: "burst" is not allowed; use "surge" or "shift"`},
		{"an empty capacity is refused", func(p *Policy) { p.Capacity = "" }, `capacity: "" is not allowed; use "surge" or "shift"`},
		{"a readyTimeout under 10s is refused", func(p *Policy) { p.Health.ReadyTimeout = dur(5 * time.Second) }, "health.readyTimeout: 5s is not between 10s and 1h"},
		{"a readyTimeout over 1h is refused", func(p *Policy) { p.Health.ReadyTimeout = dur(61 * time.Minute) }, "health.readyTimeout: 1h1m is not between 10s and 1h"},
		{"negative maxRestarts is refused", func(p *Policy) { p.Health.MaxRestarts = -1 }, "health.maxRestarts: -1 is below 0"},
		{"an interval under 1s is refused", func(p *Policy) { p.Analysis.Interval = dur(500 * time.Millisecond) }, "analysis.interval: 500ms is not between 1s and 1h"},
		{"an interval over 1h is refused", func(p *Policy) { p.Analysis.Interval = dur(90 * time.Minute) }, "analysis.interval: 1h30m is not between 1s and 1h"},
		{"a negative failureLimit is refused", func(p *Policy) { p.Analysis.FailureLimit = -1 }, "analysis.failureLimit: -1 is below 0"},
		{"a negative noDataLimit is refused", func(p *Policy) { p.Analysis.NoDataLimit = -2 }, "analysis.noDataLimit: -2 is below 0"},
		{
			"checks without a Prometheus URL are refused",
			func(p *Policy) { p.Analysis.Prometheus.URL = "" },
			"analysis.prometheus.url: required when checks are set; an absolute http(s) URL such as http://prometheus.monitoring.svc:9090",
		},
		{
			"a URL without a scheme is refused",
			func(p *Policy) { p.Analysis.Prometheus.URL = "prometheus.monitoring.svc:9090" },
			`analysis.prometheus.url: "prometheus.monitoring.svc:9090" is not an absolute http(s) URL such as http://prometheus.monitoring.svc:9090`,
		},
		{
			"a non-http URL is refused",
			func(p *Policy) { p.Analysis.Prometheus.URL = "ftp://prom:21" },
			`analysis.prometheus.url: "ftp://prom:21" is not an absolute http(s) URL such as http://prometheus.monitoring.svc:9090`,
		},
		{
			"a URL with credentials is refused",
			func(p *Policy) { p.Analysis.Prometheus.URL = "http://admin:secret@prom:9090" },
			"analysis.prometheus.url: must not contain credentials; a policy ConfigMap is not a secret",
		},
		{
			"an analysis section without checks is refused",
			func(p *Policy) { p.Analysis.Checks = nil },
			"analysis.checks: none given; remove analysis or add checks or compare",
		},
		{"a check without a name is refused", func(p *Policy) { p.Analysis.Checks[0].Name = "" }, "analysis.checks[0].name: required; a short name such as error-rate"},
		{
			"a check name that is no DNS label is refused",
			func(p *Policy) { p.Analysis.Checks[1].Name = "P99_latency" },
			`analysis.checks[1].name: "P99_latency" is not a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters`,
		},
		{
			"a repeated check name is refused",
			func(p *Policy) { p.Analysis.Checks[1].Name = "error-rate" },
			`analysis.checks[1].name: "error-rate" is already used by analysis.checks[0]`,
		},
		{
			"a check without a query is refused",
			func(p *Policy) { p.Analysis.Checks[0].Query = "" },
			"analysis.checks[0].query: required; a PromQL query, a template over .Namespace, .Deployment, .Track, .Pods",
		},
		{
			"a query with an unknown variable is refused",
			func(p *Policy) { p.Analysis.Checks[0].Query = `up{app="{{.App}}"}` },
			"analysis.checks[0].query: template uses unknown variable .App; allowed: .Namespace, .Deployment, .Track, .Pods",
		},
		{
			"an unknown variable in the stable branch is found too",
			func(p *Policy) {
				p.Analysis.Checks[0].Query = `up{ {{if eq .Track "canary"}}pod=~"{{.Pods}}"{{else}}rs="{{.ReplicaSet}}"{{end}} }`
			},
			"analysis.checks[0].query: template uses unknown variable .ReplicaSet; allowed: .Namespace, .Deployment, .Track, .Pods",
		},
		{
			"a query that does not parse is refused with its line",
			func(p *Policy) { p.Analysis.Checks[1].Query = "up\n{{.Pods}" },
			"analysis.checks[1].query: template does not parse: line 2: bad character U+007D '}'",
		},
		{
			"a query calling an unknown function is refused",
			func(p *Policy) { p.Analysis.Checks[0].Query = `up{pod=~"{{.Pods | regex}}"}` },
			`analysis.checks[0].query: template does not parse: line 1: function "regex" not defined`,
		},
		{
			"a query that fails to execute says where",
			func(p *Policy) { p.Analysis.Checks[0].Query = `up{ns="{{.Namespace.Name}}"}` },
			"analysis.checks[0].query: template fails at <.Namespace.Name>: can't evaluate field Name in type string",
		},
		{
			"a query using range is refused",
			func(p *Policy) { p.Analysis.Checks[0].Query = `up{{range 3}}x{{end}}` },
			"analysis.checks[0].query: template uses range; a query may use only variables such as {{.Pods}}, if and with",
		},
		{
			"a query calling a template is refused",
			func(p *Policy) {
				p.Analysis.Checks[0].Query = `{{define "q"}}up{{end}}{{if .Pods}}{{template "q"}}{{end}}`
			},
			"analysis.checks[0].query: template calls a template; a query may use only variables such as {{.Pods}}, if and with",
		},
		{
			"a query that renders to nothing is refused",
			func(p *Policy) { p.Analysis.Checks[0].Query = "{{/* todo */}}  " },
			"analysis.checks[0].query: template renders an empty query",
		},
		{
			"a check without a threshold is refused",
			func(p *Policy) { p.Analysis.Checks[0].Max = nil },
			"analysis.checks[0]: sets none of max, min, maxRatio; set exactly one",
		},
		{
			"a check with two thresholds names them",
			func(p *Policy) { p.Analysis.Checks[0].MaxRatio = num(2) },
			"analysis.checks[0]: sets max and maxRatio; set exactly one of max, min, maxRatio",
		},
		{
			"a check with three thresholds names them",
			func(p *Policy) { p.Analysis.Checks[1].Max, p.Analysis.Checks[1].Min = num(1), num(0) },
			"analysis.checks[1]: sets max, min and maxRatio; set exactly one of max, min, maxRatio",
		},
		{"a maxRatio of 0 is refused", func(p *Policy) { p.Analysis.Checks[1].MaxRatio = num(0) }, "analysis.checks[1].maxRatio: 0 is not above 0"},
		{"a negative maxRatio is refused", func(p *Policy) { p.Analysis.Checks[1].MaxRatio = num(-1.5) }, "analysis.checks[1].maxRatio: -1.5 is not above 0"},
		{"a NaN threshold is refused", func(p *Policy) { p.Analysis.Checks[0].Max = num(math.NaN()) }, "analysis.checks[0].max: NaN is not a finite number"},
		{
			"every problem is reported, in field order",
			func(p *Policy) {
				p.Steps[0].Weight = 0
				p.Capacity = "x"
				p.Analysis.Checks[0].Name = "dup"
				p.Analysis.Checks[1].Name = "dup"
				p.Analysis.Checks[1].Max = num(1)
			},
			`steps[0].weight: 0 is not between 1 and 99; capacity: "x" is not allowed; use "surge" or "shift"; ` +
				`analysis.checks[1]: sets max and maxRatio; set exactly one of max, min, maxRatio; ` +
				`analysis.checks[1].name: "dup" is already used by analysis.checks[0]`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := examplePolicy()
			tt.mutate(p)
			err := p.Validate()
			if tt.want == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Equal(t, tt.want, err.Error())
		})
	}
}

func TestValidateNilPolicyIsAnError(t *testing.T) {
	var p *Policy
	assert.EqualError(t, p.Validate(), "no policy")
}

func TestParseValidatesWhatItDecoded(t *testing.T) {
	doc := "steps:\n- {weight: 5, hold: 1m}\nanalysis: {}\n"
	_, err := Parse([]byte(doc))
	assert.EqualError(t, err, "analysis.checks: none given; remove analysis or add checks or compare")
}

func TestValidateComparison(t *testing.T) {
	base := func() *Policy {
		p := Default()
		p.Analysis = &Analysis{
			Interval: dur(15 * time.Second), FailureLimit: 1, NoDataLimit: 4, MinRequests: 100,
			Prometheus: Prometheus{URL: "http://prometheus:9090"},
			Compare:    []Comparison{errorsComparison},
		}
		return p
	}
	tests := []struct {
		name   string
		mutate func(p *Policy)
		want   string
	}{
		{"a comparison alone is an analysis", func(p *Policy) {}, ""},
		{"tolerance 0 (no worse than stable at all) is valid", func(p *Policy) { p.Analysis.Compare[0].Tolerance = 0 }, ""},
		{"alpha up to 0.5", func(p *Policy) { p.Analysis.Compare[0].Alpha = 0.5 }, ""},
		{"minRequests 0 sets no minimum", func(p *Policy) { p.Analysis.MinRequests = 0 }, ""},
		{"beside a check", func(p *Policy) { p.Analysis.Checks = []Check{{Name: "p99", Query: "q", MaxRatio: num(1.2)}} }, ""},

		{"a name is required", func(p *Policy) { p.Analysis.Compare[0].Name = "" }, "analysis.compare[0].name: required; a short name such as error-rate"},
		{"names are unique across checks and comparisons", func(p *Policy) {
			p.Analysis.Checks = []Check{{Name: "errors", Query: "q", Max: num(0.01)}}
		}, `analysis.compare[0].name: "errors" is already used by analysis.checks[0]`},
		{"both queries are required", func(p *Policy) { p.Analysis.Compare[0].Requests, p.Analysis.Compare[0].Errors = "", "" },
			`analysis.compare[0].requests: required; a PromQL template for per-pod counters such as http_requests_total{namespace="{{.Namespace}}",pod=~"{{.Pods}}"}; ` +
				`analysis.compare[0].errors: required; a PromQL template for per-pod counters such as http_requests_total{namespace="{{.Namespace}}",pod=~"{{.Pods}}",code=~"5.."}`},
		{"a query must render", func(p *Policy) { p.Analysis.Compare[0].Errors = `x{pod=~"{{.Pod}}"}` },
			"analysis.compare[0].errors: template uses unknown variable .Pod; allowed: .Namespace, .Deployment, .Track, .Pods"},
		{"a negative tolerance", func(p *Policy) { p.Analysis.Compare[0].Tolerance = -0.1 },
			"analysis.compare[0].tolerance: -0.1 is not between 0 and 100; 0.5 lets the canary's error rate reach 1.5 × stable's"},
		{"a NaN tolerance", func(p *Policy) { p.Analysis.Compare[0].Tolerance = math.NaN() },
			"analysis.compare[0].tolerance: NaN is not between 0 and 100; 0.5 lets the canary's error rate reach 1.5 × stable's"},
		{"alpha 0", func(p *Policy) { p.Analysis.Compare[0].Alpha = 0 },
			"analysis.compare[0].alpha: 0 is not above 0 and at most 0.5; it is the chance of rolling back a canary within the tolerance, such as 0.01"},
		{"alpha above one half", func(p *Policy) { p.Analysis.Compare[0].Alpha = 0.6 },
			"analysis.compare[0].alpha: 0.6 is not above 0 and at most 0.5; it is the chance of rolling back a canary within the tolerance, such as 0.01"},
		{"a negative minimum", func(p *Policy) { p.Analysis.MinRequests = -1 }, "analysis.minRequests: -1 is below 0"},
		{"a minimum without a comparison to count requests", func(p *Policy) {
			p.Analysis.Compare = nil
			p.Analysis.Checks = []Check{{Name: "p99", Query: "q", MaxRatio: num(1.2)}}
		}, "analysis.minRequests: needs analysis.compare, whose requests query counts the canary's requests; add a comparison or remove minRequests"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := base()
			tt.mutate(p)
			err := p.Validate()
			if tt.want == "" {
				assert.NoError(t, err)
				return
			}
			assert.EqualError(t, err, tt.want)
		})
	}
}

func TestParseFillsComparisonDefaults(t *testing.T) {
	doc := `
steps: [{weight: 5, hold: 1m}]
analysis:
  prometheus: {url: "http://prometheus:9090"}
  compare:
  - name: errors
    requests: 'http_requests_total{pod=~"{{.Pods}}"}'
    errors: 'http_requests_total{pod=~"{{.Pods}}",code=~"5.."}'
  - name: timeouts
    requests: 'http_requests_total{pod=~"{{.Pods}}"}'
    errors: 'http_requests_total{pod=~"{{.Pods}}",code="504"}'
    tolerance: 0
    alpha: 0.05
`
	p, err := Parse([]byte(doc))
	require.NoError(t, err)
	assert.Equal(t, int32(100), p.Analysis.MinRequests, "a comparison brings the default minimum")
	assert.Equal(t, [2]float64{0.5, 0.01}, [2]float64{p.Analysis.Compare[0].Tolerance, p.Analysis.Compare[0].Alpha})
	assert.Equal(t, [2]float64{0, 0.05}, [2]float64{p.Analysis.Compare[1].Tolerance, p.Analysis.Compare[1].Alpha}, "written values are kept, 0 included")

	p, err = Parse([]byte(doc + "  minRequests: 0\n"))
	require.NoError(t, err)
	assert.Equal(t, int32(0), p.Analysis.MinRequests, "an explicit 0 is kept")

	_, err = Parse([]byte(doc + "  compare2: []\n"))
	assert.ErrorContains(t, err, "analysis.compare2: unknown field")
	_, err = Parse([]byte(strings.Replace(doc, "tolerance: 0", "tolerence: 0", 1)))
	assert.ErrorContains(t, err, "analysis.compare[1].tolerence: unknown field; allowed: name, requests, errors, tolerance, alpha")

	// The snapshot round-trips: the rollout annotation re-read is the same policy.
	j, err := json.Marshal(p)
	require.NoError(t, err)
	var back Policy
	require.NoError(t, json.Unmarshal(j, &back))
	assert.Equal(t, *p, back)
	assert.NoError(t, back.Validate())
}
