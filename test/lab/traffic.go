package lab

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/fledge-dev/fledge/rollout"
)

// MaxRPS bounds the traffic generator: the lab shares two cores with the
// control plane, and 1000 requests a second already measure a traffic share
// to a fraction of a percent within seconds.
const MaxRPS = 1000

// requestTimeout is how long a user waits for an answer before counting it
// as failed.
const requestTimeout = 2 * time.Second

// Traffic sends requests to a Service of the lab the way its users would
// through kube-proxy: each request goes to one of the Service's ready
// endpoints chosen uniformly at random, so the share each track receives is
// its share of ready pods, the premise of fledge's replica math. A request
// goes to 127.0.0.1 on the endpoint's pod's PortAnnotation, never to the
// endpoint's address.
//
// It counts requests and errors (non-2xx answers and transport errors) by
// the track of the pod that answered, per second, so a test or the demo can
// report the traffic share the canary really got and how many requests
// users saw fail.
type Traffic struct {
	// OnSecond, when set before Run, is called once a second with the counts
	// of the second just ended, and once at the end with the last part
	// second: one line per second on screen.
	OnSecond func(TrafficStats)

	client    kubernetes.Interface
	namespace string
	service   string
	rps       int

	mu      sync.Mutex
	start   time.Time
	seconds []TrafficStats // by completion time: seconds[i] covers [start+i s, start+(i+1) s)
	// errorsAt and lastAt are exact times by track: when each failed
	// request completed, and when the last request completed.
	errorsAt map[string][]time.Time
	lastAt   map[string]time.Time
}

// NewTraffic prepares traffic to the Service namespace/service at rps
// requests per second (1 to MaxRPS); Run sends it.
func NewTraffic(client kubernetes.Interface, namespace, service string, rps int) *Traffic {
	return &Traffic{client: client, namespace: namespace, service: service, rps: rps}
}

// Counts are requests and how many of them failed.
type Counts struct {
	Requests int
	Errors   int
}

// TrafficStats are the requests that completed in a period, by the track of
// the pod that answered (rollout.LabelTrack; rollout.TrackStable when absent).
type TrafficStats struct {
	From, To time.Time
	Tracks   map[string]Counts
	// NoEndpoint counts requests sent while the Service had no ready
	// endpoint with a port: users saw them fail, and no pod saw them.
	NoEndpoint int
}

// Requests is every request of the period, NoEndpoint included.
func (s TrafficStats) Requests() int {
	n := s.NoEndpoint
	for _, c := range s.Tracks {
		n += c.Requests
	}
	return n
}

// Errors is every request of the period that users saw fail, NoEndpoint
// included.
func (s TrafficStats) Errors() int {
	n := s.NoEndpoint
	for _, c := range s.Tracks {
		n += c.Errors
	}
	return n
}

// Share is the share of the requests that reached a pod which reached a pod
// of track: what the replica math predicts. It is 0 when none reached a pod.
func (s TrafficStats) Share(track string) float64 {
	reached := s.Requests() - s.NoEndpoint
	if reached == 0 {
		return 0
	}
	return float64(s.Tracks[track].Requests) / float64(reached)
}

// String is one line: requests and errors per track (stable first), then
// the canary share, for example
// "stable 750 req 0 err | canary 250 req 250 err | canary share 25.0%".
func (s TrafficStats) String() string {
	var parts []string
	for _, track := range s.trackNames() {
		c := s.Tracks[track]
		parts = append(parts, fmt.Sprintf("%s %d req %d err", track, c.Requests, c.Errors))
	}
	if s.NoEndpoint > 0 {
		parts = append(parts, fmt.Sprintf("no endpoint %d req", s.NoEndpoint))
	}
	if len(parts) == 0 {
		parts = append(parts, "no requests")
	}
	parts = append(parts, fmt.Sprintf("canary share %.1f%%", 100*s.Share(rollout.TrackCanary)))
	return strings.Join(parts, " | ")
}

// trackNames lists the tracks seen, stable first, then by name.
func (s TrafficStats) trackNames() []string {
	var names []string
	for t := range s.Tracks {
		names = append(names, t)
	}
	sort.Slice(names, func(i, j int) bool {
		if (names[i] == rollout.TrackStable) != (names[j] == rollout.TrackStable) {
			return names[i] == rollout.TrackStable
		}
		return names[i] < names[j]
	})
	return names
}

// add counts one completed request.
func (s *TrafficStats) add(track string, failed bool) {
	if track == "" {
		s.NoEndpoint++
		return
	}
	if s.Tracks == nil {
		s.Tracks = map[string]Counts{}
	}
	c := s.Tracks[track]
	c.Requests++
	if failed {
		c.Errors++
	}
	s.Tracks[track] = c
}

// merge adds the counts of o.
func (s *TrafficStats) merge(o TrafficStats) {
	s.NoEndpoint += o.NoEndpoint
	for track, c := range o.Tracks {
		if s.Tracks == nil {
			s.Tracks = map[string]Counts{}
		}
		sum := s.Tracks[track]
		sum.Requests += c.Requests
		sum.Errors += c.Errors
		s.Tracks[track] = sum
	}
}

