// Package e2e runs fledge's scenarios against the lab: a real control plane,
// the manager built from this checkout, and real kubectl.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	"github.com/fledge-dev/fledge/rollout"
	"github.com/fledge-dev/fledge/test/lab"
)

var (
	theLab *lab.Lab
	fledge *lab.Fledge
	// dryRun is what `kubectl apply --dry-run=server -k manifests/` printed
	// in the lab, before the manager re-pointed its webhooks at 127.0.0.1.
	dryRun string
)

func TestMain(m *testing.M) {
	os.Exit(lab.Run(m, lab.Options{AuditLog: true}, &theLab, startFledge, buildPlugin))
}

// startFledge builds the manager of this checkout into the lab's directory
// and runs it against the lab with the RBAC of manifests/: as the
// ServiceAccount the manifests create, with a token from the TokenRequest
// API, so every test also proves the listed permissions are enough.
func startFledge(ctx context.Context, l *lab.Lab) error {
	if err := applyRBAC(ctx, l); err != nil {
		return err
	}
	kubeconfig, err := l.ServiceAccountKubeconfig(ctx, lab.FledgeNamespace, "fledge")
	if err != nil {
		return err
	}
	bin, err := lab.BuildFledge(ctx, l.Dir)
	if err != nil {
		return err
	}
	fledge, err = l.StartFledge(ctx, bin, "--kubeconfig="+kubeconfig)
	return err
}

// installedKinds are the objects of manifests/ the lab installs: all but the
// manager's Deployment, Service and PodDisruptionBudget, which the lab
// replaces with a manager process on 127.0.0.1.
var installedKinds = map[string]bool{
	"Namespace": true, "ServiceAccount": true, "ClusterRole": true, "ClusterRoleBinding": true,
	"Role": true, "RoleBinding": true, "MutatingWebhookConfiguration": true, "ValidatingWebhookConfiguration": true,
}

// applyRBAC applies the installedKinds of `kubectl kustomize manifests/`.
func applyRBAC(ctx context.Context, l *lab.Lab) error {
	built, err := exec.CommandContext(ctx, "kubectl", "kustomize", "../../manifests").Output()
	if err != nil {
		return fmt.Errorf("kubectl kustomize manifests: %w", err)
	}
	var keep []string
	for _, doc := range strings.Split(string(built), "\n---\n") {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			return fmt.Errorf("manifests: %w", err)
		}
		if installedKinds[meta.Kind] {
			keep = append(keep, doc)
		}
	}
	if _, stderr, err := l.Kubectl(ctx, strings.Join(keep, "\n---\n"), "apply", "-f", "-"); err != nil {
		return fmt.Errorf("apply manifests: %w\n%s", err, stderr)
	}
	out, stderr, err := l.Kubectl(ctx, "", "apply", "--dry-run=server", "-k", "../../manifests")
	dryRun = out
	if err != nil {
		return fmt.Errorf("kubectl apply --dry-run=server -k manifests: %w\n%s", err, stderr)
	}
	return nil
}

// pluginDir holds kubectl-fledge, built from this checkout.
var pluginDir string

func buildPlugin(ctx context.Context, l *lab.Lab) error {
	pluginDir = filepath.Join(l.Dir, "plugin")
	if err := os.Mkdir(pluginDir, 0o755); err != nil {
		return err
	}
	_, err := lab.Build(ctx, pluginDir, "cmd/kubectl-fledge")
	return err
}

// kubectlFledge runs `kubectl fledge ARGS` the way a user does: kubectl
// finds the plugin on PATH. It returns the output and the exit code.
func kubectlFledge(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "kubectl", append([]string{"fledge"}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+theLab.Kubeconfig, "PATH="+pluginDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		require.NoError(t, err)
	}
	return out.String(), errOut.String(), code
}

// kubectl runs kubectl as the lab's admin with stdin, and returns stdout
// and stderr apart: kubectl prints admission warnings on stderr.
func kubectl(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	return theLab.Kubectl(t.Context(), stdin, args...)
}

// namespace creates a namespace for one test, opted in or not.
func namespace(t *testing.T, name string, optedIn bool) string {
	t.Helper()
	labels := map[string]string{}
	if optedIn {
		labels[rollout.LabelEnabled] = "true"
	}
	require.NoError(t, theLab.CreateNamespace(t.Context(), name, labels))
	return name
}

// app is the demo app web at tag with its Service.
func app(ns, tag string, replicas int) string {
	return lab.App{Namespace: ns, Tag: tag, Replicas: replicas}.Manifest()
}

// deployed applies the app at tag and waits until every replica is ready.
func deployed(t *testing.T, ns, tag string, replicas int) {
	t.Helper()
	_, stderr, err := kubectl(t, app(ns, tag, replicas), "apply", "-f", "-")
	require.NoError(t, err, stderr)
	eventually(t, "web ready", func(ctx context.Context) (bool, error) {
		d := get(t, ns, "web")
		return d.Status.ReadyReplicas == int32(replicas) && d.Status.UpdatedReplicas == int32(replicas), nil
	})
}

func get(t *testing.T, ns, name string) *appsv1.Deployment {
	t.Helper()
	d, err := theLab.Client.AppsV1().Deployments(ns).Get(t.Context(), name, metav1.GetOptions{})
	require.NoError(t, err)
	return d
}

// eventually polls cond every 200ms for up to a minute.
func eventually(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, time.Minute, true, cond)
	require.NoError(t, err, "waiting for %s", what)
}

// stableRS returns the replicas of web's own ReplicaSets (not its
// canary's) by image, leaving out those scaled to zero.
func stableRS(t *testing.T, ns string) map[string]int32 {
	t.Helper()
	rss, err := theLab.Client.AppsV1().ReplicaSets(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=web,!" + rollout.LabelTrack})
	require.NoError(t, err)
	out := map[string]int32{}
	for _, rs := range rss.Items {
		if n := *rs.Spec.Replicas; n > 0 {
			out[rs.Spec.Template.Spec.Containers[0].Image] = n
		}
	}
	return out
}
