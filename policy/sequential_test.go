package policy

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The expected e-values were computed apart from this code, by this Python
// script (the same formulas, written out once more):
//
//	import math
//	alts = [1.25, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64]
//	def fold(l, cn, ce, sn, se, b):
//	    if ce + se <= 0 or cn <= 0 or sn <= 0: return l
//	    t0 = cn*b / (cn*b + sn)
//	    return [x + ce*math.log(cn*b*r/(cn*b*r+sn)/t0)
//	              + se*math.log((1 - cn*b*r/(cn*b*r+sn))/(1-t0))
//	            for x, r in zip(l, alts)]
//	def e(l): return sum(math.exp(x) for x in l) / len(l)
//	print(e(fold([0]*12, 100, 5, 900, 0, 1.5)))                         # 2567.488797805802
//	l = fold([0]*12, 100, 2, 1000, 5, 1.5); print(e(fold(l, 300, 10, 1000, 5, 1.5)))  # 23.51549155099718
//	print(e(fold([0]*12, 1000, 5, 10000, 50, 1.5)))                     # 0.06634124987981126
//	print(e(fold([0]*12, 36, 7, 364, 2, 1.5)))                          # 7143.706240880322
func TestEValue(t *testing.T) {
	type interval struct{ canary, stable Counts }
	tests := []struct {
		name      string
		intervals []interval
		want      float64
	}{
		{"no evidence yet", nil, 1},
		{"no errors anywhere", []interval{{Counts{1000, 0}, Counts{10000, 0}}}, 1},
		{"canary served nothing", []interval{{Counts{0, 0}, Counts{10000, 40}}}, 1},
		{"stable served nothing", []interval{{Counts{100, 3}, Counts{0, 0}}}, 1},
		{"five canary errors, none on stable", []interval{{Counts{100, 5}, Counts{900, 0}}}, 2567.488797805802},
		{"two intervals at two shares", []interval{{Counts{100, 2}, Counts{1000, 5}}, {Counts{300, 10}, Counts{1000, 5}}}, 23.51549155099718},
		{"a healthy canary lowers it", []interval{{Counts{1000, 5}, Counts{10000, 50}}}, 0.06634124987981126},
		{"a 20% canary in its first 2s", []interval{{Counts{36, 7}, Counts{364, 2}}}, 7143.706240880322},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logLR := make([]float64, len(alternatives))
			for _, iv := range tt.intervals {
				foldInterval(logLR, iv.canary, iv.stable, 1.5)
			}
			assert.InEpsilon(t, tt.want, math.Exp(logEValue(logLR)), 1e-12)
		})
	}
}

// A regression so strong that every likelihood ratio overflows float64
// still gives a finite log e-value.
func TestEValueDoesNotOverflow(t *testing.T) {
	logLR := make([]float64, len(alternatives))
	for range 100 {
		foldInterval(logLR, Counts{1000, 1000}, Counts{1000, 1}, 1.5)
	}
	l := logEValue(logLR)
	assert.False(t, math.IsInf(l, 0) || math.IsNaN(l))
	assert.Greater(t, l, 1000.0)
	assert.Equal(t, "> 1e+12", formatEValue(math.Exp(l)))
}

// reading builds a Reading from per-series values.
func reading(series map[string]float64) Reading { return Reading{Series: series} }