// Snapshot returns the counts of every request completed since Run started.
func (t *Traffic) Snapshot() TrafficStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sum(t.start)
}

// Window returns the counts of the whole seconds of Run that started at or
// after since: the traffic after a change, without the part second in which
// it happened.
func (t *Traffic) Window(since time.Time) TrafficStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sum(since)
}

// Between returns the counts of the whole seconds of Run inside [from, to]:
// the traffic of one step of a rollout.
func (t *Traffic) Between(from, to time.Time) TrafficStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	total := TrafficStats{From: from, To: to, Tracks: map[string]Counts{}}
	for _, s := range t.seconds {
		if !s.From.Before(from) && !s.To.After(to) {
			total.merge(s)
		}
	}
	return total
}

// Seconds returns the counts of each second of Run so far, the last one
// possibly still running.
func (t *Traffic) Seconds() []TrafficStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]TrafficStats, len(t.seconds))
	for i, s := range t.seconds {
		out[i] = TrafficStats{From: s.From, To: s.To, Tracks: map[string]Counts{}}
		out[i].merge(s)
	}
	return out
}

// sum adds up the seconds starting at or after since; t.mu is held.
func (t *Traffic) sum(since time.Time) TrafficStats {
	total := TrafficStats{From: since, To: time.Now(), Tracks: map[string]Counts{}}
	for _, s := range t.seconds {
		if !s.From.Before(since) {
			total.merge(s)
		}
	}
	return total
}

// record counts a request that completed at done.
func (t *Traffic) record(done time.Time, track string, failed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := max(int(done.Sub(t.start)/time.Second), 0)
	for len(t.seconds) <= i {
		from := t.start.Add(time.Duration(len(t.seconds)) * time.Second)
		t.seconds = append(t.seconds, TrafficStats{From: from, To: from.Add(time.Second), Tracks: map[string]Counts{}})
	}
	t.seconds[i].add(track, failed)
	if t.lastAt == nil {
		t.lastAt, t.errorsAt = map[string]time.Time{}, map[string][]time.Time{}
	}
	t.lastAt[track] = done
	if failed {
		t.errorsAt[track] = append(t.errorsAt[track], done)
	}
}

// FirstError returns when the first failed request answered by a pod of
// track completed at or after since, and whether there was one.
func (t *Traffic) FirstError(track string, since time.Time) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, at := range t.errorsAt[track] {
		if !at.Before(since) {
			return at, true
		}
	}
	return time.Time{}, false
}

// LastRequest returns when the last request answered by a pod of track
// completed: after a canary is cut, when traffic stopped reaching it.
func (t *Traffic) LastRequest(track string) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastAt[track]
}

// second returns the counts of second i of Run (empty if nothing completed).
func (t *Traffic) second(i int) TrafficStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	from := t.start.Add(time.Duration(i) * time.Second)
	s := TrafficStats{From: from, To: from.Add(time.Second), Tracks: map[string]Counts{}}
	if i < len(t.seconds) {
		s.merge(t.seconds[i])
	}
	return s
}

// target is a ready endpoint of the Service, resolved to its pod.
type target struct {
	pod   string
	track string
	port  int
}

// targets resolves the ready endpoints of a Service's EndpointSlices to the
// pods behind them, as kube-proxy would pick from: an endpoint whose Ready
// condition is unset counts as ready (kube-proxy's reading), one listed in
// two slices counts once, and one whose pod has no valid PortAnnotation yet
// is skipped: in the lab that pod has no process, like a pod whose
// readiness probe has not passed.
func targets(slices []*discoveryv1.EndpointSlice, pod func(name string) *corev1.Pod) []target {
	seen := map[string]bool{}
	var out []target
	for _, s := range slices {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			if e.TargetRef == nil || e.TargetRef.Kind != "Pod" || seen[e.TargetRef.Name] {
				continue
			}
			p := pod(e.TargetRef.Name)
			if p == nil {
				continue
			}
			port, err := strconv.Atoi(p.Annotations[PortAnnotation])
			if err != nil || port < 1 || port > 65535 {
				continue
			}
			seen[e.TargetRef.Name] = true
			track := p.Labels[rollout.LabelTrack]
			if track == "" {
				track = rollout.TrackStable
			}
			out = append(out, target{pod: p.Name, track: track, port: port})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pod < out[j].pod })
	return out
}

// Run sends the traffic until ctx ends, then waits for the requests in
// flight (at most requestTimeout) and returns nil. It returns an error when
// rps is out of range or the Service does not exist.
func (t *Traffic) Run(ctx context.Context) error {
	if t.rps < 1 || t.rps > MaxRPS {
		return fmt.Errorf("traffic: rps %d is not between 1 and %d", t.rps, MaxRPS)
	}
	if _, err := t.client.CoreV1().Services(t.namespace).Get(ctx, t.service, metav1.GetOptions{}); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("traffic: service %s/%s: %w", t.namespace, t.service, err)
	}
	pick, stop, err := t.watch(ctx)
	if err != nil || ctx.Err() != nil {
		return err
	}
	defer stop()
	t.send(ctx, pick)
	return nil
}

