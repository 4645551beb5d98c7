package lab

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/fledge-dev/fledge/rollout"
)

func endpoint(pod string, ready *bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{"198.18.0.1"},
		Conditions: discoveryv1.EndpointConditions{Ready: ready},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: pod},
	}
}

func labPod(name, port, track string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: map[string]string{"app": "web"}}}
	if port != "" {
		p.Annotations = map[string]string{PortAnnotation: port}
	}
	if track != "" {
		p.Labels[rollout.LabelTrack] = track
	}
	p.Status.PodIP = "198.18.0.9"
	return p
}

func TestTargetsAreTheReadyEndpointsWithAPort(t *testing.T) {
	pods := map[string]*corev1.Pod{
		"web-a":      labPod("web-a", "4001", ""),
		"web-b":      labPod("web-b", "4002", ""),
		"web-canary": labPod("web-canary", "4003", "canary"),
		"web-new":    labPod("web-new", "", ""),
		"web-bad":    labPod("web-bad", "http", ""),
		"web-gone":   labPod("web-gone", "4004", ""),
	}
	slices := []*discoveryv1.EndpointSlice{
		{Endpoints: []discoveryv1.Endpoint{
			endpoint("web-a", ptr.To(true)),
			endpoint("web-b", nil), // unset counts as ready, as in kube-proxy
			endpoint("web-gone", ptr.To(false)),
			endpoint("web-new", ptr.To(true)), // Ready, but no process yet
		}},
		{Endpoints: []discoveryv1.Endpoint{
			endpoint("web-a", ptr.To(true)), // listed twice: counts once
			endpoint("web-canary", ptr.To(true)),
			endpoint("web-bad", ptr.To(true)),
			endpoint("web-deleted", ptr.To(true)), // pod not in the cache
			{Addresses: []string{"198.18.0.7"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}, // no targetRef
		}},
	}
	got := targets(slices, func(name string) *corev1.Pod { return pods[name] })
	assert.Equal(t, []target{
		{pod: "web-a", track: "stable", port: 4001},
		{pod: "web-b", track: "stable", port: 4002},
		{pod: "web-canary", track: "canary", port: 4003},
	}, got)
}

func TestTrafficStats(t *testing.T) {
	var s TrafficStats
	for range 3 {
		s.add("stable", false)
	}
	s.add("canary", true)
	s.add("", true)
	assert.Equal(t, 5, s.Requests())
	assert.Equal(t, 2, s.Errors())
	assert.Equal(t, 0.25, s.Share("canary"), "share of the 4 requests that reached a pod")
	assert.Equal(t, "stable 3 req 0 err | canary 1 req 1 err | no endpoint 1 req | canary share 25.0%", s.String())
	assert.Equal(t, "no requests | canary share 0.0%", TrafficStats{}.String())
}

func TestWindowCountsWholeSecondsFromSince(t *testing.T) {
	start := time.Unix(1000, 0)
	tr := &Traffic{start: start}
	tr.record(start.Add(100*time.Millisecond), "stable", false)
	tr.record(start.Add(1500*time.Millisecond), "canary", true)
	tr.record(start.Add(2100*time.Millisecond), "canary", false)

	assert.Equal(t, 3, tr.Snapshot().Requests())
	w := tr.Window(start.Add(500 * time.Millisecond))
	assert.Equal(t, map[string]Counts{"canary": {Requests: 2, Errors: 1}}, w.Tracks, "seconds 1 and 2")
	secs := tr.Seconds()
	require.Len(t, secs, 3)
	assert.Equal(t, start.Add(2*time.Second), secs[2].From)
	assert.Equal(t, map[string]Counts{"stable": {Requests: 1}}, secs[0].Tracks)
}

// TestRunSplitsTrafficOverReadyPodsOnLoopback runs the generator against a
// fake apiserver and httptest servers standing in for pods: requests go to
// 127.0.0.1 on each pod's port, never to a pod that is not ready, and the
// canary's 500s are counted on its track.
func TestRunSplitsTrafficOverReadyPodsOnLoopback(t *testing.T) {
	var hits sync.Map // pod → *atomic.Int64
	server := func(pod string, code int) string {
		n := &atomic.Int64{}
		hits.Store(pod, n)
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			n.Add(1)
			w.WriteHeader(code)
		}))
		t.Cleanup(s.Close)
		u, err := url.Parse(s.URL)
		require.NoError(t, err)
		require.Equal(t, "127.0.0.1", u.Hostname())
		return u.Port()
	}
	objects := []runtime.Object{
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"}},
		labPod("web-a", server("web-a", 200), ""),
		labPod("web-b", server("web-b", 200), ""),
		labPod("web-c", server("web-c", 200), ""),
		labPod("web-canary", server("web-canary", 500), "canary"),
		labPod("web-old", server("web-old", 200), ""),
		&discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: "web-x1", Namespace: "shop", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			Endpoints: []discoveryv1.Endpoint{
				endpoint("web-a", ptr.To(true)), endpoint("web-b", ptr.To(true)), endpoint("web-c", ptr.To(true)),
				endpoint("web-canary", ptr.To(true)), endpoint("web-old", ptr.To(false)),
			},
		},
	}
	tr := NewTraffic(fake.NewClientset(objects...), "shop", "web", 400)
	var reported TrafficStats
	lines := 0
	tr.OnSecond = func(s TrafficStats) { reported.merge(s); lines++ }

	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	require.NoError(t, tr.Run(ctx))

	s := tr.Snapshot()
	assert.LessOrEqual(t, s.Requests(), 600, "at most 1.5s at 400 rps")
	assert.GreaterOrEqual(t, s.Requests(), 300, "at least 0.75s at 400 rps")
	assert.Zero(t, s.NoEndpoint)
	assert.Equal(t, 0, s.Tracks["stable"].Errors)
	assert.Equal(t, s.Tracks["canary"].Requests, s.Tracks["canary"].Errors, "every canary answer is a 500")
	assert.InDelta(t, 0.25, s.Share("canary"), 0.1)
	old, _ := hits.Load("web-old")
	assert.Zero(t, old.(*atomic.Int64).Load(), "a request went to a pod that is not ready")
	canary, _ := hits.Load("web-canary")
	assert.Equal(t, int64(s.Tracks["canary"].Requests), canary.(*atomic.Int64).Load())

	var perSecond TrafficStats
	for _, sec := range tr.Seconds() {
		perSecond.merge(sec)
	}
	assert.Equal(t, s.Tracks, perSecond.Tracks, "the seconds add up to the total")
	assert.Equal(t, s.Tracks, reported.Tracks, "every request is on one line")
	assert.GreaterOrEqual(t, lines, 1)
}

func TestRunRefusesWhatItCannotDo(t *testing.T) {
	client := fake.NewClientset()
	assert.EqualError(t, NewTraffic(client, "shop", "web", 5000).Run(t.Context()), "traffic: rps 5000 is not between 1 and 1000")
	assert.EqualError(t, NewTraffic(client, "shop", "web", 0).Run(t.Context()), "traffic: rps 0 is not between 1 and 1000")
	assert.EqualError(t, NewTraffic(client, "shop", "web", 10).Run(t.Context()), `traffic: service shop/web: services "web" not found`)
}

func TestLoopbackClientRefusesOtherAddresses(t *testing.T) {
	for _, u := range []string{"http://198.18.0.1:8080/", "http://10.96.0.1/"} {
		_, err := loopbackClient(1).Get(u)
		require.Error(t, err, u)
		assert.Contains(t, err.Error(), "traffic goes to 127.0.0.1 only", u)
	}
}
