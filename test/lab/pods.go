package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// The lab's pod runner stands in for the container runtime of demo pods:
// kwok makes pods Running with addresses from the lab's node network, and
// for every Running pod of the demo image the runner puts that address on
// the node network's loopback and starts the demo app there, listening on
// the pod's IP and container port. kube-proxy, Prometheus and clients reach
// it there as they would a container. With Lab.RunManagerPods it also runs
// fledge's manager for manager pods (managers.go).

// DemoImage is the image, without its tag, of the pods the runner stands in
// for; the tag becomes the app's VERSION ("fledge/demo:v2" answers "ok v2").
const DemoImage = "fledge/demo"

// failingLabel is kwok's chaos stage: such a pod's container fails about a
// second after it runs. Its pod gets no process, like a container that
// crashes before it serves.
const failingLabel = "pod-container-running-failed.stage.kwok.x-k8s.io"

// podsLog is the runner's log in the lab directory: its own lines and every
// demo process's output, each line prefixed with the pod.
const podsLog = "pods.log"

// BuildDemoApp builds the demo app of this checkout (test/demoapp) into dir
// and returns its path, for Options.DemoApp.
func BuildDemoApp(ctx context.Context, dir string) (string, error) {
	return Build(ctx, dir, "test/demoapp")
}

// DemoApp is the path of the demo app the lab runs for its pods; "" without
// Options.DemoApp.
func (l *Lab) DemoApp() string {
	if l.pods == nil {
		return ""
	}
	return l.pods.bin
}

// DemoPIDs returns the process IDs of the demo processes running now, by
// "namespace/name" of their pod. It is empty without Options.DemoApp.
func (l *Lab) DemoPIDs() map[string]int {
	if l.pods == nil {
		return map[string]int{}
	}
	return l.pods.pids()
}

// demoSpec is what a pod asks of its stand-in process.
type demoSpec struct {
	uid types.UID
	// ip and port are the pod's address and its container's first TCP
	// port (8080 when it names none): where it listens.
	ip      netip.Addr
	port    int
	tag     string
	env     []string // NAME=value: VERSION, the container's literal env, PORT last
	skipped []string // env names the lab cannot resolve (valueFrom, envFrom)
}

// wantsDemo decides whether pod should have a demo process, and with what.
// Only a pod that is Running on one of the lab's nodes, not being deleted,
// not doomed by kwok's chaos stage, and with a container of DemoImage does.
// The container's literal env values are passed on after VERSION=<tag>,
// POD_NAME and POD_NAMESPACE (as the downward API would give them), so a
// container that sets one itself wins; HOST and PORT are the runner's alone.
func wantsDemo(pod *corev1.Pod, nodes map[string]bool) (demoSpec, bool) {
	if pod == nil || pod.DeletionTimestamp != nil || pod.Status.Phase != corev1.PodRunning ||
		!nodes[pod.Spec.NodeName] || pod.Labels[failingLabel] == "true" {
		return demoSpec{}, false
	}
	for _, c := range pod.Spec.Containers {
		tag, ok := demoTag(c.Image)
		if !ok {
			continue
		}
		spec := demoSpec{uid: pod.UID, tag: tag, port: 8080,
			env: []string{"VERSION=" + tag, "POD_NAME=" + pod.Name, "POD_NAMESPACE=" + pod.Namespace}}
		spec.ip, _ = netip.ParseAddr(pod.Status.PodIP)
		for _, p := range c.Ports {
			if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
				spec.port = int(p.ContainerPort)
				break
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil || e.Name == "PORT" || e.Name == "HOST" {
				spec.skipped = append(spec.skipped, e.Name)
				continue
			}
			spec.env = append(spec.env, e.Name+"="+e.Value)
		}
		for _, from := range c.EnvFrom {
			spec.skipped = append(spec.skipped, "envFrom "+envFromName(from))
		}
		return spec, true
	}
	return demoSpec{}, false
}

// demoTag returns the tag of an image of DemoImage ("latest" when it has none).
func demoTag(image string) (string, bool) {
	if image == DemoImage {
		return "latest", true
	}
	tag, ok := strings.CutPrefix(image, DemoImage+":")
	return tag, ok && tag != ""
}

