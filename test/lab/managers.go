package lab

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
)

// Manager pods: with Lab.RunManagerPods, the pod runner also stands in for
// the kubelet of every Running pod whose container runs ManagerImage (the
// Deployment of manifests/). It runs the manager binary of this checkout for
// that container, in the node network on the pod's IP, as the kubelet would
// run the container:
//
//   - the container's args and env, with what a container's own network
//     namespace and volumes would give it but the lab's shared namespace
//     cannot: the pod's IP for the addresses it binds, a directory of the
//     pod's own for each emptyDir it mounts, a kubeconfig with a token of
//     the pod's ServiceAccount bound to the pod (TokenRequest, as a
//     projected token is), and the pod's name as its hostname (its own UTS
//     namespace), so that its leader-election identity names the pod;
//   - readiness from its readinessProbe: NotReady from the start, Ready
//     once the probe answers, NotReady again on failure or at once when the
//     process exits; the pod's Ready and ContainersReady conditions and
//     container status follow, so its endpoint leaves and rejoins Services;
//   - restarts of a process that exits on its own, with the kubelet's
//     back-off (restartDelay) and the container's restartCount;
//   - the kubelet's graceful stop when the pod is deleted: its preStop
//     sleep, SIGTERM, then SIGKILL once terminationGracePeriodSeconds have
//     passed.

// ManagerImage is fledge's image, without its tag: the runner runs the
// manager for a container of this image, whatever its tag or digest.
const ManagerImage = "ghcr.io/fledge-dev/fledge"

// containersFinalizer keeps a deleted manager pod in the API, Terminating,
// until its process has stopped, as a kubelet does by removing a pod only
// once its containers have stopped. kwok's pod-delete stage removes a
// deleted pod at once (grace period 0): without the finalizer the pod would
// be gone while its manager still runs its preStop sleep and its shutdown,
// and the apiserver rejects a token bound to a pod that is gone, so the
// leader could neither renew nor release its Lease. The runner adds it
// when it first runs the pod's container and removes it once the process
// has stopped.
const containersFinalizer = "lab.fledge.dev/containers-stopped"

// The manager's own defaults for the addresses it binds (cmd/fledge),
// bound to the pod's IP when a container's args leave them out: in the
// shared node network, ":8080" would be every pod's.
const (
	defaultMetricsAddr = ":8080"
	defaultProbeAddr   = ":8081"
)

// probePeriod is how often the runner probes a manager's readiness: every
// second, not the manifest's periodSeconds (5). The lab's tests time
// handovers and count admissions in seconds; a 5s period would put up to 5s
// of the probe's own schedule into every such figure (a new replica joins
// the Service that much later). The thresholds are the probe's.
const probePeriod = time.Second

// The kubelet's container restart back-off (pkg/kubelet: initial 10s,
// doubling, at most 300s, forgotten after twice the maximum without an
// exit). The kubelet keeps no back-off entry for a container before its
// first exit, so it starts it again at its next sync of the pod, which the
// exit triggers through the PLEG's relist, every second: firstRestartDelay.
const (
	firstRestartDelay   = time.Second
	initialCrashBackOff = 10 * time.Second
	maxCrashBackOff     = 300 * time.Second
)

// minimumGracePeriod is what the kubelet leaves a container between SIGTERM
// and SIGKILL when its preStop hook took the whole grace period.
const minimumGracePeriod = 2 * time.Second

// ManagerPod is a manager pod the runner runs, as tests see it.
type ManagerPod struct {
	Namespace, Name, Node string
	IP                    netip.Addr
	// PID is the running manager's process ID; 0 between runs.
	PID int
	// Ready is the readiness the runner last wrote to the pod.
	Ready       bool
	Restarts    int32
	Terminating bool
	// MetricsURL is the manager's /metrics, ProbeURL serves /readyz and
	// /healthz, both on the pod's IP (reachable from the host).
	MetricsURL, ProbeURL string
	// Log is the manager's output, every run of it.
	Log string
}

// ManagerEvent is one thing the runner did to or saw of a manager pod's
// process, for tests that time what follows.
type ManagerEvent struct {
	Pod string // namespace/name
	PID int
	// What is Started, Ready, NotReady, Exited (on its own), PreStop,
	// SIGTERM, SIGKILL or Stopped (after SIGTERM or SIGKILL).
	What   string
	At     time.Time
	Detail string
}

