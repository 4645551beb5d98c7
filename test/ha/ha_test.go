package ha

import (
	"context"
	"fmt"
	"math"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/fledge-dev/fledge/rollout"
	"github.com/fledge-dev/fledge/test/lab"
)

// TestTwoManagersServeAndOnlyTheLeaderWrites runs a rollout with both
// managers up: they are on two nodes and both are endpoints of the
// webhook's Service; the audit log shows that every write of the
// manager's ServiceAccount to Deployments, Events and Leases came from the
// leader's pod; and bursts of user updates are decided by both.
//
// Both decide admissions unless every connection the apiserver opened to
// the Service went to the same one: kube-proxy sends each new connection to
// either with probability 1/2, and bursts of 16 concurrent updates make the
// apiserver open about 16 (the test counts and logs them), so the test
// fails by chance with probability about 2^(1-16) = 3e-5.
func TestTwoManagersServeAndOnlyTheLeaderWrites(t *testing.T) {
	managerLogs(t)
	pods, lease := bothServing(t)
	since := time.Now()
	leader := holderPod(lease)
	var follower string
	nodes := map[string]string{}
	for _, p := range pods {
		nodes[p.Name] = p.Spec.NodeName
		if p.Name != leader {
			follower = p.Name
		}
	}
	t.Logf("leader %s on %s, follower %s on %s", leader, nodes[leader], follower, nodes[follower])
	require.Len(t, nodes, 2)
	assert.NotEqual(t, nodes[leader], nodes[follower], "the two replicas share a node")
	want := map[string]string{}
	for _, p := range pods {
		want[p.Name] = p.Status.PodIP
	}
	// The EndpointSlice controller follows the pods' readiness a moment
	// after kube-proxy's view that bothServing waited for.
	var eps map[string]string
	eventually(t, 10*time.Second, "both managers ready endpoints of the Service", func(ctx context.Context) (bool, error) {
		var err error
		eps, err = readyEndpoints(ctx)
		return err == nil && assert.ObjectsAreEqual(want, eps), err
	})
	assert.Equal(t, want, eps, "the Service's ready endpoints")

	ns := "ha-pair"
	rolloutNamespace(t, ns, [3]string{"2s", "2s", "2s"})
	const burst = 16
	for i := range burst {
		probeDeployment(t, ns, fmt.Sprintf("probe-%d", i))
	}

	// The apiserver calls the webhook through the Service's ClusterIP over
	// HTTP/1.1 keep-alive connections; kube-proxy sends each new
	// connection to one of the two endpoints at random. Writes one after
	// another reuse one connection, so the writes come in bursts of
	// concurrent ones, which make the apiserver open connections.
	before := map[string]int{leader: admissions(t, leader), follower: admissions(t, follower)}
	writes := 0
	for round := range 5 {
		var wg sync.WaitGroup
		errs := make([]error, burst)
		for i := range burst {
			wg.Go(func() { errs[i] = probeWrite(t.Context(), ns, fmt.Sprintf("probe-%d", i), round+1) })
		}
		wg.Wait()
		for _, err := range errs {
			require.NoError(t, err)
		}
		writes += burst
	}
	conns := webhookConnections(t)
	decided := map[string]int{}
	for _, p := range []string{leader, follower} {
		decided[p] = admissions(t, p) - before[p]
	}
	c := conns[want[leader]] + conns[want[follower]]
	t.Logf("%d user updates in 5 bursts of %d: leader decided %d, follower %d; the apiserver holds %d connections to the webhook (%d to the leader, %d to the follower): all on one replica has probability 2^(1-%d) = %.2g",
		writes, burst, decided[leader], decided[follower], c, conns[want[leader]], conns[want[follower]], c, math.Pow(2, float64(1-c)))
	assert.Positive(t, decided[leader], "the leader decided no admission")
	assert.Positive(t, decided[follower], "the follower decided no admission")
	assert.GreaterOrEqual(t, decided[leader]+decided[follower], writes, "every write was decided by one of them")

	release(t, ns)
	out := waitOutcome(t, ns)
	require.Equal(t, rollout.Succeeded, out.Phase, "reason: %+v", out.Reason)
	assertSteps(t, ns, out)

	require.Equal(t, leader, holderPod(getLease(t)), "the leader changed during the test")
	// The follower's router has its caches warm (EnableWarmup): its watches
	// run and fill its queue, which no worker takes from until it leads.
	queued, _ := metric(t, follower, `workqueue_adds_total{controller="router",name="router"}`)
	t.Logf("the follower's router queue took %.0f keys while it did not lead", queued)
	assert.Positive(t, queued, "the follower's router watches nothing: a new leader would list every Deployment first")
	pairs, all := serviceWrites(t, since)
	t.Logf("writes of %s since both were Ready, by pod, resource and verb: %v", serviceUser, all)
	assert.Equal(t, map[[2]string]bool{{leader, "deployments"}: true, {leader, "events"}: true, {leader, "leases"}: true}, pairs,
		"(pod, resource) of the manager's writes to deployments, events and leases")

	// The PodDisruptionBudget: with the follower not Ready (stopped, so
	// its readiness probe fails), a drain may not take the leader.
	follow, ok := theLab.ManagerPods()[namespace+"/"+follower]
	require.True(t, ok)
	require.NoError(t, syscall.Kill(follow.PID, syscall.SIGSTOP))
	stopped := true
	defer func() {
		if stopped {
			syscall.Kill(follow.PID, syscall.SIGCONT)
		}
	}()
	eventually(t, 30*time.Second, "the PodDisruptionBudget to allow no disruption", func(ctx context.Context) (bool, error) {
		pdb, err := theLab.Client.PolicyV1().PodDisruptionBudgets(namespace).Get(ctx, "fledge", metav1.GetOptions{})
		return err == nil && pdb.Status.CurrentHealthy == 1 && pdb.Status.DisruptionsAllowed == 0, err
	})
	err := evict(t, leader)
	require.Error(t, err, "evicting the leader while the follower is not Ready")
	assert.True(t, apierrors.IsTooManyRequests(err), "the eviction: %v", err)
	t.Logf("with %s stopped and not Ready, the eviction of the leader: %v", follower, err)
	require.NoError(t, syscall.Kill(follow.PID, syscall.SIGCONT))
	stopped = false
	bothServing(t)
}