func TestCount(t *testing.T) {
	c := Comparison{Name: "errors", Tolerance: 0.5, Alpha: 0.01}
	var tally Tally

	// The first reading is the baseline: stable pods served before the
	// attempt, and nothing of it is counted.
	tally = c.Count(tally, reading(map[string]float64{"sr/a": 5000, "se/a": 20, "cr/x": 3}), 0, true)
	assert.Equal(t, Counts{}, tally.Canary)
	assert.Equal(t, Counts{}, tally.Stable)
	assert.Equal(t, int32(1), tally.Readings)

	// Increases count; a new canary pod (y) and a new stable pod (b) are
	// counted from 0; an errors series that appears later (the first 5xx
	// of canary x) is counted from 0 too.
	tally = c.Count(tally, reading(map[string]float64{"sr/a": 5900, "se/a": 24, "sr/b": 100, "cr/x": 53, "ce/x": 2, "cr/y": 40}), 0, true)
	assert.Equal(t, Counts{Requests: 90, Errors: 2}, tally.Canary)
	assert.Equal(t, Counts{Requests: 1000, Errors: 4}, tally.Stable)

	// Canary x restarted: its counters start again, and the 7 requests and
	// 1 error after the restart count. The 3 errors it had are not taken
	// back, and no request is counted twice.
	tally = c.Count(tally, reading(map[string]float64{"sr/a": 6000, "se/a": 24, "sr/b": 200, "cr/x": 7, "ce/x": 1, "cr/y": 40}), 0, true)
	assert.Equal(t, Counts{Requests: 97, Errors: 3}, tally.Canary)
	assert.Equal(t, Counts{Requests: 1200, Errors: 4}, tally.Stable)

	// A gap changes nothing.
	assert.Equal(t, tally, c.Count(tally, Reading{Gap: "prometheus unreachable"}, 0, true))

	// Pod b went (its series stopped) and came back: its old value is
	// kept, so it is not counted again.
	tally = c.Count(tally, reading(map[string]float64{"sr/a": 6000, "se/a": 24, "cr/x": 7, "ce/x": 1, "cr/y": 40}), 0, true)
	tally = c.Count(tally, reading(map[string]float64{"sr/a": 6000, "se/a": 24, "sr/b": 210, "cr/x": 7, "ce/x": 1, "cr/y": 40}), 0, true)
	assert.Equal(t, Counts{Requests: 1210, Errors: 4}, tally.Stable)

	// Errors above the interval's requests (scraped apart) are capped.
	tally = c.Count(tally, reading(map[string]float64{"sr/a": 6000, "se/a": 24, "sr/b": 210, "cr/x": 8, "ce/x": 4, "cr/y": 40}), 0, true)
	assert.Equal(t, Counts{Requests: 98, Errors: 4}, tally.Canary)
	assert.Equal(t, int32(6), tally.Readings, "the gap is not a reading")
}

func TestCountDoesNotChangeItsInput(t *testing.T) {
	c := Comparison{Tolerance: 0.5, Alpha: 0.01}
	first := c.Count(Tally{}, reading(map[string]float64{"cr/x": 0, "sr/a": 0}), 0, true)
	second := c.Count(first, reading(map[string]float64{"cr/x": 100, "ce/x": 10, "sr/a": 100, "se/a": 1}), 0, true)
	assert.Equal(t, map[string]float64{"cr/x": 0, "sr/a": 0}, first.Series)
	assert.Equal(t, make([]float64, len(alternatives)), first.LogLR)
	assert.NotEqual(t, first.LogLR, second.LogLR)
}

// A step's counts start at its first reading, on both sides: requests
// between two readings are the step's only when both readings are.
func TestCountStepsAndMeasuredShare(t *testing.T) {
	c := Comparison{Tolerance: 0.5, Alpha: 0.01}
	tally := c.Count(Tally{}, reading(map[string]float64{"cr/x": 10, "sr/a": 1000}), 0, true)
	_, _, ok := tally.MeasuredShare()
	assert.False(t, ok, "nothing measured at the baseline")
	tally = c.Count(tally, reading(map[string]float64{"cr/x": 100, "sr/a": 1900}), 0, true)
	share, requests, ok := tally.MeasuredShare()
	require.True(t, ok)
	assert.InDelta(t, 9.090909, share, 1e-5) // 90 of 990
	assert.Equal(t, 990.0, requests)

	// Step 2: its first reading starts its counts.
	tally = c.Count(tally, reading(map[string]float64{"cr/x": 150, "sr/a": 2400}), 1, true)
	assert.Equal(t, int32(1), tally.Step)
	canary, stable := tally.StepCounts()
	assert.Equal(t, [2]float64{0, 0}, [2]float64{canary, stable})
	tally = c.Count(tally, reading(map[string]float64{"cr/x": 450, "sr/a": 3400}), 1, true)
	share, requests, _ = tally.MeasuredShare()
	assert.InDelta(t, 23.076923, share, 1e-5) // 300 of 1300
	assert.Equal(t, 1300.0, requests)
	assert.Equal(t, Counts{Requests: 440}, tally.Canary, "the attempt's totals go on across steps")

	// Step 3: a reading that may not begin its counts (one interval after
	// its pods were Ready has not come) counts toward the attempt only.
	tally = c.Count(tally, reading(map[string]float64{"cr/x": 500, "sr/a": 3600}), 2, false)
	assert.Equal(t, int32(2), tally.Step)
	assert.False(t, tally.Based)
	_, _, ok = tally.MeasuredShare()
	assert.False(t, ok)
	tally = c.Count(tally, reading(map[string]float64{"cr/x": 600, "sr/a": 3700}), 2, true)
	assert.True(t, tally.Based)
	tally = c.Count(tally, reading(map[string]float64{"cr/x": 700, "sr/a": 3800}), 2, true)
	canary, stable = tally.StepCounts()
	assert.Equal(t, [2]float64{100, 100}, [2]float64{canary, stable}, "counted from the first reading that may begin them")
	assert.Equal(t, Counts{Requests: 690}, tally.Canary)
}

