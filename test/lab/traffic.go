package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/fledge-dev/fledge/rollout"
)

// MaxRPS bounds the traffic generator: the lab shares two cores with the
// control plane, and 1000 requests a second already measure a traffic share
// to a fraction of a percent within seconds.
const MaxRPS = 1000

// MaxKeepAlive bounds keepalive:N, as large a client pool as services have.
const MaxKeepAlive = 1000

// requestTimeout is how long a user waits for an answer (a free pooled
// connection included) before counting it as failed.
const requestTimeout = 2 * time.Second

// Traffic sends requests to a Service of the lab the way its users would:
// to the Service's ClusterIP and first port, from the host through the
// lab's node network, where kube-proxy picks one of the ready endpoints for
// each new connection. With new connections (the default) every request is
// balanced on its own, so each track's share is its share of ready pods,
// the premise of fledge's replica math; with keepalive:N only the N
// connections are, when they open, as a service's client pool is.
//
// It counts requests and errors (non-2xx answers and transport errors) by
// the pod that answered, which the demo app names in its answer, and by
// that pod's track (TrackBy), per second, so a test or the demo can report
// the traffic share the canary really got and how many requests users saw
// fail.
type Traffic struct {
	// OnSecond, when set before Run, is called once a second with the counts
	// of the second just ended, and once at the end with the last part
	// second: one line per second on screen.
	OnSecond func(TrafficStats)
	// Connections, set before Run, is how the client connects; the zero
	// value is a new connection per request.
	Connections Connections
	// TrackBy, set before Run, tells canary pods from stable ones; the zero
	// value is DefaultTrackBy.
	TrackBy TrackBy

	client    kubernetes.Interface
	namespace string
	service   string
	rps       int

	// opened counts the TCP connections the client opened.
	opened atomic.Int64

	mu      sync.Mutex
	start   time.Time
	seconds []TrafficStats // by completion time: seconds[i] covers [start+i s, start+(i+1) s)
	// errorsAt and lastAt are exact times by track: when each failed
	// request completed, and when the last request completed.
	errorsAt map[string][]time.Time
	lastAt   map[string]time.Time
}

// NewTraffic prepares traffic to the Service namespace/service at rps
// requests per second (1 to MaxRPS), on new connections, telling tracks by
// DefaultTrackBy; Run sends it.
func NewTraffic(client kubernetes.Interface, namespace, service string, rps int) *Traffic {
	return &Traffic{client: client, namespace: namespace, service: service, rps: rps}
}

// Connections is how the traffic's client connects to the Service.
// KeepAlive 0 is a new TCP connection per request, each balanced by
// kube-proxy ("new"); N > 0 is a pool of N persistent HTTP/1.1 connections
// that every request reuses, balanced once each when it opens
// ("keepalive:N").
type Connections struct {
	KeepAlive int
}

// ParseConnections reads --connections: "new" or "keepalive:N" with N from 1
// to MaxKeepAlive.
func ParseConnections(s string) (Connections, error) {
	if s == "new" {
		return Connections{}, nil
	}
	if n, ok := strings.CutPrefix(s, "keepalive:"); ok {
		if k, err := strconv.Atoi(n); err == nil && k >= 1 && k <= MaxKeepAlive {
			return Connections{KeepAlive: k}, nil
		}
	}
	return Connections{}, fmt.Errorf("--connections: want new or keepalive:N with N from 1 to %d, got %q", MaxKeepAlive, s)
}

// String is the form ParseConnections reads.
func (c Connections) String() string {
	if c.KeepAlive == 0 {
		return "new"
	}
	return "keepalive:" + strconv.Itoa(c.KeepAlive)
}

// TrackBy tells a canary pod from a stable one, for any tool's pods: a pod
// is canary when its label LabelKey is LabelValue ("label:KEY=VALUE"), or,
// with Image set, when the version it answers, the demo app's image tag,
// is Image ("image:TAG"). Every other pod that answers is stable.
type TrackBy struct {
	LabelKey, LabelValue string
	Image                string
}

// DefaultTrackBy is fledge's own marking: label:fledge.dev/track=canary.
var DefaultTrackBy = TrackBy{LabelKey: rollout.LabelTrack, LabelValue: rollout.TrackCanary}

