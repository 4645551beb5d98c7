package policy

import (
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Bounds of the policy fields; doc.go explains the choices.
const (
	minWeight       = 1
	maxWeight       = 99
	maxHold         = 24 * time.Hour
	minReadyTimeout = 10 * time.Second
	maxReadyTimeout = time.Hour
	minInterval     = time.Second
	maxInterval     = time.Hour
)

// exampleURL shows the expected form of analysis.prometheus.url.
const exampleURL = "http://prometheus.monitoring.svc:9090"

// Validate checks a decoded policy and returns every problem as Errors, or
// nil. It does not fill in defaults: a snapshot read back from a rollout
// annotation is validated as it was written.
func (p *Policy) Validate() error {
	if p == nil {
		return Errors{{Detail: "no policy"}}
	}
	var errs Errors
	errs = append(errs, validateSteps(p.Steps, field.NewPath("steps"))...)
	errs = append(errs, validateCapacity(p.Capacity, field.NewPath("capacity"))...)
	errs = append(errs, validateHealth(p.Health, field.NewPath("health"))...)
	if p.Analysis != nil {
		errs = append(errs, validateAnalysis(p.Analysis, field.NewPath("analysis"))...)
	}
	return errs.orNil()
}

// validateSteps requires at least one step and weights that rise strictly
// within 1..99, since 100% is the promotion that follows the last step.
func validateSteps(steps []Step, path *field.Path) Errors {
	if len(steps) == 0 {
		return Errors{fieldErrorf(path, "none given; add at least one step, such as {weight: 5, hold: 1m}")}
	}
	var errs Errors
	prev := -1
	for i, s := range steps {
		errs = append(errs, validateStep(s, path.Index(i))...)
		if s.Weight < minWeight || s.Weight > maxWeight {
			continue
		}
		if prev >= 0 && s.Weight <= steps[prev].Weight {
			errs = append(errs, fieldErrorf(path.Index(i).Child("weight"), "%d is not above %d of %s; weights must increase from step to step",
				s.Weight, steps[prev].Weight, path.Index(prev).Child("weight")))
		}
		prev = i
	}
	return errs
}

// validateStep checks one step's own fields.
func validateStep(s Step, path *field.Path) Errors {
	var errs Errors
	if s.Weight < minWeight || s.Weight > maxWeight {
		errs = append(errs, fieldErrorf(path.Child("weight"), "%d is not between %d and %d", s.Weight, minWeight, maxWeight))
	}
	switch hold := s.Hold.Duration; {
	case hold <= 0:
		errs = append(errs, fieldErrorf(path.Child("hold"), "%s is not above 0s; set how long to stay at this weight, at most %s",
			formatDuration(hold), formatDuration(maxHold)))
	case hold > maxHold:
		errs = append(errs, fieldErrorf(path.Child("hold"), "%s is above the maximum of %s", formatDuration(hold), formatDuration(maxHold)))
	}
	if s.Approval != "" && s.Approval != ApprovalManual {
		errs = append(errs, fieldErrorf(path.Child("approval"), "%q is not allowed; use %q or leave it out", s.Approval, ApprovalManual))
	}
	return errs
}

// validateCapacity allows the two capacity modes.
func validateCapacity(c Capacity, path *field.Path) Errors {
	if c != CapacitySurge && c != CapacityShift {
		return Errors{fieldErrorf(path, "%q is not allowed; use %q or %q", c, CapacitySurge, CapacityShift)}
	}
	return nil
}

// validateHealth bounds the Kubernetes-native checks.
func validateHealth(h Health, path *field.Path) Errors {
	var errs Errors
	errs = append(errs, durationBetween(h.ReadyTimeout, minReadyTimeout, maxReadyTimeout, path.Child("readyTimeout"))...)
	errs = append(errs, notNegative(h.MaxRestarts, path.Child("maxRestarts"))...)
	return errs
}

// validateAnalysis checks the analysis settings and every check. An analysis
// section without checks is refused rather than ignored: the user meant to
// guard the rollout with metrics, and silently running health checks only
// would promote on less evidence than they asked for.
func validateAnalysis(a *Analysis, path *field.Path) Errors {
	var errs Errors
	errs = append(errs, durationBetween(a.Interval, minInterval, maxInterval, path.Child("interval"))...)
	errs = append(errs, notNegative(a.FailureLimit, path.Child("failureLimit"))...)
	errs = append(errs, notNegative(a.NoDataLimit, path.Child("noDataLimit"))...)
	errs = append(errs, validatePrometheus(a.Prometheus, len(a.Checks)+len(a.Compare) > 0, path.Child("prometheus"))...)
	if len(a.Checks) == 0 && len(a.Compare) == 0 {
		return append(errs, fieldErrorf(path.Child("checks"), "none given; remove analysis or add checks or compare"))
	}
	if a.MinRequests < 0 {
		errs = append(errs, fieldErrorf(path.Child("minRequests"), "%d is below 0", a.MinRequests))
	}
	if a.MinRequests > 0 && len(a.Compare) == 0 {
		errs = append(errs, fieldErrorf(path.Child("minRequests"), "needs analysis.compare, whose requests query counts the canary's requests; add a comparison or remove minRequests"))
	}
	firstUse := map[string]*field.Path{}
	// Names are unique across checks and comparisons: both are a verdict's
	// check in Events, metrics and status.
	name := func(n string, item *field.Path) {
		if first, seen := firstUse[n]; seen && n != "" {
			errs = append(errs, fieldErrorf(item.Child("name"), "%q is already used by %s", n, first))
			return
		}
		firstUse[n] = item
	}
	for i, c := range a.Checks {
		cp := path.Child("checks").Index(i)
		errs = append(errs, validateCheck(c, cp)...)
		name(c.Name, cp)
	}
	for i, c := range a.Compare {
		cp := path.Child("compare").Index(i)
		errs = append(errs, validateComparison(c, cp)...)
		name(c.Name, cp)
	}
	return errs
}

// Bounds of a comparison's tolerance and alpha: a canary may be up to
// 100 × worse than stable (beyond that the comparison guards nothing), and
// alpha is a probability of at most one half (a test that rolls back half
// of all healthy releases guards nothing either).
const (
	maxTolerance = 100
	maxAlpha     = 0.5
)

// validateComparison checks one comparison: its name, its two counter
// templates, its tolerance and alpha.
func validateComparison(c Comparison, path *field.Path) Errors {
	var errs Errors
	errs = append(errs, validateCheckName(c.Name, path.Child("name"))...)
	for _, q := range []struct{ name, query, example string }{
		{"requests", c.Requests, `http_requests_total{namespace="{{.Namespace}}",pod=~"{{.Pods}}"}`},
		{"errors", c.Errors, `http_requests_total{namespace="{{.Namespace}}",pod=~"{{.Pods}}",code=~"5.."}`},
	} {
		if q.query == "" {
			errs = append(errs, fieldErrorf(path.Child(q.name), "required; a PromQL template for per-pod counters such as %s", q.example))
		} else if err := checkQuery(q.query); err != nil {
			errs = append(errs, fieldErrorf(path.Child(q.name), "%s", err.Error()))
		}
	}
	if !finite(c.Tolerance) || c.Tolerance < 0 || c.Tolerance > maxTolerance {
		errs = append(errs, fieldErrorf(path.Child("tolerance"), "%s is not between 0 and %d; 0.5 lets the canary's error rate reach 1.5 × stable's", formatFloat(c.Tolerance), maxTolerance))
	}
	if !finite(c.Alpha) || c.Alpha <= 0 || c.Alpha > maxAlpha {
		errs = append(errs, fieldErrorf(path.Child("alpha"), "%s is not above 0 and at most %s; it is the chance of rolling back a canary within the tolerance, such as 0.01", formatFloat(c.Alpha), formatFloat(maxAlpha)))
	}
	return errs
}

// validatePrometheus requires an absolute http(s) URL when there are checks
// to run. Credentials are refused in the URL because the policy is a
// ConfigMap and is copied into the Deployment's rollout annotation, both
// readable by anyone who can read the Deployment.
func validatePrometheus(p Prometheus, required bool, path *field.Path) Errors {
	up := path.Child("url")
	if p.URL == "" {
		if required {
			return Errors{fieldErrorf(up, "required when checks are set; an absolute http(s) URL such as %s", exampleURL)}
		}
		return nil
	}
	u, err := url.Parse(p.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Errors{fieldErrorf(up, "%q is not an absolute http(s) URL such as %s", p.URL, exampleURL)}
	}
	if u.User != nil {
		return Errors{fieldErrorf(up, "must not contain credentials; a policy ConfigMap is not a secret")}
	}
	return nil
}

// validateCheck checks one check: its name, its query template and its
// single threshold.
func validateCheck(c Check, path *field.Path) Errors {
	var errs Errors
	errs = append(errs, validateCheckName(c.Name, path.Child("name"))...)
	if c.Query == "" {
		errs = append(errs, fieldErrorf(path.Child("query"), "required; a PromQL query, a template over %s", knownVariables))
	} else if err := checkQuery(c.Query); err != nil {
		errs = append(errs, fieldErrorf(path.Child("query"), "%s", err.Error()))
	}
	return append(errs, validateThreshold(c, path)...)
}

// validateCheckName requires a DNS label, because the name is a metric label
// value, appears in Events and is typed in `kubectl fledge` commands.
func validateCheckName(name string, path *field.Path) Errors {
	if name == "" {
		return Errors{fieldErrorf(path, "required; a short name such as error-rate")}
	}
	if len(validation.IsDNS1123Label(name)) > 0 {
		return Errors{fieldErrorf(path, "%q is not a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters", name)}
	}
	return nil
}

// validateThreshold requires exactly one of max, min and maxRatio, so that
// a check's verdict has one reason, and a positive finite maxRatio.
func validateThreshold(c Check, path *field.Path) Errors {
	var given []string
	var errs Errors
	for _, t := range []struct {
		name  string
		value *float64
	}{{"max", c.Max}, {"min", c.Min}, {"maxRatio", c.MaxRatio}} {
		if t.value == nil {
			continue
		}
		given = append(given, t.name)
		if math.IsNaN(*t.value) || math.IsInf(*t.value, 0) {
			errs = append(errs, fieldErrorf(path.Child(t.name), "%s is not a finite number", formatFloat(*t.value)))
		}
	}
	switch len(given) {
	case 0:
		errs = append(errs, fieldErrorf(path, "sets none of max, min, maxRatio; set exactly one"))
	case 1:
	default:
		errs = append(errs, fieldErrorf(path, "sets %s; set exactly one of max, min, maxRatio", joinAnd(given)))
	}
	if c.MaxRatio != nil && *c.MaxRatio <= 0 {
		errs = append(errs, fieldErrorf(path.Child("maxRatio"), "%s is not above 0", formatFloat(*c.MaxRatio)))
	}
	return errs
}

// durationBetween checks min <= d <= max.
func durationBetween(d metav1.Duration, lo, hi time.Duration, path *field.Path) Errors {
	if d.Duration < lo || d.Duration > hi {
		return Errors{fieldErrorf(path, "%s is not between %s and %s", formatDuration(d.Duration), formatDuration(lo), formatDuration(hi))}
	}
	return nil
}

// notNegative checks a count.
func notNegative(n int32, path *field.Path) Errors {
	if n < 0 {
		return Errors{fieldErrorf(path, "%d is below 0", n)}
	}
	return nil
}

// formatFloat renders a threshold as the user wrote it.
func formatFloat(f float64) string {
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// joinAnd renders ["a", "b", "c"] as "a, b and c".
func joinAnd(items []string) string {
	if len(items) < 2 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " and " + items[len(items)-1]
}
