package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// Query timeouts: half the interval, so that a check's two queries (canary
// and stable, for maxRatio) fit in one interval, but at most 10s, because a
// Prometheus that takes longer is in trouble and waiting longer only
// delays the rollback, and at least 1s, because a healthy Prometheus
// answers a simple query in milliseconds but a busy one needs a moment.
const (
	minQueryTimeout = time.Second
	maxQueryTimeout = 10 * time.Second
)

// maxReasonDetail bounds the Prometheus or network text quoted in a reason,
// which ends up in Events and status output.
const maxReasonDetail = 300

// Analyze evaluates every check of a once, at time at, against the canary
// pods of s (and the stable pods, for maxRatio checks). Checks run
// concurrently; the results are in the policy's order. Analyze returns no
// error: a query that cannot be rendered, a Prometheus that cannot be
// reached, errs or is slow, and an answer that is not one finite number are
// all Inconclusive results whose Reason says why, because to the rollout
// they mean the same thing, missing evidence. A nil a has no checks.
func (z *Analyzer) Analyze(ctx context.Context, a *Analysis, s Subject, at time.Time) Evaluation {
	e := Evaluation{At: at}
	if a == nil || len(a.Checks)+len(a.Compare) == 0 {
		return e
	}
	if z == nil {
		z = &Analyzer{}
	}
	src, srcErr := z.source(a.Prometheus.URL)
	q := querier{src: src, timeout: queryTimeout(a.Interval.Duration), at: at}
	e.Results = make([]CheckResult, len(a.Checks))
	var wg sync.WaitGroup
	for i, c := range a.Checks {
		wg.Go(func() {
			if srcErr != nil {
				e.Results[i] = inconclusive(c, c.Name+": "+srcErr.Error())
				return
			}
			e.Results[i] = q.check(ctx, c, s)
		})
	}
	if len(a.Compare) > 0 {
		e.Readings = make([]Reading, len(a.Compare))
	}
	for i, c := range a.Compare {
		wg.Go(func() {
			if srcErr != nil {
				e.Readings[i] = Reading{Gap: c.Name + ": " + srcErr.Error()}
				return
			}
			e.Readings[i] = q.read(ctx, c, s)
		})
	}
	wg.Wait()
	return e
}

// read reads a comparison's four counters: requests and errors, on the
// canary and on the stable pods. The first that gives no answer is the
// reading's gap. Errors may be absent (many applications create a 5xx
// series only at the first error): that is 0 errors. The canary's requests
// may be absent too: its pods are new, and Prometheus finds and scrapes
// them seconds after they start, which the step waits for (CanaryPods; a
// query that never matches keeps the step from passing). The stable pods'
// requests may not: they served before the rollout.
func (q querier) read(ctx context.Context, c Comparison, s Subject) Reading {
	r := Reading{Series: map[string]float64{}}
	if ctx == nil {
		return Reading{Gap: c.Name + ": evaluated without a context"}
	}
	for _, side := range []struct {
		prefix, query, what string
		track, pods         string
		required            bool
	}{
		{canaryRequests, c.Requests, "requests", TrackCanary, s.CanaryPods, false},
		{canaryErrors, c.Errors, "errors", TrackCanary, s.CanaryPods, false},
		{stableRequests, c.Requests, "requests", TrackStable, s.StablePods, true},
		{stableErrors, c.Errors, "errors", TrackStable, s.StablePods, false},
	} {
		subject := c.Name + " " + side.what + " on " + side.track + " pods"
		vars := QueryVars{Namespace: s.Namespace, Deployment: s.Deployment, Track: side.track, Pods: side.pods}
		series, g := q.series(ctx, side.query, c.Name, vars, subject)
		if g == nil && len(series.values) == 0 && side.required {
			g = noDataFor(subject)
		}
		if g != nil {
			return Reading{Gap: g.reason, NoData: g.noData}
		}
		for fp, v := range series.values {
			r.Series[side.prefix+fp] = v
		}
		if side.prefix == canaryRequests {
			r.CanaryPods = series.pods
		}
	}
	return r
}

// counterSeries are the values of a counter query's series, by the
// fingerprint of their labels, and how many pods they are of.
type counterSeries struct {
	values map[string]float64
	pods   int
}