// imageTag is what a container image's tag may be.
var imageTag = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// ParseTrackBy reads --track-by: "label:KEY=VALUE" (a label key and value
// as Kubernetes allows them) or "image:TAG".
func ParseTrackBy(s string) (TrackBy, error) {
	if tag, ok := strings.CutPrefix(s, "image:"); ok && imageTag.MatchString(tag) {
		return TrackBy{Image: tag}, nil
	}
	if kv, ok := strings.CutPrefix(s, "label:"); ok {
		key, value, ok := strings.Cut(kv, "=")
		if b := (TrackBy{LabelKey: key, LabelValue: value}); ok && b.valid() {
			return b, nil
		}
	}
	return TrackBy{}, fmt.Errorf("--track-by: want label:KEY=VALUE (such as %s) or image:TAG (such as image:v2), got %q", DefaultTrackBy, s)
}

// String is the form ParseTrackBy reads.
func (b TrackBy) String() string {
	if b.Image != "" {
		return "image:" + b.Image
	}
	return "label:" + b.LabelKey + "=" + b.LabelValue
}

func (b TrackBy) valid() bool {
	if b.Image != "" {
		return b.LabelKey == "" && b.LabelValue == "" && imageTag.MatchString(b.Image)
	}
	return len(validation.IsQualifiedName(b.LabelKey)) == 0 && len(validation.IsValidLabelValue(b.LabelValue)) == 0
}

// track is the track of a pod that answered version: "" when it takes the
// pod's labels and those are not known (found false).
func (b TrackBy) track(version string, labels map[string]string, found bool) string {
	canary := false
	switch {
	case b.Image != "":
		canary = version == b.Image
	case !found:
		return ""
	default:
		v, ok := labels[b.LabelKey]
		canary = ok && v == b.LabelValue
	}
	if canary {
		return rollout.TrackCanary
	}
	return rollout.TrackStable
}

// Counts are requests and how many of them failed.
type Counts struct {
	Requests int
	Errors   int
}

func (c *Counts) add(failed bool) {
	c.Requests++
	if failed {
		c.Errors++
	}
}

// TrafficStats are the requests that completed in a period, by the pod that
// answered and by its track (TrackBy). Every request is in exactly one of
// Tracks, Untracked and NoEndpoint; every request a pod answered is in Pods
// too.
type TrafficStats struct {
	From, To time.Time
	// Tracks counts the answers by the track of the pod that gave them.
	Tracks map[string]Counts
	// Pods counts the answers by the pod that gave them, as it named itself.
	Pods map[string]Counts
	// Untracked counts the answers of pods whose labels the generator has
	// not seen yet (TrackBy by label only): in Pods, not in Tracks.
	Untracked Counts
	// NoEndpoint counts the requests no pod answered, or whose answer did
	// not say which pod gave it: refused (kube-proxy rejects connections to
	// a Service without ready endpoints), reset or timed out. Users saw
	// them fail.
	NoEndpoint int
}

// Requests is every request of the period, NoEndpoint included.
func (s TrafficStats) Requests() int {
	n := s.NoEndpoint + s.Untracked.Requests
	for _, c := range s.Tracks {
		n += c.Requests
	}
	return n
}

// Errors is every request of the period that users saw fail, NoEndpoint
// included.
func (s TrafficStats) Errors() int {
	n := s.NoEndpoint + s.Untracked.Errors
	for _, c := range s.Tracks {
		n += c.Errors
	}
	return n
}

// Share is the share of the requests answered by a pod of a known track
// that a pod of track answered: what the replica math predicts. It is 0
// when no such request completed.
func (s TrafficStats) Share(track string) float64 {
	tracked := 0
	for _, c := range s.Tracks {
		tracked += c.Requests
	}
	if tracked == 0 {
		return 0
	}
	return float64(s.Tracks[track].Requests) / float64(tracked)
}

// String is one line: requests and errors per track (stable first), then
// the canary share, for example
// "stable 750 req 0 err | canary 250 req 250 err | canary share 25.0%".
func (s TrafficStats) String() string {
	var parts []string
	for _, track := range s.TrackNames() {
		c := s.Tracks[track]
		parts = append(parts, fmt.Sprintf("%s %d req %d err", track, c.Requests, c.Errors))
	}
	if s.Untracked.Requests > 0 {
		parts = append(parts, fmt.Sprintf("pod not seen yet %d req %d err", s.Untracked.Requests, s.Untracked.Errors))
	}
	if s.NoEndpoint > 0 {
		parts = append(parts, fmt.Sprintf("no pod answered %d req", s.NoEndpoint))
	}
	if len(parts) == 0 {
		parts = append(parts, "no requests")
	}
	parts = append(parts, fmt.Sprintf("canary share %.1f%%", 100*s.Share(rollout.TrackCanary)))
	return strings.Join(parts, " | ")
}

