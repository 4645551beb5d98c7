package policy

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// slow is the answer of a Prometheus that does not reply before the
// query's timeout.
const slow = "(slow)"

// capturedStatus is the HTTP status the real Prometheus sent with each
// capture in testdata/prometheus (see the README there).
func capturedStatus(name string) int {
	switch name {
	case "syntax-error":
		return http.StatusBadRequest
	case "exec-error":
		return http.StatusUnprocessableEntity
	case "timeout":
		return http.StatusServiceUnavailable
	}
	return http.StatusOK
}

// received is what the replay server was asked.
type received struct {
	Query, Time, Timeout string
}

// replay is a Prometheus HTTP API that answers each query with a body
// captured from a real Prometheus, and records what it was asked.
type replay struct {
	t       *testing.T
	answers map[string]string // rendered query → capture name or slow

	mu  sync.Mutex
	got []received
}

// newReplay starts a replay server for the test.
func newReplay(t *testing.T, answers map[string]string) (*replay, *httptest.Server) {
	p := &replay{t: t, answers: answers}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv
}

func (p *replay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/query" || r.ParseForm() != nil {
		p.t.Errorf("unexpected request %s %s", r.Method, r.URL)
		http.NotFound(w, r)
		return
	}
	got := received{Query: r.Form.Get("query"), Time: r.Form.Get("time"), Timeout: r.Form.Get("timeout")}
	p.mu.Lock()
	p.got = append(p.got, got)
	p.mu.Unlock()
	name, ok := p.answers[got.Query]
	switch {
	case !ok:
		p.t.Errorf("unexpected query %q", got.Query)
		http.NotFound(w, r)
	case name == slow:
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	default:
		p.answer(w, name)
	}
}

// answer writes a capture with the status Prometheus sent it with.
func (p *replay) answer(w http.ResponseWriter, name string) {
	body, err := os.ReadFile(filepath.Join("testdata", "prometheus", name+".json"))
	if err != nil {
		p.t.Errorf("reading capture: %v", err)
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(capturedStatus(name))
	_, _ = w.Write(body)
}

// received returns the queries asked so far.
func (p *replay) received() []received {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]received(nil), p.got...)
}

// The subject of the tests: Deployment web in namespace shop, its canary
// ReplicaSet web-7d4b9c8f6 and its stable one web-5f6c7b8d9.
var web = Subject{
	Namespace:  "shop",
	Deployment: "web",
	CanaryPods: PodsRegex("web-7d4b9c8f6"),
	StablePods: PodsRegex("web-5f6c7b8d9"),
}

// evalTime is the evaluation time of the tests; Prometheus receives it as
// "time".
var evalTime = time.Unix(1764096000, 0)

// Checks of the tests and the queries they render to for web.
const (
	canaryErrorQuery = `sum(rate(http_requests_total{namespace="shop",pod=~"web-7d4b9c8f6-[a-z0-9]{5}",code=~"5.."}[1m]))
/ sum(rate(http_requests_total{namespace="shop",pod=~"web-7d4b9c8f6-[a-z0-9]{5}"}[1m]))
`
	canaryLatencyQuery = `histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{pod=~"web-7d4b9c8f6-[a-z0-9]{5}"}[1m])))`
	stableLatencyQuery = `histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{pod=~"web-5f6c7b8d9-[a-z0-9]{5}"}[1m])))`

	successQuery       = `success_ratio{namespace="{{.Namespace}}",deployment="{{.Deployment}}",track="{{.Track}}",pod=~"{{.Pods}}"}`
	canarySuccessQuery = `success_ratio{namespace="shop",deployment="web",track="canary",pod=~"web-7d4b9c8f6-[a-z0-9]{5}"}`
	stableSuccessQuery = `success_ratio{namespace="shop",deployment="web",track="stable",pod=~"web-5f6c7b8d9-[a-z0-9]{5}"}`
)

var (
	errorRate  = Check{Name: "error-rate", Query: errorQuery, Max: num(0.01)}
	p99Latency = Check{Name: "p99-latency", Query: latencyQuery, MaxRatio: num(1.2)}
	success    = Check{Name: "success-rate", Query: successQuery, Min: num(0.99)}
)

