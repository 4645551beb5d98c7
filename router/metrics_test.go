package router

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rollbackSeconds reads the count and sum of fledge_rollback_seconds.
func rollbackSeconds(t *testing.T, m *Metrics) (uint64, float64) {
	t.Helper()
	var out dto.Metric
	require.NoError(t, m.rollbackSeconds.Write(&out))
	return out.GetHistogram().GetSampleCount(), out.GetHistogram().GetSampleSum()
}

func TestRollbackSecondsTimeTheCutNotAManagerOutage(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

	m := NewMetrics(prometheus.NewRegistry())
	m.cut("team-a", "web", t0, false)
	m.cut("team-a", "web", t0.Add(time.Second), false)
	m.cut("team-a", "web", t0.Add(1500*time.Millisecond), true)
	count, sum := rollbackSeconds(t, m)
	assert.Equal(t, uint64(1), count)
	assert.InDelta(t, 1.5, sum, 1e-9, "from the reconcile that ordered the cut to the canary at zero")

	// The cut was ordered by a manager that was then killed; the one that
	// took over 5 minutes later sees the canary gone at its first look.
	restarted := NewMetrics(prometheus.NewRegistry())
	restarted.cut("team-a", "api", t0.Add(5*time.Minute), false)
	restarted.cut("team-a", "api", t0.Add(5*time.Minute+200*time.Millisecond), true)
	count, sum = rollbackSeconds(t, restarted)
	assert.Equal(t, uint64(1), count)
	assert.InDelta(t, 0.2, sum, 1e-9, "the outage is not counted as time to cut")
}