// TrackNames lists the tracks seen, stable first, then by name.
func (s TrafficStats) TrackNames() []string {
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

// PodNames lists the pods that answered, by name.
func (s TrafficStats) PodNames() []string {
	var names []string
	for p := range s.Pods {
		names = append(names, p)
	}
	sort.Strings(names)
	return names
}

// outcome is what one request got: the pod that answered ("" when none did
// or its answer did not say) and that pod's track ("" when not known).
type outcome struct {
	pod, track string
	failed     bool
}

// add counts one completed request.
func (s *TrafficStats) add(o outcome) {
	if o.pod == "" {
		s.NoEndpoint++
		return
	}
	addTo(&s.Pods, o.pod, Counts{Requests: 1, Errors: boolInt(o.failed)})
	if o.track == "" {
		s.Untracked.add(o.failed)
		return
	}
	addTo(&s.Tracks, o.track, Counts{Requests: 1, Errors: boolInt(o.failed)})
}

// merge adds the counts of o.
func (s *TrafficStats) merge(o TrafficStats) {
	s.NoEndpoint += o.NoEndpoint
	s.Untracked.Requests += o.Untracked.Requests
	s.Untracked.Errors += o.Untracked.Errors
	for track, c := range o.Tracks {
		addTo(&s.Tracks, track, c)
	}
	for pod, c := range o.Pods {
		addTo(&s.Pods, pod, c)
	}
}

func addTo(m *map[string]Counts, key string, c Counts) {
	if *m == nil {
		*m = map[string]Counts{}
	}
	sum := (*m)[key]
	sum.Requests += c.Requests
	sum.Errors += c.Errors
	(*m)[key] = sum
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// period is an empty TrafficStats of [from, to).
func period(from, to time.Time) TrafficStats {
	return TrafficStats{From: from, To: to, Tracks: map[string]Counts{}, Pods: map[string]Counts{}}
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
	total := period(from, to)
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
		out[i] = period(s.From, s.To)
		out[i].merge(s)
	}
	return out
}

// sum adds up the seconds starting at or after since; t.mu is held.
func (t *Traffic) sum(since time.Time) TrafficStats {
	total := period(since, time.Now())
	for _, s := range t.seconds {
		if !s.From.Before(since) {
			total.merge(s)
		}
	}
	return total
}

// record counts a request that completed at done.
func (t *Traffic) record(done time.Time, o outcome) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := max(int(done.Sub(t.start)/time.Second), 0)
	for len(t.seconds) <= i {
		from := t.start.Add(time.Duration(len(t.seconds)) * time.Second)
		t.seconds = append(t.seconds, period(from, from.Add(time.Second)))
	}
	t.seconds[i].add(o)
	if t.lastAt == nil {
		t.lastAt, t.errorsAt = map[string]time.Time{}, map[string][]time.Time{}
	}
	t.lastAt[o.track] = done
	if o.failed {
		t.errorsAt[o.track] = append(t.errorsAt[o.track], done)
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
	s := period(from, from.Add(time.Second))
	if i < len(t.seconds) {
		s.merge(t.seconds[i])
	}
	return s
}

// Run sends the traffic until ctx ends, then waits for the requests in
// flight (at most requestTimeout) and returns nil. It returns an error when
// an option is out of range, or the Service does not exist or has no
// ClusterIP and port the lab's node network routes.
func (t *Traffic) Run(ctx context.Context) error {
	if t.rps < 1 || t.rps > MaxRPS {
		return fmt.Errorf("traffic: rps %d is not between 1 and %d", t.rps, MaxRPS)
	}
	if k := t.Connections.KeepAlive; k < 0 || k > MaxKeepAlive {
		return fmt.Errorf("traffic: %s: want from 1 to %d kept-alive connections", t.Connections, MaxKeepAlive)
	}
	trackBy := t.TrackBy
	if trackBy == (TrackBy{}) {
		trackBy = DefaultTrackBy
	}
	if !trackBy.valid() {
		return fmt.Errorf("traffic: track by %s: want label:KEY=VALUE or image:TAG", trackBy)
	}
	svc, err := t.client.CoreV1().Services(t.namespace).Get(ctx, t.service, metav1.GetOptions{})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("traffic: service %s/%s: %w", t.namespace, t.service, err)
	}
	addr, err := serviceAddress(svc)
	if err != nil {
		return fmt.Errorf("traffic: service %s/%s: %w", t.namespace, t.service, err)
	}
	if err := allowed(addr.Addr()); err != nil {
		return fmt.Errorf("traffic: service %s/%s: %w", t.namespace, t.service, err)
	}
	labels := func(string) (map[string]string, bool) { return nil, false }
	if trackBy.Image == "" {
		pods, stop, err := t.watchPods(ctx)
		if err != nil || ctx.Err() != nil {
			return err
		}
		defer stop()
		labels = pods.labels
	}
	t.send(ctx, "http://"+addr.String()+"/", func(pod, version string) string {
		l, found := labels(pod)
		return trackBy.track(version, l, found)
	}, trafficClients(t.Connections, &t.opened))
	return nil
}