// RunManagerPods makes the pod runner run the manager at bin for every
// Running pod of ManagerImage (see above); with bin "", it builds this
// checkout's manager into the lab's directory first. A lab started without
// the demo app gets a runner that runs manager pods only.
func (l *Lab) RunManagerPods(ctx context.Context, bin string) error {
	var err error
	if bin == "" {
		if bin, err = BuildFledge(ctx, l.Dir); err != nil {
			return err
		}
	}
	cfg, err := l.managerConfig(bin)
	if err != nil {
		return err
	}
	if l.pods == nil {
		if err := l.startRunner(ctx, ""); err != nil {
			return err
		}
	}
	return l.pods.runManagers(cfg)
}

// WithManagerPods is a setup for Run: the pod runner runs this checkout's
// manager for manager pods (Lab.RunManagerPods).
func WithManagerPods(ctx context.Context, l *Lab) error { return l.RunManagerPods(ctx, "") }

// ManagerPods returns the manager pods the runner runs now, by
// "namespace/name".
func (l *Lab) ManagerPods() map[string]ManagerPod {
	out := map[string]ManagerPod{}
	if l.pods == nil {
		return out
	}
	r := l.pods
	r.mu.Lock()
	mgrs := make([]*managerPod, 0, len(r.mgrs))
	for _, m := range r.mgrs {
		mgrs = append(mgrs, m)
	}
	r.mu.Unlock()
	for _, m := range mgrs {
		out[m.key] = m.view()
	}
	return out
}

// ManagerEvents returns what the runner did to and saw of manager
// processes so far, oldest first.
func (l *Lab) ManagerEvents() []ManagerEvent {
	if l.pods == nil {
		return nil
	}
	l.pods.mu.Lock()
	defer l.pods.mu.Unlock()
	return slices.Clone(l.pods.history)
}

// managerConfig is what the runner needs to run managers.
type managerConfig struct {
	bin string
	// api is the apiserver's forwarder on the veth pair, reachable from
	// the node network; tlsName is the name its certificate carries.
	api, tlsName string
	caData       []byte
	// unshare, sh and hostname are the programs that give a manager its
	// own UTS namespace and the pod's hostname.
	unshare, sh, hostname string
}

func (l *Lab) managerConfig(bin string) (*managerConfig, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("lab: manager: %w", err)
	}
	cfg := &managerConfig{bin: bin, tlsName: "127.0.0.1", caData: l.Config.CAData}
	for name, path := range map[string]*string{"unshare": &cfg.unshare, "sh": &cfg.sh, "hostname": &cfg.hostname} {
		p, err := exec.LookPath(name)
		if err != nil {
			return nil, fmt.Errorf("lab: manager pods need %s (util-linux, hostname): %w", name, err)
		}
		*path = p
	}
	forwarder, err := l.net.ForwardTo(strings.TrimPrefix(l.Config.Host, "https://"))
	if err != nil {
		return nil, err
	}
	cfg.api = "https://" + forwarder
	return cfg, nil
}

// managerSpec is what a manager pod asks of its stand-in process.
type managerSpec struct {
	uid            types.UID
	container      string
	image          string
	hostname       string
	serviceAccount string
	ip             netip.Addr
	args           []string
	// env is NAME=value: the container's env with the downward API's
	// fieldRefs resolved, then HOSTNAME.
	env     []string
	skipped []string // env the lab cannot resolve (other valueFrom, envFrom)
	// mounts maps the mount path of each emptyDir the container mounts to
	// its volume's name.
	mounts    map[string]string
	readiness *probeSpec
	preStop   time.Duration
	grace     time.Duration
}

// probeSpec is an httpGet probe, its port resolved.
type probeSpec struct {
	scheme, path          string
	port                  int
	initialDelay, timeout time.Duration
	success, failure      int
}

