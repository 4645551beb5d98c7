package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Options says what lab to start. The zero value is a lab with two nodes,
// programs from the checkout's bin/, in a directory under os.TempDir().
type Options struct {
	// Nodes is the number of fake nodes kwok runs (default 2).
	Nodes int
	// BinDir holds the lab's programs (default: $FLEDGE_BIN_DIR, else the
	// bin/ of the fledge checkout around the working directory).
	BinDir string
	// Dir is where the lab's temporary directory is made (default os.TempDir()).
	Dir string
	// Users are extra identities the apiserver accepts, each with its own
	// token, for programs that must not act as the admin (see Lab.UserConfig).
	Users []User
	// BuildDemoApp builds the demo app of this checkout into the lab's
	// directory and uses it as DemoApp (when DemoApp is empty).
	BuildDemoApp bool
	// DemoApp is the path of the demo app (test/demoapp, see BuildDemoApp).
	// When set, the lab runs it for every Running pod of DemoImage, as a
	// process in the node network listening on the pod's IP and port.
	DemoApp string
	// Prometheus starts the lab's Prometheus, scraping the demo pods (see
	// Lab.StartPrometheus and Lab.PrometheusURL).
	Prometheus bool
	// ProxyMode is the mode of the node network's kube-proxy: "nftables"
	// (the default) or "iptables".
	ProxyMode string
	// AuditLog makes the apiserver write one audit event per write request
	// (see Lab.AuditEvents): who wrote what, for tests that count writes.
	AuditLog bool
	// UnlimitedClients lifts the client-side rate limits of the controller
	// manager and the scheduler (20 and 50 requests a second by default),
	// as kwokctl's --disable-qps-limits does: for benchmarks that create
	// thousands of Deployments and pods (see clientLimits).
	UnlimitedClients bool
}

// User is an identity of the lab's apiserver.
type User struct {
	Name   string
	Groups []string
}

// Lab is a running control plane.
type Lab struct {
	// Config reaches the apiserver as the lab's admin (group system:masters).
	Config *rest.Config
	// Kubeconfig is a kubeconfig file for the same admin identity, for kubectl.
	Kubeconfig string
	// Client is a clientset for Config.
	Client kubernetes.Interface
	// Dir is the lab's directory: PKI, kubeconfigs, etcd data and one log
	// per component. Stop removes it.
	Dir string
	// Nodes are the names of the fake nodes.
	Nodes []string
	// PrometheusURL is the lab's Prometheus (http://127.0.0.1:PORT), once
	// started; it stays the same across StopPrometheus and StartPrometheus.
	PrometheusURL string

	procs []*process
	users map[string]*rest.Config
	bins  string      // the lab's programs
	pods  *podRunner  // with Options.DemoApp
	prom  *promServer // once StartPrometheus ran
	net   *nodeNet    // the node network
	// proxyMode is kube-proxy's: nftables or iptables.
	proxyMode string
}

// NodeAnnotation marks the Node objects kwok manages.
const NodeAnnotation = "kwok.x-k8s.io/node"

// Start starts a lab and waits until the apiserver is ready and every node is
// Ready. On error, everything already started is stopped again.
func Start(ctx context.Context, opts Options) (l *Lab, err error) {
	if opts.Nodes <= 0 {
		opts.Nodes = 2
	}
	if why := nodeNetRequirements(); why != "" {
		return nil, errors.New("lab: " + why) // before anything starts
	}
	bins, err := findBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(opts.Dir, "fledge-lab-")
	if err != nil {
		return nil, fmt.Errorf("lab directory: %w", err)
	}
	l = &Lab{Dir: dir, bins: bins, users: map[string]*rest.Config{}}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, l.LogTails(20))
			l.Stop()
			l = nil
		}
	}()
	if err := l.start(ctx, bins, opts); err != nil {
		return l, err
	}
	if opts.BuildDemoApp && opts.DemoApp == "" {
		if opts.DemoApp, err = BuildDemoApp(ctx, dir); err != nil {
			return l, err
		}
	}
	if opts.DemoApp != "" {
		if err := l.startPods(ctx, opts.DemoApp); err != nil {
			return l, err
		}
	}
	if opts.Prometheus {
		if err := l.StartPrometheus(ctx); err != nil {
			return l, err
		}
	}
	return l, nil
}