// series runs a counter query and returns each series' value by the
// fingerprint of its labels. Every series must carry a pod label: a sum
// across pods would turn one pod's counter reset into a drop of the sum.
func (q querier) series(ctx context.Context, tmpl, name string, vars QueryVars, subject string) (counterSeries, *gap) {
	var none counterSeries
	query, err := render(tmpl, vars)
	if err != nil {
		return none, because(name + ": " + err.Error())
	}
	v, g := q.run(ctx, query, subject)
	if g != nil {
		return none, g
	}
	vec, ok := v.(model.Vector)
	if !ok {
		if v == nil {
			return none, nil
		}
		return none, because(fmt.Sprintf("%s returned a %s; a counter query must return an instant vector, one series per pod", subject, v.Type()))
	}
	out := counterSeries{values: make(map[string]float64, len(vec))}
	pods := map[model.LabelValue]bool{}
	for _, sample := range vec {
		if sample.Metric["pod"] == "" {
			return none, because(subject + " returned a series without a pod label; return per-pod counters (no sum, or sum by (pod)): fledge adds them up itself, so that a restarted pod's counter reset stays that pod's")
		}
		out.values[sample.Metric.Fingerprint().String()] = float64(sample.Value)
		pods[sample.Metric["pod"]] = true
	}
	out.pods = len(pods)
	return out, nil
}

// queryTimeout is min(interval/2, 10s), at least 1s.
func queryTimeout(interval time.Duration) time.Duration {
	return min(max(interval/2, minQueryTimeout), maxQueryTimeout)
}

// querier runs one evaluation's queries.
type querier struct {
	src     Source
	timeout time.Duration
	at      time.Time
}

// check evaluates one check: the canary's value against max or min, or
// canary / stable against maxRatio.
func (q querier) check(ctx context.Context, c Check, s Subject) CheckResult {
	t, ok := thresholdOf(c)
	if !ok {
		return inconclusive(c, "check "+c.Name+" must set exactly one finite max, min or maxRatio")
	}
	if ctx == nil {
		return inconclusive(c, c.Name+": evaluated without a context")
	}
	r := CheckResult{Check: c.Name, Bound: t.bound, Op: t.op()}
	canary, why := q.value(ctx, c, QueryVars{Namespace: s.Namespace, Deployment: s.Deployment, Track: TrackCanary, Pods: s.CanaryPods})
	if why != nil {
		return withGap(r, *why)
	}
	if t.kind != thresholdMaxRatio {
		return t.judge(r, c.Name, canary)
	}
	stable, why := q.value(ctx, c, QueryVars{Namespace: s.Namespace, Deployment: s.Deployment, Track: TrackStable, Pods: s.StablePods})
	if why != nil {
		return withGap(r, *why)
	}
	return judgeRatio(r, t, c.Name, canary, stable)
}

// judgeRatio holds canary / stable to a maxRatio. A stable value of 0 or
// below gives no meaningful ratio (0 would make any canary infinitely
// worse, a negative one flips the comparison), so it is inconclusive.
func judgeRatio(r CheckResult, t threshold, name string, canary, stable float64) CheckResult {
	if stable <= 0 {
		return withReason(r, fmt.Sprintf("%s on stable pods is %s; a ratio needs a stable value above 0", name, formatFloat(stable)))
	}
	ratio := canary / stable
	if !finite(ratio) {
		return withReason(r, fmt.Sprintf("%s ratio %s / %s is not a finite number", name, formatFloat(canary), formatFloat(stable)))
	}
	return t.judge(r, name, ratio)
}

// value renders the check's query for one side, runs it with the query
// timeout, and reads one finite number from the answer. It returns either
// the number or, when there is none, why.
func (q querier) value(ctx context.Context, c Check, vars QueryVars) (float64, *gap) {
	subject := c.Name
	if vars.Track == TrackStable {
		subject += " on stable pods"
	}
	query, err := c.Render(vars)
	if err != nil {
		return 0, because(err.Error())
	}
	v, g := q.run(ctx, query, subject)
	if g != nil {
		return 0, g
	}
	return single(v, subject)
}

