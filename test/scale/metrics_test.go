package main

import (
	"math"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/utils/ptr"
)

// classic is a histogram of declared buckets from cumulative counts by
// upper bound, as /metrics gives them.
func classic(upper []float64, cumulative []uint64, count uint64, sum float64) *dto.Histogram {
	h := &dto.Histogram{SampleCount: ptr.To(count), SampleSum: ptr.To(sum)}
	for i := range upper {
		h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: ptr.To(upper[i]), CumulativeCount: ptr.To(cumulative[i])})
	}
	return h
}

func TestQuantile(t *testing.T) {
	reconcile := []float64{0.005, 0.01, 0.025}
	cases := []struct {
		name   string
		h      *dto.Histogram
		q      float64
		want   float64
		lo, hi float64
	}{
		{
			// 100 in (0, 5ms]: the median is the 50th, halfway through it.
			name: "median in the first bucket interpolates from 0",
			h:    classic(reconcile, []uint64{100, 100, 100}, 100, 0.2),
			q:    0.5, want: 0.0025, lo: 0, hi: 0.005,
		},
		{
			// 90 ≤ 5ms, 10 in (5ms, 10ms]: rank 99 is the 9th of 10 there.
			name: "p99 in the second bucket interpolates within it",
			h:    classic(reconcile, []uint64{90, 100, 100}, 100, 0.5),
			q:    0.99, want: 0.0095, lo: 0.005, hi: 0.01,
		},
		{
			// 2 of 100 above 25ms: the p99 lies in (25ms, +Inf], said as its lower bound.
			name: "a quantile in the unbounded bucket is its lower bound",
			h:    classic(reconcile, []uint64{90, 95, 98}, 100, 3),
			q:    0.99, want: 0.025, lo: 0.025, hi: math.Inf(+1),
		},
		{
			// Native schema 0: bucket 1 is (1, 2], bucket 2 is (2, 4]; 4 and 4 observations.
			name: "native buckets are preferred to the declared ones",
			h: &dto.Histogram{
				SampleCount: ptr.To[uint64](8), SampleSum: ptr.To(20.0),
				Bucket:        []*dto.Bucket{{UpperBound: ptr.To(10.0), CumulativeCount: ptr.To[uint64](8)}},
				Schema:        ptr.To[int32](0),
				ZeroThreshold: ptr.To(1e-9), ZeroCount: ptr.To[uint64](0),
				PositiveSpan:  []*dto.BucketSpan{{Offset: ptr.To[int32](1), Length: ptr.To[uint32](2)}},
				PositiveDelta: []int64{4, 0},
			},
			q: 0.75, want: 3, lo: 2, hi: 4,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := fromProto(c.h).Quantile(c.q)
			if !ok {
				t.Fatal("no quantile")
			}
			if math.Abs(got.Value-c.want) > 1e-12 || got.Lower != c.lo || got.Upper != c.hi {
				t.Errorf("Quantile(%v) = %v in (%v, %v], want %v in (%v, %v]", c.q, got.Value, got.Lower, got.Upper, c.want, c.lo, c.hi)
			}
		})
	}
}

func TestNativeSpansWithAGap(t *testing.T) {
	// Schema 1: base √2. Spans [index 0, 1] and, after a gap of 2,
	// [index 4] (indexes 2 and 3 skipped); deltas 1, +2, −1 give counts
	// 1, 3, 2: (√½, 1], (1, √2] and (2√2, 4].
	h := fromProto(&dto.Histogram{
		SampleCount: ptr.To[uint64](6), Schema: ptr.To[int32](1), ZeroThreshold: ptr.To(1e-9),
		PositiveSpan:  []*dto.BucketSpan{{Offset: ptr.To[int32](0), Length: ptr.To[uint32](2)}, {Offset: ptr.To[int32](2), Length: ptr.To[uint32](1)}},
		PositiveDelta: []int64{1, 2, -1},
	})
	want := []bucket{{0, 1e-9, 0}, {math.Sqrt(0.5), 1, 1}, {1, math.Sqrt2, 3}, {2 * math.Sqrt2, 4, 2}}
	if len(h.Native) != len(want) {
		t.Fatalf("native buckets %v, want %v", h.Native, want)
	}
	for i := range want {
		g := h.Native[i]
		if math.Abs(g.Lower-want[i].Lower) > 1e-12 || math.Abs(g.Upper-want[i].Upper) > 1e-12 || g.Count != want[i].Count {
			t.Errorf("bucket %d = %v, want %v", i, g, want[i])
		}
	}
}

