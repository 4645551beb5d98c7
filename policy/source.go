package policy

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// Source is the one thing the analysis needs from Prometheus: an instant
// query. client_golang's v1.API satisfies it as it is, and tests replace it
// without mocking the other twenty-odd methods of that API. The signature
// is v1.API's own, Infos included (client_golang v1.25 added them).
type Source interface {
	Query(ctx context.Context, query string, ts time.Time, opts ...v1.Option) (model.Value, v1.Warnings, v1.Infos, error)
}

// v1.API must stay a Source: Analyzer's default relies on it.
var _ Source = v1.API(nil)

// NewPrometheusSource returns a Source for the Prometheus HTTP API at
// baseURL, such as http://prometheus.monitoring.svc:9090. It makes no
// request: an unreachable Prometheus shows up later, as inconclusive checks.
func NewPrometheusSource(baseURL string) (Source, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("prometheus url %q is not an absolute http(s) URL", baseURL)
	}
	client, err := api.NewClient(api.Config{Address: baseURL})
	if err != nil {
		return nil, fmt.Errorf("prometheus url %q: %w", baseURL, err)
	}
	return v1.NewAPI(client), nil
}

// Analyzer evaluates analyses against Prometheus. It keeps one Source per
// Prometheus URL, so that every rollout reading the same Prometheus shares
// its HTTP connections. The cache is never pruned: a cluster's policies name
// a handful of Prometheus URLs. An Analyzer is safe for concurrent use; its
// zero value uses NewPrometheusSource.
type Analyzer struct {
	newSource func(url string) (Source, error)

	mu      sync.Mutex
	sources map[string]Source
}

// NewAnalyzer returns an Analyzer that makes its Sources with newSource
// (nil means NewPrometheusSource). newSource is called with the Analyzer's
// lock held, once per URL that it succeeds for, so it must not block; a
// URL it fails for is tried again at the next evaluation.
func NewAnalyzer(newSource func(url string) (Source, error)) *Analyzer {
	return &Analyzer{newSource: newSource}
}

// source returns the cached Source for a URL, making it on first use.
func (z *Analyzer) source(baseURL string) (Source, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if s, ok := z.sources[baseURL]; ok {
		return s, nil
	}
	newSource := z.newSource
	if newSource == nil {
		newSource = NewPrometheusSource
	}
	s, err := newSource(baseURL)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return nil, fmt.Errorf("prometheus url %q: no client", baseURL)
	}
	if z.sources == nil {
		z.sources = map[string]Source{}
	}
	z.sources[baseURL] = s
	return s, nil
}
