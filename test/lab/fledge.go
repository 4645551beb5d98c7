package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
)

// FledgeUser is the identity the lab gives fledge's manager: not the admin
// that people and tests use, or their updates would pass as fledge's own.
const FledgeUser = "fledge"

// FledgeNamespace is where the manager keeps its Secret and Lease.
const FledgeNamespace = "fledge-system"

// Fledge is a manager process running against the lab.
type Fledge struct {
	// WebhookURL is where the apiserver calls the webhooks.
	WebhookURL string
	// MetricsURL serves /metrics; ProbeURL serves /healthz and /readyz.
	MetricsURL string
	ProbeURL   string
	// Log is the manager's log file.
	Log string
	// Binary is the manager program and Args the arguments StartFledge
	// was given, to start it again the same way.
	Binary string
	Args   []string

	proc *process
}

// Build builds the program of this checkout's package pkg (for example
// "cmd/fledge") into dir and returns its path.
func Build(ctx context.Context, dir, pkg string) (string, error) {
	bin, err := checkoutBin()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./"+pkg)
	cmd.Dir = filepath.Dir(bin)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("lab: build %s: %w\n%s", pkg, err, msg)
	}
	return out, nil
}

// BuildFledge builds the manager of this checkout into dir and returns its path.
func BuildFledge(ctx context.Context, dir string) (string, error) {
	return Build(ctx, dir, "cmd/fledge")
}

// ServiceAccountKubeconfig writes a kubeconfig that acts as the
// ServiceAccount namespace/name, with a token from the TokenRequest API: to
// run fledge with exactly the RBAC its manifests grant.
func (l *Lab) ServiceAccountKubeconfig(ctx context.Context, namespace, name string) (string, error) {
	tr, err := l.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](24 * 3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("lab: token of service account %s/%s: %w", namespace, name, err)
	}
	user := "system:serviceaccount:" + namespace + ":" + name
	cfg := rest.CopyConfig(l.Config)
	cfg.BearerToken = tr.Status.Token
	l.users[user] = cfg
	return l.writeKubeconfig(user)
}

// StartFledge runs the manager at path against the lab, with the webhooks
// registered at https://127.0.0.1:PORT (--webhook-url), and waits until it
// is ready. It acts as FledgeUser unless args give another --kubeconfig.
// Lab.Stop stops it too.
func (l *Lab) StartFledge(ctx context.Context, path string, args ...string) (*Fledge, error) {
	kubeconfig, err := l.writeKubeconfig(FledgeUser)
	if err != nil {
		return nil, err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: FledgeNamespace}}
	if _, err := l.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("lab: create namespace %s: %w", FledgeNamespace, err)
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	f := &Fledge{
		Binary:     path,
		Args:       args,
		WebhookURL: "https://127.0.0.1:" + strconv.Itoa(ports[0]),
		MetricsURL: "http://127.0.0.1:" + strconv.Itoa(ports[1]),
		ProbeURL:   "http://127.0.0.1:" + strconv.Itoa(ports[2]),
	}
	certDir, err := os.MkdirTemp(l.Dir, "fledge-certs-")
	if err != nil {
		return nil, err
	}
	args = append([]string{
		"--kubeconfig=" + kubeconfig,
		"--namespace=" + FledgeNamespace,
		"--webhook-url=" + f.WebhookURL,
		"--webhook-host=127.0.0.1",
		"--webhook-port=" + strconv.Itoa(ports[0]),
		"--cert-dir=" + certDir,
		"--metrics-bind-address=127.0.0.1:" + strconv.Itoa(ports[1]),
		"--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(ports[2]),
	}, args...)
	name := "fledge"
	for i := 1; l.hasProcess(name); i++ {
		name = "fledge-" + strconv.Itoa(i)
	}
	if f.proc, err = startProcess(name, path, l.Dir, args...); err != nil {
		return nil, err
	}
	f.Log = f.proc.logPath
	l.procs = append(l.procs, f.proc)
	err = l.waitFor(ctx, "fledge ready", func(ctx context.Context) error { return httpOK(ctx, f.ProbeURL+"/readyz") })
	if err != nil {
		f.Stop()
		return nil, fmt.Errorf("%w\n----- fledge log\n%s", err, f.proc.tail(30))
	}
	return f, nil
}

// Stop ends the manager (SIGTERM, as Kubernetes does), and waits for it.
func (f *Fledge) Stop() { f.proc.stop(20 * time.Second) }

func (l *Lab) hasProcess(name string) bool {
	for _, p := range l.procs {
		if p.name == name {
			return true
		}
	}
	return false
}