// wantsManager decides whether pod should have a manager process, and with
// what: a pod Running on one of the lab's nodes, not being deleted, not
// doomed by kwok's chaos stage, with a container of ManagerImage.
func wantsManager(pod *corev1.Pod, nodes map[string]bool) (managerSpec, bool) {
	if pod == nil || pod.DeletionTimestamp != nil || pod.Status.Phase != corev1.PodRunning ||
		!nodes[pod.Spec.NodeName] || pod.Labels[failingLabel] == "true" {
		return managerSpec{}, false
	}
	i := slices.IndexFunc(pod.Spec.Containers, func(c corev1.Container) bool { return isManagerImage(c.Image) })
	if i < 0 {
		return managerSpec{}, false
	}
	c := pod.Spec.Containers[i]
	spec := managerSpec{
		uid:            pod.UID,
		container:      c.Name,
		image:          c.Image,
		hostname:       podHostname(pod),
		serviceAccount: cmp.Or(pod.Spec.ServiceAccountName, "default"),
		args:           slices.Clone(c.Args),
		mounts:         map[string]string{},
		grace:          time.Duration(ptr.Deref(pod.Spec.TerminationGracePeriodSeconds, corev1.DefaultTerminationGracePeriodSeconds)) * time.Second,
	}
	spec.ip, _ = netip.ParseAddr(pod.Status.PodIP)
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			spec.env = append(spec.env, e.Name+"="+e.Value)
		case e.ValueFrom.FieldRef != nil:
			if v, ok := fieldValue(pod, e.ValueFrom.FieldRef.FieldPath); ok {
				spec.env = append(spec.env, e.Name+"="+v)
				continue
			}
			spec.skipped = append(spec.skipped, e.Name)
		default:
			spec.skipped = append(spec.skipped, e.Name)
		}
	}
	for _, from := range c.EnvFrom {
		spec.skipped = append(spec.skipped, "envFrom "+envFromName(from))
	}
	spec.env = append(spec.env, "HOSTNAME="+spec.hostname)
	emptyDirs := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir != nil {
			emptyDirs[v.Name] = true
		}
	}
	for _, m := range c.VolumeMounts {
		if emptyDirs[m.Name] {
			spec.mounts[m.MountPath] = m.Name
		}
	}
	if p := c.ReadinessProbe; p != nil && p.HTTPGet != nil {
		spec.readiness = &probeSpec{
			scheme:       strings.ToLower(cmp.Or(string(p.HTTPGet.Scheme), "http")),
			path:         cmp.Or(p.HTTPGet.Path, "/"),
			port:         containerPort(c, p.HTTPGet.Port.String()),
			initialDelay: time.Duration(p.InitialDelaySeconds) * time.Second,
			timeout:      time.Duration(max(p.TimeoutSeconds, 1)) * time.Second,
			success:      int(max(p.SuccessThreshold, 1)),
			failure:      int(cmp.Or(p.FailureThreshold, 3)),
		}
	}
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		spec.preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	return spec, true
}

// isManagerImage reports whether image is ManagerImage at any tag or digest.
func isManagerImage(image string) bool {
	rest, ok := strings.CutPrefix(image, ManagerImage)
	return ok && (rest == "" || rest[0] == ':' || rest[0] == '@')
}

// podHostname is the hostname the kubelet gives a pod's containers: its
// spec.hostname, else its name, at most 63 characters.
func podHostname(pod *corev1.Pod) string {
	h := cmp.Or(pod.Spec.Hostname, pod.Name)
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}

// fieldValue resolves a downward API fieldRef as the kubelet does.
func fieldValue(pod *corev1.Pod, path string) (string, bool) {
	switch path {
	case "metadata.name":
		return pod.Name, true
	case "metadata.namespace":
		return pod.Namespace, true
	case "metadata.uid":
		return string(pod.UID), true
	case "spec.nodeName":
		return pod.Spec.NodeName, true
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, true
	case "status.podIP":
		return pod.Status.PodIP, true
	case "status.hostIP":
		return pod.Status.HostIP, true
	}
	for prefix, m := range map[string]map[string]string{"metadata.labels": pod.Labels, "metadata.annotations": pod.Annotations} {
		if key, ok := strings.CutPrefix(path, prefix+"['"); ok && strings.HasSuffix(key, "']") {
			return m[strings.TrimSuffix(key, "']")], true
		}
	}
	return "", false
}

// containerPort resolves a probe's port: a number, or the name of one of
// the container's ports (0 when none has it).
func containerPort(c corev1.Container, port string) int {
	if n, err := strconv.Atoi(port); err == nil {
		return n
	}
	for _, p := range c.Ports {
		if p.Name == port {
			return int(p.ContainerPort)
		}
	}
	return 0
}

// managerArgs are the container's args as the manager must get them in the
// lab's shared node network: the addresses it binds on the pod's IP (the
// metrics and probe addresses keep the args' ports, or take the manager's
// defaults), paths in an emptyDir moved to the pod's own directory for that
// volume (volumeDir(name)), and --kubeconfig.
func managerArgs(spec managerSpec, volumeDir func(string) string, kubeconfig string) []string {
	ip := spec.ip.String()
	bind := func(addr string) string {
		host, port, err := net.SplitHostPort(addr)
		if err != nil || port == "0" || (host != "" && host != "0.0.0.0" && host != "::") {
			return addr // disabled ("0"), or already a host of its own
		}
		return net.JoinHostPort(ip, port)
	}
	out := []string{}
	seen := map[string]bool{}
	for _, arg := range spec.args {
		name, value, hasValue := strings.Cut(arg, "=")
		switch name {
		case "--webhook-host", "--kubeconfig":
			continue // set below
		case "--metrics-bind-address", "--health-probe-bind-address":
			value = bind(value)
			seen[name] = true
		}
		if hasValue {
			for mount, volume := range spec.mounts {
				if value == mount || strings.HasPrefix(value, strings.TrimSuffix(mount, "/")+"/") {
					value = volumeDir(volume) + strings.TrimPrefix(value, strings.TrimSuffix(mount, "/"))
				}
			}
			arg = name + "=" + value
		}
		out = append(out, arg)
	}
	if !seen["--metrics-bind-address"] {
		out = append(out, "--metrics-bind-address="+bind(defaultMetricsAddr))
	}
	if !seen["--health-probe-bind-address"] {
		out = append(out, "--health-probe-bind-address="+bind(defaultProbeAddr))
	}
	return append(out, "--webhook-host="+ip, "--kubeconfig="+kubeconfig)
}

