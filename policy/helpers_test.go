package policy

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// dur is a metav1.Duration literal.
func dur(d time.Duration) metav1.Duration { return metav1.Duration{Duration: d} }

// num is a threshold literal.
func num(f float64) *float64 { return &f }

// errorQuery is the error-rate query of the ARCHITECTURE.md example.
const errorQuery = `sum(rate(http_requests_total{namespace="{{.Namespace}}",pod=~"{{.Pods}}",code=~"5.."}[1m]))
/ sum(rate(http_requests_total{namespace="{{.Namespace}}",pod=~"{{.Pods}}"}[1m]))
`

// latencyQuery is the p99-latency query of the ARCHITECTURE.md example.
const latencyQuery = `histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{pod=~"{{.Pods}}"}[1m])))`

// examplePolicy is the policy of ARCHITECTURE.md as a struct; tests mutate
// fresh copies of it.
func examplePolicy() *Policy {
	return &Policy{
		Steps: []Step{
			{Weight: 5, Hold: dur(time.Minute)},
			{Weight: 25, Hold: dur(time.Minute)},
			{Weight: 50, Hold: dur(2 * time.Minute), Approval: ApprovalManual},
		},
		Capacity: CapacitySurge,
		Health:   Health{ReadyTimeout: dur(5 * time.Minute), MaxRestarts: 0},
		Analysis: &Analysis{
			Interval:     dur(15 * time.Second),
			FailureLimit: 1,
			NoDataLimit:  4,
			Prometheus:   Prometheus{URL: "http://prometheus.monitoring.svc:9090"},
			Checks: []Check{
				{Name: "error-rate", Query: errorQuery, Max: num(0.01)},
				{Name: "p99-latency", Query: latencyQuery, MaxRatio: num(1.2)},
			},
		},
	}
}

// readExample returns testdata/architecture-example.yaml.
func readExample(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/architecture-example.yaml")
	require.NoError(t, err)
	return data
}