func TestSubIsWhatHappenedBetweenScrapes(t *testing.T) {
	bounds := []float64{0.005, 0.01}
	before := fromProto(classic(bounds, []uint64{10, 12}, 12, 0.05))
	after := fromProto(classic(bounds, []uint64{10, 22}, 30, 0.5))
	d := after.sub(before)
	// 0 new ≤ 5ms, 10 new in (5ms, 10ms], 8 new above.
	wantCounts := []uint64{0, 10, 8}
	if d.Count != 18 || math.Abs(d.Sum-0.45) > 1e-12 {
		t.Errorf("count %d sum %v, want 18 and 0.45", d.Count, d.Sum)
	}
	for i, b := range d.Classic {
		if b.Count != wantCounts[i] {
			t.Errorf("bucket %d (≤ %v) has %d, want %d", i, b.Upper, b.Count, wantCounts[i])
		}
	}
	if m := d.Mean(); math.Abs(m-0.025) > 1e-12 {
		t.Errorf("mean %v, want 0.025", m)
	}
}

func TestSubDropsNativeBucketsOfAnotherResolution(t *testing.T) {
	native := func(schema int32, count uint64) *dto.Histogram {
		return &dto.Histogram{
			SampleCount: ptr.To(count), Schema: ptr.To(schema), ZeroThreshold: ptr.To(1e-9),
			Bucket:        []*dto.Bucket{{UpperBound: ptr.To(1.0), CumulativeCount: ptr.To(count)}},
			PositiveSpan:  []*dto.BucketSpan{{Offset: ptr.To[int32](-3), Length: ptr.To[uint32](1)}},
			PositiveDelta: []int64{int64(count)},
		}
	}
	d := fromProto(native(3, 20)).sub(fromProto(native(2, 5)))
	if d.Native != nil {
		t.Errorf("native buckets kept across a change of schema: %v", d.Native)
	}
	if q, ok := d.Quantile(0.5); !ok || q.Native || q.Upper != 1 {
		t.Errorf("quantile %+v (ok %v), want one from the declared bucket ≤ 1", q, ok)
	}
}

func TestHistogramSumsLabelSets(t *testing.T) {
	text := `# TYPE apiserver_admission_webhook_admission_duration_seconds histogram
apiserver_admission_webhook_admission_duration_seconds_bucket{name="a.fledge.dev",operation="UPDATE",le="0.005"} 3
apiserver_admission_webhook_admission_duration_seconds_bucket{name="a.fledge.dev",operation="UPDATE",le="+Inf"} 4
apiserver_admission_webhook_admission_duration_seconds_sum{name="a.fledge.dev",operation="UPDATE"} 0.04
apiserver_admission_webhook_admission_duration_seconds_count{name="a.fledge.dev",operation="UPDATE"} 4
apiserver_admission_webhook_admission_duration_seconds_bucket{name="a.fledge.dev",operation="CREATE",le="0.005"} 1
apiserver_admission_webhook_admission_duration_seconds_bucket{name="a.fledge.dev",operation="CREATE",le="+Inf"} 1
apiserver_admission_webhook_admission_duration_seconds_sum{name="a.fledge.dev",operation="CREATE"} 0.001
apiserver_admission_webhook_admission_duration_seconds_count{name="a.fledge.dev",operation="CREATE"} 1
apiserver_admission_webhook_admission_duration_seconds_bucket{name="other",operation="UPDATE",le="+Inf"} 7
apiserver_admission_webhook_admission_duration_seconds_sum{name="other",operation="UPDATE"} 1
apiserver_admission_webhook_admission_duration_seconds_count{name="other",operation="UPDATE"} 7
`
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	ms := metrics(fams)
	a := admissionsOf(ms, []string{"a.fledge.dev"})
	if got := a["a.fledge.dev"]; got.Count != 5 || math.Abs(got.Seconds-0.041) > 1e-12 {
		t.Errorf("a.fledge.dev: %+v, want 5 calls in 0.041s", got)
	}
	h, _ := ms.histogram(apiserverWebhooks, map[string]string{"name": "a.fledge.dev"})
	if len(h.Classic) != 2 || h.Classic[0].Count != 4 || h.Classic[1].Count != 1 {
		t.Errorf("summed buckets %v, want 4 ≤ 5ms and 1 above", h.Classic)
	}
}

func TestWithin(t *testing.T) {
	webhook := []float64{0.005, 0.025, 0.1}
	// 995 of 1,000 calls within 5ms, 4 more within 25ms, 1 above 100ms.
	h := fromProto(classic(webhook, []uint64{995, 999, 999}, 1000, 2))
	if share, ok := h.within(0.005); !ok || share != 0.995 {
		t.Errorf("within(5ms) = %v, %v; want 0.995, true", share, ok)
	}
	if share, ok := h.within(0.025); !ok || share != 0.999 {
		t.Errorf("within(25ms) = %v, %v; want 0.999, true", share, ok)
	}
	if _, ok := h.within(0.01); ok {
		t.Error("within(10ms) ok, want false: no bucket ends at 10ms")
	}
	if _, ok := fromProto(classic(webhook, []uint64{0, 0, 0}, 0, 0)).within(0.005); ok {
		t.Error("within of no observations ok, want false")
	}
}
