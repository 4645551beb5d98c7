package policy

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Reading is what one evaluation read of a comparison's counters: the value
// of every series its requests and errors queries returned, on the canary
// and on the stable pods. Keys are a side and query prefix (SeriesKey)
// followed by a hash of the series' labels.
type Reading struct {
	Series map[string]float64
	// CanaryPods is how many canary pods the canary's requests query
	// returned series for.
	CanaryPods int
	// Gap, when set, is why there is no reading; the comparison is then
	// inconclusive for that reason. NoData marks a gap of plain absence.
	Gap    string
	NoData bool
}

// The prefixes of Reading and Tally keys: which side, which query.
const (
	canaryRequests = "cr/"
	canaryErrors   = "ce/"
	stableRequests = "sr/"
	stableErrors   = "se/"
)

// Tally is what a comparison counted of one attempt: every request and
// error its canary and stable pods served since the attempt's first
// reading, the test's evidence, and each counter series' last value. It is
// kept in the canary's evidence annotation and carried from step to step.
type Tally struct {
	Canary Counts `json:"canary"`
	Stable Counts `json:"stable"`
	// LogLR is the log-likelihood ratio of every alternative of the test
	// (sequential.go), over the attempt.
	LogLR []float64 `json:"logLR,omitempty"`
	// Step is the step the step counts are for, once Based; StepCanary
	// and StepStable are the requests counted before the step's counts
	// began, so that a step's own counts are the totals minus them.
	Step       int32   `json:"step"`
	Based      bool    `json:"based,omitempty"`
	StepCanary float64 `json:"stepCanary"`
	StepStable float64 `json:"stepStable"`
	// Readings counts the readings folded in. The first one is the
	// baseline: counters already there are not counted.
	Readings int32 `json:"readings"`
	// Series are the last values of the counter series seen, by Reading
	// key. A series that goes (a pod deleted) keeps its value, so that it
	// is not counted again if it comes back.
	Series map[string]float64 `json:"series,omitempty"`
}

// Count folds reading r, taken at step, into tally t and returns the new
// tally; t is not changed. A reading with a gap changes nothing. begin
// says whether the reading may begin the step's counts (FoldComparisons
// says when).
//
// Each series counts its increase since its last value. A value below the
// last is a counter reset (the pod's process restarted): the new value is
// the increase since the reset, as Prometheus's own increase() takes it, so
// that a reset neither creates requests and errors nor hides the ones
// served after it. A series first seen at the attempt's first reading is a
// baseline (stable pods served long before the attempt); one first seen
// later is a pod that started since, counted from 0. Errors above requests
// in an interval (counters scraped apart) are capped at the requests.
//
// The step's counts begin after the first reading of the step that may
// begin them, on both sides.
func (c Comparison) Count(t Tally, r Reading, step int32, begin bool) Tally {
	if r.Gap != "" {
		return t
	}
	next := t
	next.Series = make(map[string]float64, len(t.Series)+len(r.Series))
	for k, v := range t.Series {
		next.Series[k] = v
	}
	var delta [4]float64 // canary requests, canary errors, stable requests, stable errors
	for key, v := range r.Series {
		i := seriesIndex(key)
		if i < 0 || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			continue
		}
		prev, seen := t.Series[key]
		switch {
		case !seen && t.Readings == 0:
		case !seen:
			delta[i] += v
		case v >= prev:
			delta[i] += v - prev
		default:
			delta[i] += v
		}
		next.Series[key] = v
	}
	canary := Counts{Requests: delta[0], Errors: min(delta[1], delta[0])}
	stable := Counts{Requests: delta[2], Errors: min(delta[3], delta[2])}
	if next.LogLR == nil {
		next.LogLR = make([]float64, len(alternatives))
	} else {
		next.LogLR = append([]float64(nil), t.LogLR...)
	}
	foldInterval(next.LogLR, canary, stable, 1+c.Tolerance)
	next.Canary = t.Canary.plus(canary)
	next.Stable = t.Stable.plus(stable)
	next.Readings++
	if !t.Based || t.Step != step {
		next.Step, next.Based = step, begin
		next.StepCanary, next.StepStable = next.Canary.Requests, next.Stable.Requests
	}
	return next
}

