package policy

import "math"

// The comparison's test: is the canary's error rate at most (1 + tolerance)
// × the stable pods' rate? It is an anytime-valid sequential test, the
// construction Netflix runs for its canaries (Lindon & Malek, "Anytime-Valid
// Inference for Multinomial Count Data", NeurIPS 2022; Lindon, Sanden &
// Shirikian, "Rapid Regression Detection in Software Deployments through
// Sequential Testing", KDD 2022): its probability of ever rejecting a canary
// that is no worse than the tolerance is at most alpha, however often it
// looks. docs/policy.md says the same in plain words.
//
// Errors are counted on each side: c of the canary's n_c requests failed,
// s of the stable pods' n_s. Taken as Poisson counts, with rates p_c·n_c
// and p_s·n_s, the canary's share of one interval's c+s errors is binomial
// given c+s, with
//
//	θ(ρ) = n_c·ρ / (n_c·ρ + n_s),    ρ = p_c / p_s,
//
// which does not depend on the stable rate p_s at all: conditioning on the
// errors of the interval removes it. The null hypothesis is ρ ≤ ρ₀ = 1 +
// tolerance. For an alternative ρ₁ > ρ₀ the interval's likelihood ratio is
//
//	L(ρ₁) / L(ρ₀) = (θ(ρ₁)/θ(ρ₀))^c · ((1−θ(ρ₁))/(1−θ(ρ₀)))^s,
//
// whose expectation, given the interval's requests and errors, is at most 1
// whenever ρ ≤ ρ₀ (it is 1 at ρ₀ and grows with ρ). The product over the
// intervals is therefore a nonnegative supermartingale under the null, and
// so is a mixture of such products over a fixed set of alternatives. That
// mixture is the e-value E. Ville's inequality bounds the chance that E
// ever reaches 1/alpha under the null by alpha: that is the guarantee, and
// reaching 1/alpha is the rejection that rolls the canary back.
//
// Each interval has its own θ, from its own request counts, so a step that
// changes the canary's share of traffic changes nothing in the argument.
// Intervals without errors carry no evidence (the ratio is 1), and neither
// do intervals where one side served nothing (θ is 0 or 1 whatever ρ is).
//
// The counts are of requests that either failed or did not: binomial, not
// Poisson. For a canary no worse than stable, which is what the false-
// rollback guarantee is about, this makes the test conservative (the
// errors' split given their total is then hypergeometric, less spread than
// the binomial the ratio assumes). At the tolerance itself the odds ratio
// exceeds the rate ratio by a factor (1−p_s)/(1−p_c), under 1.01 for error
// rates under 1%, which is the approximation the guarantee rests on there.

// alternatives are the canary-to-tolerated rate ratios ρ₁/ρ₀ the e-value
// mixes, with equal weights. They span the regressions worth catching,
// from a quarter above the tolerance to 64 times it; a wider or finer grid
// changes the power a little and the guarantee not at all.
var alternatives = [...]float64{1.25, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64}

// Counts are one side's requests and, of them, errors.
type Counts struct {
	Requests float64 `json:"requests"`
	Errors   float64 `json:"errors"`
}

// Rate is Errors / Requests; 0 without requests.
func (c Counts) Rate() float64 {
	if c.Requests <= 0 {
		return 0
	}
	return c.Errors / c.Requests
}

func (c Counts) plus(d Counts) Counts {
	return Counts{Requests: c.Requests + d.Requests, Errors: c.Errors + d.Errors}
}

// errorShare is θ(ρ): the canary's expected share of the errors when it
// served canary requests against stable's and its error rate is ρ times
// stable's.
func errorShare(canary, stable, rho float64) float64 {
	return canary * rho / (canary*rho + stable)
}

// foldInterval adds one interval's likelihood ratios to logLR, one per
// alternative, for the null bound ρ₀. logLR must have len(alternatives)
// entries.
func foldInterval(logLR []float64, canary, stable Counts, bound float64) {
	if canary.Errors+stable.Errors <= 0 || canary.Requests <= 0 || stable.Requests <= 0 {
		return
	}
	theta0 := errorShare(canary.Requests, stable.Requests, bound)
	for i, r := range alternatives {
		theta := errorShare(canary.Requests, stable.Requests, bound*r)
		logLR[i] += canary.Errors*math.Log(theta/theta0) + stable.Errors*math.Log((1-theta)/(1-theta0))
	}
}

// logEValue is the logarithm of the mixture e-value: the mean of the
// alternatives' likelihood ratios, summed in log space so that a strong
// regression does not overflow. No evidence yet (nil or all zeros) is 0:
// E = 1.
func logEValue(logLR []float64) float64 {
	if len(logLR) == 0 {
		return 0
	}
	top := math.Inf(-1)
	for _, l := range logLR {
		top = math.Max(top, l)
	}
	var sum float64
	for _, l := range logLR {
		sum += math.Exp(l - top)
	}
	return top + math.Log(sum/float64(len(logLR)))
}
