package lab

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// App is a Deployment of the demo image (DemoImage:Tag) and a Service of
// the same name in front of it, as tests and the demo apply them with kubectl.
type App struct {
	Namespace string
	Name      string // default "web"
	Tag       string
	Replicas  int
	// Env is the container's environment (the demo app reads ERROR_RATE,
	// LATENCY and FAIL_AFTER).
	Env map[string]string
	// PodLabels are added to the pod template's labels (the Service and the
	// selector use app: Name alone).
	PodLabels map[string]string
	// ServiceSelector is added to the Service's selector (app: Name), for a
	// Service that selects on more than the Deployment's selector.
	ServiceSelector map[string]string
}

// Manifest renders the Deployment and the Service as YAML.
func (a App) Manifest() string {
	if a.Name == "" {
		a.Name = "web"
	}
	labels := "app: " + a.Name
	for _, k := range slices.Sorted(maps.Keys(a.PodLabels)) {
		labels += fmt.Sprintf(", %s: %q", k, a.PodLabels[k])
	}
	selector := "app: " + a.Name
	for _, k := range slices.Sorted(maps.Keys(a.ServiceSelector)) {
		selector += fmt.Sprintf(", %s: %q", k, a.ServiceSelector[k])
	}
	env := ""
	if len(a.Env) > 0 {
		env = "\n        env:"
		for _, k := range slices.Sorted(maps.Keys(a.Env)) {
			env += fmt.Sprintf("\n        - {name: %s, value: %q}", k, a.Env[k])
		}
	}
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  replicas: %[3]d
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {%[4]s}
      annotations: {prometheus.io/scrape: "true", prometheus.io/port: "8080"}
    spec:
      containers:
      - name: app
        image: %[5]s:%[6]s
        ports:
        - {name: http, containerPort: 8080}%[7]s
---
apiVersion: v1
kind: Service
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  selector: {%[8]s}
  ports:
  - port: 80
    targetPort: 8080
`, a.Name, a.Namespace, a.Replicas, labels, DemoImage, a.Tag, env, selector)
}

// Policy is a team's policy ConfigMap fledge-policy with three steps (5%,
// 25%, 50%) and, with a Prometheus URL, the checks the demo app's metrics
// allow: its error rate, and its mean latency against stable's.
type Policy struct {
	Namespace string
	// Holds are the holds of the three steps, e.g. "15s".
	Holds    [3]string
	Capacity string // "" is the default, surge
	// PrometheusURL, when set, adds an analysis every 2s (failureLimit 1)
	// with an error-rate check (max 0.05 over 6s windows).
	PrometheusURL string
	NoDataLimit   int
	// ReadyTimeout is health.readyTimeout (default "30s"; policy
	// validation allows 10s and more).
	ReadyTimeout string
	// LatencyRatio, when set, adds a mean-latency check with this maxRatio.
	LatencyRatio float64
	// Compare, when set, judges errors with the comparison of canary and
	// stable on request counts instead of the error-rate threshold.
	Compare *Comparison
}

// Comparison is the policy's comparison of canary and stable error
// counts, on the demo app's http_requests_total.
type Comparison struct {
	// Tolerance and Alpha are the comparison's; 0 leaves each to its
	// default (0.5 and 0.01).
	Tolerance, Alpha float64
	// MinRequests is analysis.minRequests; 0 leaves it to its default.
	MinRequests int
}

// Manifest renders the ConfigMap as YAML.
func (p Policy) Manifest() string {
	if p.ReadyTimeout == "" {
		p.ReadyTimeout = "30s"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: v1
kind: ConfigMap
metadata:
  name: fledge-policy
  namespace: %s
  labels: {fledge.dev/policy: "true"}
data:
  policy.yaml: |
    steps:
    - {weight: 5, hold: %s}
    - {weight: 25, hold: %s}
    - {weight: 50, hold: %s}
    health:
      readyTimeout: %s
`, p.Namespace, p.Holds[0], p.Holds[1], p.Holds[2], p.ReadyTimeout)
	if p.Capacity != "" {
		fmt.Fprintf(&b, "    capacity: %s\n", p.Capacity)
	}
	if p.PrometheusURL == "" {
		return b.String()
	}
	fmt.Fprintf(&b, `    analysis:
      interval: 2s
      failureLimit: 1
      noDataLimit: %d
      prometheus:
        url: %s
`, p.NoDataLimit, p.PrometheusURL)
	if c := p.Compare; c != nil {
		if c.MinRequests > 0 {
			fmt.Fprintf(&b, "      minRequests: %d\n", c.MinRequests)
		}
		b.WriteString(`      compare:
      - name: errors
        requests: http_requests_total{namespace="{{.Namespace}}",pod=~"{{.Pods}}"}
        errors: http_requests_total{namespace="{{.Namespace}}",pod=~"{{.Pods}}",code=~"5.."}
`)
		if c.Tolerance > 0 {
			fmt.Fprintf(&b, "        tolerance: %g\n", c.Tolerance)
		}
		if c.Alpha > 0 {
			fmt.Fprintf(&b, "        alpha: %g\n", c.Alpha)
		}
	} else {
		b.WriteString(`      checks:
      - name: error-rate
        query: |
          sum(rate(http_requests_total{namespace="{{.Namespace}}",pod=~"{{.Pods}}",code=~"5.."}[6s]))
          / sum(rate(http_requests_total{namespace="{{.Namespace}}",pod=~"{{.Pods}}"}[6s]))
        max: 0.05
`)
	}
	if p.LatencyRatio > 0 {
		if p.Compare != nil {
			b.WriteString("      checks:\n")
		}
		fmt.Fprintf(&b, `      - name: mean-latency
        query: |
          sum(rate(http_request_duration_seconds_sum{namespace="{{.Namespace}}",pod=~"{{.Pods}}"}[6s]))
          / sum(rate(http_request_duration_seconds_count{namespace="{{.Namespace}}",pod=~"{{.Pods}}"}[6s]))
        maxRatio: %g
`, p.LatencyRatio)
	}
	return b.String()
}
