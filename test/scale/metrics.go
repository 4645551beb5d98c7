package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// metrics is one scrape of a /metrics endpoint, by family name.
type metrics map[string]*dto.MetricFamily

// scrape reads url's metrics. It asks for the protobuf format, in which
// client_golang also sends native histograms (controller-runtime's
// reconcile and queue histograms have them, with buckets about 9% wide),
// and takes text from servers that only speak text (the apiserver).
func scrape(ctx context.Context, c *http.Client, url string) (metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.FmtProtoDelim)+",text/plain;version=0.0.4;q=0.5")
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	dec := expfmt.NewDecoder(resp.Body, expfmt.ResponseFormat(resp.Header))
	out := metrics{}
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("scrape %s: decode: %w", url, err)
		}
		out[mf.GetName()] = &mf
	}
}

// matches reports whether m carries every label of want (a value of "*"
// matches any value of that label, even none).
func matches(m *dto.Metric, want map[string]string) bool {
	have := map[string]string{}
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if v != "*" && have[k] != v {
			return false
		}
	}
	return true
}

// value sums the counters, gauges or untyped samples of family name whose
// labels match; ok is false when none does.
func (ms metrics) value(name string, labels map[string]string) (sum float64, ok bool) {
	for _, m := range ms[name].GetMetric() {
		if !matches(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
		ok = true
	}
	return sum, ok
}

// histogram sums the histograms of family name whose labels match (for
// example one webhook's over operations); ok is false when none does.
func (ms metrics) histogram(name string, labels map[string]string) (h histogram, ok bool) {
	for _, m := range ms[name].GetMetric() {
		if !matches(m, labels) || m.Histogram == nil {
			continue
		}
		next := fromProto(m.GetHistogram())
		if !ok {
			h, ok = next, true
			continue
		}
		h = h.add(next)
	}
	return h, ok
}

// histogram is a histogram's observations, in buckets of explicit bounds
// (a bucket holds the observations v with Lower < v ≤ Upper), so that a
// classic histogram and a native one answer quantiles the same way.
type histogram struct {
	Count   uint64
	Sum     float64
	Classic []bucket // the declared buckets, the last one up to +Inf
	Native  []bucket // the native buckets, when the server sent them
}

type bucket struct {
	Lower, Upper float64
	Count        uint64
}

// fromProto reads a client_model histogram: its classic buckets
// (cumulative counts by upper bound) and, when present, its native ones
// (bucket i of schema s covers (2^((i-1)/2^s), 2^(i/2^s)], counts
// delta-encoded over spans of consecutive indexes). Negative observations
// are not expected of durations and are ignored.
func fromProto(p *dto.Histogram) histogram {
	h := histogram{Count: p.GetSampleCount(), Sum: p.GetSampleSum()}
	lower, cum := 0.0, uint64(0)
	for _, b := range p.GetBucket() {
		h.Classic = append(h.Classic, bucket{Lower: lower, Upper: b.GetUpperBound(), Count: b.GetCumulativeCount() - cum})
		lower, cum = b.GetUpperBound(), b.GetCumulativeCount()
	}
	if !math.IsInf(lower, +1) {
		h.Classic = append(h.Classic, bucket{Lower: lower, Upper: math.Inf(+1), Count: h.Count - cum})
	}
	if len(p.GetPositiveSpan()) == 0 && p.GetZeroThreshold() == 0 {
		return h
	}
	h.Native = append(h.Native, bucket{Lower: 0, Upper: p.GetZeroThreshold(), Count: p.GetZeroCount()})
	base := math.Pow(2, math.Pow(2, -float64(p.GetSchema())))
	deltas := p.GetPositiveDelta()
	var index int32
	var count int64
	k := 0
	for i, s := range p.GetPositiveSpan() {
		if i == 0 {
			index = s.GetOffset()
		} else {
			index += s.GetOffset()
		}
		for range s.GetLength() {
			if k < len(deltas) {
				count += deltas[k]
			}
			k++
			h.Native = append(h.Native, bucket{
				Lower: math.Pow(base, float64(index-1)), Upper: math.Pow(base, float64(index)), Count: uint64(count),
			})
			index++
		}
	}
	return h
}

// add is h and o together: the same metric of two label sets.
func (h histogram) add(o histogram) histogram {
	out := histogram{Count: h.Count + o.Count, Sum: h.Sum + o.Sum}
	out.Classic, _ = combine(h.Classic, o.Classic, +1)
	if native, ok := combine(h.Native, o.Native, +1); ok && h.Native != nil && o.Native != nil {
		out.Native = native
	}
	return out
}

// sub is what was observed after earlier was scraped: the delta of two
// scrapes of the same histogram. The native buckets are kept only when
// both scrapes have them at the same resolution (client_golang lowers it
// when a histogram needs too many buckets).
func (h histogram) sub(earlier histogram) histogram {
	out := histogram{Count: h.Count - earlier.Count, Sum: h.Sum - earlier.Sum}
	out.Classic, _ = combine(h.Classic, earlier.Classic, -1)
	if native, ok := combine(h.Native, earlier.Native, -1); ok && h.Native != nil {
		out.Native = native
	}
	return out
}

// combine adds (sign +1) or subtracts (sign -1) b's buckets to a's,
// matched by bounds; ok is false when b has a bucket a lacks and a
// subtraction cannot be done bucket by bucket. Buckets b lacks count as
// empty there; buckets only b has are added in when adding.
func combine(a, b []bucket, sign int) ([]bucket, bool) {
	byUpper := map[float64]int{}
	out := make([]bucket, len(a))
	copy(out, a)
	for i, x := range out {
		byUpper[x.Upper] = i
	}
	ok := true
	for _, y := range b {
		i, found := byUpper[y.Upper]
		switch {
		case found && sign > 0:
			out[i].Count += y.Count
		case found && out[i].Count >= y.Count:
			out[i].Count -= y.Count
		case found:
			out[i].Count, ok = 0, false // a counter reset: not a delta
		case sign > 0:
			out = append(out, y)
		case y.Count > 0:
			ok = false
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Upper < out[j].Upper })
	return out, ok
}

// within is the share of observations at most bound, read from the
// declared bucket whose upper bound it is; ok is false without such a
// bucket or without observations.
func (h histogram) within(bound float64) (share float64, ok bool) {
	var below, total uint64
	for _, b := range h.Classic {
		total += b.Count
		if b.Upper <= bound {
			below += b.Count
		}
		ok = ok || b.Upper == bound
	}
	if !ok || total == 0 {
		return 0, false
	}
	return float64(below) / float64(total), true
}

// Mean is the mean observation, 0 without any.
func (h histogram) Mean() float64 {
	if h.Count == 0 {
		return 0
	}
	return h.Sum / float64(h.Count)
}

// quantile is a quantile estimated from buckets, and the bucket it lies in.
type quantile struct {
	Value        float64 // linear interpolation within the bucket
	Lower, Upper float64 // the bucket's bounds: the true quantile lies in (Lower, Upper]
	Native       bool    // from the native buckets (fine), not the declared ones
}

// Quantile estimates the q-quantile (0 < q ≤ 1) as histogram_quantile
// does: find the bucket holding the observation of rank q·Count and
// interpolate linearly within it, as if its observations were spread
// evenly. The answer is only bounded by the bucket: the true quantile lies
// in (Lower, Upper]. A quantile in the last, unbounded bucket is its
// lower bound. ok is false without observations.
func (h histogram) Quantile(q float64) (quantile, bool) {
	buckets, native := h.Classic, false
	if len(h.Native) > 0 {
		buckets, native = h.Native, true
	}
	var total uint64
	for _, b := range buckets {
		total += b.Count
	}
	if total == 0 {
		return quantile{}, false
	}
	rank := q * float64(total)
	var below float64
	for _, b := range buckets {
		if b.Count == 0 {
			continue
		}
		if below+float64(b.Count) >= rank {
			out := quantile{Lower: b.Lower, Upper: b.Upper, Native: native}
			if math.IsInf(b.Upper, +1) {
				out.Value = b.Lower
				return out, true
			}
			out.Value = b.Lower + (b.Upper-b.Lower)*(rank-below)/float64(b.Count)
			return out, true
		}
		below += float64(b.Count)
	}
	last := buckets[len(buckets)-1]
	return quantile{Value: last.Upper, Lower: last.Lower, Upper: last.Upper, Native: native}, true
}

// seriesCounts are the observation counts of each series of histogram
// family name, by its labels ("name=a,operation=UPDATE"): to tell which
// series moved between two scrapes.
func (ms metrics) seriesCounts(name string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range ms[name].GetMetric() {
		var labels []string
		for _, l := range m.GetLabel() {
			labels = append(labels, l.GetName()+"="+l.GetValue())
		}
		out[strings.Join(labels, ",")] += float64(m.GetHistogram().GetSampleCount())
	}
	return out
}

// countsSince are the counts of later less those of earlier, without the
// series that did not move.
func countsSince(later, earlier map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range later {
		if d := v - earlier[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}