// seriesIndex is which count a Reading key adds to; -1 for none.
func seriesIndex(key string) int {
	for i, p := range []string{canaryRequests, canaryErrors, stableRequests, stableErrors} {
		if strings.HasPrefix(key, p) {
			return i
		}
	}
	return -1
}

// StepCounts are the canary's and stable pods' requests at step Step
// since its counts began; none before they did.
func (t Tally) StepCounts() (canary, stable float64) {
	if !t.Based {
		return 0, 0
	}
	return t.Canary.Requests - t.StepCanary, t.Stable.Requests - t.StepStable
}

// MeasuredShare is the share of the step's requests the canary served, in
// percent, and the requests it is measured on; ok is false before any.
func (t Tally) MeasuredShare() (share, requests float64, ok bool) {
	canary, stable := t.StepCounts()
	requests = canary + stable
	if requests <= 0 {
		return 0, 0, false
	}
	return 100 * canary / requests, requests, true
}

// EValue is the test's e-value over the attempt: 1 before any evidence.
func (t Tally) EValue() float64 { return math.Exp(logEValue(t.LogLR)) }

// Judge is the comparison's verdict on tally t: Fail once the e-value
// reached 1/Alpha, else Pass. Value is the canary's error rate as a
// multiple of stable's (nil while either has no requests or stable no
// errors), Bound the tolerated multiple. A canary that served nothing yet
// is Inconclusive and Gathering: there is nothing to judge, which the
// step's minimum of requests turns into a hold.
func (c Comparison) Judge(t Tally) CheckResult {
	bound := 1 + c.Tolerance
	r := CheckResult{Check: c.Name, Bound: bound, Op: "<="}
	if t.Canary.Requests <= 0 || t.Stable.Requests <= 0 {
		r.Result, r.Gathering = Inconclusive, true
		r.Reason = fmt.Sprintf("%s: no requests counted on the %s pods yet", c.Name, emptySide(t))
		return r
	}
	if t.Stable.Errors > 0 {
		r.Value = ptrTo(t.Canary.Rate() / t.Stable.Rate())
	}
	e := t.EValue()
	r.EValue = &e
	limit := 1 / c.Alpha
	r.Result = Pass
	rel := "<"
	if e >= limit {
		r.Result, rel = Fail, ">="
	}
	r.Reason = fmt.Sprintf("%s: canary %s vs stable %s%s; e-value %s %s %s (tolerance %s× stable, alpha %s)",
		c.Name, describeCounts(t.Canary), describeCounts(t.Stable), describeRatio(r.Value),
		formatEValue(e), rel, formatFloat(limit), formatFloat(bound), formatFloat(c.Alpha))
	return r
}

// emptySide names the side without requests.
func emptySide(t Tally) string {
	if t.Canary.Requests <= 0 {
		return "canary"
	}
	return "stable"
}

// describeCounts reads "2.1% (23 of 1,095)".
func describeCounts(c Counts) string {
	return fmt.Sprintf("%s%% (%s of %s)", formatValue(100*c.Rate(), math.Inf(1)), FormatCount(c.Errors), FormatCount(c.Requests))
}

// describeRatio reads ", 4.3× stable's rate" or nothing.
func describeRatio(v *float64) string {
	if v == nil {
		return ""
	}
	return ", " + formatValue(*v, math.Inf(1)) + "× stable's rate"
}

// formatEValue shows an e-value with three significant digits, and a huge
// one as "> 1e+12", which is all a person needs of it.
func formatEValue(e float64) string {
	if e > 1e12 {
		return "> 1e+12"
	}
	return formatValue(e, math.Inf(1))
}