// analysisOf is an analysis of the given checks against a Prometheus URL,
// evaluated every 15s (queries time out after 7.5s).
func analysisOf(url string, checks ...Check) *Analysis {
	return &Analysis{Interval: dur(15 * time.Second), FailureLimit: 1, NoDataLimit: 4, Prometheus: Prometheus{URL: url}, Checks: checks}
}

// asked is a query the replay server should receive with the 15s interval.
func asked(query string) received {
	return received{Query: query, Time: "1764096000", Timeout: "7.5s"}
}

func TestAnalyzeAgainstRecordedPrometheusAnswers(t *testing.T) {
	tests := []struct {
		name    string
		checks  []Check
		answers map[string]string
		want    []CheckResult
		asked   []received
	}{
		{
			name:    "a canary value above max fails the check",
			checks:  []Check{errorRate},
			answers: map[string]string{canaryErrorQuery: "one-sample"},
			want:    []CheckResult{{Check: "error-rate", Result: Fail, Value: num(0.072), Bound: 0.01, Op: "<=", Reason: "error-rate 0.072 > 0.01"}},
			asked:   []received{asked(canaryErrorQuery)},
		},
		{
			name:    "a canary value under max passes the check",
			checks:  []Check{{Name: "error-rate", Query: errorQuery, Max: num(0.1)}},
			answers: map[string]string{canaryErrorQuery: "one-sample"},
			want:    []CheckResult{{Check: "error-rate", Result: Pass, Value: num(0.072), Bound: 0.1, Op: "<=", Reason: "error-rate 0.072 <= 0.1"}},
			asked:   []received{asked(canaryErrorQuery)},
		},
		{
			name:    "a canary value below min fails the check",
			checks:  []Check{success},
			answers: map[string]string{canarySuccessQuery: "success-rate"},
			want:    []CheckResult{{Check: "success-rate", Result: Fail, Value: num(0.91), Bound: 0.99, Op: ">=", Reason: "success-rate 0.91 < 0.99"}},
			asked:   []received{asked(canarySuccessQuery)},
		},
		{
			name:    "a scalar answer is read like a one-sample vector",
			checks:  []Check{{Name: "success-rate", Query: successQuery, Min: num(0.9)}},
			answers: map[string]string{canarySuccessQuery: "scalar"},
			want:    []CheckResult{{Check: "success-rate", Result: Pass, Value: num(0.91), Bound: 0.9, Op: ">=", Reason: "success-rate 0.91 >= 0.9"}},
			asked:   []received{asked(canarySuccessQuery)},
		},
		{
			name:    "maxRatio divides the canary's value by the stable pods' and fails above the bound",
			checks:  []Check{p99Latency},
			answers: map[string]string{canaryLatencyQuery: "canary-latency", stableLatencyQuery: "stable"},
			want:    []CheckResult{{Check: "p99-latency", Result: Fail, Value: num(3.02), Bound: 1.2, Op: "<=", Reason: "p99-latency 3.02× stable > 1.2×"}},
			asked:   []received{asked(canaryLatencyQuery), asked(stableLatencyQuery)},
		},
		{
			name:    "maxRatio passes a canary faster than stable, the ratio shown to three digits",
			checks:  []Check{p99Latency},
			answers: map[string]string{canaryLatencyQuery: "stable", stableLatencyQuery: "canary-latency"},
			want:    []CheckResult{{Check: "p99-latency", Result: Pass, Value: num(0.5 / 1.51), Bound: 1.2, Op: "<=", Reason: "p99-latency 0.331× stable <= 1.2×"}},
			asked:   []received{asked(canaryLatencyQuery), asked(stableLatencyQuery)},
		},
		{
			name:    "maxRatio renders the stable query with track stable and the stable pods",
			checks:  []Check{{Name: "success-ratio", Query: successQuery, MaxRatio: num(2)}},
			answers: map[string]string{canarySuccessQuery: "canary-latency", stableSuccessQuery: "stable"},
			want:    []CheckResult{{Check: "success-ratio", Result: Fail, Value: num(3.02), Bound: 2, Op: "<=", Reason: "success-ratio 3.02× stable > 2×"}},
			asked:   []received{asked(canarySuccessQuery), asked(stableSuccessQuery)},
		},
		{
			name:    "a stable value of 0 makes maxRatio inconclusive",
			checks:  []Check{p99Latency},
			answers: map[string]string{canaryLatencyQuery: "canary-latency", stableLatencyQuery: "zero"},
			want: []CheckResult{{Check: "p99-latency", Result: Inconclusive, Bound: 1.2, Op: "<=",
				Reason: "p99-latency on stable pods is 0; a ratio needs a stable value above 0"}},
			asked: []received{asked(canaryLatencyQuery), asked(stableLatencyQuery)},
		},
		{
			name:    "no stable data makes maxRatio inconclusive",
			checks:  []Check{p99Latency},
			answers: map[string]string{canaryLatencyQuery: "canary-latency", stableLatencyQuery: "empty"},
			want:    []CheckResult{{Check: "p99-latency", Result: Inconclusive, Bound: 1.2, Op: "<=", Reason: "no data for p99-latency on stable pods", NoData: true}},
			asked:   []received{asked(canaryLatencyQuery), asked(stableLatencyQuery)},
		},
		{
			name:    "no canary data makes maxRatio inconclusive without asking for stable",
			checks:  []Check{p99Latency},
			answers: map[string]string{canaryLatencyQuery: "empty"},
			want:    []CheckResult{{Check: "p99-latency", Result: Inconclusive, Bound: 1.2, Op: "<=", Reason: "no data for p99-latency", NoData: true}},
			asked:   []received{asked(canaryLatencyQuery)},
		},
		{
			name:    "an empty vector is no data, never a pass",
			checks:  []Check{errorRate},
			answers: map[string]string{canaryErrorQuery: "empty"},
			want:    []CheckResult{{Check: "error-rate", Result: Inconclusive, Bound: 0.01, Op: "<=", Reason: "no data for error-rate", NoData: true}},
			asked:   []received{asked(canaryErrorQuery)},
		},
		{
			name:    "several series are inconclusive and the reason says to aggregate",
			checks:  []Check{errorRate},
			answers: map[string]string{canaryErrorQuery: "multi-series"},
			want: []CheckResult{{Check: "error-rate", Result: Inconclusive, Bound: 0.01, Op: "<=",
				Reason: "error-rate returned 2 series; aggregate the query (for example with sum())"}},
			asked: []received{asked(canaryErrorQuery)},
		},
		{
			name:    "NaN is inconclusive",
			checks:  []Check{errorRate},
			answers: map[string]string{canaryErrorQuery: "nan"},
			want:    []CheckResult{{Check: "error-rate", Result: Inconclusive, Bound: 0.01, Op: "<=", Reason: "error-rate is NaN"}},
			asked:   []received{asked(canaryErrorQuery)},
		},
		{
			name:    "+Inf is inconclusive, not a failure",
			checks:  []Check{errorRate},
			answers: map[string]string{canaryErrorQuery: "inf"},
			want:    []CheckResult{{Check: "error-rate", Result: Inconclusive, Bound: 0.01, Op: "<=", Reason: "error-rate is +Inf"}},
			asked:   []received{asked(canaryErrorQuery)},
		},
		{
			name:    "-Inf is inconclusive, not a pass",
			checks:  []Check{errorRate},
			answers: map[string]string{canaryErrorQuery: "neginf"},
			want:    []CheckResult{{Check: "error-rate", Result: Inconclusive, Bound: 0.01, Op: "<=", Reason: "error-rate is -Inf"}},
			asked:   []received{asked(canaryErrorQuery)},
		},
		{
			name:    "a NaN on the stable side is inconclusive and says which side",
			checks:  []Check{p99Latency},
			answers: map[string]string{canaryLatencyQuery: "canary-latency", stableLatencyQuery: "nan"},
			want:    []CheckResult{{Check: "p99-latency", Result: Inconclusive, Bound: 1.2, Op: "<=", Reason: "p99-latency on stable pods is NaN"}},
			asked:   []received{asked(canaryLatencyQuery), asked(stableLatencyQuery)},
		},
		{
			name:    "a range vector is inconclusive",
			checks:  []Check{errorRate},
			answers: map[string]string{canaryErrorQuery: "matrix"},
			want: []CheckResult{{Check: "error-rate", Result: Inconclusive, Bound: 0.01, Op: "<=",
				Reason: "error-rate returned a matrix; the query must return one number, an instant vector of one series or a scalar"}},
			asked: []received{asked(canaryErrorQuery)},
		},
		{
			name:    "a query Prometheus cannot parse is inconclusive with Prometheus's own words",
			checks:  []Check{errorRate},
			answers: map[string]string{canaryErrorQuery: "syntax-error"},
			want: []CheckResult{{Check: "error-rate", Result: Inconclusive, Bound: 0.01, Op: "<=",
				Reason: `error-rate: query failed: bad_data: invalid parameter "query": 1:33: parse error: unclosed left parenthesis`}},
			asked: []received{asked(canaryErrorQuery)},
		},
		{
			name:    "a query that fails to execute is inconclusive",
			checks:  []Check{errorRate},
			answers: map[string]string{canaryErrorQuery: "exec-error"},
			want: []CheckResult{{Check: "error-rate", Result: Inconclusive, Bound: 0.01, Op: "<=",
				Reason: `error-rate: query failed: execution: found duplicate series for the match group {} on the right hand-side of the operation: [{b="1"}, {b="2"}];many-to-many matching not allowed: matching labels must be unique on one side`}},
			asked: []received{asked(canaryErrorQuery)},
		},
		{
			name:    "a query that times out inside Prometheus is inconclusive with the reason from the 503 body",
			checks:  []Check{errorRate},
			answers: map[string]string{canaryErrorQuery: "timeout"},
			want: []CheckResult{{Check: "error-rate", Result: Inconclusive, Bound: 0.01, Op: "<=",
				Reason: "error-rate: query failed: timeout: query timed out in expression evaluation"}},
			asked: []received{asked(canaryErrorQuery)},
		},
		{
			name:   "every check is evaluated and reported in policy order",
			checks: []Check{errorRate, p99Latency, success},
			answers: map[string]string{
				canaryErrorQuery:   "one-sample",
				canaryLatencyQuery: "canary-latency", stableLatencyQuery: "stable",
				canarySuccessQuery: "empty",
			},
			want: []CheckResult{
				{Check: "error-rate", Result: Fail, Value: num(0.072), Bound: 0.01, Op: "<=", Reason: "error-rate 0.072 > 0.01"},
				{Check: "p99-latency", Result: Fail, Value: num(3.02), Bound: 1.2, Op: "<=", Reason: "p99-latency 3.02× stable > 1.2×"},
				{Check: "success-rate", Result: Inconclusive, Bound: 0.99, Op: ">=", Reason: "no data for success-rate", NoData: true},
			},
			asked: []received{asked(canaryErrorQuery), asked(canaryLatencyQuery), asked(stableLatencyQuery), asked(canarySuccessQuery)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prom, srv := newReplay(t, tt.answers)
			got := NewAnalyzer(nil).Analyze(t.Context(), analysisOf(srv.URL, tt.checks...), web, evalTime)
			assert.Equal(t, Evaluation{At: evalTime, Results: tt.want}, got)
			assert.ElementsMatch(t, tt.asked, prom.received())
		})
	}
}

