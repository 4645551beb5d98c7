package main

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fledge-dev/fledge/rollout"
	"github.com/fledge-dev/fledge/test/lab"
)

var t0 = time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)

func at(ms int) metav1.MicroTime {
	return metav1.NewMicroTime(t0.Add(time.Duration(ms) * time.Millisecond))
}

func atP(ms int) *metav1.MicroTime { t := at(ms); return &t }

func TestStepLags(t *testing.T) {
	hold := 5 * time.Second
	// Step 1 Ready at 1s, hold ends at 6s, step 2 starts at 6.002s (2 ms);
	// step 2 Ready at 7s, step 3 starts at 12.010s (10 ms); step 3 Ready
	// at 13s, ends (promotion) at 18.500s (500 ms).
	o := &rollout.Outcome{Phase: rollout.Succeeded, Attempt: 1, History: []rollout.StepRecord{
		{Step: 0, Started: at(0), Ready: atP(1000), Ended: atP(6002)},
		{Step: 1, Started: at(6002), Ready: atP(7000), Ended: atP(12010)},
		{Step: 2, Started: at(12010), Ready: atP(13000), Ended: atP(18500)},
	}}
	steps, promotions, err := stepLags([]*rollout.Outcome{o}, hold)
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{2 * time.Millisecond, 10 * time.Millisecond, 500 * time.Millisecond}
	if fmt.Sprint(steps) != fmt.Sprint(want) {
		t.Errorf("steps %v, want %v", steps, want)
	}
	if fmt.Sprint(promotions) != fmt.Sprint(want[2:]) {
		t.Errorf("promotions %v, want %v", promotions, want[2:])
	}
}

func TestStepLagsRefuseAHistoryWithoutTimes(t *testing.T) {
	cases := map[string][]rollout.StepRecord{
		"no history":              nil,
		"a step never Ready":      {{Step: 0, Started: at(0)}},
		"a last step with no end": {{Step: 0, Started: at(0), Ready: atP(10)}},
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			if _, _, err := stepLags([]*rollout.Outcome{{Phase: rollout.Succeeded, History: h}}, time.Second); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	cases := []struct {
		name    string
		samples []time.Duration
		q       float64
		want    time.Duration
	}{
		{"median of an even count is between the middle two", ms(4, 1, 3, 2), 0.5, 2500 * time.Microsecond},
		{"p99 of 1..101 is the 100th", ms(func() []int {
			var v []int
			for i := 1; i <= 101; i++ {
				v = append(v, i)
			}
			return v
		}()...), 0.99, 100 * time.Millisecond},
		{"the maximum is q=1", ms(7, 9, 8), 1, 9 * time.Millisecond},
		{"one sample is every quantile", ms(3), 0.99, 3 * time.Millisecond},
		{"no samples is 0", nil, 0.5, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := percentile(c.samples, c.q); got != c.want {
				t.Errorf("percentile(%v) = %v, want %v", c.q, got, c.want)
			}
		})
	}
}

