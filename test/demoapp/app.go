package main

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// app answers GET / as configured and counts what it answered. The clock and
// the dice are injected so tests decide when FAIL_AFTER has passed and which
// requests fail.
type app struct {
	cfg    config
	start  time.Time
	now    func() time.Time
	random func() float64 // in [0, 1)

	registry *prometheus.Registry
	requests *prometheus.CounterVec
	duration prometheus.Histogram
}

func newApp(cfg config, now func() time.Time, random func() float64) *app {
	a := &app{
		cfg:      cfg,
		start:    now(),
		now:      now,
		random:   random,
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total",
			Help: "Requests to GET / by HTTP status code.",
		}, []string{"code"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "http_request_duration_seconds",
			Help: "Time to answer GET /, LATENCY included.",
			// From a plain answer (about 1ms) to a LATENCY of a couple of
			// seconds, dense enough in between for a p99 check to tell a
			// regression of 1.2× or more.
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2},
		}),
	}
	a.registry.MustRegister(a.requests, a.duration)
	// Both codes exist from the first scrape, so an error-rate query reads 0
	// for a healthy pod instead of "no data".
	a.requests.WithLabelValues("200")
	a.requests.WithLabelValues("500")
	return a
}

func (a *app) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.root)
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}))
	// /pod names the pod without counting a request: a probe that must
	// tell pods apart through a Service leaves the metrics alone.
	mux.HandleFunc("GET /pod", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, a.cfg.pod) })
	return mux
}

// root is the app's one page: "ok <version> <pod>", or "error <version>
// <pod>" with a 500, so a client behind a Service can count the answers by
// the pod that gave them without asking the cluster which one it reached. A
// request whose client gave up during LATENCY is not counted: nobody saw its
// answer.
func (a *app) root(w http.ResponseWriter, r *http.Request) {
	begin := time.Now()
	if a.cfg.latency > 0 {
		t := time.NewTimer(a.cfg.latency)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
	code, word := http.StatusOK, "ok"
	if a.failing() {
		code, word = http.StatusInternalServerError, "error"
	}
	body := word + " " + a.cfg.version
	if a.cfg.pod != "" {
		body += " " + a.cfg.pod
	}
	body += "\n"
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprint(w, body)
	a.requests.WithLabelValues(strconv.Itoa(code)).Inc()
	a.duration.Observe(time.Since(begin).Seconds())
}

// failing decides whether this request gets a 500: never before FAIL_AFTER
// of uptime, nor while FAIL_FILE (when set) does not exist, then with
// probability ERROR_RATE.
func (a *app) failing() bool {
	if a.cfg.errorRate == 0 || a.now().Sub(a.start) < a.cfg.failAfter {
		return false
	}
	if a.cfg.failFile != "" {
		if _, err := os.Stat(a.cfg.failFile); err != nil {
			return false
		}
	}
	return a.random() < a.cfg.errorRate
}