func TestAnalyzeGivesUpOnASlowPrometheusAfterHalfTheInterval(t *testing.T) {
	prom, srv := newReplay(t, map[string]string{canaryErrorQuery: slow, canarySuccessQuery: "success-rate"})
	a := analysisOf(srv.URL, errorRate, success)
	a.Interval = dur(2 * time.Second)
	got := NewAnalyzer(nil).Analyze(t.Context(), a, web, evalTime)
	assert.Equal(t, []CheckResult{
		{Check: "error-rate", Result: Inconclusive, Bound: 0.01, Op: "<=", Reason: "error-rate: prometheus did not answer within 1s"},
		{Check: "success-rate", Result: Fail, Value: num(0.91), Bound: 0.99, Op: ">=", Reason: "success-rate 0.91 < 0.99"},
	}, got.Results)
	assert.ElementsMatch(t, []received{
		{Query: canaryErrorQuery, Time: "1764096000", Timeout: "1s"},
		{Query: canarySuccessQuery, Time: "1764096000", Timeout: "1s"},
	}, prom.received())
}

func TestAnalyzeCallsAnUnreachablePrometheusInconclusive(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	got := NewAnalyzer(nil).Analyze(t.Context(), analysisOf(srv.URL, errorRate, p99Latency), web, evalTime)
	refused := "prometheus unreachable: dial tcp " + u.Host + ": connect: connection refused"
	assert.Equal(t, []CheckResult{
		{Check: "error-rate", Result: Inconclusive, Bound: 0.01, Op: "<=", Reason: "error-rate: " + refused},
		{Check: "p99-latency", Result: Inconclusive, Bound: 1.2, Op: "<=", Reason: "p99-latency: " + refused},
	}, got.Results)
}