func envFromName(from corev1.EnvFromSource) string {
	switch {
	case from.ConfigMapRef != nil:
		return "configMap " + from.ConfigMapRef.Name
	case from.SecretRef != nil:
		return "secret " + from.SecretRef.Name
	}
	return "(unknown source)"
}

// demoProcess is a running stand-in for one pod.
type demoProcess struct {
	*process
	uid types.UID
	// addr is where it listens: the pod's IP and port.
	addr netip.AddrPort
	// leaving is when its pod was first seen going: the process drains
	// until leaving+drain before it is stopped.
	leaving time.Time
}

// drain is how long a deleted pod's process keeps answering, as a pod with a
// preStop sleep does while kube-proxy takes its endpoint out: requests
// already routed to it still get answers.
const drain = 2 * time.Second

// podRunner keeps one demo process per pod that wants one (wantsDemo),
// reconciling from a pod informer through a work queue keyed by
// "namespace/name", so one pod is never handled by two workers at once.
type podRunner struct {
	client kubernetes.Interface
	// net is the lab's node network, where the processes run.
	net   *nodeNet
	bin   string
	dir   string
	nodes map[string]bool
	log   *lineLog

	factory informers.SharedInformerFactory
	lister  corelisters.PodLister
	queue   workqueue.TypedRateLimitingInterface[string]
	ctx     context.Context // ends when the runner stops: no process starts after
	cancel  context.CancelFunc
	workers sync.WaitGroup
	probe   *http.Client

	mu    sync.Mutex
	procs map[string]*demoProcess
	// addrs says which pod's process each address on the node network's
	// loopback is for: kwok gives a gone pod's IP to a new pod at once.
	addrs  map[netip.Addr]string
	failed map[types.UID]bool // pods whose process would not run: not retried (a pod's env never changes)

	// Manager pods (managers.go), once Lab.RunManagerPods set mgrCfg.
	mgrCfg  *managerConfig
	mgrs    map[string]*managerPod
	history []ManagerEvent
	terms   sync.WaitGroup // terminations under way
	probes  sync.WaitGroup // readiness probes
}

// startPods starts the pod runner with the demo app at bin, and returns once
// it has seen every existing pod. Lab.Stop stops it and its processes.
func (l *Lab) startPods(ctx context.Context, bin string) error {
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("lab: demo app: %w", err)
	}
	return l.startRunner(ctx, bin)
}

// startRunner starts the pod runner; with bin "", it runs no demo app (demo
// pods get no process), for a lab that runs manager pods only.
func (l *Lab) startRunner(ctx context.Context, bin string) error {
	log, err := openLineLog(filepath.Join(l.Dir, podsLog))
	if err != nil {
		return err
	}
	nodes := map[string]bool{}
	for _, n := range l.Nodes {
		nodes[n] = true
	}
	r := &podRunner{
		client:  l.Client,
		bin:     bin,
		dir:     l.Dir,
		nodes:   nodes,
		log:     log,
		factory: informers.NewSharedInformerFactory(l.Client, 0),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "lab-pods"}),
		probe:  &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}},
		procs:  map[string]*demoProcess{},
		addrs:  map[netip.Addr]string{},
		failed: map[types.UID]bool{},
		mgrs:   map[string]*managerPod{},
		net:    l.net,
	}
	// The runner outlives Start's context (often a startup timeout): it
	// lives until Lab.Stop.
	r.ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	l.pods = r
	return r.start(ctx)
}

func (r *podRunner) start(ctx context.Context) error {
	pods := r.factory.Core().V1().Pods()
	r.lister = pods.Lister()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			r.queue.Add(key)
		}
	}
	if _, err := pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		return fmt.Errorf("lab: pod runner: %w", err)
	}
	r.factory.Start(r.ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), pods.Informer().HasSynced) {
		return errors.New("lab: pod runner: pods were not listed before the lab's start ended")
	}
	for range 4 {
		r.workers.Go(func() {
			for r.next() {
			}
		})
	}
	if r.bin != "" {
		r.log.printf("runner: watching pods of image %s:<tag> on nodes %s", DemoImage, strings.Join(sortedKeys(r.nodes), ", "))
	} else {
		r.log.printf("runner: watching pods on nodes %s, without the demo app", strings.Join(sortedKeys(r.nodes), ", "))
	}
	return nil
}

