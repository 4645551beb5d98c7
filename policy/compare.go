package policy

import (
	"cmp"
	"math"
	"strconv"
)

// thresholdKind is which of a check's three thresholds it sets.
type thresholdKind int

const (
	thresholdMax thresholdKind = iota
	thresholdMin
	thresholdMaxRatio
)

// threshold is a check's single bound and the way the canary is held to it.
type threshold struct {
	kind  thresholdKind
	bound float64
}

// thresholdOf finds a check's threshold. A check that sets none, more than
// one, or a bound that is not a finite number has no threshold: Validate
// refuses such checks, and the analysis calls them inconclusive rather than
// guess which bound was meant.
func thresholdOf(c Check) (threshold, bool) {
	var found []threshold
	if c.Max != nil {
		found = append(found, threshold{thresholdMax, *c.Max})
	}
	if c.Min != nil {
		found = append(found, threshold{thresholdMin, *c.Min})
	}
	if c.MaxRatio != nil {
		found = append(found, threshold{thresholdMaxRatio, *c.MaxRatio})
	}
	if len(found) != 1 || !finite(found[0].bound) {
		return threshold{}, false
	}
	return found[0], true
}

// op is CheckResult.Op: what a passing value satisfies.
func (t threshold) op() string {
	if t.kind == thresholdMin {
		return ">="
	}
	return "<="
}

// judge holds a finite value (for maxRatio, canary / stable) to the bound
// and fills r's Result, Value and Reason. A value exactly at the bound
// passes: max and maxRatio are the highest value allowed, min the lowest.
func (t threshold) judge(r CheckResult, name string, v float64) CheckResult {
	r.Value = &v
	pass := v <= t.bound
	if t.kind == thresholdMin {
		pass = v >= t.bound
	}
	r.Result = Fail
	if pass {
		r.Result = Pass
	}
	r.Reason = t.reason(name, v, pass)
	return r
}

// reason reads "error-rate 0.072 > 0.01", "success-rate 0.91 < 0.99",
// "p99-latency 3.02× stable > 1.2×", or with "<=" and ">=" when passing.
func (t threshold) reason(name string, v float64, pass bool) string {
	var rel string
	switch {
	case t.kind == thresholdMin && pass:
		rel = ">="
	case t.kind == thresholdMin:
		rel = "<"
	case pass:
		rel = "<="
	default:
		rel = ">"
	}
	value, bound := formatValue(v, t.bound), formatFloat(t.bound)
	if t.kind == thresholdMaxRatio {
		return name + " " + value + "× stable " + rel + " " + bound + "×"
	}
	return name + " " + value + " " + rel + " " + bound
}

// formatValue renders a measured value for a reason: three significant
// digits ("0.0723", "3.02", "12300"), because a query's raw float64
// (0.07234118503937008) says nothing more to a person. When three digits
// would put the shown value on the other side of the bound, or on it
// (0.010004 against 0.01 would read "0.01 > 0.01"), digits are added until
// it is on the same side as the real value. Bounds are rendered with
// formatFloat, as the user wrote them.
func formatValue(v, bound float64) string {
	want := cmp.Compare(v, bound)
	for digits := 3; digits <= 17; digits++ {
		r := roundSignificant(v, digits)
		if cmp.Compare(r, bound) == want {
			return formatFloat(r)
		}
	}
	return formatFloat(v)
}

// roundSignificant rounds v to the given number of significant digits.
func roundSignificant(v float64, digits int) float64 {
	r, err := strconv.ParseFloat(strconv.FormatFloat(v, 'e', digits-1, 64), 64)
	if err != nil {
		return v
	}
	return r
}

// finite reports whether f is neither NaN nor an infinity.
func finite(f float64) bool {
	return !math.IsNaN(f) && !math.IsInf(f, 0)
}