func TestAnalyzeKeepsOneSourcePerURL(t *testing.T) {
	_, first := newReplay(t, map[string]string{canaryErrorQuery: "one-sample"})
	_, second := newReplay(t, map[string]string{canaryErrorQuery: "empty"})
	var made atomic.Int32
	z := NewAnalyzer(func(url string) (Source, error) {
		made.Add(1)
		return NewPrometheusSource(url)
	})
	var wg sync.WaitGroup
	results := make([]string, 6)
	for i := range results {
		url := first.URL
		if i%2 == 1 {
			url = second.URL
		}
		wg.Go(func() {
			results[i] = z.Analyze(t.Context(), analysisOf(url, errorRate), web, evalTime).Results[0].Reason
		})
	}
	wg.Wait()
	assert.Equal(t, int32(2), made.Load())
	for i, reason := range results {
		want := "error-rate 0.072 > 0.01"
		if i%2 == 1 {
			want = "no data for error-rate"
		}
		assert.Equal(t, want, reason, "evaluation %d", i)
	}
}

// sourceFunc is a Source written as a function.
type sourceFunc func(ctx context.Context, query string) (model.Value, error)

func (f sourceFunc) Query(ctx context.Context, query string, _ time.Time, _ ...v1.Option) (model.Value, v1.Warnings, v1.Infos, error) {
	v, err := f(ctx, query)
	return v, nil, nil, err
}