// TestLeaderStoppedGracefullyHandsOverMidRollout evicts the leader during
// step 2's hold, as kubectl drain does (the PodDisruptionBudget lets it
// through: TestTwoManagersServeAndOnlyTheLeaderWrites shows it refusing
// one while the other manager is not Ready); the old leader serves through its
// preStop sleep, releases the Lease on SIGTERM and the other manager leads
// within 5s; the rollout goes on from step 2; and a user updating every
// 250ms meanwhile sees no failure.
func TestLeaderStoppedGracefullyHandsOverMidRollout(t *testing.T) {
	ns := "ha-graceful"
	w, old, oldID := holdingStep2(t, ns, "20s")
	pods, err := managerPods(t.Context(), theLab)
	require.NoError(t, err)
	other := pods[slices.IndexFunc(pods, func(p corev1.Pod) bool { return p.Name != old })].Name

	evicted := time.Now()
	require.NoError(t, evict(t, old), "evict the leader %s", old)
	t.Logf("evicted the leader %s; %s goes on", old, other)

	next := waitNewHolder(t, oldID, 30*time.Second)
	sigterm := managerEvent(t, old, "SIGTERM")
	stopped := managerEvent(t, old, "Stopped")
	handover := next.Spec.AcquireTime.Sub(sigterm.At)
	pods, err = managerPods(t.Context(), theLab)
	require.NoError(t, err)
	t.Logf("SIGTERM %.2fs after the eviction (preStop 5s); the old leader stopped %.2fs after SIGTERM (%s); %s leads %.2fs after SIGTERM (managers now: %v)",
		sigterm.At.Sub(evicted).Seconds(), stopped.At.Sub(sigterm.At).Seconds(), stopped.Detail, holderPod(next), handover.Seconds(), podNames(pods))
	assert.GreaterOrEqual(t, sigterm.At.Sub(evicted), 5*time.Second, "SIGTERM came before the preStop sleep ended")
	assert.Empty(t, managerEventsOf(old, "SIGKILL"), "the old leader needed SIGKILL")
	// Either follower may win: the other manager, or the replacement,
	// Ready a second or two after the eviction.
	assert.NotEqual(t, old, holderPod(next), "the new leader")
	assert.Contains(t, podNames(pods), holderPod(next), "the new leader is a running manager")
	assert.LessOrEqual(t, handover, 5*time.Second, "from the old leader's SIGTERM to the new leader")
	// Release on cancel: the old leader wrote the Lease after SIGTERM
	// (it renews until its runnables have stopped, then releases).
	released := leaseWrites(t, old, sigterm.At)
	require.NotEmpty(t, released, "the old leader did not write the Lease after SIGTERM: no release")
	assert.False(t, released[len(released)-1].RequestReceivedTimestamp.After(stopped.At), "a Lease write after the old leader stopped")
	if replacement := slices.DeleteFunc(podNames(pods), func(p string) bool { return p == other }); len(replacement) == 1 {
		kwokReady, notReady, kwokWrites := readyWindow(t, replacement[0])
		t.Logf("the replacement %s: kwok made it Running and Ready; the pod runner took it out of Ready %.0fms later; Ready %.2fs after the eviction",
			replacement[0], notReady.Sub(kwokReady).Seconds()*1000, managerEvent(t, replacement[0], "Ready").At.Sub(evicted).Seconds())
		assert.Equal(t, 1, kwokWrites, "kwok's status writes of the replacement: Pending to Running only, then the runner's readiness stands")
	}

	time.Sleep(2 * time.Second)
	ws := w.finish()
	t.Logf("%d user updates from %.1fs before the eviction to %.1fs after the new leader: %d failed %v",
		len(ws), evicted.Sub(ws[0].start).Seconds(), ws[len(ws)-1].end.Sub(next.Spec.AcquireTime.Time).Seconds(), len(failures(ws)), describe(failures(ws), evicted))
	assert.Empty(t, failures(ws), "failed user updates")

	out := waitOutcome(t, ns)
	require.Equal(t, rollout.Succeeded, out.Phase, "reason: %+v", out.Reason)
	assertSteps(t, ns, out)
	pods, _ = bothServing(t)
	t.Logf("after: %s", podsOnNodes(pods))
}