// Opened is how many TCP connections Run has opened so far: one per request
// with new connections; with keepalive:N, N once every connection of the
// pool was used, more when one had to be replaced (it broke).
func (t *Traffic) Opened() int { return int(t.opened.Load()) }

// serviceAddress is where a client of svc connects: its ClusterIP and
// first port.
func serviceAddress(svc *corev1.Service) (netip.AddrPort, error) {
	ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("no ClusterIP (%q): send to a Service of type ClusterIP, not a headless one", svc.Spec.ClusterIP)
	}
	if len(svc.Spec.Ports) == 0 {
		return netip.AddrPort{}, errors.New("no port")
	}
	return netip.AddrPortFrom(ip, uint16(svc.Spec.Ports[0].Port)), nil
}

// podLabels remembers the labels of every pod of the namespace seen since
// Run started. It forgets none: a pod's process still answers on its
// kept-alive connections for a moment after the pod object is gone (the
// pod runner drains it), and those answers belong to the pod's track.
type podLabels struct {
	mu     sync.Mutex
	byName map[string]map[string]string
}

func (p *podLabels) set(obj any) {
	if pod, ok := obj.(*corev1.Pod); ok {
		p.mu.Lock()
		p.byName[pod.Name] = pod.Labels
		p.mu.Unlock()
	}
}

// labels returns the labels of the pod named name, and whether it was seen.
// A pod that answers before the informer has seen it (a watch event late by
// a few milliseconds) is not guessed stable: its answers are counted by its
// name only (TrafficStats.Untracked) until the pod is seen, so a canary's
// first answers cannot lower its share.
func (p *podLabels) labels(name string) (map[string]string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.byName[name]
	return l, ok
}

// watchPods starts an informer on the pods of the namespace and returns
// their labels as it sees them, and a function that stops it.
func (t *Traffic) watchPods(ctx context.Context) (*podLabels, func(), error) {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	factory := informers.NewSharedInformerFactoryWithOptions(t.client, 0, informers.WithNamespace(t.namespace))
	informer := factory.Core().V1().Pods().Informer()
	pods := &podLabels{byName: map[string]map[string]string{}}
	_, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    pods.set,
		UpdateFunc: func(_, obj any) { pods.set(obj) },
	})
	stop := func() {
		cancel()
		factory.Shutdown()
	}
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("traffic: watch the pods of %s: %w", t.namespace, err)
	}
	factory.Start(runCtx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		stop()
		if ctx.Err() != nil {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("traffic: the pods of %s were not listed", t.namespace)
	}
	return pods, stop, nil
}