func (l *Lab) start(ctx context.Context, bins string, opts Options) error {
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	etcdPort, peerPort, apiPort := ports[0], ports[1], ports[2]
	// The data plane is real (LAB.md, "The real data plane"): a network
	// namespace with kube-proxy in it, pods on their own addresses there,
	// Services on ClusterIPs that kube-proxy routes.
	if l.net, err = createNodeNet(ctx); err != nil {
		return err
	}
	pods, services, node := l.net.Pods.String(), l.net.Services.String(), l.net.NodeIP.String()

	ids := map[string]identity{}
	users := []User{
		{Name: "lab-admin", Groups: []string{"system:masters"}},
		{Name: "system:kube-controller-manager", Groups: []string{"system:masters"}},
		{Name: "system:kube-scheduler", Groups: []string{"system:masters"}},
		{Name: "kwok", Groups: []string{"system:masters"}},
		{Name: FledgeUser, Groups: []string{"system:masters"}},
		// Bound to the system:node-proxier role by the apiserver's own RBAC.
		{Name: "system:kube-proxy"},
	}
	var all []identity
	for _, u := range append(users, opts.Users...) {
		tok, err := newToken()
		if err != nil {
			return err
		}
		id := identity{token: tok, user: u.Name, groups: u.Groups}
		ids[u.Name] = id
		all = append(all, id)
	}
	pki, err := writePKI(l.Dir, all)
	if err != nil {
		return err
	}

	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	if err := l.run("etcd", bins,
		"--name=lab",
		"--data-dir="+filepath.Join(l.Dir, "etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=lab="+peerURL,
		"--unsafe-no-fsync", // a lab's data is thrown away; fsync only slows it
		"--log-level=warn",
	); err != nil {
		return err
	}
	if err := l.waitFor(ctx, "etcd", func(ctx context.Context) error { return httpOK(ctx, etcdURL+"/health") }); err != nil {
		return err
	}

	apiArgs := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--cert-dir=" + filepath.Join(l.Dir, "apiserver-certs"),
		"--tls-cert-file=" + pki.servingCert,
		"--tls-private-key-file=" + pki.servingKey,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + pki.saKey,
		"--service-account-signing-key-file=" + pki.saKey,
		"--service-cluster-ip-range=" + services,
		"--authorization-mode=Node,RBAC",
		"--token-auth-file=" + pki.tokenFile,
		// The apiserver would publish its own address as the endpoint of the
		// "kubernetes" Service; 127.0.0.1 is not a valid endpoint, and nothing
		// in the lab reaches the apiserver through that Service.
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	}
	if opts.AuditLog {
		policy, err := writeAuditPolicy(l.Dir)
		if err != nil {
			return err
		}
		apiArgs = append(apiArgs, "--audit-policy-file="+policy, "--audit-log-path="+l.auditLog(),
			"--audit-log-format=json", "--audit-log-mode=blocking", "--audit-log-maxsize=0")
	}
	if err := l.run("kube-apiserver", bins, apiArgs...); err != nil {
		return err
	}

	host := "https://127.0.0.1:" + strconv.Itoa(apiPort)
	for name, id := range ids {
		l.users[name] = &rest.Config{
			Host:            host,
			BearerToken:     id.token,
			TLSClientConfig: rest.TLSClientConfig{CAData: pki.caData},
			QPS:             100,
			Burst:           200,
		}
	}
	l.Config = rest.CopyConfig(l.users["lab-admin"])
	if l.Kubeconfig, err = l.writeKubeconfig("lab-admin"); err != nil {
		return err
	}
	if l.Client, err = kubernetes.NewForConfig(l.Config); err != nil {
		return err
	}
	if err := l.waitFor(ctx, "kube-apiserver /readyz", func(ctx context.Context) error {
		body, err := l.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return err
		}
		if string(body) != "ok" {
			return fmt.Errorf("readyz says %q", body)
		}
		return nil
	}); err != nil {
		return err
	}

	cmKubeconfig, err := l.writeKubeconfig("system:kube-controller-manager")
	if err != nil {
		return err
	}
	if err := l.run("kube-controller-manager", bins, append([]string{
		"--kubeconfig=" + cmKubeconfig,
		"--authentication-kubeconfig=" + cmKubeconfig,
		"--authorization-kubeconfig=" + cmKubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--controllers=*",
		"--service-account-private-key-file=" + pki.saKey,
		"--root-ca-file=" + pki.caFile,
	}, clientLimits(opts)...)...); err != nil {
		return err
	}
	schedKubeconfig, err := l.writeKubeconfig("system:kube-scheduler")
	if err != nil {
		return err
	}
	if err := l.run("kube-scheduler", bins, append([]string{
		"--kubeconfig=" + schedKubeconfig,
		"--authentication-kubeconfig=" + schedKubeconfig,
		"--authorization-kubeconfig=" + schedKubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
	}, clientLimits(opts)...)...); err != nil {
		return err
	}
	kwokKubeconfig, err := l.writeKubeconfig("kwok")
	if err != nil {
		return err
	}
	kwokArgs := []string{
		"--kubeconfig=" + kwokKubeconfig,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=" + NodeAnnotation + "=fake",
		"--cidr=" + pods,
		"--node-ip=" + node,
		// The heartbeat stage leaves liveness to node Leases: without kwok
		// renewing them, the node lifecycle controller marks every node
		// NotReady (and every pod not Ready) about 50s after it started.
		"--node-lease-duration-seconds=40",
	}
	for _, stage := range []string{
		"node-initialize.yaml", "node-heartbeat-with-lease.yaml",
		"pod-ready.yaml", "pod-complete.yaml", "pod-delete.yaml",
		"pod-container-running-failed.yaml",
	} {
		kwokArgs = append(kwokArgs, "--config="+filepath.Join(bins, "kwok-stages", stage))
	}
	if err := l.run("kwok", bins, kwokArgs...); err != nil {
		return err
	}
	if err := l.createNodes(ctx, opts.Nodes); err != nil {
		return err
	}
	return l.startKubeProxy(ctx, bins, opts.ProxyMode, "127.0.0.1:"+strconv.Itoa(apiPort))
}