// audit is an audit event as the lab's log has it.
func audit(t *testing.T, user, verb, resource, sub, name string, code int, ms int) lab.AuditEvent {
	t.Helper()
	received := t0.Add(time.Duration(ms) * time.Millisecond)
	raw := fmt.Sprintf(`{"verb":%q,"user":{"username":%q},"objectRef":{"resource":%q,"subresource":%q,"namespace":"scale-00","name":%q},"responseStatus":{"code":%d},"requestReceivedTimestamp":%q,"stageTimestamp":%q}`,
		verb, user, resource, sub, name, code, received.Format(time.RFC3339Nano), received.Add(4*time.Millisecond).Format(time.RFC3339Nano))
	var e lab.AuditEvent
	if err := json.Unmarshal([]byte(raw), &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestCountWrites(t *testing.T) {
	events := []lab.AuditEvent{
		audit(t, "fledge", "update", "deployments", "", "app-00001", 200, 10),
		audit(t, "fledge", "update", "deployments", "", "app-00001", 409, 20),
		audit(t, "fledge", "create", "deployments", "", "app-00001-canary", 201, 30),
		audit(t, "fledge", "update", "deployments", "", "app-00001-canary", 200, 40),
		audit(t, "fledge", "delete", "deployments", "", "app-00001-canary", 200, 50),
		audit(t, "fledge", "patch", "deployments", "status", "app-00001", 200, 60),
		audit(t, "fledge", "create", "events", "", "app-00001.1", 201, 70),
		audit(t, "fledge", "update", "leases", "", "fledge", 200, 80),
		audit(t, "fledge", "update", "secrets", "", "fledge-webhook-tls", 200, 90),
		// Not counted: another identity, and the manager before the window.
		audit(t, "system:kube-controller-manager", "update", "deployments", "status", "app-00001", 200, 15),
		audit(t, "fledge", "update", "deployments", "", "app-00002", 200, -5),
	}
	got := countWrites(events, "fledge", t0, t0.Add(time.Second))
	want := writeCounts{
		Stable: verbs{Update: 1}, Canary: verbs{Create: 1, Update: 1, Delete: 1},
		Status: 1, Events: 1, Leases: 1, Other: map[string]int{"secrets": 1}, Conflicts: 1,
		DeploymentSeconds: 3 * 0.004,
	}
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
		t.Errorf("countWrites =\n %+v\nwant\n %+v", got, want)
	}
	if m := got.deploymentMean(); m != 4*time.Millisecond {
		t.Errorf("Deployment write mean %v, want 4ms", m)
	}
	if got.deployments() != 3 {
		t.Errorf("Deployment writes %d, want 3 (creates, updates and patches of both; no delete, no conflict)", got.deployments())
	}
}

func TestParseProcStatus(t *testing.T) {
	status := "Name:\tfledge\nVmPeak:\t 1300000 kB\nVmHWM:\t   71680 kB\nVmRSS:\t   56320 kB\nThreads:\t9\n"
	rss, hwm, err := parseProcStatus(status)
	if err != nil {
		t.Fatal(err)
	}
	if rss != 55<<20 || hwm != 70<<20 {
		t.Errorf("rss %d hwm %d, want 55 MiB and 70 MiB", rss, hwm)
	}
	if _, _, err := parseProcStatus("Name:\tfledge\nVmRSS:\t 1 kB\n"); err == nil {
		t.Error("a status without VmHWM parsed")
	}
}

func TestWorkloadShape(t *testing.T) {
	c := config{Deployments: 1000, Rollouts: 100, Replicas: []int32{2, 3}, Namespaces: 10}
	if c.pods() != 2500 {
		t.Errorf("pods %d, want 2,500", c.pods())
	}
	// 100 rollouts of 2 and 3 pods in turn: 250 pods, a canary as large
	// and one surge pod each.
	if c.peakPods() != 2500+250+100 {
		t.Errorf("peak %d, want 2,850", c.peakPods())
	}
	if c.nodes() != 4 {
		t.Errorf("nodes %d, want 4 (2,850 pods at 800 a node, a power of two)", c.nodes())
	}
	seen := map[int]bool{}
	perNamespace := map[int]int{}
	pods := map[int32]int{}
	for i := range c.Rollouts {
		d := c.rolloutIndex(i)
		if seen[d] || d >= c.Deployments {
			t.Fatalf("rollout %d: Deployment %d again or out of range", i, d)
		}
		seen[d] = true
		perNamespace[c.namespaceOf(d)]++
		pods[c.replicasOf(d)]++
	}
	for ns := range c.Namespaces {
		if perNamespace[ns] != 10 {
			t.Errorf("namespace %d has %d rollouts, want 10", ns, perNamespace[ns])
		}
	}
	if pods[2] != 50 || pods[3] != 50 {
		t.Errorf("rollouts by pod count %v, want 50 of 2 and 50 of 3", pods)
	}
}

func TestValidateRefusesWhatTheLabCannotHold(t *testing.T) {
	cases := map[string]config{
		"10,000 pods do not fit the lab's pod addresses": {Deployments: 10000, Replicas: []int32{1}, Namespaces: 10},
		"a rollout of a Deployment with no pods":         {Deployments: 10, Rollouts: 1, Replicas: []int32{0}, Namespaces: 1, LatencySamples: 1},
		"more rollouts than Deployments":                 {Deployments: 10, Rollouts: 11, Replicas: []int32{1}, Namespaces: 1, LatencySamples: 1},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if err := c.validate(); err == nil {
				t.Error("accepted")
			}
		})
	}
	ok := config{Deployments: 10000, Replicas: []int32{1, 0, 0, 0}, Namespaces: 100}
	if err := ok.validate(); err != nil {
		t.Errorf("10,000 Deployments with 2,500 pods: %v", err)
	}
}

func TestParseReplicas(t *testing.T) {
	if got, err := parseReplicas("2, 3"); err != nil || fmt.Sprint(got) != "[2 3]" {
		t.Errorf("parseReplicas(2, 3) = %v, %v", got, err)
	}
	for _, bad := range []string{"", "2,,3", "-1", "two"} {
		if _, err := parseReplicas(bad); err == nil {
			t.Errorf("parseReplicas(%q) accepted", bad)
		}
	}
}

func TestRSSGoal(t *testing.T) {
	cases := map[int]uint64{500: 100 << 20, 1000: 100 << 20, 5500: 175 << 20, 10000: 250 << 20, 20000: 250 << 20}
	for n, want := range cases {
		if got := rssGoal(n); got != want {
			t.Errorf("rssGoal(%d) = %s, want %s", n, mib(got), mib(want))
		}
	}
}

func TestCount(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 9832: "9,832", 1000000: "1,000,000", -2500: "-2,500"} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
}
