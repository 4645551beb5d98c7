package lab_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fledge-dev/fledge/test/lab"
)

// The node network (LAB.md, "The real data plane"): kube-proxy in a network
// namespace of the lab's own, pods on their own addresses, Services on
// ClusterIPs kube-proxy routes. Each mode gets its own lab.
func TestNodeNetworkRoutesServicesThroughKubeProxy(t *testing.T) {
	for _, mode := range []string{"nftables", "iptables"} {
		t.Run(mode, func(t *testing.T) { nodeNetworkLab(t, mode) })
	}
}

func nodeNetworkLab(t *testing.T, mode string) {
	if os.Geteuid() != 0 {
		t.Skip("the node network needs root")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	l, err := lab.Start(ctx, lab.Options{ProxyMode: mode, DemoApp: theLab.DemoApp()})
	require.NoError(t, err)
	t.Logf("%s lab with its node network started in %s", mode, time.Since(start).Round(10*time.Millisecond))
	stopped := false
	defer func() {
		if !stopped {
			l.Stop()
		}
	}()
	netns, hostLink := l.NodeNetwork()
	assert.Contains(t, run(t, "ip", "netns", "list"), netns)

	ns := "nodenet"
	require.NoError(t, l.CreateNamespace(ctx, ns, nil))
	_, err = l.Client.AppsV1().Deployments(ns).Create(ctx, demoDeployment("web", "web", "", lab.DemoImage+":v1", 4), metav1.CreateOptions{})
	require.NoError(t, err)
	svc := webService(t, l.Client, ns)
	clusterIP := netip.MustParseAddr(svc.Spec.ClusterIP)
	assert.True(t, netip.MustParsePrefix("198.19.0.0/16").Contains(clusterIP), "ClusterIP %s is the lab's", clusterIP)

	// Every pod answers on its own address, from its process in the node
	// network.
	var pods []corev1.Pod
	eventually(t, "4 demo pods answering on their IPs", func(ctx context.Context) (bool, error) {
		list, err := l.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		pods = list.Items
		if len(pods) != 4 {
			return false, nil
		}
		for _, p := range pods {
			if _, err := served(p); err != nil {
				return false, nil
			}
		}
		return true, nil
	})
	for _, p := range pods {
		assert.True(t, podRange.Contains(netip.MustParseAddr(p.Status.PodIP)), "pod IP %s", p.Status.PodIP)
	}

	// New connections: kube-proxy picks an endpoint for each.
	url := "http://" + net.JoinHostPort(clusterIP.String(), "80") + "/"
	fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	routedToAll(t, l.Client, ns, "web", pods)
	before := servedBy(t, pods)
	const n = 400
	for range n {
		body, err := get(fresh, url)
		require.NoError(t, err)
		require.Regexp(t, `^ok v1 web-[a-z0-9]+-[a-z0-9]+\n$`, body)
	}
	shares := delta(before, servedBy(t, pods))
	total := 0
	for pod, c := range shares {
		total += c
		// Binomial(400, 1/4): mean 100, sd 8.7; below 50 is 5.8 sd away.
		assert.GreaterOrEqual(t, c, 50, "pod %s served %d of %d", pod, c, n)
	}
	assert.Equal(t, n, total)
	t.Logf("%s, new connections: %v", mode, shares)

	// One kept-alive connection: balanced once, when it opened.
	before = servedBy(t, pods)
	kept := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1}}
	for range 100 {
		_, err := get(kept, url)
		require.NoError(t, err)
	}
	kept.CloseIdleConnections()
	var one []int
	for _, c := range delta(before, servedBy(t, pods)) {
		if c > 0 {
			one = append(one, c)
		}
	}
	assert.Equal(t, []int{100}, one, "one connection, one pod")

	// Stop leaves no namespace, link, route, address or process behind.
	pids := l.PIDs()
	for key, pid := range l.DemoPIDs() {
		pids["demo "+key] = pid
	}
	l.Stop()
	stopped = true
	assert.NotContains(t, run(t, "ip", "netns", "list"), netns)
	assert.NotContains(t, run(t, "ip", "link", "show"), hostLink)
	routes := run(t, "ip", "route", "show")
	for _, p := range pods {
		assert.NotContains(t, routes, p.Status.PodIP)
	}
	assert.NotContains(t, routes, clusterIP.String())
	for name, pid := range pids {
		assert.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "%s (pid %d) still runs", name, pid)
	}
}

// A lab that crashed leaves its node network behind: the next lab to take
// its slot removes it first.
func TestNodeNetworkLeftByACrashedLabIsRemoved(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the node network needs root")
	}
	slot, ok := lab.FreeNodeNetworkSlot()
	require.True(t, ok, "a free slot")
	netns, link := "fledge-lab-"+strconv.Itoa(slot), "fledge-lab"+strconv.Itoa(slot)
	run(t, "ip", "netns", "add", netns)
	run(t, "ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", netns)

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	l, err := lab.Start(ctx, lab.Options{})
	require.NoError(t, err)
	got, _ := l.NodeNetwork()
	l.Stop()
	if got != netns {
		t.Logf("another lab took slot %d first; it removed what was left there", slot)
	}
	assert.NotContains(t, run(t, "ip", "netns", "list"), netns)
	assert.NotContains(t, run(t, "ip", "link", "show"), link)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	require.NoError(t, err, "%s %s: %s", name, strings.Join(args, " "), out)
	return string(out)
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(body), nil
}

// served is how many GET / the pod's process has answered, from its
// /metrics on the pod's own address.
func served(p corev1.Pod) (int, error) {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + net.JoinHostPort(p.Status.PodIP, "8080") + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, err
	}
	total := 0
	if f := families["http_requests_total"]; f != nil {
		for _, m := range f.Metric {
			total += int(m.GetCounter().GetValue())
		}
	}
	return total, nil
}

func servedBy(t *testing.T, pods []corev1.Pod) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, p := range pods {
		n, err := served(p)
		require.NoError(t, err, "pod %s", p.Name)
		out[p.Name] = n
	}
	return out
}

func delta(before, after map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range after {
		out[k] = v - before[k]
	}
	return out
}
