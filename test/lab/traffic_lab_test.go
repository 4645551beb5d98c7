package lab_test

import (
	"context"
	"math"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fledge-dev/fledge/rollout"
	"github.com/fledge-dev/fledge/test/lab"
)

// TestTrafficThroughKubeProxySplitsNewConnectionsByPodCount sends the
// traffic generator's requests to a Service over 3 stable pods and 1
// canary pod through kube-proxy, on a lab of its own with the node
// network. With a new connection per request the canary gets a quarter of
// them, within what the sample size allows; with 4 kept-alive connections
// it gets what those connections happened to be balanced to, which the
// test prints. (Every lab has its node network: Options has no switch.)
func TestTrafficThroughKubeProxySplitsNewConnectionsByPodCount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the node network needs root")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	l, err := lab.Start(ctx, lab.Options{DemoApp: theLab.DemoApp()})
	require.NoError(t, err)
	defer l.Stop()

	ns := "traffic"
	require.NoError(t, l.CreateNamespace(ctx, ns, nil))
	_, err = l.Client.AppsV1().Deployments(ns).Create(ctx, demoDeployment("web", "web", "", lab.DemoImage+":v1", 3), metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = l.Client.AppsV1().Deployments(ns).Create(ctx, demoDeployment("web-canary", "web", rollout.TrackCanary, lab.DemoImage+":v2", 1), metav1.CreateOptions{})
	require.NoError(t, err)
	svc := webService(t, l.Client, ns)

	// Ready when every pod has answered through the ClusterIP.
	var pods []corev1.Pod
	eventually(t, "4 pods", func(ctx context.Context) (bool, error) {
		list, err := l.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return false, err
		}
		pods = list.Items
		return len(pods) == 4, nil
	})
	routedToAll(t, l.Client, ns, svc.Name, pods)

	const rps, seconds = 200, 5
	run := func(connections lab.Connections) (lab.TrafficStats, int) {
		tr := lab.NewTraffic(l.Client, ns, "web", rps)
		tr.Connections = connections
		ctx, cancel := context.WithTimeout(t.Context(), seconds*time.Second)
		defer cancel()
		require.NoError(t, tr.Run(ctx))
		s := tr.Snapshot()
		// The pacing sends rps a second from when sending started (after
		// Run read the Service and listed the pods), up to the last 10ms
		// tick: give or take a tenth of a second's worth.
		sending := s.To.Sub(s.From)
		assert.Greater(t, sending, (seconds-1)*time.Second, connections.String())
		assert.InDelta(t, sending.Seconds()*rps, s.Requests(), rps/10, "%s: %d requests in %s", connections, s.Requests(), sending)
		assert.Zero(t, s.Errors(), "%s: %s", connections, s)
		assert.Zero(t, s.Untracked, connections.String())
		return s, tr.Opened()
	}

	s, opened := run(lab.Connections{})
	n := s.Requests()
	assert.Equal(t, n, opened, "a new connection per request")
	assert.Len(t, s.Pods, 4, "pods that answered: %v", s.Pods)
	// Binomial(n, 1/4): a share further than 4 sd from 25% (5.5 points at
	// n = 1000) happens once in 16,000 runs.
	bound := 4 * math.Sqrt(0.25*0.75/float64(n))
	assert.InDelta(t, 0.25, s.Share(rollout.TrackCanary), bound, "new connections: %s", s)
	t.Logf("new connections: %s (bound ±%.1f points); by pod: %v", s, 100*bound, s.Pods)

	// Kept-alive connections are balanced once each, when they open: the
	// share the canary gets is what its connections carry. Printed, not
	// asserted: it is what fledge's measured share must see.
	for _, k := range []int{4, 8, 64} {
		s, opened = run(lab.Connections{KeepAlive: k})
		assert.Equal(t, k, opened, "keepalive:%d opens its %d connections, each once", k, k)
		t.Logf("keepalive:%d (%d connections opened): %s; by pod: %v", k, opened, s, s.Pods)
	}
}