// formatCount renders a count as a whole number with thousands separators:
// "10,912". Counts from Prometheus are floats; they are whole numbers for
// the counters a comparison reads, and are rounded for showing.
func FormatCount(f float64) string {
	s := strconv.FormatInt(int64(math.Round(f)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// FoldComparisons folds an evaluation's readings into the attempt's
// tallies (prev, in policy order; missing ones start empty) at step, and
// returns the evaluation's results followed by, when the step's minimum
// of requests is not met, that, and each comparison's verdict. A reading
// with a gap is the comparison's Inconclusive result, for that reason.
//
// The step's counts begin with the first reading at or after stepFrom that
// has series for all the step's canaryPods. The router sets stepFrom one
// interval after the step's canary pods were all Ready: a counter is as
// old as its last scrape, so one read at once was scraped before the new
// pods served, and its next increase would count seconds of the previous
// step's traffic split (the demo measured 20.5% and 48.7% of requests on
// the canary where users saw 22.4% and 50.3%). One interval later, every
// counter read was scraped since, as long as the interval is at least
// Prometheus's scrape interval. And a canary pod Prometheus has not
// scraped yet would later be counted from 0, its requests from before the
// step's counts began included (12.1% measured where users saw 10.1%).
func (a *Analysis) FoldComparisons(e Evaluation, prev []Tally, step int32, stepFrom time.Time, canaryPods int) ([]CheckResult, []Tally) {
	if a == nil || len(a.Compare) == 0 {
		return e.Results, nil
	}
	tallies := make([]Tally, len(a.Compare))
	var compared []CheckResult
	for i, c := range a.Compare {
		if i < len(prev) {
			tallies[i] = prev[i]
		}
		r := Reading{Gap: c.Name + ": not read"}
		if i < len(e.Readings) {
			r = e.Readings[i]
		}
		if r.Gap != "" {
			compared = append(compared, CheckResult{Check: c.Name, Result: Inconclusive, Bound: 1 + c.Tolerance, Op: "<=", Reason: r.Gap, NoData: r.NoData})
			continue
		}
		tallies[i] = c.Count(tallies[i], r, step, !e.At.Before(stepFrom) && r.CanaryPods >= canaryPods)
		compared = append(compared, c.Judge(tallies[i]))
	}
	results := append([]CheckResult(nil), e.Results...)
	if m := a.MinRequestsResult(tallies[0], step); m != nil {
		if r := e.Readings; len(r) > 0 && r[0].Gap == "" && !e.At.Before(stepFrom) && r[0].CanaryPods < canaryPods {
			m.Reason = fmt.Sprintf("waiting for Prometheus to report every canary pod before counting the step's requests: %d of %d have series", r[0].CanaryPods, canaryPods)
		}
		// Before the comparisons: a step short of requests says so, rather
		// than by a comparison that has nothing to judge yet.
		results = append(results, *m)
	}
	return append(results, compared...), tallies
}

// MinRequestsResult is the step's minimum of evidence: Inconclusive and
// Gathering while the canary served fewer than a.MinRequests requests at
// step, by the first comparison's count; nil when met or when there is no
// minimum.
func (a *Analysis) MinRequestsResult(t Tally, step int32) *CheckResult {
	if a == nil || a.MinRequests <= 0 || len(a.Compare) == 0 {
		return nil
	}
	var canary float64
	if t.Step == step {
		canary, _ = t.StepCounts()
	}
	if canary >= float64(a.MinRequests) {
		return nil
	}
	return &CheckResult{
		Check: "min-requests", Result: Inconclusive, Gathering: true,
		Value: ptrTo(canary), Bound: float64(a.MinRequests), Op: ">=",
		Reason: fmt.Sprintf("canary served %s of the %d requests a step needs (minRequests)", FormatCount(canary), a.MinRequests),
	}
}

func ptrTo(f float64) *float64 { return &f }