// argValue is the value of flag name in args ("" when absent).
func argValue(args []string, name string) string {
	for _, arg := range args {
		if v, ok := strings.CutPrefix(arg, name+"="); ok {
			return v
		}
	}
	return ""
}

// crashBackOff is the kubelet's restart back-off of one container
// (flowcontrol.Backoff as the kubelet uses it).
type crashBackOff struct {
	delay time.Duration // the wait after the next exit
	last  time.Time     // the exit that last set delay
}

// next returns how long to wait before starting again a container that
// exited at t: firstRestartDelay for its first exit (or the first after
// twice maxCrashBackOff without one), then 10s, 20s, 40s … up to 300s.
func (b *crashBackOff) next(t time.Time) time.Duration {
	if b.last.IsZero() || t.Sub(b.last) > 2*maxCrashBackOff {
		b.delay, b.last = initialCrashBackOff, t
		return firstRestartDelay
	}
	wait := b.delay
	b.delay, b.last = min(2*b.delay, maxCrashBackOff), t
	return wait
}

// managerPod is a manager pod the runner runs: one container, run again
// after it exits, until the pod goes.
type managerPod struct {
	key        string
	spec       managerSpec
	node       string
	dir        string // the pod's own: its volumes, kubeconfig and log
	logPath    string
	kubeconfig string // once written
	args       []string

	mu          sync.Mutex // orders the pod's status writes and guards what follows
	proc        *process   // the running container; nil between runs
	stopProbe   context.CancelFunc
	ready       bool
	started     time.Time // of the current or last run
	restarts    int32
	lastExit    *corev1.ContainerStateTerminated
	backOff     crashBackOff
	restartAt   time.Time
	terminating bool
	finalized   bool // the finalizer is on the pod
}

func (m *managerPod) view() ManagerPod {
	m.mu.Lock()
	defer m.mu.Unlock()
	ns, name, _ := strings.Cut(m.key, "/")
	v := ManagerPod{
		Namespace: ns, Name: name, Node: m.node, IP: m.spec.ip,
		Ready: m.ready, Restarts: m.restarts, Terminating: m.terminating, Log: m.logPath,
	}
	if m.proc != nil {
		if done, _ := m.proc.exited(); !done {
			v.PID = m.proc.cmd.Process.Pid
		}
	}
	if addr := argValue(m.args, "--metrics-bind-address"); addr != "" && addr != "0" {
		v.MetricsURL = "http://" + addr + "/metrics"
	}
	if addr := argValue(m.args, "--health-probe-bind-address"); addr != "" && addr != "0" {
		v.ProbeURL = "http://" + addr
	}
	return v
}

// runManagers turns manager pods on in a running runner and looks at every
// pod again.
func (r *podRunner) runManagers(cfg *managerConfig) error {
	r.mu.Lock()
	r.mgrCfg = cfg
	r.mu.Unlock()
	pods, err := r.lister.List(labels.Everything())
	if err != nil {
		return err
	}
	for _, p := range pods {
		r.queue.Add(p.Namespace + "/" + p.Name)
	}
	r.log.printf("runner: runs %s for pods of image %s[:<tag>]", cfg.bin, ManagerImage)
	return nil
}

// managesPod reports whether key is a manager pod's: one the runner runs,
// or a pod of ManagerImage now that manager pods are on.
func (r *podRunner) managesPod(key string, pod *corev1.Pod) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mgrs[key] != nil {
		return true
	}
	return r.mgrCfg != nil && pod != nil && slices.ContainsFunc(pod.Spec.Containers, func(c corev1.Container) bool { return isManagerImage(c.Image) })
}

