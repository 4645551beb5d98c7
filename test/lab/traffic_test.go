package lab

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/fledge-dev/fledge/rollout"
)

func TestParseConnections(t *testing.T) {
	const want = `--connections: want new or keepalive:N with N from 1 to 1000, got `
	tests := []struct {
		in   string
		want Connections
		err  string
	}{
		{in: "new", want: Connections{}},
		{in: "keepalive:1", want: Connections{KeepAlive: 1}},
		{in: "keepalive:64", want: Connections{KeepAlive: 64}},
		{in: "keepalive:1000", want: Connections{KeepAlive: 1000}},
		{in: "keepalive:0", err: want + `"keepalive:0"`},
		{in: "keepalive:1001", err: want + `"keepalive:1001"`},
		{in: "keepalive:", err: want + `"keepalive:"`},
		{in: "keepalive", err: want + `"keepalive"`},
		{in: "keepalive:many", err: want + `"keepalive:many"`},
		{in: "New", err: want + `"New"`},
		{in: "", err: want + `""`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseConnections(tt.in)
			if tt.err != "" {
				require.EqualError(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.in, got.String(), "String reads back")
		})
	}
}

func TestParseTrackBy(t *testing.T) {
	const want = `--track-by: want label:KEY=VALUE (such as label:fledge.dev/track=canary) or image:TAG (such as image:v2), got `
	tests := []struct {
		in   string
		want TrackBy
		err  string
	}{
		{in: "label:fledge.dev/track=canary", want: DefaultTrackBy},
		{in: "label:rollouts-pod-template-hash=5d8f7c9b6", want: TrackBy{LabelKey: "rollouts-pod-template-hash", LabelValue: "5d8f7c9b6"}},
		{in: "label:role=", want: TrackBy{LabelKey: "role"}},
		{in: "image:v2", want: TrackBy{Image: "v2"}},
		{in: "image:1.4.0-rc.1", want: TrackBy{Image: "1.4.0-rc.1"}},
		{in: "label:track", err: want + `"label:track"`},
		{in: "label:=canary", err: want + `"label:=canary"`},
		{in: "label:bad key=canary", err: want + `"label:bad key=canary"`},
		{in: "label:track=not a value", err: want + `"label:track=not a value"`},
		{in: "image:", err: want + `"image:"`},
		{in: "image:v2 v3", err: want + `"image:v2 v3"`},
		{in: "canary", err: want + `"canary"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseTrackBy(tt.in)
			if tt.err != "" {
				require.EqualError(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.in, got.String(), "String reads back")
		})
	}
}

func TestParseAnswer(t *testing.T) {
	tests := []struct {
		name, body, version, pod string
		ok                       bool
	}{
		{"an ok names version and pod", "ok v1 web-7d4b9-x2k4q\n", "v1", "web-7d4b9-x2k4q", true},
		{"an error names them too", "error v2 web-canary-5f6c8-9zt2m\n", "v2", "web-canary-5f6c8-9zt2m", true},
		{"no pod (POD_NAME unset)", "ok v1\n", "", "", false},
		{"no newline: cut short", "ok v1 web-a", "", "", false},
		{"another app's answer", "Hello, world!\n", "", "", false},
		{"an unknown word", "fine v1 web-a\n", "", "", false},
		{"empty", "", "", "", false},
		{"two lines", "ok v1 web-a\nok v1 web-b\n", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			version, pod, ok := parseAnswer(tt.body)
			assert.Equal(t, tt.ok, ok)
			assert.Equal(t, tt.version, version)
			assert.Equal(t, tt.pod, pod)
		})
	}
}

func TestTrackByTellsCanaryFromStable(t *testing.T) {
	canaryLabels := map[string]string{"app": "web", rollout.LabelTrack: rollout.TrackCanary}
	stableLabels := map[string]string{"app": "web"}
	argo := TrackBy{LabelKey: "role", LabelValue: "preview"}
	tests := []struct {
		name    string
		by      TrackBy
		version string
		labels  map[string]string
		found   bool
		want    string
	}{
		{"fledge's canary label", DefaultTrackBy, "v2", canaryLabels, true, rollout.TrackCanary},
		{"no label is stable", DefaultTrackBy, "v1", stableLabels, true, rollout.TrackStable},
		{"another value of the label is stable", DefaultTrackBy, "v1", map[string]string{rollout.LabelTrack: "stable"}, true, rollout.TrackStable},
		{"a pod not seen yet has no track", DefaultTrackBy, "v2", nil, false, ""},
		{"another tool's label", argo, "v2", map[string]string{"role": "preview"}, true, rollout.TrackCanary},
		{"another tool's label, stable", argo, "v1", map[string]string{"role": "active"}, true, rollout.TrackStable},
		{"an empty label value matches only a label set empty", TrackBy{LabelKey: "canary"}, "v2", map[string]string{"canary": ""}, true, rollout.TrackCanary},
		{"an empty label value does not match its absence", TrackBy{LabelKey: "canary"}, "v1", stableLabels, true, rollout.TrackStable},
		{"the canary's tag", TrackBy{Image: "v2"}, "v2", nil, false, rollout.TrackCanary},
		{"another tag is stable", TrackBy{Image: "v2"}, "v1", nil, false, rollout.TrackStable},
		{"by image, labels do not matter", TrackBy{Image: "v2"}, "v1", canaryLabels, true, rollout.TrackStable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.by.track(tt.version, tt.labels, tt.found))
		})
	}
}

func TestTrafficStatsCountByPodAndTrack(t *testing.T) {
	var s TrafficStats
	for range 3 {
		s.add(outcome{pod: "web-a", track: "stable"})
		s.add(outcome{pod: "web-b", track: "stable"})
	}
	s.add(outcome{pod: "web-b", track: "stable", failed: true})
	s.add(outcome{pod: "web-canary", track: "canary", failed: true})
	s.add(outcome{pod: "web-canary", track: "canary"})
	s.add(outcome{pod: "web-new", failed: true}) // not seen yet: no track
	s.add(outcome{failed: true})                 // no pod answered

	assert.Equal(t, map[string]Counts{"stable": {Requests: 7, Errors: 1}, "canary": {Requests: 2, Errors: 1}}, s.Tracks)
	assert.Equal(t, map[string]Counts{
		"web-a": {Requests: 3}, "web-b": {Requests: 4, Errors: 1}, "web-canary": {Requests: 2, Errors: 1}, "web-new": {Requests: 1, Errors: 1},
	}, s.Pods)
	assert.Equal(t, Counts{Requests: 1, Errors: 1}, s.Untracked)
	assert.Equal(t, 1, s.NoEndpoint)
	assert.Equal(t, 11, s.Requests())
	assert.Equal(t, 4, s.Errors())
	assert.InDelta(t, 2.0/9, s.Share("canary"), 1e-12, "share of the 9 requests answered by a pod of a known track")
	assert.Equal(t, []string{"stable", "canary"}, s.TrackNames())
	assert.Equal(t, []string{"web-a", "web-b", "web-canary", "web-new"}, s.PodNames())
	assert.Equal(t, "stable 7 req 1 err | canary 2 req 1 err | pod not seen yet 1 req 1 err | no pod answered 1 req | canary share 22.2%", s.String())
	assert.Equal(t, "no requests | canary share 0.0%", TrafficStats{}.String())

	var sum TrafficStats
	sum.merge(s)
	sum.merge(s)
	assert.Equal(t, Counts{Requests: 8, Errors: 2}, sum.Pods["web-b"])
	assert.Equal(t, Counts{Requests: 2, Errors: 2}, sum.Untracked)
	assert.Equal(t, 22, sum.Requests())
}

func TestWindowCountsWholeSecondsFromSince(t *testing.T) {
	start := time.Unix(1000, 0)
	tr := &Traffic{start: start}
	tr.record(start.Add(100*time.Millisecond), outcome{pod: "web-a", track: "stable"})
	tr.record(start.Add(1500*time.Millisecond), outcome{pod: "web-canary", track: "canary", failed: true})
	tr.record(start.Add(2100*time.Millisecond), outcome{pod: "web-canary", track: "canary"})

	assert.Equal(t, 3, tr.Snapshot().Requests())
	w := tr.Window(start.Add(500 * time.Millisecond))
	assert.Equal(t, map[string]Counts{"canary": {Requests: 2, Errors: 1}}, w.Tracks, "seconds 1 and 2")
	assert.Equal(t, map[string]Counts{"web-canary": {Requests: 2, Errors: 1}}, w.Pods)
	b := tr.Between(start, start.Add(2*time.Second))
	assert.Equal(t, map[string]Counts{"stable": {Requests: 1}, "canary": {Requests: 1, Errors: 1}}, b.Tracks, "seconds 0 and 1")
	secs := tr.Seconds()
	require.Len(t, secs, 3)
	assert.Equal(t, start.Add(2*time.Second), secs[2].From)
	assert.Equal(t, map[string]Counts{"stable": {Requests: 1}}, secs[0].Tracks)
	at, ok := tr.FirstError("canary", start)
	assert.True(t, ok)
	assert.Equal(t, start.Add(1500*time.Millisecond), at)
	assert.Equal(t, start.Add(2100*time.Millisecond), tr.LastRequest("canary"))
}

// answers is a stand-in for a Service on 127.0.0.1: it answers as the
// given pods in turn, request after request, and returns its address.
func answers(t *testing.T, bodies ...string) netip.AddrPort {
	var n atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		body := bodies[int(n.Add(1)-1)%len(bodies)]
		if body[:5] == "error" {
			w.WriteHeader(http.StatusInternalServerError)
		}
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(s.Close)
	return netip.MustParseAddrPort(s.Listener.Addr().String())
}

func service(addr netip.AddrPort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec: corev1.ServiceSpec{
			ClusterIP: addr.Addr().String(),
			Ports:     []corev1.ServicePort{{Port: int32(addr.Port())}, {Port: 9}},
		},
	}
}

func labPod(name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: labels}}
}

// runFor runs tr for d and returns its snapshot and the sum of what
// OnSecond reported.
func runFor(t *testing.T, tr *Traffic, d time.Duration) (TrafficStats, TrafficStats) {
	t.Helper()
	var reported TrafficStats
	tr.OnSecond = func(s TrafficStats) { reported.merge(s) }
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	require.NoError(t, tr.Run(ctx))
	return tr.Snapshot(), reported
}

// TestRunCountsAnswersByThePodThatGaveThem runs the generator against a
// fake apiserver and a stand-in Service on 127.0.0.1 that answers as six
// pods in turn: three stable, a canary answering 500, a pod the apiserver
// does not know (yet) and an answer that names no pod. Each pod gets a
// sixth of the requests (exactly, give or take the one in turn), counted on
// its track as the TrackBy rule says.
func TestRunCountsAnswersByThePodThatGaveThem(t *testing.T) {
	addr := answers(t, "ok v1 web-a\n", "ok v1 web-b\n", "ok v1 web-c\n", "error v2 web-canary\n", "ok v2 web-new\n", "ok v1\n")
	client := fake.NewClientset(
		service(addr),
		labPod("web-a", map[string]string{"app": "web"}),
		labPod("web-b", map[string]string{"app": "web"}),
		labPod("web-c", map[string]string{"app": "web"}),
		labPod("web-canary", map[string]string{"app": "web", rollout.LabelTrack: rollout.TrackCanary}),
	)
	// near checks that pod got a sixth of n requests, give or take one.
	near := func(t *testing.T, n, got int, what string) {
		t.Helper()
		assert.InDelta(t, float64(n)/6, got, 1, "%s: %d of %d", what, got, n)
	}

	t.Run("by label, new connections", func(t *testing.T) {
		tr := NewTraffic(client, "shop", "web", 400)
		s, reported := runFor(t, tr, 1500*time.Millisecond)
		n := s.Requests()
		assert.LessOrEqual(t, n, 600, "at most 1.5s at 400 rps")
		assert.GreaterOrEqual(t, n, 300, "at least 0.75s at 400 rps")
		for _, pod := range []string{"web-a", "web-b", "web-c", "web-canary", "web-new"} {
			near(t, n, s.Pods[pod].Requests, pod)
		}
		near(t, n, s.NoEndpoint, "no pod named")
		assert.Len(t, s.Pods, 5)
		assert.Equal(t, s.Pods["web-a"].Requests+s.Pods["web-b"].Requests+s.Pods["web-c"].Requests, s.Tracks["stable"].Requests)
		assert.Zero(t, s.Tracks["stable"].Errors)
		assert.Equal(t, Counts{Requests: s.Pods["web-canary"].Requests, Errors: s.Pods["web-canary"].Requests}, s.Tracks["canary"], "every canary answer is a 500")
		assert.Equal(t, s.Pods["web-new"], s.Untracked, "the pod the apiserver does not know")
		assert.Equal(t, s.NoEndpoint+s.Tracks["canary"].Errors, s.Errors())
		assert.InDelta(t, 0.25, s.Share("canary"), 0.01, "a quarter of the answers of known pods")
		assert.Equal(t, n, tr.Opened(), "a connection per request")

		var perSecond TrafficStats
		for _, sec := range tr.Seconds() {
			perSecond.merge(sec)
		}
		assert.Equal(t, s.Pods, perSecond.Pods, "the seconds add up to the total")
		assert.Equal(t, s.Tracks, reported.Tracks, "every request is on one line")
		assert.Equal(t, s.Pods, reported.Pods)
	})

	t.Run("by image, kept-alive connections", func(t *testing.T) {
		tr := NewTraffic(client, "shop", "web", 400)
		tr.Connections = Connections{KeepAlive: 2}
		tr.TrackBy = TrackBy{Image: "v2"}
		s, _ := runFor(t, tr, time.Second)
		n := s.Requests()
		assert.GreaterOrEqual(t, n, 200, "at least 0.5s at 400 rps")
		assert.Equal(t, s.Pods["web-canary"].Requests+s.Pods["web-new"].Requests, s.Tracks["canary"].Requests, "both answer v2")
		assert.Equal(t, s.Pods["web-a"].Requests+s.Pods["web-b"].Requests+s.Pods["web-c"].Requests, s.Tracks["stable"].Requests)
		assert.Zero(t, s.Untracked, "the version is in the answer: every pod's track is known")
		near(t, n, s.NoEndpoint, "no pod named")
		assert.InDelta(t, 0.4, s.Share("canary"), 0.01, "two of the five pods that named themselves")
		assert.GreaterOrEqual(t, tr.Opened(), 1)
		assert.LessOrEqual(t, tr.Opened(), 2, "at most the pool's 2 connections")
	})
}

func TestRunRefusesWhatItCannotDo(t *testing.T) {
	svc := func(name, ip string) *corev1.Service {
		s := service(netip.AddrPortFrom(netip.MustParseAddr(ip), 80))
		s.Name = name
		return s
	}
	client := fake.NewClientset(
		svc("web", "127.0.0.1"),
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "headless", Namespace: "shop"}, Spec: corev1.ServiceSpec{ClusterIP: "None"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "portless", Namespace: "shop"}, Spec: corev1.ServiceSpec{ClusterIP: "127.0.0.1"}},
		svc("kubeadm", "10.96.0.10"),
		svc("unrouted", "198.19.254.1"), // the lab's block, but no lab's slot
	)
	tests := []struct {
		name string
		tr   *Traffic
		err  string
	}{
		{"too many requests", NewTraffic(client, "shop", "web", 5000), "traffic: rps 5000 is not between 1 and 1000"},
		{"no requests", NewTraffic(client, "shop", "web", 0), "traffic: rps 0 is not between 1 and 1000"},
		{"too large a pool", &Traffic{client: client, namespace: "shop", service: "web", rps: 10, Connections: Connections{KeepAlive: 1001}},
			"traffic: keepalive:1001: want from 1 to 1000 kept-alive connections"},
		{"a bad label", &Traffic{client: client, namespace: "shop", service: "web", rps: 10, TrackBy: TrackBy{LabelKey: "bad key"}},
			"traffic: track by label:bad key=: want label:KEY=VALUE or image:TAG"},
		{"no service", NewTraffic(client, "shop", "api", 10), `traffic: service shop/api: services "api" not found`},
		{"a headless service", NewTraffic(client, "shop", "headless", 10),
			`traffic: service shop/headless: no ClusterIP ("None"): send to a Service of type ClusterIP, not a headless one`},
		{"a service without a port", NewTraffic(client, "shop", "portless", 10), "traffic: service shop/portless: no port"},
		{"an address outside the lab", NewTraffic(client, "shop", "kubeadm", 10),
			"traffic: service shop/kubeadm: 10.96.0.10 is not an address of the lab: traffic goes to 127.0.0.1, 198.18.0.0/16 and 198.19.0.0/16 only"},
		{"the lab's block without a lab", NewTraffic(client, "shop", "unrouted", 10),
			"traffic: service shop/unrouted: 198.19.254.1 is not routed to a lab's node network (no lab running?): traffic goes there only through it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.EqualError(t, tt.tr.Run(t.Context()), tt.err)
		})
	}
}

func TestClientRefusesAddressesOutsideTheLab(t *testing.T) {
	pool := trafficClients(Connections{KeepAlive: 3}, &atomic.Int64{})
	require.Len(t, pool, 3, "keepalive:3 is 3 connections")
	for _, c := range pool {
		assert.Equal(t, 1, c.Transport.(*http.Transport).MaxConnsPerHost, "one connection each")
	}
	client := trafficClients(Connections{}, &atomic.Int64{})[0]
	for url, want := range map[string]string{
		"http://10.96.0.1/":         "10.96.0.1 is not an address of the lab",
		"http://8.8.8.8:53/":        "8.8.8.8 is not an address of the lab",
		"http://192.0.2.1/":         "192.0.2.1 is not an address of the lab",
		"http://127.0.0.2/":         "127.0.0.2 is not an address of the lab",
		"http://[::1]:80/":          "::1 is not an address of the lab",
		"http://198.19.254.1:80/":   "198.19.254.1 is not routed to a lab's node network",
		"http://198.18.250.10:8080": "198.18.250.10 is not routed to a lab's node network",
	} {
		_, err := client.Get(url)
		require.Error(t, err, url)
		assert.Contains(t, err.Error(), want, url)
	}

	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer s.Close()
	_, port, err := net.SplitHostPort(s.Listener.Addr().String())
	require.NoError(t, err)
	resp, err := client.Get("http://127.0.0.1:" + port + "/")
	require.NoError(t, err, "127.0.0.1 is allowed")
	resp.Body.Close()
}