// next handles one key of the queue; false once the queue is shut down.
func (r *podRunner) next() bool {
	key, shutdown := r.queue.Get()
	if shutdown {
		return false
	}
	defer r.queue.Done(key)
	if err := r.sync(key); err != nil {
		r.log.printf("runner: %s: %v (will retry)", key, err)
		r.queue.AddRateLimited(key)
		return true
	}
	r.queue.Forget(key)
	return true
}

// sync brings the process of one pod in line with what the pod wants: start
// it, keep its annotation, or stop it.
func (r *podRunner) sync(key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // not a key this runner made; nothing to retry
	}
	pod, err := r.lister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		pod, err = nil, nil
	}
	if err != nil {
		return err
	}
	if r.managesPod(key, pod) {
		return r.syncManager(key, pod)
	}
	spec, want := wantsDemo(pod, r.nodes)
	want = want && r.bin != ""

	r.mu.Lock()
	cur := r.procs[key]
	r.mu.Unlock()
	if cur != nil {
		if done, exitErr := cur.exited(); done && !cur.stopped {
			r.log.printf("runner: the process of %s (pid %d) ended on its own: %v; the pod gets no other", key, cur.cmd.Process.Pid, exitErr)
			r.markFailed(cur.uid)
			r.forget(key)
			return nil
		}
		if want && cur.uid == spec.uid {
			return nil
		}
		if going := pod == nil || pod.UID != cur.uid || pod.DeletionTimestamp != nil; going && r.ctx.Err() == nil {
			if cur.leaving.IsZero() {
				cur.leaving = time.Now()
			}
			if wait := time.Until(cur.leaving.Add(drain)); wait > 0 {
				r.queue.AddAfter(key, wait)
				return nil
			}
		}
		r.stop(key, cur, stopReason(pod, cur.uid))
	}
	if !want || r.hasFailed(spec.uid) || r.ctx.Err() != nil {
		return nil
	}
	for _, s := range spec.skipped {
		r.log.printf("runner: %s: env %s is not a literal value; the lab passes only literal values", key, s)
	}
	r.takeAddress(key, spec.ip)
	p, err := r.startDemo(key, spec)
	if err != nil {
		r.log.printf("runner: %s: %v; the pod gets no process", key, err)
		r.markFailed(spec.uid)
		return nil
	}
	r.mu.Lock()
	r.procs[key] = p
	r.mu.Unlock()
	r.log.printf("runner: %s (%s) runs as pid %d on %s", key, spec.tag, p.cmd.Process.Pid, p.addr)
	return nil
}

// takeAddress ends the drain of a process of a pod that is gone whose IP
// kwok has already given to the pod of key: one address, one process.
func (r *podRunner) takeAddress(key string, ip netip.Addr) {
	r.mu.Lock()
	var holder string
	var held *demoProcess
	for k, p := range r.procs {
		if k != key && p.addr.Addr() == ip {
			holder, held = k, p
		}
	}
	r.addrs[ip] = key // so the holder's stop leaves the address on
	r.mu.Unlock()
	if held != nil {
		r.stop(holder, held, "its IP "+ip.String()+" went to "+key)
	}
}

// stopReason says, for the log, why a pod's process is stopped.
func stopReason(pod *corev1.Pod, uid types.UID) string {
	switch {
	case pod == nil:
		return "the pod is gone"
	case pod.UID != uid:
		return "the pod was replaced"
	case pod.DeletionTimestamp != nil:
		return "the pod is being deleted"
	case pod.Status.Phase != corev1.PodRunning:
		return "the pod is " + string(pod.Status.Phase)
	}
	return "the pod no longer runs the demo image"
}

// startDemo puts the pod's address on the node network and starts its
// process there, on the pod's IP and port, as the pod's container would,
// and waits until it answers.
func (r *podRunner) startDemo(key string, spec demoSpec) (*demoProcess, error) {
	if !spec.ip.IsValid() {
		return nil, errors.New("the pod has no IP yet")
	}
	if err := r.net.AddPod(r.ctx, spec.ip); err != nil {
		return nil, err
	}
	p, err := r.launch(key, spec, netip.AddrPortFrom(spec.ip, uint16(spec.port)))
	if err == nil {
		err = r.waitAnswering(p)
	}
	if err != nil {
		if p != nil {
			p.stop(5 * time.Second)
		}
		_ = r.net.RemovePod(r.ctx, spec.ip)
		return nil, err
	}
	return p, nil
}