// syncManager brings a manager pod's process in line with its pod.
func (r *podRunner) syncManager(key string, pod *corev1.Pod) error {
	r.mu.Lock()
	m, cfg := r.mgrs[key], r.mgrCfg
	r.mu.Unlock()
	if m != nil {
		switch {
		case pod == nil:
			r.terminate(m, "the pod is gone")
			return nil
		case pod.UID != m.spec.uid:
			r.terminate(m, "the pod was replaced")
			return nil
		case pod.DeletionTimestamp != nil:
			r.terminate(m, "the pod is being deleted")
			return nil
		case pod.Status.Phase != corev1.PodRunning:
			r.terminate(m, "the pod is "+string(pod.Status.Phase))
			return nil
		}
	}
	spec, want := wantsManager(pod, r.nodes)
	if !want || r.ctx.Err() != nil {
		return nil
	}
	if m == nil {
		m = &managerPod{key: key, spec: spec, node: pod.Spec.NodeName, dir: filepath.Join(r.dir, "pods", strings.ReplaceAll(key, "/", "_"))}
		m.logPath = filepath.Join(m.dir, "manager.log")
		r.mu.Lock()
		r.mgrs[key] = m
		r.mu.Unlock()
	}
	return r.runManager(cfg, m, pod)
}

// runManager starts the pod's container when it is not running and its
// back-off is over, and notices when it exited on its own.
func (r *podRunner) runManager(cfg *managerConfig, m *managerPod, pod *corev1.Pod) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.terminating {
		return nil
	}
	if m.proc != nil {
		done, err := m.proc.exited()
		if !done {
			return nil
		}
		r.exited(m, pod, err)
		return nil
	}
	if wait := time.Until(m.restartAt); wait > 0 {
		r.queue.AddAfter(m.key, wait)
		return nil
	}
	return r.startManager(cfg, m, pod)
}

// startManager runs the pod's container: once per pod, it takes the pod
// out of Ready (kwok made it Ready when it made it Running), holds the pod
// with the finalizer and prepares its directory and kubeconfig; then, at
// every run, it starts the manager and its readiness probe.
func (r *podRunner) startManager(cfg *managerConfig, m *managerPod, pod *corev1.Pod) error {
	ctx := r.ctx
	if m.kubeconfig == "" {
		// First, before anything slow: the pod must not stay in Services
		// as kwok left it, Ready with nothing listening.
		if err := r.writeStatus(m, pod); err != nil {
			return err
		}
		if !slices.Contains(pod.Finalizers, containersFinalizer) {
			patch := fmt.Sprintf(`{"metadata":{"finalizers":[%q]}}`, containersFinalizer)
			if _, err := r.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				return fmt.Errorf("hold the pod until its container stops: %w", err)
			}
		}
		m.finalized = true
		kubeconfig, err := r.writeManagerKubeconfig(ctx, cfg, m, pod)
		if err != nil {
			return err
		}
		for _, volume := range m.spec.mounts {
			if err := os.MkdirAll(m.volumeDir(volume), 0o700); err != nil {
				return err
			}
		}
		m.kubeconfig = kubeconfig
		m.args = managerArgs(m.spec, m.volumeDir, kubeconfig)
		for _, s := range m.spec.skipped {
			r.log.printf("runner: %s: env %s is neither a literal value nor a field of the pod; the lab leaves it out", m.key, s)
		}
	}
	if !m.spec.ip.IsValid() {
		return errors.New("the pod has no IP yet")
	}
	r.takeAddress(m.key, m.spec.ip)
	if err := r.net.AddPod(ctx, m.spec.ip); err != nil {
		return err
	}
	run := m.restarts + 1
	if !m.started.IsZero() {
		run++ // a restart
	}
	p, err := r.launchManager(cfg, m, run)
	if err != nil {
		m.restartAt = time.Now().Add(m.backOff.next(time.Now()))
		r.queue.AddAfter(m.key, time.Until(m.restartAt))
		r.log.printf("runner: %s: %v; trying again at %s", m.key, err, m.restartAt.Format("15:04:05"))
		return nil
	}
	m.proc, m.started, m.ready, m.restarts = p, time.Now(), false, run-1
	if err := r.writeStatus(m, pod); err != nil {
		r.log.printf("runner: %s: %v", m.key, err)
	}
	probeCtx, stop := context.WithCancel(ctx)
	m.stopProbe = stop
	r.probes.Go(func() { r.probeReadiness(probeCtx, m, p) })
	r.record(m.key, p, "Started", strings.Join(m.args, " "))
	r.log.printf("runner: %s runs the manager as pid %d on %s (restarts %d)", m.key, p.cmd.Process.Pid, m.spec.ip, m.restarts)
	return nil
}

func (m *managerPod) volumeDir(volume string) string {
	return filepath.Join(m.dir, "volumes", volume)
}