// TestKilledLeaderIsReplacedWithinTheLease kills the leader (SIGKILL)
// during step 2's hold: its endpoint leaves the Service at once, the Lease
// is taken over once it expired, and the rollout goes on from step 2. A
// user updating every 250ms may see connections refused only until the
// dead endpoint left the data plane.
func TestKilledLeaderIsReplacedWithinTheLease(t *testing.T) {
	ns := "ha-kill"
	w, old, oldID := holdingStep2(t, ns, "30s")
	m := theLab.ManagerPods()[namespace+"/"+old]
	require.NotZero(t, m.PID)
	killed := time.Now()
	require.NoError(t, syscall.Kill(m.PID, syscall.SIGKILL))

	// The dead endpoint: not ready in the EndpointSlice, then out of
	// kube-proxy's rules.
	var sliceLeft, dataPlaneLeft time.Time
	eventually(t, 10*time.Second, "the dead endpoint out of the data plane", func(ctx context.Context) (bool, error) {
		if sliceLeft.IsZero() {
			eps, err := readyEndpoints(ctx)
			if err != nil {
				return false, err
			}
			if _, ready := eps[old]; !ready {
				sliceLeft = time.Now()
			}
		}
		if !slices.Contains(dataPlaneEndpoints(t), m.IP.String()) {
			dataPlaneLeft = time.Now()
			return !sliceLeft.IsZero(), nil
		}
		return false, nil
	})
	lastRenew := getLease(t).Spec.RenewTime.Time

	next := waitNewHolder(t, oldID, 40*time.Second)
	handover := next.Spec.AcquireTime.Sub(killed)
	// A follower takes the Lease once it has seen no renewal for
	// LeaseDuration, counted from when it saw the last one; it looks every
	// RetryPeriod to RetryPeriod×(1+jitter), so the last renewal may be
	// seen that late and the expiry noticed that late again.
	bound := leaseDuration + 2*time.Duration(float64(retryPeriod)*(1+jitterFactor)) + time.Second
	t.Logf("killed the leader %s (pid %d); its endpoint left the EndpointSlice %.2fs and kube-proxy's rules %.2fs later; %s leads %.2fs after the kill (%.2fs after the dead leader's last renewal; LeaseDuration+RetryPeriod is %s, the bound %s)",
		old, m.PID, sliceLeft.Sub(killed).Seconds(), dataPlaneLeft.Sub(killed).Seconds(), holderPod(next), handover.Seconds(),
		next.Spec.AcquireTime.Sub(lastRenew).Seconds(), leaseDuration+retryPeriod, bound)
	assert.GreaterOrEqual(t, next.Spec.AcquireTime.Sub(lastRenew), leaseDuration, "the Lease was taken before it expired")
	assert.LessOrEqual(t, handover, bound, "from the kill to the new leader")

	time.Sleep(2 * time.Second)
	ws := w.finish()
	var inWindow, after []write
	for _, f := range failures(ws) {
		if f.start.Before(dataPlaneLeft) {
			inWindow = append(inWindow, f)
		} else {
			after = append(after, f)
		}
	}
	t.Logf("%d user updates from %.1fs before the kill to %.1fs after the new leader: %d failed between the kill and the endpoint's removal (%.2fs) %v, %d after %v",
		len(ws), killed.Sub(ws[0].start).Seconds(), ws[len(ws)-1].end.Sub(next.Spec.AcquireTime.Time).Seconds(),
		len(inWindow), dataPlaneLeft.Sub(killed).Seconds(), describe(inWindow, killed), len(after), describe(after, killed))
	assert.Empty(t, after, "user updates failed after the dead endpoint left the data plane")
	for _, f := range inWindow {
		assert.False(t, f.end.Before(killed), "a failure before the kill: %v", f.err)
	}

	out := waitOutcome(t, ns)
	require.Equal(t, rollout.Succeeded, out.Phase, "reason: %+v", out.Reason)
	assertSteps(t, ns, out)

	exited := managerEvent(t, old, "Exited")
	assert.Equal(t, "exit code 137: signal: killed", exited.Detail)
	eventually(t, time.Minute, "the killed container restarted and Ready", func(ctx context.Context) (bool, error) {
		p, err := theLab.Client.CoreV1().Pods(namespace).Get(ctx, old, metav1.GetOptions{})
		return err == nil && podReady(p) && p.Status.ContainerStatuses[0].RestartCount == 1, err
	})
	restarted := managerEventsOf(old, "Started")
	require.Len(t, restarted, 2)
	t.Logf("the killed container was started again %.2fs after it exited", restarted[1].At.Sub(exited.At).Seconds())
	pods, _ := bothServing(t)
	t.Logf("after: %s", podsOnNodes(pods))
}