// answering is an Analyzer whose every Prometheus is src.
func answering(src Source) *Analyzer {
	return NewAnalyzer(func(string) (Source, error) { return src, nil })
}

func TestAnalyzeEdgeCases(t *testing.T) {
	sample := sourceFunc(func(context.Context, string) (model.Value, error) {
		return model.Vector{{Value: 0.004}}, nil
	})
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name     string
		analyzer *Analyzer
		ctx      context.Context
		analysis *Analysis
		want     []CheckResult
	}{
		{
			name:     "a nil analysis has no checks to evaluate",
			analyzer: answering(sample),
			ctx:      t.Context(),
			analysis: nil,
			want:     nil,
		},
		{
			name:     "a Prometheus URL that is not one makes every check inconclusive",
			analyzer: NewAnalyzer(nil),
			ctx:      t.Context(),
			analysis: analysisOf("prometheus:9090", errorRate, success),
			want: []CheckResult{
				{Check: "error-rate", Result: Inconclusive, Bound: 0.01, Op: "<=", Reason: `error-rate: prometheus url "prometheus:9090" is not an absolute http(s) URL`},
				{Check: "success-rate", Result: Inconclusive, Bound: 0.99, Op: ">=", Reason: `success-rate: prometheus url "prometheus:9090" is not an absolute http(s) URL`},
			},
		},
		{
			name:     "a source constructor returning nothing is an error, not a panic",
			analyzer: NewAnalyzer(func(string) (Source, error) { return nil, nil }),
			ctx:      t.Context(),
			analysis: analysisOf("http://prom:9090", errorRate),
			want:     []CheckResult{{Check: "error-rate", Result: Inconclusive, Bound: 0.01, Op: "<=", Reason: `error-rate: prometheus url "http://prom:9090": no client`}},
		},
		{
			name:     "a cancelled evaluation is inconclusive",
			analyzer: answering(sourceFunc(func(ctx context.Context, _ string) (model.Value, error) { return nil, ctx.Err() })),
			ctx:      cancelled,
			analysis: analysisOf("http://prom:9090", errorRate),
			want:     []CheckResult{{Check: "error-rate", Result: Inconclusive, Bound: 0.01, Op: "<=", Reason: "error-rate: evaluation cancelled: context canceled"}},
		},
		{
			name:     "a nil context is inconclusive, not a panic",
			analyzer: answering(sample),
			ctx:      nil,
			analysis: analysisOf("http://prom:9090", errorRate),
			want:     []CheckResult{{Check: "error-rate", Result: Inconclusive, Bound: 0.01, Op: "<=", Reason: "error-rate: evaluated without a context"}},
		},
		{
			name:     "a check with two thresholds is inconclusive rather than judged by a guess",
			analyzer: answering(sample),
			ctx:      t.Context(),
			analysis: analysisOf("http://prom:9090", Check{Name: "x", Query: "up", Max: num(1), Min: num(0)}),
			want:     []CheckResult{{Check: "x", Result: Inconclusive, Reason: "check x must set exactly one finite max, min or maxRatio"}},
		},
		{
			name:     "a query that does not render is inconclusive with the template error",
			analyzer: answering(sample),
			ctx:      t.Context(),
			analysis: analysisOf("http://prom:9090", Check{Name: "error-rate", Query: `up{app="{{.App}}"}`, Max: num(0.01)}),
			want: []CheckResult{{Check: "error-rate", Result: Inconclusive, Bound: 0.01, Op: "<=",
				Reason: "check error-rate: template uses unknown variable .App; allowed: .Namespace, .Deployment, .Track, .Pods"}},
		},
		{
			name: "an error of several lines is folded into one and cut",
			analyzer: answering(sourceFunc(func(context.Context, string) (model.Value, error) {
				return nil, errors.New("first line\n\tsecond line " + strings.Repeat("x", 400))
			})),
			ctx:      t.Context(),
			analysis: analysisOf("http://prom:9090", errorRate),
			want: []CheckResult{{Check: "error-rate", Result: Inconclusive, Bound: 0.01, Op: "<=",
				Reason: "error-rate: first line second line " + strings.Repeat("x", 300-len("first line second line ")) + "…"}},
		},
		{
			name: "a nil scalar is no data",
			analyzer: answering(sourceFunc(func(context.Context, string) (model.Value, error) {
				return (*model.Scalar)(nil), nil
			})),
			ctx:      t.Context(),
			analysis: analysisOf("http://prom:9090", errorRate),
			want:     []CheckResult{{Check: "error-rate", Result: Inconclusive, Bound: 0.01, Op: "<=", Reason: "no data for error-rate", NoData: true}},
		},
		{
			name: "a ratio that overflows is inconclusive",
			analyzer: answering(sourceFunc(func(_ context.Context, q string) (model.Value, error) {
				if strings.Contains(q, "7d4b9c8f6") {
					return model.Vector{{Value: 1e308}}, nil
				}
				return model.Vector{{Value: 1e-10}}, nil
			})),
			ctx:      t.Context(),
			analysis: analysisOf("http://prom:9090", p99Latency),
			want: []CheckResult{{Check: "p99-latency", Result: Inconclusive, Bound: 1.2, Op: "<=",
				Reason: "p99-latency ratio 1e+308 / 1e-10 is not a finite number"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.analyzer.Analyze(tt.ctx, tt.analysis, web, evalTime)
			assert.Equal(t, Evaluation{At: evalTime, Results: tt.want}, got)
		})
	}
}