// run asks Prometheus one rendered query at the evaluation's time, within
// the query timeout; a query that gets no answer is a gap that says why,
// for subject.
func (q querier) run(ctx context.Context, query, subject string) (model.Value, *gap) {
	qctx, cancel := context.WithTimeout(ctx, q.timeout)
	defer cancel()
	// The same timeout goes to Prometheus, so that it stops evaluating a
	// query nobody waits for any more.
	v, _, _, err := q.src.Query(qctx, query, q.at, v1.WithTimeout(q.timeout))
	if err != nil {
		return nil, because(subject + ": " + describeQueryError(ctx, err, q.timeout))
	}
	return v, nil
}

// single reads the one finite number a check's query must return: a scalar
// or a vector of exactly one sample. Warnings and infos that came with the
// answer are not read: the value is what counts.
func single(v model.Value, subject string) (float64, *gap) {
	var f float64
	switch v := v.(type) {
	case *model.Scalar:
		if v == nil {
			return 0, noDataFor(subject)
		}
		f = float64(v.Value)
	case model.Vector:
		switch len(v) {
		case 0:
			return 0, noDataFor(subject)
		case 1:
			f = float64(v[0].Value)
		default:
			return 0, because(fmt.Sprintf("%s returned %d series; aggregate the query (for example with sum())", subject, len(v)))
		}
	case nil:
		return 0, noDataFor(subject)
	default:
		return 0, because(fmt.Sprintf("%s returned a %s; the query must return one number, an instant vector of one series or a scalar", subject, v.Type()))
	}
	if !finite(f) {
		return 0, because(subject + " is " + formatFloat(f))
	}
	return f, nil
}

// gap is why a query gave no number: the reason, in a person's words, and
// whether the query found no series at all (noData), which the result
// carries as CheckResult.NoData so that Judge need not read the words.
type gap struct {
	reason string
	noData bool
}

// because is a gap other than absence.
func because(reason string) *gap { return &gap{reason: reason} }

// noDataFor is the gap of a query that found no series.
func noDataFor(subject string) *gap {
	return &gap{reason: "no data for " + subject, noData: true}
}

// describeQueryError says in one line why a query got no answer: too slow,
// cancelled, refused by Prometheus, or Prometheus not reached.
func describeQueryError(ctx context.Context, err error, timeout time.Duration) string {
	if ctx.Err() != nil {
		return "evaluation cancelled: " + ctx.Err().Error()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "prometheus did not answer within " + formatDuration(timeout)
	}
	var apiErr *v1.Error
	if errors.As(err, &apiErr) {
		return "query failed: " + oneLine(apiErrorText(apiErr))
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return "prometheus unreachable: " + oneLine(urlErr.Err.Error())
	}
	return oneLine(err.Error())
}

// apiErrorText is "<errorType>: <error>" as Prometheus wrote it. For 5xx
// answers (Prometheus's own timeouts and cancellations are 503s) the client
// reports only the status code, so the body is read when it is a Prometheus
// error document.
func apiErrorText(e *v1.Error) string {
	var body struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
	}
	if e.Type == v1.ErrServer && json.Unmarshal([]byte(e.Detail), &body) == nil && body.Status == "error" && body.Error != "" {
		return body.ErrorType + ": " + body.Error
	}
	return string(e.Type) + ": " + e.Msg
}

// oneLine folds whitespace, newlines included, and cuts text longer than
// maxReasonDetail, so that a reason stays one readable line.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if runes := []rune(s); len(runes) > maxReasonDetail {
		return string(runes[:maxReasonDetail]) + "…"
	}
	return s
}

// inconclusive is a check that could not be evaluated at all.
func inconclusive(c Check, reason string) CheckResult {
	r := CheckResult{Check: c.Name}
	if t, ok := thresholdOf(c); ok {
		r.Bound, r.Op = t.bound, t.op()
	}
	return withReason(r, reason)
}

// withGap marks r inconclusive for the reason g gives, NoData included.
func withGap(r CheckResult, g gap) CheckResult {
	r = withReason(r, g.reason)
	r.NoData = g.noData
	return r
}

// withReason marks r inconclusive, without a value.
func withReason(r CheckResult, reason string) CheckResult {
	r.Result = Inconclusive
	r.Value = nil
	r.Reason = reason
	return r
}