// writeManagerKubeconfig writes the pod's kubeconfig: the apiserver
// through the node network's forwarder, and a token of the pod's
// ServiceAccount bound to the pod, as the kubelet projects one.
func (r *podRunner) writeManagerKubeconfig(ctx context.Context, cfg *managerConfig, m *managerPod, pod *corev1.Pod) (string, error) {
	tr, err := r.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, m.spec.serviceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: ptr.To[int64](24 * 3600),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token of service account %s/%s for the pod: %w", pod.Namespace, m.spec.serviceAccount, err)
	}
	if err := os.MkdirAll(m.dir, 0o700); err != nil {
		return "", err
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["lab"] = &clientcmdapi.Cluster{Server: cfg.api, CertificateAuthorityData: cfg.caData, TLSServerName: cfg.tlsName}
	kc.AuthInfos["pod"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kc.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "pod", Namespace: pod.Namespace}
	kc.CurrentContext = "lab"
	path := filepath.Join(m.dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return "", fmt.Errorf("write the pod's kubeconfig: %w", err)
	}
	return path, nil
}

// launchManager starts the manager in the node network, in a UTS namespace
// of its own named after the pod. ip, unshare and sh each exec the next
// program in place, so the process is the manager's.
func (r *podRunner) launchManager(cfg *managerConfig, m *managerPod, run int32) (*process, error) {
	logFile, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logFile, "----- %s: run %d of container %s\n", time.Now().Format("15:04:05.000"), run, m.spec.container)
	args := append([]string{"--uts", cfg.sh, "-c", cfg.hostname + ` "$0" && exec "$@"`, m.spec.hostname, cfg.bin}, m.args...)
	cmd := r.net.Command(cfg.unshare, args...)
	cmd.Dir = m.dir
	cmd.Env = m.spec.env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start the manager: %w", err)
	}
	p := &process{name: "manager " + m.key, cmd: cmd, logPath: m.logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
		r.queue.Add(m.key) // an exit on its own is noticed by sync
	}()
	return p, nil
}

// exited handles a container that ended on its own: NotReady at once, its
// state terminated, and a restart after the back-off. m.mu is held.
func (r *podRunner) exited(m *managerPod, pod *corev1.Pod, exitErr error) {
	p := m.proc
	now := time.Now()
	m.stopProbe()
	m.proc, m.ready = nil, false
	code := exitCode(p)
	m.lastExit = &corev1.ContainerStateTerminated{
		ExitCode: code, Reason: "Error",
		StartedAt: metav1.NewTime(m.started), FinishedAt: metav1.NewTime(now),
		ContainerID: containerID(p),
	}
	if code == 0 {
		m.lastExit.Reason = "Completed"
	}
	wait := m.backOff.next(now)
	m.restartAt = now.Add(wait)
	if err := r.writeStatus(m, pod); err != nil {
		r.log.printf("runner: %s: %v", m.key, err)
	}
	r.record(m.key, p, "Exited", fmt.Sprintf("exit code %d: %v", code, exitErr))
	r.log.printf("runner: %s: the manager (pid %d) exited on its own (%v); restarting it in %s", m.key, p.cmd.Process.Pid, exitErr, wait)
	r.queue.AddAfter(m.key, wait)
}

// exitCode is the process's exit code as a container runtime reports it:
// 128+n for a process killed by signal n.
func exitCode(p *process) int32 {
	if p.cmd.ProcessState == nil {
		return -1
	}
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int32(ws.Signal())
	}
	return int32(p.cmd.ProcessState.ExitCode())
}

// insecureTLS is how the kubelet probes over HTTPS: without checking the
// certificate.
func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} } //nolint:gosec // as the kubelet

func containerID(p *process) string { return "lab://" + strconv.Itoa(p.cmd.Process.Pid) }

// probeReadiness runs the container's readiness probe every probePeriod
// until its process ends, and writes Ready when the result crosses the
// probe's thresholds. Without a readinessProbe the container is Ready as
// soon as it runs, as with the kubelet.
func (r *podRunner) probeReadiness(ctx context.Context, m *managerPod, p *process) {
	spec := m.spec.readiness
	if spec == nil {
		r.setReady(m, p, true)
		return
	}
	if !sleepUnless(ctx, p, spec.initialDelay) {
		return
	}
	url := fmt.Sprintf("%s://%s%s", spec.scheme, net.JoinHostPort(m.spec.ip.String(), strconv.Itoa(spec.port)), spec.path)
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, TLSClientConfig: insecureTLS()}}
	var ok, fail int
	ready := false
	for {
		if r.probeOnce(ctx, client, url, spec.timeout) {
			ok, fail = ok+1, 0
		} else {
			ok, fail = 0, fail+1
		}
		switch {
		case !ready && ok >= spec.success:
			ready = true
			r.setReady(m, p, true)
		case ready && fail >= spec.failure:
			ready = false
			r.setReady(m, p, false)
		}
		if !sleepUnless(ctx, p, probePeriod) {
			return
		}
	}
}