// assertSteps checks that the rollout went through steps 1, 2 and 3 (5%,
// 25%, 50%) once each, and that the router started each once.
func assertSteps(t *testing.T, ns string, out *rollout.Outcome) {
	t.Helper()
	var steps, weights []int32
	for _, h := range out.History {
		steps, weights = append(steps, h.Step), append(weights, h.Weight)
	}
	assert.Equal(t, []int32{0, 1, 2}, steps, "the history's steps")
	assert.Equal(t, []int32{5, 25, 50}, weights, "the history's weights")
	msgs, counts := stepEvents(t, ns)
	require.Len(t, msgs, 3, "Step events: %q", msgs)
	for i, msg := range msgs {
		assert.Regexp(t, regexp.MustCompile(fmt.Sprintf(`^step %d of 3: web canary at %d%% target`, i+1, weights[i])), msg)
	}
	assert.Equal(t, []int32{1, 1, 1}, counts, "times each Step event was reported")
}

func podNames(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	slices.Sort(out)
	return out
}

// leaseWrites are the writes to the Lease that pod made from since on.
func leaseWrites(t *testing.T, pod string, since time.Time) []lab.AuditEvent {
	t.Helper()
	events, err := theLab.AuditEvents()
	require.NoError(t, err)
	return slices.DeleteFunc(events, func(e lab.AuditEvent) bool {
		return e.Pod() != pod || e.Resource() != "leases" || e.RequestReceivedTimestamp.Before(since)
	})
}

// readyWindow is when kwok wrote a new pod Running and Ready (it knows no
// probes) and when the pod runner first wrote it not Ready, from the audit
// log: the time the pod could be in the Service with nothing serving; and
// how many status writes kwok made of it.
func readyWindow(t *testing.T, pod string) (kwok, runner time.Time, kwokWrites int) {
	t.Helper()
	events, err := theLab.AuditEvents()
	require.NoError(t, err)
	for _, e := range events {
		if e.ObjectRef == nil || e.ObjectRef.Name != pod || e.Resource() != "pods/status" {
			continue
		}
		switch {
		case e.User.Username == "kwok":
			kwokWrites++
			if kwok.IsZero() {
				kwok = e.StageTimestamp
			}
		case e.User.Username == "lab-admin" && runner.IsZero():
			runner = e.StageTimestamp
		}
	}
	require.False(t, kwok.IsZero() || runner.IsZero(), "status writes of %s: kwok %s, runner %s", pod, kwok, runner)
	return kwok, runner, kwokWrites
}

// evict evicts a manager pod through the Eviction API, as kubectl drain does.
func evict(t *testing.T, pod string) error {
	return theLab.Client.PolicyV1().Evictions(namespace).Evict(t.Context(), &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: namespace}})
}

