package lab_test

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/fledge-dev/fledge/test/lab"
)

var theLab *lab.Lab

func TestMain(m *testing.M) { os.Exit(lab.Run(m, lab.Options{}, &theLab)) }

var podRange = netip.MustParsePrefix("198.18.0.0/16")

func deployment(name, image string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: image,
					Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
				}}},
			},
		},
	}
}

// eventually polls cond every 200ms for up to a minute.
func eventually(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, time.Minute, true, cond)
	require.NoError(t, err, "waiting for %s", what)
}

func TestNodesAreReady(t *testing.T) {
	nodes, err := theLab.Client.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, nodes.Items, 2)
	for _, n := range nodes.Items {
		assert.Equal(t, "fake", n.Annotations[lab.NodeAnnotation])
	}
}

func TestDeploymentGetsReadyPodsAndEndpoints(t *testing.T) {
	ctx := t.Context()
	ns := "lab-endpoints"
	require.NoError(t, theLab.CreateNamespace(ctx, ns, nil))
	c := theLab.Client

	_, err := c.AppsV1().Deployments(ns).Create(ctx, deployment("web", "fledge/demo:v1", 3), metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = c.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	eventually(t, "3 ready replicas", func(ctx context.Context) (bool, error) {
		d, err := c.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		return err == nil && d.Status.ReadyReplicas == 3, err
	})

	pods, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	require.NoError(t, err)
	require.Len(t, pods.Items, 3)
	podIPs := map[string]bool{}
	for _, p := range pods.Items {
		assert.Equal(t, corev1.PodRunning, p.Status.Phase, p.Name)
		ip := netip.MustParseAddr(p.Status.PodIP)
		assert.True(t, podRange.Contains(ip), "pod %s has IP %s outside %s", p.Name, ip, podRange)
		podIPs[p.Status.PodIP] = true
	}
	require.Len(t, podIPs, 3, "every pod has its own IP")

	eventually(t, "an EndpointSlice listing the 3 pods", func(ctx context.Context) (bool, error) {
		slices, err := c.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
		if err != nil {
			return false, err
		}
		ready := map[string]bool{}
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if ptr.Deref(e.Conditions.Ready, false) {
					for _, a := range e.Addresses {
						ready[a] = true
					}
				}
			}
		}
		return assert.ObjectsAreEqual(podIPs, ready), nil
	})
}

func TestImageChangeRollsOutThroughNewReplicaSet(t *testing.T) {
	ctx := t.Context()
	ns := "lab-rollout"
	require.NoError(t, theLab.CreateNamespace(ctx, ns, nil))
	c := theLab.Client
	_, err := c.AppsV1().Deployments(ns).Create(ctx, deployment("web", "fledge/demo:v1", 2), metav1.CreateOptions{})
	require.NoError(t, err)
	eventually(t, "v1 available", func(ctx context.Context) (bool, error) {
		d, err := c.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		return err == nil && d.Status.AvailableReplicas == 2, err
	})

	d, err := c.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
	require.NoError(t, err)
	d.Spec.Template.Spec.Containers[0].Image = "fledge/demo:v2"
	_, err = c.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{})
	require.NoError(t, err)

	eventually(t, "v2 rolled out", func(ctx context.Context) (bool, error) {
		d, err := c.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		s := d.Status
		return s.ObservedGeneration == d.Generation && s.UpdatedReplicas == 2 && s.Replicas == 2 && s.AvailableReplicas == 2, nil
	})

	rss, err := c.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	require.NoError(t, err)
	require.Len(t, rss.Items, 2, "the old and the new ReplicaSet")
	byImage := map[string]int32{}
	for _, rs := range rss.Items {
		byImage[rs.Spec.Template.Spec.Containers[0].Image] = *rs.Spec.Replicas
	}
	assert.Equal(t, map[string]int32{"fledge/demo:v1": 0, "fledge/demo:v2": 2}, byImage)

	pods, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	require.NoError(t, err)
	running := 0
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			assert.Equal(t, "fledge/demo:v2", p.Spec.Containers[0].Image, p.Name)
			running++
		}
	}
	assert.Equal(t, 2, running)
}

func TestKubectlApply(t *testing.T) {
	ctx := t.Context()
	ns := "lab-kubectl"
	require.NoError(t, theLab.CreateNamespace(ctx, ns, nil))
	manifest := filepath.Join(t.TempDir(), "app.yaml")
	require.NoError(t, os.WriteFile(manifest, []byte(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
  namespace: lab-kubectl
spec:
  replicas: 2
  selector:
    matchLabels: {app: hello}
  template:
    metadata:
      labels: {app: hello}
    spec:
      containers:
      - name: app
        image: fledge/demo:v1
`), 0o644))

	cmd := exec.CommandContext(ctx, "kubectl", "apply", "-f", manifest)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+theLab.Kubeconfig)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	assert.Equal(t, "deployment.apps/hello created", strings.TrimSpace(string(out)))

	cmd = exec.CommandContext(ctx, "kubectl", "rollout", "status", "deployment/hello", "-n", ns, "--timeout=60s")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+theLab.Kubeconfig)
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	assert.Contains(t, string(out), `deployment "hello" successfully rolled out`)

	d, err := theLab.Client.AppsV1().Deployments(ns).Get(ctx, "hello", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, int32(2), d.Status.ReadyReplicas)
}

func TestStopEndsEveryProcessAndRemovesTheDirectory(t *testing.T) {
	l, err := lab.Start(t.Context(), lab.Options{Nodes: 1})
	require.NoError(t, err)
	pids := l.PIDs()
	assert.Len(t, pids, 5, "etcd, apiserver, controller manager, scheduler, kwok")
	l.Stop()
	for name, pid := range pids {
		assert.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "%s (pid %d) still runs", name, pid)
	}
	_, err = os.Stat(l.Dir)
	assert.True(t, os.IsNotExist(err), "lab directory %s still exists", l.Dir)
}
