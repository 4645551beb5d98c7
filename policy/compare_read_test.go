package policy

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// errorsComparison counts the demo app's requests of web's pods.
var errorsComparison = Comparison{
	Name:      "errors",
	Requests:  `http_requests_total{namespace="{{.Namespace}}",pod=~"{{.Pods}}"}`,
	Errors:    `http_requests_total{namespace="{{.Namespace}}",pod=~"{{.Pods}}",code=~"5.."}`,
	Tolerance: 0.5, Alpha: 0.01,
}

// The queries errorsComparison renders to for web.
const (
	canaryRequestsQuery = `http_requests_total{namespace="shop",pod=~"web-7d4b9c8f6-[a-z0-9]{5}"}`
	canaryErrorsQuery   = `http_requests_total{namespace="shop",pod=~"web-7d4b9c8f6-[a-z0-9]{5}",code=~"5.."}`
	stableRequestsQuery = `http_requests_total{namespace="shop",pod=~"web-5f6c7b8d9-[a-z0-9]{5}"}`
	stableErrorsQuery   = `http_requests_total{namespace="shop",pod=~"web-5f6c7b8d9-[a-z0-9]{5}",code=~"5.."}`
)

// counter is one series of a counter query's answer.
func counter(pod, code string, v float64) *model.Sample {
	m := model.Metric{"__name__": "http_requests_total", "namespace": "shop", "code": model.LabelValue(code)}
	if pod != "" {
		m["pod"] = model.LabelValue(pod)
	}
	return &model.Sample{Metric: m, Value: model.SampleValue(v)}
}

// sums adds a reading's series by prefix.
func sums(r Reading) map[string]float64 {
	out := map[string]float64{}
	for k, v := range r.Series {
		out[k[:3]] += v
	}
	return out
}

func TestAnalyzeReadsComparisons(t *testing.T) {
	answers := map[string]model.Value{
		// Two canary pods, each with a series per code.
		canaryRequestsQuery: model.Vector{counter("web-7d4b9c8f6-aaaaa", "200", 90), counter("web-7d4b9c8f6-aaaaa", "500", 2), counter("web-7d4b9c8f6-bbbbb", "200", 40)},
		canaryErrorsQuery:   model.Vector{counter("web-7d4b9c8f6-aaaaa", "500", 2)},
		stableRequestsQuery: model.Vector{counter("web-5f6c7b8d9-ccccc", "200", 5000)},
		// No 5xx series on stable yet: no errors.
		stableErrorsQuery: model.Vector{},
	}
	src := sourceFunc(func(_ context.Context, q string) (model.Value, error) {
		v, ok := answers[q]
		if !ok {
			t.Errorf("unexpected query %q", q)
		}
		return v, nil
	})
	a := &Analysis{Interval: dur(15e9), Prometheus: Prometheus{URL: "http://prom:9090"}, Compare: []Comparison{errorsComparison}}

	e := answering(src).Analyze(t.Context(), a, web, evalTime)
	assert.Empty(t, e.Results)
	require.Len(t, e.Readings, 1)
	r := e.Readings[0]
	assert.Empty(t, r.Gap)
	assert.Len(t, r.Series, 5, "each series by its own key")
	assert.Equal(t, map[string]float64{"cr/": 132, "ce/": 2, "sr/": 5000}, sums(r))
	assert.Equal(t, 2, r.CanaryPods)

	t.Run("a sum across pods is refused, since it would hide a pod's counter reset", func(t *testing.T) {
		answers[canaryRequestsQuery] = model.Vector{counter("", "", 132)}
		e := answering(src).Analyze(t.Context(), a, web, evalTime)
		assert.Equal(t, Reading{Gap: "errors requests on canary pods returned a series without a pod label; return per-pod counters (no sum, or sum by (pod)): fledge adds them up itself, so that a restarted pod's counter reset stays that pod's"}, e.Readings[0])
	})
	t.Run("no canary requests yet is a reading without canary pods: Prometheus has not scraped them", func(t *testing.T) {
		answers[canaryRequestsQuery] = model.Vector{}
		e := answering(src).Analyze(t.Context(), a, web, evalTime)
		assert.Empty(t, e.Readings[0].Gap)
		assert.Equal(t, 0, e.Readings[0].CanaryPods)
		assert.Equal(t, map[string]float64{"ce/": 2, "sr/": 5000}, sums(e.Readings[0]))
	})
	t.Run("no stable requests is no data", func(t *testing.T) {
		answers[stableRequestsQuery] = model.Vector{}
		e := answering(src).Analyze(t.Context(), a, web, evalTime)
		assert.Equal(t, Reading{Gap: "no data for errors requests on stable pods", NoData: true}, e.Readings[0])
		answers[stableRequestsQuery] = model.Vector{counter("web-5f6c7b8d9-ccccc", "200", 5000)}
	})
	t.Run("a query Prometheus refuses is the reading's gap", func(t *testing.T) {
		failing := sourceFunc(func(context.Context, string) (model.Value, error) { return nil, errors.New("boom") })
		e := answering(failing).Analyze(t.Context(), a, web, evalTime)
		assert.Equal(t, Reading{Gap: "errors requests on canary pods: boom"}, e.Readings[0])
	})
	t.Run("a gap is the comparison's inconclusive result, and the step's minimum is not met", func(t *testing.T) {
		a := *a
		a.MinRequests = 100
		results, tallies := a.FoldComparisons(Evaluation{Readings: []Reading{{Gap: "no data for errors requests on canary pods", NoData: true}}}, nil, 0, time.Time{}, 0)
		assert.Equal(t, []CheckResult{
			{Check: "min-requests", Result: Inconclusive, Gathering: true, Value: ptrTo(0), Bound: 100, Op: ">=", Reason: "canary served 0 of the 100 requests a step needs (minRequests)"},
			{Check: "errors", Result: Inconclusive, Bound: 1.5, Op: "<=", Reason: "no data for errors requests on canary pods", NoData: true},
		}, results, "the minimum first, then the comparisons")
		assert.Equal(t, []Tally{{}}, tallies)
	})
	t.Run("a step's counts wait for a series of every canary pod", func(t *testing.T) {
		a := *a
		a.MinRequests = 100
		ready := time.Unix(1000, 0)
		one := Reading{CanaryPods: 1, Series: map[string]float64{"cr/x": 500, "sr/a": 5000}}
		results, tallies := a.FoldComparisons(Evaluation{At: ready, Readings: []Reading{one}}, []Tally{{Readings: 4, Series: map[string]float64{"cr/x": 400, "sr/a": 4000}}}, 1, ready, 2)
		assert.False(t, tallies[0].Based)
		assert.Equal(t, "waiting for Prometheus to report every canary pod before counting the step's requests: 1 of 2 have series", results[0].Reason)
		two := Reading{CanaryPods: 2, Series: map[string]float64{"cr/x": 600, "cr/y": 30, "sr/a": 6000}}
		_, tallies = a.FoldComparisons(Evaluation{At: ready.Add(2 * time.Second), Readings: []Reading{two}}, tallies, 1, ready, 2)
		assert.True(t, tallies[0].Based, "both pods have series: the step's counts begin")
		assert.Equal(t, Counts{Requests: 230}, tallies[0].Canary, "pod y, first seen, counts from 0")
	})
}