// watch starts informers on the Service's EndpointSlices and the pods of
// its namespace, and returns a function that picks a target at random (nil
// when there is none) and one that stops the informers.
func (t *Traffic) watch(ctx context.Context) (func() *target, func(), error) {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	podFactory := informers.NewSharedInformerFactoryWithOptions(t.client, 0, informers.WithNamespace(t.namespace))
	sliceFactory := informers.NewSharedInformerFactoryWithOptions(t.client, 0, informers.WithNamespace(t.namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = discoveryv1.LabelServiceName + "=" + t.service
		}))
	pods := podFactory.Core().V1().Pods()
	slices := sliceFactory.Discovery().V1().EndpointSlices()
	podInformer, sliceInformer := pods.Informer(), slices.Informer()
	stop := func() {
		cancel()
		podFactory.Shutdown()
		sliceFactory.Shutdown()
	}
	podFactory.Start(runCtx.Done())
	sliceFactory.Start(runCtx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), podInformer.HasSynced, sliceInformer.HasSynced) {
		stop()
		if ctx.Err() != nil {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("traffic: the endpoints of %s/%s were not listed", t.namespace, t.service)
	}
	return picker(slices.Lister().EndpointSlices(t.namespace), pods.Lister().Pods(t.namespace)), stop, nil
}

// picker chooses a target uniformly among the ready ones, from the
// informers' caches at the moment of the request.
func picker(slices discoverylisters.EndpointSliceNamespaceLister, pods corelisters.PodNamespaceLister) func() *target {
	return func() *target {
		list, err := slices.List(labels.Everything())
		if err != nil {
			return nil
		}
		ts := targets(list, func(name string) *corev1.Pod {
			p, err := pods.Get(name)
			if err != nil {
				return nil
			}
			return p
		})
		if len(ts) == 0 {
			return nil
		}
		return &ts[rand.IntN(len(ts))]
	}
}

// send paces the requests: every 10ms it sends those due by then, so a
// second holds rps requests whatever the tick's jitter. Requests run
// concurrently; they are not cancelled when ctx ends (a user does not hang
// up because the test is over) but end within requestTimeout.
func (t *Traffic) send(ctx context.Context, pick func() *target) {
	client := loopbackClient(t.rps)
	defer client.CloseIdleConnections()
	reqCtx := context.WithoutCancel(ctx)

	t.mu.Lock()
	t.start = time.Now()
	start := t.start
	t.mu.Unlock()
	reported := t.reportEverySecond(ctx, start)

	var inflight sync.WaitGroup
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	sent := 0
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case now := <-tick.C:
			due := int(now.Sub(start).Seconds() * float64(t.rps))
			for ; sent < due; sent++ {
				target := pick()
				inflight.Go(func() { t.request(reqCtx, client, target) })
			}
		}
	}
	inflight.Wait()
	if n := <-reported; t.OnSecond != nil {
		// What completed after the last full second, up to now.
		last := TrafficStats{From: start.Add(time.Duration(n) * time.Second), To: time.Now(), Tracks: map[string]Counts{}}
		t.mu.Lock()
		for i := n; i < len(t.seconds); i++ {
			last.merge(t.seconds[i])
		}
		t.mu.Unlock()
		if last.Requests() > 0 {
			t.OnSecond(last)
		}
	}
}

// reportEverySecond calls OnSecond for each second of Run once it has
// ended (50ms after, for requests finishing on the boundary) until ctx
// ends, then sends how many seconds it reported.
func (t *Traffic) reportEverySecond(ctx context.Context, start time.Time) <-chan int {
	reported := make(chan int, 1)
	go func() {
		n := 0
		defer func() { reported <- n }()
		if t.OnSecond == nil {
			return
		}
		for {
			next := start.Add(time.Duration(n+1)*time.Second + 50*time.Millisecond)
			timer := time.NewTimer(time.Until(next))
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-timer.C:
			}
			t.OnSecond(t.second(n))
			n++
		}
	}()
	return reported
}

// request sends one request and counts it. No target: the Service had no
// ready endpoint, and the user saw an error.
func (t *Traffic) request(ctx context.Context, client *http.Client, target *target) {
	if target == nil {
		t.record(time.Now(), "", true)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	failed := true
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(target.port)+"/", nil)
	if err == nil {
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			failed = resp.StatusCode < 200 || resp.StatusCode > 299
		}
	}
	t.record(time.Now(), target.track, failed)
}

// loopbackClient is an HTTP client that can reach 127.0.0.1 only: its
// dialer refuses any other address, so not even a bug sends traffic to a
// pod IP. It keeps enough idle connections not to run out of ports at rps.
func loopbackClient(rps int) *http.Client {
	dialer := &net.Dialer{
		Timeout: time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil || host != "127.0.0.1" {
				return fmt.Errorf("traffic goes to 127.0.0.1 only, not %s", address)
			}
			return nil
		},
	}
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         dialer.DialContext,
		MaxIdleConnsPerHost: min(rps, 100),
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}}
}