// startKubeProxy runs kube-proxy in the node network, reaching the
// apiserver at api on the host through a forwarder on the veth pair, and
// waits until it has programmed the Services.
func (l *Lab) startKubeProxy(ctx context.Context, bins, mode, api string) error {
	if mode == "" {
		mode = "nftables"
	}
	if mode != "nftables" && mode != "iptables" {
		return fmt.Errorf("lab: proxy mode %q: want nftables or iptables", mode)
	}
	l.proxyMode = mode
	forwarder, err := l.net.ForwardTo(api)
	if err != nil {
		return err
	}
	kubeconfig, err := l.writeKubeconfigAt("system:kube-proxy", "https://"+forwarder, "127.0.0.1")
	if err != nil {
		return err
	}
	healthz := net.JoinHostPort(l.net.NodeIP.String(), "10256")
	p, err := startProcess("kube-proxy", "ip", l.Dir, "netns", "exec", l.net.Namespace, filepath.Join(bins, "kube-proxy"),
		"--kubeconfig="+kubeconfig,
		"--proxy-mode="+mode,
		"--hostname-override="+l.Nodes[0],
		"--cluster-cidr="+l.net.Pods.String(),
		"--conntrack-max-per-core=0",
		"--metrics-bind-address="+net.JoinHostPort(l.net.NodeIP.String(), "10249"),
		"--healthz-bind-address="+healthz,
	)
	if err != nil {
		return err
	}
	l.procs = append(l.procs, p)
	return l.waitFor(ctx, "kube-proxy /healthz", func(ctx context.Context) error { return httpOK(ctx, "http://"+healthz+"/healthz") })
}