func TestAnalyzeOnANilAnalyzerUsesPrometheus(t *testing.T) {
	_, srv := newReplay(t, map[string]string{canaryErrorQuery: "one-sample"})
	var z *Analyzer
	got := z.Analyze(t.Context(), analysisOf(srv.URL, errorRate), web, evalTime)
	assert.Equal(t, "error-rate 0.072 > 0.01", got.Results[0].Reason)
}

func TestQueryTimeout(t *testing.T) {
	tests := []struct {
		name     string
		interval time.Duration
		want     time.Duration
	}{
		{"half the interval", 15 * time.Second, 7500 * time.Millisecond},
		{"at least one second", time.Second, time.Second},
		{"at least one second without an interval", 0, time.Second},
		{"at most ten seconds", time.Minute, 10 * time.Second},
		{"ten seconds at a 20s interval", 20 * time.Second, 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, queryTimeout(tt.interval))
		})
	}
}

func TestNewPrometheusSourceRefusesWhatIsNotAnHTTPURL(t *testing.T) {
	for _, u := range []string{"", "prometheus:9090", "ftp://prom:21", "http://", "://x"} {
		_, err := NewPrometheusSource(u)
		assert.EqualError(t, err, `prometheus url "`+u+`" is not an absolute http(s) URL`)
	}
	src, err := NewPrometheusSource("https://prom.example.com/prometheus")
	assert.NoError(t, err)
	assert.NotNil(t, src)
}