// probeOnce is one httpGet probe: success is an answer from 200 to 399, as
// for the kubelet.
func (r *podRunner) probeOnce(ctx context.Context, client *http.Client, url string, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}

// sleepUnless sleeps for d; false when ctx ended or p exited first.
func sleepUnless(ctx context.Context, p *process, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-p.done:
		return false
	}
}

// setReady writes the readiness the probe found, unless p is no longer the
// pod's running container (an exit writes NotReady itself).
func (r *podRunner) setReady(m *managerPod, p *process, ready bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc != p {
		return
	}
	if done, _ := p.exited(); done {
		return
	}
	m.ready = ready
	pod, _ := r.lister.Pods(m.namespace()).Get(m.name())
	if err := r.writeStatus(m, pod); err != nil {
		r.log.printf("runner: %s: %v", m.key, err)
	}
	what := map[bool]string{true: "Ready", false: "NotReady"}[ready]
	r.record(m.key, p, what, "")
	r.log.printf("runner: %s (pid %d) is %s", m.key, p.cmd.Process.Pid, what)
}

func (m *managerPod) namespace() string { ns, _, _ := strings.Cut(m.key, "/"); return ns }
func (m *managerPod) name() string      { _, n, _ := strings.Cut(m.key, "/"); return n }

// writeStatus writes the pod's Ready and ContainersReady conditions and its
// container statuses from m, as the kubelet's status manager does. m.mu is
// held. A pod that is gone has no status to write.
func (r *podRunner) writeStatus(m *managerPod, pod *corev1.Pod) error {
	if pod == nil || pod.UID != m.spec.uid {
		return nil
	}
	now := metav1.Now()
	cs := corev1.ContainerStatus{Name: m.spec.container, Image: m.spec.image, Ready: m.ready, RestartCount: m.restarts}
	switch {
	case m.proc != nil:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(m.started)}
		cs.ContainerID = containerID(m.proc)
		cs.Started = ptr.To(true)
		if m.lastExit != nil {
			cs.LastTerminationState.Terminated = m.lastExit
		}
	case m.lastExit != nil && time.Until(m.restartAt) > firstRestartDelay:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
			Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", time.Until(m.restartAt).Round(time.Second), m.spec.container, m.name())}
		cs.LastTerminationState.Terminated = m.lastExit
		cs.Started = ptr.To(false)
	case m.lastExit != nil:
		cs.State.Terminated = m.lastExit
		cs.ContainerID = m.lastExit.ContainerID
		cs.Started = ptr.To(false)
	default:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
		cs.Started = ptr.To(false)
	}
	statuses := []corev1.ContainerStatus{}
	for _, c := range pod.Spec.Containers {
		if c.Name == m.spec.container {
			statuses = append(statuses, cs)
			continue
		}
		for _, s := range pod.Status.ContainerStatuses {
			if s.Name == c.Name {
				statuses = append(statuses, s)
			}
		}
	}
	status := corev1.ConditionFalse
	if m.ready {
		status = corev1.ConditionTrue
	}
	var conds []corev1.PodCondition
	for _, t := range []corev1.PodConditionType{corev1.PodReady, corev1.ContainersReady} {
		c := corev1.PodCondition{Type: t, Status: status, LastTransitionTime: now}
		if i := slices.IndexFunc(pod.Status.Conditions, func(c corev1.PodCondition) bool { return c.Type == t }); i >= 0 && pod.Status.Conditions[i].Status == status {
			c.LastTransitionTime = pod.Status.Conditions[i].LastTransitionTime
		}
		if !m.ready {
			c.Reason, c.Message = "ContainersNotReady", fmt.Sprintf("containers with unready status: [%s]", m.spec.container)
		}
		conds = append(conds, c)
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": conds, "containerStatuses": statuses}})
	if err != nil {
		return err
	}
	_, err = r.client.CoreV1().Pods(pod.Namespace).Patch(r.ctx, pod.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("write the pod's status: %w", err)
	}
	return nil
}