func TestComparisonJudge(t *testing.T) {
	c := Comparison{Name: "errors", Tolerance: 0.5, Alpha: 0.01}
	fold := func(canary, stable Counts) Tally {
		tally := Tally{LogLR: make([]float64, len(alternatives)), Canary: canary, Stable: stable, Readings: 2}
		foldInterval(tally.LogLR, canary, stable, 1.5)
		return tally
	}

	got := c.Judge(Tally{})
	assert.Equal(t, Inconclusive, got.Result)
	assert.True(t, got.Gathering)
	assert.Equal(t, "errors: no requests counted on the canary pods yet", got.Reason)

	got = c.Judge(fold(Counts{1000, 5}, Counts{10000, 50}))
	assert.Equal(t, Pass, got.Result)
	assert.InDelta(t, 1.0, *got.Value, 1e-12)
	assert.Equal(t, 1.5, got.Bound)
	assert.InEpsilon(t, 0.06634124987981126, *got.EValue, 1e-12)
	assert.Equal(t, "errors: canary 0.5% (5 of 1,000) vs stable 0.5% (50 of 10,000), 1× stable's rate; e-value 0.0663 < 100 (tolerance 1.5× stable, alpha 0.01)", got.Reason)

	got = c.Judge(fold(Counts{36, 7}, Counts{364, 2}))
	assert.Equal(t, Fail, got.Result)
	assert.True(t, got.rejected())
	assert.InDelta(t, 35.38, *got.Value, 0.01)
	assert.Equal(t, "errors: canary 19.4% (7 of 36) vs stable 0.549% (2 of 364), 35.4× stable's rate; e-value 7140 >= 100 (tolerance 1.5× stable, alpha 0.01)", got.Reason)

	// Stable without errors: no ratio to show, and the test still judges.
	got = c.Judge(fold(Counts{100, 5}, Counts{900, 0}))
	assert.Equal(t, Fail, got.Result)
	assert.Nil(t, got.Value)
}

func TestMinRequestsResult(t *testing.T) {
	a := &Analysis{MinRequests: 100, Compare: []Comparison{{Name: "errors"}}}
	tally := Tally{Canary: Counts{Requests: 130}, StepCanary: 50, Step: 1, Based: true, Readings: 3}
	got := a.MinRequestsResult(tally, 1)
	require.NotNil(t, got)
	assert.Equal(t, Inconclusive, got.Result)
	assert.True(t, got.Gathering)
	assert.Equal(t, 80.0, *got.Value)
	assert.Equal(t, "canary served 80 of the 100 requests a step needs (minRequests)", got.Reason)

	tally.Canary.Requests = 150
	assert.Nil(t, a.MinRequestsResult(tally, 1), "100 of 100 is enough")
	assert.Equal(t, 0.0, *a.MinRequestsResult(tally, 2).Value, "counts of step 1 are not step 2's")
	assert.Nil(t, (&Analysis{Compare: a.Compare}).MinRequestsResult(Tally{}, 0), "minRequests 0 sets no minimum")
	assert.Nil(t, (*Analysis)(nil).MinRequestsResult(Tally{}, 0))
}

func TestFormatCount(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 7: "7", 999: "999", 1000: "1,000", 10912.4: "10,912", 1234567: "1,234,567", -4200: "-4,200"} {
		assert.Equal(t, want, FormatCount(in), "%v", in)
	}
}