// send paces the requests: every 10ms it sends those due by then, so a
// second holds rps requests whatever the tick's jitter. Requests run
// concurrently; they are not cancelled when ctx ends (a user does not hang
// up because the test is over) but end within requestTimeout.
//
// With keepalive:N, request i goes on connection i mod N of the pool: N
// connections stay open and take turns, as a client pool of fixed size
// does (a request waits for its connection when it is busy).
func (t *Traffic) send(ctx context.Context, url string, track func(pod, version string) string, clients []*http.Client) {
	defer func() {
		for _, c := range clients {
			c.CloseIdleConnections()
		}
	}()
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
				client := clients[sent%len(clients)]
				inflight.Go(func() { t.record(time.Now(), request(reqCtx, client, url, track)) })
			}
		}
	}
	inflight.Wait()
	if n := <-reported; t.OnSecond != nil {
		// What completed after the last full second, up to now.
		last := period(start.Add(time.Duration(n)*time.Second), time.Now())
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

// request sends one GET to url and says who answered: the pod the answer
// names and its track (track), failed unless the answer is a 2xx.
func request(ctx context.Context, client *http.Client, url string, track func(pod, version string) string) outcome {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return outcome{failed: true}
	}
	resp, err := client.Do(req)
	if err != nil {
		return outcome{failed: true}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, resp.Body) // so a kept-alive connection is reused
	resp.Body.Close()
	version, pod, ok := parseAnswer(string(body))
	if err != nil || !ok {
		return outcome{failed: true}
	}
	return outcome{pod: pod, track: track(pod, version), failed: resp.StatusCode < 200 || resp.StatusCode > 299}
}

// parseAnswer reads the demo app's answer, "ok <version> <pod>\n" or
// "error <version> <pod>\n"; ok is false for anything else, an answer
// without its pod included.
func parseAnswer(body string) (version, pod string, ok bool) {
	line, found := strings.CutSuffix(body, "\n")
	f := strings.Split(line, " ")
	if !found || len(f) != 3 || (f[0] != "ok" && f[0] != "error") || f[1] == "" || f[2] == "" {
		return "", "", false
	}
	return f[1], f[2], true
}

// The only addresses traffic may go to (LAB.md, "The real data plane"):
// the host's loopback and the lab's pod and Service blocks, the latter
// only while a lab's veth pair routes them.
var (
	loopback   = netip.MustParseAddr("127.0.0.1")
	labBlocks  = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/16"), netip.MustParsePrefix("198.19.0.0/16")}
	labUplinks = netip.MustParsePrefix("198.19.255.0/24") // the host ends of the labs' veth pairs
)

// allowed says why traffic must not go to ip, or nil when it may. An
// address of the lab's blocks is refused unless the host routes it through
// a lab's veth pair (the route's source is the pair's host end): with no
// lab running, 198.19.x would go out through the default route.
func allowed(ip netip.Addr) error {
	ip = ip.Unmap()
	if ip == loopback {
		return nil
	}
	inLab := false
	for _, b := range labBlocks {
		inLab = inLab || b.Contains(ip)
	}
	if !inLab {
		return fmt.Errorf("%s is not an address of the lab: traffic goes to 127.0.0.1, 198.18.0.0/16 and 198.19.0.0/16 only", ip)
	}
	src, err := routeSource(ip)
	if err != nil || !labUplinks.Contains(src) {
		return fmt.Errorf("%s is not routed to a lab's node network (no lab running?): traffic goes there only through it", ip)
	}
	return nil
}

// routeSource is the host's source address for ip, as the kernel's routing
// table chooses it; connecting a UDP socket sends nothing.
func routeSource(ip netip.Addr) (netip.Addr, error) {
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 9)))
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

// trafficClients are the HTTP/1.1 clients of the traffic: one that opens a
// new connection per request, or c.KeepAlive that keep one connection each.
// Their dialer refuses every address that allowed refuses, so not even a
// bug sends traffic elsewhere, and counts the connections they open in
// opened.
func trafficClients(c Connections, opened *atomic.Int64) []*http.Client {
	dialer := &net.Dialer{
		Timeout: time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("traffic goes to 127.0.0.1, 198.18.0.0/16 and 198.19.0.0/16 only, not %s", address)
			}
			return allowed(ap.Addr())
		},
	}
	transport := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			conn, err := dialer.DialContext(ctx, network, address)
			if err == nil {
				opened.Add(1)
			}
			return conn, err
		},
		DisableCompression: true,
		DisableKeepAlives:  c.KeepAlive == 0,
		IdleConnTimeout:    90 * time.Second,
	}
	if c.KeepAlive == 0 {
		return []*http.Client{{Transport: transport}}
	}
	clients := make([]*http.Client, c.KeepAlive)
	for i := range clients {
		one := transport.Clone()
		one.MaxConnsPerHost, one.MaxIdleConnsPerHost, one.MaxIdleConns = 1, 1, 1
		clients[i] = &http.Client{Transport: one}
	}
	return clients
}