// terminate stops a manager pod's container as the kubelet stops a
// deleted pod's, in the background: its preStop sleep with the process
// still running, SIGTERM, SIGKILL once the grace period is over (counted
// from the start of the preStop, as the kubelet does, with at least
// minimumGracePeriod after SIGTERM). Then the pod's address comes off the
// node network and the finalizer off the pod, which lets kwok's deletion
// through.
//
// The grace period is the pod's terminationGracePeriodSeconds: kwok's own
// deletion of the pod, at grace period 0, stands for the kubelet's final
// one and must not cut the container's.
func (r *podRunner) terminate(m *managerPod, why string) {
	m.mu.Lock()
	if m.terminating {
		m.mu.Unlock()
		return
	}
	m.terminating = true
	p := m.proc
	m.mu.Unlock()
	r.log.printf("runner: %s: stopping its container: %s", m.key, why)
	r.terms.Go(func() {
		if p != nil {
			r.stopContainer(m, p)
		}
		m.mu.Lock()
		if m.stopProbe != nil {
			m.stopProbe()
		}
		m.proc, m.ready = nil, false
		m.mu.Unlock()
		r.releaseAddress(m.key, m.spec.ip)
		if m.finalized {
			r.removeFinalizer(m)
		}
		r.mu.Lock()
		if r.mgrs[m.key] == m {
			delete(r.mgrs, m.key)
		}
		r.mu.Unlock()
		r.queue.Add(m.key) // a new pod of the same name, if any
	})
}

// stopContainer runs the kubelet's stop sequence on p (see terminate); at
// the lab's stop, it skips the preStop sleep.
func (r *podRunner) stopContainer(m *managerPod, p *process) {
	start := time.Now()
	if done, _ := p.exited(); done {
		return // exited on its own just before: nothing to stop
	}
	if m.spec.preStop > 0 {
		r.record(m.key, p, "PreStop", "sleep "+m.spec.preStop.String())
		t := time.NewTimer(min(m.spec.preStop, m.spec.grace))
		select {
		case <-t.C:
		case <-p.done:
		case <-r.ctx.Done():
		}
		t.Stop()
	}
	if done, _ := p.exited(); done {
		r.record(m.key, p, "Stopped", fmt.Sprintf("exited during preStop, code %d", exitCode(p)))
		return
	}
	grace := max(m.spec.grace-time.Since(start), minimumGracePeriod)
	r.record(m.key, p, "SIGTERM", "grace "+grace.Round(time.Millisecond).String())
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		r.record(m.key, p, "SIGKILL", "")
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	r.record(m.key, p, "Stopped", fmt.Sprintf("exit code %d", exitCode(p)))
	r.log.printf("runner: %s: the manager (pid %d) stopped %.1fs after its pod went (exit code %d)", m.key, p.cmd.Process.Pid, time.Since(start).Seconds(), exitCode(p))
}

// releaseAddress takes the pod's address off the node network unless
// another pod has it now.
func (r *podRunner) releaseAddress(key string, ip netip.Addr) {
	r.mu.Lock()
	owner := r.addrs[ip] == key
	if owner {
		delete(r.addrs, ip)
	}
	r.mu.Unlock()
	if owner {
		if err := r.net.RemovePod(context.Background(), ip); err != nil {
			r.log.printf("runner: %s: %v", key, err)
		}
	}
}

func (r *podRunner) removeFinalizer(m *managerPod) {
	pod, err := r.client.CoreV1().Pods(m.namespace()).Get(context.Background(), m.name(), metav1.GetOptions{})
	if err != nil || pod.UID != m.spec.uid || !slices.Contains(pod.Finalizers, containersFinalizer) {
		return
	}
	patch := fmt.Sprintf(`{"metadata":{"$deleteFromPrimitiveList/finalizers":[%q]}}`, containersFinalizer)
	if _, err := r.client.CoreV1().Pods(pod.Namespace).Patch(context.Background(), pod.Name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
		r.log.printf("runner: %s: remove finalizer %s: %v", m.key, containersFinalizer, err)
	}
}

// record adds an event to the runner's history of manager processes.
func (r *podRunner) record(key string, p *process, what, detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.history = append(r.history, ManagerEvent{Pod: key, PID: p.cmd.Process.Pid, What: what, At: time.Now(), Detail: detail})
}

// stopManagers ends every manager at the lab's stop: terminations under
// way finish (without their preStop sleep, the runner's context being
// done), the others get SIGTERM and up to 10s, all at once.
func (r *podRunner) stopManagers() {
	r.terms.Wait()
	r.mu.Lock()
	mgrs := make([]*managerPod, 0, len(r.mgrs))
	for _, m := range r.mgrs {
		mgrs = append(mgrs, m)
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, m := range mgrs {
		m.mu.Lock()
		p := m.proc
		if m.stopProbe != nil {
			m.stopProbe()
		}
		m.mu.Unlock()
		if p != nil {
			wg.Go(func() {
				p.stop(10 * time.Second)
				r.releaseAddress(m.key, m.spec.ip)
			})
		}
	}
	wg.Wait()
	r.probes.Wait()
}