// launch starts the demo app with the pod's env, listening on addr. Its
// output goes to the runner's log, each line prefixed with the pod.
func (r *podRunner) launch(key string, spec demoSpec, addr netip.AddrPort) (*demoProcess, error) {
	out := &prefixWriter{log: r.log, prefix: key + ": "}
	cmd := r.net.Command(r.bin)
	cmd.Dir = r.dir
	cmd.Env = append(append([]string{}, spec.env...), "HOST="+addr.Addr().String(), "PORT="+strconv.Itoa(int(addr.Port())))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the demo app: %w", err)
	}
	p := &demoProcess{
		process: &process{name: "demo " + key, cmd: cmd, logPath: r.log.path, done: make(chan struct{})},
		uid:     spec.uid,
		addr:    addr,
	}
	go func() {
		p.err = cmd.Wait()
		out.flush()
		close(p.done)
		r.queue.Add(key) // a process that ends on its own is noticed by sync
	}()
	return p, nil
}

// waitAnswering polls the process's /metrics (which the app does not count)
// until it answers 200, for up to 10 seconds.
func (r *podRunner) waitAnswering(p *demoProcess) error {
	url := "http://" + p.addr.String() + "/metrics"
	deadline := time.Now().Add(10 * time.Second)
	for {
		if done, err := p.exited(); done {
			return fmt.Errorf("the demo app exited: %v (its output is in %s)", err, podsLog)
		}
		resp, err := r.probe.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the demo app did not answer on %s within 10s", p.addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends a pod's process (SIGTERM, then kill after 5s) and forgets it.
func (r *podRunner) stop(key string, p *demoProcess, why string) {
	p.stop(5 * time.Second)
	r.mu.Lock()
	owner := r.addrs[p.addr.Addr()] == key
	if owner {
		delete(r.addrs, p.addr.Addr())
	}
	r.mu.Unlock()
	if owner {
		if err := r.net.RemovePod(context.Background(), p.addr.Addr()); err != nil {
			r.log.printf("runner: %s: %v", key, err)
		}
	}
	r.forget(key)
	r.log.printf("runner: %s: stopped pid %d: %s", key, p.cmd.Process.Pid, why)
}

func (r *podRunner) forget(key string) {
	r.mu.Lock()
	delete(r.procs, key)
	r.mu.Unlock()
}

func (r *podRunner) markFailed(uid types.UID) {
	r.mu.Lock()
	r.failed[uid] = true
	r.mu.Unlock()
}

func (r *podRunner) hasFailed(uid types.UID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed[uid]
}

func (r *podRunner) pids() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	pids := map[string]int{}
	for key, p := range r.procs {
		pids[key] = p.cmd.Process.Pid
	}
	return pids
}

// shutdown stops the workers and the informer, then every process, all at
// once (each demo process gets SIGTERM and up to 5s, each manager 10s).
func (r *podRunner) shutdown() {
	r.cancel()
	r.queue.ShutDown()
	r.workers.Wait()
	r.factory.Shutdown()
	r.mu.Lock()
	procs := r.procs
	r.procs = map[string]*demoProcess{}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for key, p := range procs {
		wg.Go(func() { r.stop(key, p, "the lab stops") })
	}
	wg.Go(r.stopManagers)
	wg.Wait()
	r.log.close()
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// lineLog is a log file that many writers share a line at a time.
type lineLog struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func openLineLog(path string) (*lineLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lab: open %s: %w", path, err)
	}
	return &lineLog{path: path, f: f}, nil
}

// printf writes one timestamped line.
func (l *lineLog) printf(format string, args ...any) {
	l.line(time.Now().Format("15:04:05.000 ") + fmt.Sprintf(format, args...))
}

func (l *lineLog) line(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		fmt.Fprintln(l.f, s)
	}
}

func (l *lineLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// prefixWriter passes whole lines to a lineLog with a prefix, so the output
// of many processes stays readable in one file.
type prefixWriter struct {
	log    *lineLog
	prefix string
	buf    []byte
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.log.line(w.prefix + string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}

// flush writes what is left of an unfinished last line.
func (w *prefixWriter) flush() {
	if len(w.buf) > 0 {
		w.log.line(w.prefix + string(w.buf))
		w.buf = nil
	}
}