// waitNewHolder waits until the Lease is held by another identity than
// old, and returns it.
func waitNewHolder(t *testing.T, old string, timeout time.Duration) *coordinationv1.Lease {
	t.Helper()
	var lease *coordinationv1.Lease
	eventually(t, timeout, "a new leader", func(ctx context.Context) (bool, error) {
		var err error
		lease, err = theLab.Client.CoordinationV1().Leases(namespace).Get(ctx, leaseName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		id := ptr.Deref(lease.Spec.HolderIdentity, "")
		return id != "" && id != old, nil
	})
	return lease
}

// managerEvent waits for the pod runner's first event what of pod.
func managerEvent(t *testing.T, pod, what string) lab.ManagerEvent {
	t.Helper()
	var e []lab.ManagerEvent
	eventually(t, 30*time.Second, what+" of "+pod, func(context.Context) (bool, error) {
		e = managerEventsOf(pod, what)
		return len(e) > 0, nil
	})
	return e[0]
}

func managerEventsOf(pod, what string) []lab.ManagerEvent {
	var out []lab.ManagerEvent
	for _, e := range theLab.ManagerEvents() {
		if e.Pod == namespace+"/"+pod && e.What == what {
			out = append(out, e)
		}
	}
	return out
}

// serviceWrites returns the (pod, resource) pairs of the writes the
// manager's ServiceAccount made since since to deployments, events and
// leases, and a count of all its writes by pod, resource and verb.
func serviceWrites(t *testing.T, since time.Time) (map[[2]string]bool, map[string]int) {
	t.Helper()
	events, err := theLab.AuditEvents()
	require.NoError(t, err)
	pairs, all := map[[2]string]bool{}, map[string]int{}
	for _, e := range events {
		if e.User.Username != serviceUser || e.RequestReceivedTimestamp.Before(since) || e.ObjectRef == nil {
			continue
		}
		all[fmt.Sprintf("%s %s %s", e.Pod(), e.Resource(), e.Verb)]++
		switch e.ObjectRef.Resource {
		case "deployments", "events", "leases":
			pairs[[2]string{e.Pod(), e.Resource()}] = true
		}
	}
	return pairs, all
}

// webhookConnections counts the established connections to the webhook
// port of each manager (by pod IP), as the node network sees them.
func webhookConnections(t *testing.T) map[string]int {
	t.Helper()
	netns, _ := theLab.NodeNetwork()
	out, err := exec.Command("ip", "netns", "exec", netns, "ss", "-Htn", "state", "established", "( sport = :9443 )").CombinedOutput()
	require.NoError(t, err, "%s", out)
	conns := map[string]int{}
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) >= 4 {
			ip, _, _ := strings.Cut(f[2], ":")
			conns[ip]++
		}
	}
	return conns
}

// dataPlaneEndpoints are the pod IPs kube-proxy sends the webhook
// Service's new connections to now: the DNAT map of its service chain
// (nftables mode, the lab's default).
func dataPlaneEndpoints(t *testing.T) []string {
	t.Helper()
	netns, _ := theLab.NodeNetwork()
	out, err := exec.Command("ip", "netns", "exec", netns, "nft", "list", "table", "ip", "kube-proxy").CombinedOutput()
	require.NoError(t, err, "%s", out)
	var ips []string
	in := false
	for line := range strings.Lines(string(out)) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "chain service-") && strings.Contains(line, namespace+"/"+service+"/tcp/webhook"):
			in = true
		case strings.HasPrefix(line, "chain "):
			in = false
		case in:
			for _, m := range endpointChain.FindAllStringSubmatch(line, -1) {
				ips = append(ips, m[1])
			}
		}
	}
	return ips
}

// endpointChain is an endpoint in a service chain's DNAT map:
// "dnat ip to numgen random mod 2 map { 0 : 198.18.0.1 . 9443, … }".
var endpointChain = regexp.MustCompile(`([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+) \. 9443\b`)

func podsOnNodes(pods []corev1.Pod) string {
	var s []string
	for _, p := range pods {
		s = append(s, fmt.Sprintf("%s on %s (%s, restarts %d)", p.Name, p.Spec.NodeName, p.Status.PodIP, p.Status.ContainerStatuses[0].RestartCount))
	}
	return strings.Join(s, ", ")
}

// holdingStep2 starts, with both managers serving, a rollout in ns whose
// step 2 holds for hold; once that hold began, it starts a user updating a
// Deployment there, and returns the writer and, a second later, the leader's
// pod and Lease holder identity.
func holdingStep2(t *testing.T, ns, hold string) (w *writer, leader, holderID string) {
	t.Helper()
	managerLogs(t)
	bothServing(t)
	rolloutNamespace(t, ns, [3]string{"2s", hold, "2s"})
	release(t, ns)
	waitState(t, ns, "step 2 holding", func(s *rollout.State) bool { return s.Step == 1 && s.HoldingSince != nil })

	w = startWriter(t, ns, "probe")
	time.Sleep(time.Second)
	lease := getLease(t)
	return w, holderPod(lease), ptr.Deref(lease.Spec.HolderIdentity, "")
}