// run starts one of the lab's programs and remembers it for Stop.
func (l *Lab) run(name, bins string, args ...string) error {
	p, err := startProcess(name, filepath.Join(bins, name), l.Dir, args...)
	if err != nil {
		return err
	}
	l.procs = append(l.procs, p)
	return nil
}

// waitFor polls ready until it succeeds, the context ends, or one of the
// lab's programs exits (a lab missing a component never becomes ready).
func (l *Lab) waitFor(ctx context.Context, what string, ready func(context.Context) error) error {
	var last, stopped error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, p := range l.procs {
			if done, err := p.exited(); done && !p.stopped {
				stopped = fmt.Errorf("%s stopped: %v", p.name, err)
				return false, stopped
			}
		}
		last = ready(ctx)
		return last == nil, nil
	})
	switch {
	case err == nil:
		return nil
	case stopped == nil && last != nil:
		err = fmt.Errorf("%w (last: %v)", err, last)
	}
	return fmt.Errorf("lab: waiting for %s: %w", what, err)
}

// createNodes registers the fake nodes and waits until kwok has made them Ready.
func (l *Lab) createNodes(ctx context.Context, n int) error {
	cidrs, err := nodeCIDRs(l.net.Pods, n)
	if err != nil {
		return err
	}
	for i := range n {
		name := fmt.Sprintf("lab-node-%d", i)
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        name,
				Annotations: map[string]string{NodeAnnotation: "fake"},
				Labels: map[string]string{
					"kubernetes.io/hostname": name,
					"kubernetes.io/os":       "linux",
					"type":                   "kwok",
				},
			},
			// kwok gives a pod an address of its node's podCIDR: without
			// one per node, pods on two nodes get the same address.
			Spec: corev1.NodeSpec{PodCIDR: cidrs[i].String(), PodCIDRs: []string{cidrs[i].String()}},
			Status: corev1.NodeStatus{
				Allocatable: corev1.ResourceList{
					corev1.ResourceCPU:    resource.MustParse("32"),
					corev1.ResourceMemory: resource.MustParse("256Gi"),
					// A kwok node runs no containers, so its pod limit is
					// only a number: high enough that the e2e tests, which
					// keep their namespaces, never run out (110, the
					// kubelet's default, stalled scheduling after ~40 tests).
					corev1.ResourcePods: resource.MustParse("1000"),
				},
			},
		}
		if _, err := l.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("lab: create node %s: %w", name, err)
		}
		l.Nodes = append(l.Nodes, name)
	}
	return l.waitFor(ctx, "nodes Ready", func(ctx context.Context) error {
		nodes, err := l.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		ready := 0
		for _, node := range nodes.Items {
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		if ready < n {
			return fmt.Errorf("%d of %d nodes Ready", ready, n)
		}
		return nil
	})
}

// UserConfig returns a client configuration for one of Options.Users.
func (l *Lab) UserConfig(name string) (*rest.Config, error) {
	cfg, ok := l.users[name]
	if !ok {
		return nil, fmt.Errorf("lab: no user %q (add it to Options.Users)", name)
	}
	return rest.CopyConfig(cfg), nil
}

// UserKubeconfig writes a kubeconfig file for one of Options.Users.
func (l *Lab) UserKubeconfig(name string) (string, error) {
	if _, ok := l.users[name]; !ok {
		return "", fmt.Errorf("lab: no user %q (add it to Options.Users)", name)
	}
	return l.writeKubeconfig(name)
}

// writeKubeconfig writes a kubeconfig file for a user of the lab.
func (l *Lab) writeKubeconfig(user string) (string, error) {
	return l.writeKubeconfigAt(user, l.users[user].Host, "")
}

