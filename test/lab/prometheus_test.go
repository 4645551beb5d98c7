package lab_test

import (
	"context"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fledge-dev/fledge/rollout"
)

// promQuery runs an instant query on the lab's Prometheus.
func promQuery(t *testing.T, query string, at time.Time) model.Vector {
	t.Helper()
	client, err := promapi.NewClient(promapi.Config{Address: theLab.PrometheusURL})
	require.NoError(t, err)
	v, _, _, err := promv1.NewAPI(client).Query(t.Context(), query, at)
	require.NoError(t, err, query)
	vec, ok := v.(model.Vector)
	require.True(t, ok, "%s gave a %s, not a vector", query, v.Type())
	return vec
}

func TestPrometheusScrapesDemoPodsWithTheirTrack(t *testing.T) {
	ns := "lab-prom"
	pods := demoApp(t, ns, 2, 1)
	want := map[string]model.LabelSet{}
	for _, p := range pods {
		track := p.Labels[rollout.LabelTrack]
		if track == "" {
			track = "stable"
		}
		want[p.Name] = model.LabelSet{
			"__name__":  "up",
			"instance":  model.LabelValue(p.Status.PodIP + ":8080"),
			"job":       "lab-pods",
			"namespace": model.LabelValue(ns),
			"pod":       model.LabelValue(p.Name),
			"track":     model.LabelValue(track),
		}
	}
	var got map[string]model.LabelSet
	eventually(t, "up = 1 for each pod", func(ctx context.Context) (bool, error) {
		got = map[string]model.LabelSet{}
		for _, s := range promQuery(t, `up{namespace="`+ns+`"}`, time.Now()) {
			if s.Value != 1 {
				return false, nil
			}
			got[string(s.Metric["pod"])] = model.LabelSet(s.Metric)
		}
		return len(got) == len(want), nil
	})
	assert.Equal(t, want, got)

	// Every target, of this test or any other, is scraped on its pod's IP
	// in the lab's pod block.
	client, err := promapi.NewClient(promapi.Config{Address: theLab.PrometheusURL})
	require.NoError(t, err)
	targets, err := promv1.NewAPI(client).Targets(t.Context())
	require.NoError(t, err)
	require.NotEmpty(t, targets.Active)
	for _, target := range targets.Active {
		assert.Regexp(t, `^http://198\.18\.\d+\.\d+:8080/metrics$`, target.ScrapeURL)
	}
}

func TestPrometheusStopsAndStartsAgainWithItsData(t *testing.T) {
	ns := "lab-prom-restart"
	pods := demoApp(t, ns, 1, 0)
	pod := pods[0].Name
	eventually(t, "a scrape of "+pod, func(ctx context.Context) (bool, error) {
		return len(promQuery(t, `up{namespace="`+ns+`"} == 1`, time.Now())) == 1, nil
	})
	before := time.Now()
	url := theLab.PrometheusURL
	pid := theLab.PIDs()["prometheus"]

	theLab.StopPrometheus()
	assert.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "prometheus (pid %d) still runs", pid)
	_, err := http.Get(url + "/-/ready")
	assert.ErrorIs(t, err, syscall.ECONNREFUSED, "prometheus still answers")

	restarted := time.Now()
	require.NoError(t, theLab.StartPrometheus(t.Context()))
	assert.Equal(t, url, theLab.PrometheusURL, "same URL after the restart")
	assert.NotEqual(t, pid, theLab.PIDs()["prometheus"])

	old := promQuery(t, `up{namespace="`+ns+`"}`, before)
	require.Len(t, old, 1, "samples from before the outage")
	assert.Equal(t, model.LabelValue(pod), old[0].Metric["pod"])

	eventually(t, "a scrape after the restart", func(ctx context.Context) (bool, error) {
		v := promQuery(t, fmt.Sprintf(`timestamp(up{namespace=%q}) > %d`, ns, restarted.Unix()), time.Now())
		return len(v) == 1, nil
	})
}
