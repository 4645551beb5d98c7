package router

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fledge-dev/fledge/policy"
	"github.com/fledge-dev/fledge/rollout"
)

// Metrics are the router's Prometheus metrics (prefix fledge_).
type Metrics struct {
	phase           *prometheus.GaugeVec
	targetWeight    *prometheus.GaugeVec
	effectiveWeight *prometheus.GaugeVec
	measuredWeight  *prometheus.GaugeVec
	outcomes        *prometheus.CounterVec
	rollbackSeconds prometheus.Histogram
	checks          *prometheus.CounterVec

	mu sync.Mutex
	// cuts holds the rollback cut this process is timing for each
	// Deployment, by namespace/name.
	cuts map[string]cutTimer
}

// cutTimer is one rollback's cut as this process saw it.
type cutTimer struct {
	attempt int32     // the rollout attempt rolling back
	began   time.Time // the first reconcile that ordered the cut
	timed   bool      // fledge_rollback_seconds has its sample
}

// NewMetrics registers the router's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		cuts: map[string]cutTimer{},
		phase: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fledge_rollouts",
			Help: "Rollouts in progress: 1 for the phase each Deployment's rollout is in. sum by (phase) counts rollouts by phase.",
		}, []string{"namespace", "deployment", "phase"}),
		targetWeight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fledge_rollout_target_weight",
			Help: "Canary share of traffic the current step aims at, in percent.",
		}, []string{"namespace", "deployment"}),
		effectiveWeight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fledge_rollout_effective_weight",
			Help: "Canary share of ready pods behind the Service, in percent: the share of traffic the pod counts give.",
		}, []string{"namespace", "deployment"}),
		measuredWeight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fledge_canary_measured_weight",
			Help: "Share of the current step's requests the canary served, in percent, counted by the policy's first comparison; absent without one or before its first count.",
		}, []string{"namespace", "deployment"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fledge_rollout_outcomes_total",
			Help: "Finished rollouts by outcome (Succeeded, RolledBack, Aborted) and reason (the failing check, user, or none).",
		}, []string{"outcome", "reason"}),
		rollbackSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fledge_rollback_seconds",
			Help:    "Seconds from the reconcile that ordered the canary's cut to the canary at zero pods, as one manager process saw it.",
			Buckets: []float64{0.25, 0.5, 1, 2, 3, 5, 10, 30, 60},
		}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fledge_check_results_total",
			Help: "Evaluations of Prometheus checks by check name and result (Pass, Fail, Inconclusive).",
		}, []string{"check", "result"}),
	}
	reg.MustRegister(m.phase, m.targetWeight, m.effectiveWeight, m.measuredWeight, m.outcomes, m.rollbackSeconds, m.checks)
	return m
}

// observeRollout sets the gauges of a running rollout; the measured
// weight only when ev has one for the current step.
func (m *Metrics) observeRollout(ns, name string, s *rollout.State, target int32, effective float64, ev *rollout.Evidence) {
	m.phase.DeletePartialMatch(prometheus.Labels{"namespace": ns, "deployment": name})
	m.phase.WithLabelValues(ns, name, string(s.Phase)).Set(1)
	m.targetWeight.WithLabelValues(ns, name).Set(float64(target))
	m.effectiveWeight.WithLabelValues(ns, name).Set(effective)
	if share, _, ok := ev.Measured(); ok && ev.Step == s.Step && ev.Attempt == s.Attempt {
		m.measuredWeight.WithLabelValues(ns, name).Set(share)
	} else {
		m.measuredWeight.DeleteLabelValues(ns, name)
	}
}

// forget drops the gauges of a rollout that ended or a Deployment that went.
func (m *Metrics) forget(ns, name string) {
	l := prometheus.Labels{"namespace": ns, "deployment": name}
	m.phase.DeletePartialMatch(l)
	m.targetWeight.DeletePartialMatch(l)
	m.effectiveWeight.DeletePartialMatch(l)
	m.measuredWeight.DeletePartialMatch(l)
	m.mu.Lock()
	delete(m.cuts, ns+"/"+name)
	m.mu.Unlock()
}

func (m *Metrics) outcome(o *rollout.Outcome) {
	reason := "none"
	if o.Reason != nil {
		reason = o.Reason.Check
	}
	m.outcomes.WithLabelValues(string(o.Phase), reason).Inc()
}

// evaluation counts the results of one evaluation, comparisons included.
func (m *Metrics) evaluation(results []policy.CheckResult) {
	for _, r := range results {
		m.checks.WithLabelValues(r.Check, string(r.Result)).Inc()
	}
}

// cut times a rollback's cut of the canary, once per rollout attempt:
// from the first reconcile whose plan was Cutting to the first whose plan
// saw the canary gone. The plan decides what is a rollback (an abort is
// not); cut only keeps the clock and remembers that the sample was taken,
// because a later reconcile of the same rollback (a requeue, the canary's
// deletion) plans the same CanaryGone, and only this memory tells them
// apart without a new field in the rollout state. Keying by attempt keeps
// a rollout whose end this process missed from lending its start to the
// next. A cut that began under another manager process is timed from when
// this one took it over, so a manager outage is not counted as time to cut.
func (m *Metrics) cut(o observed, p planned) {
	if !p.Cutting {
		return
	}
	key := o.Deployment.Namespace + "/" + o.Deployment.Name
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.cuts[key]
	if !ok || c.attempt != o.State.Attempt {
		c = cutTimer{attempt: o.State.Attempt, began: o.Now}
	}
	if p.CanaryGone && !c.timed {
		m.rollbackSeconds.Observe(o.Now.Sub(c.began).Seconds())
		c.timed = true
	}
	m.cuts[key] = c
}