// writeKubeconfigAt writes a kubeconfig for user that reaches the
// apiserver at server, checking its certificate for tlsName when set (a
// forwarder's address is not in the certificate).
func (l *Lab) writeKubeconfigAt(user, server, tlsName string) (string, error) {
	cfg := l.users[user]
	kc := clientcmdapi.NewConfig()
	kc.Clusters["lab"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: cfg.CAData, TLSServerName: tlsName}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: user, Namespace: "default"}
	kc.CurrentContext = "lab"
	path := filepath.Join(l.Dir, "kubeconfig-"+strings.ReplaceAll(user, ":", "-"))
	if user == "lab-admin" {
		path = filepath.Join(l.Dir, "kubeconfig")
	}
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return "", fmt.Errorf("lab: write kubeconfig: %w", err)
	}
	return path, nil
}

// CreateNamespace creates a namespace with the given labels and waits for its
// default ServiceAccount, without which no pod can be created in it.
func (l *Lab) CreateNamespace(ctx context.Context, name string, labels map[string]string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if _, err := l.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("lab: create namespace %s: %w", name, err)
	}
	return l.waitFor(ctx, "default ServiceAccount in "+name, func(ctx context.Context) error {
		_, err := l.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

// Stop ends every program the lab started, newest first (the demo
// processes before all), and removes the lab's directory. It is safe to call
// more than once.
func (l *Lab) Stop() {
	if l.pods != nil {
		l.pods.shutdown()
		l.pods = nil
	}
	for i := len(l.procs) - 1; i >= 0; i-- {
		l.procs[i].stop(10 * time.Second)
	}
	l.procs = nil
	if l.net != nil {
		_ = l.net.remove(context.Background())
		l.net = nil
	}
	if l.Dir != "" {
		_ = os.RemoveAll(l.Dir)
	}
}

// PIDs returns the process IDs of the lab's programs by component name.
func (l *Lab) PIDs() map[string]int {
	pids := map[string]int{}
	for _, p := range l.procs {
		pids[p.name] = p.cmd.Process.Pid
	}
	return pids
}

// LogTails returns the last n lines of each component's log, for a failing
// test to print.
func (l *Lab) LogTails(n int) string {
	var b strings.Builder
	for _, p := range l.procs {
		fmt.Fprintf(&b, "----- %s (last %d lines of %s)\n%s", p.name, n, p.logPath, p.tail(n))
	}
	if l.pods != nil {
		runner := &process{logPath: l.pods.log.path}
		fmt.Fprintf(&b, "----- pod runner (last %d lines of %s)\n%s", n, runner.logPath, runner.tail(n))
	}
	return b.String()
}

// findBinDir returns the directory holding the lab's programs.
func findBinDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv("FLEDGE_BIN_DIR")
	}
	if dir == "" {
		var err error
		if dir, err = checkoutBin(); err != nil {
			return "", err
		}
	}
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kwok-stages"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return "", fmt.Errorf("lab: %s is missing from %s: run `make tools` to build the lab's programs", name, dir)
		}
	}
	return dir, nil
}

// checkoutBin finds bin/ of the fledge checkout around the working directory
// (tests run in their package's directory) or around the running program
// (bin/fledge-lab).
func checkoutBin() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, d := range starts {
		for ; ; d = filepath.Dir(d) {
			if mod, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil &&
				strings.HasPrefix(string(mod), "module github.com/fledge-dev/fledge\n") {
				return filepath.Join(d, "bin"), nil
			}
			if d == filepath.Dir(d) {
				break
			}
		}
	}
	return "", errors.New("lab: cannot find the fledge checkout's bin/; set FLEDGE_BIN_DIR or Options.BinDir")
}

// freePorts returns n distinct ports that were free on 127.0.0.1 a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("lab: find a free port: %w", err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// httpOK succeeds when url answers 200.
func httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return nil
}
