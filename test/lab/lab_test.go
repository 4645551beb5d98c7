package lab_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
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
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/fledge-dev/fledge/policy"
	"github.com/fledge-dev/fledge/rollout"
	"github.com/fledge-dev/fledge/test/lab"
)

var theLab *lab.Lab

// TestMain shares one lab among the package's tests, with the demo app built
// from this checkout and Prometheus, so the demo pods really answer.
func TestMain(m *testing.M) {
	os.Exit(lab.Run(m, lab.Options{BuildDemoApp: true, Prometheus: true, AuditLog: true}, &theLab))
}

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

// createWebService creates Service web (app=web, port 80 to 8080) in ns.
func createWebService(t *testing.T, ns string) {
	t.Helper()
	webService(t, theLab.Client, ns)
}

// webService creates the Service "web" of ns (selector app=web, port 80 to
// the pods' 8080) with client, and returns it.
func webService(t *testing.T, client kubernetes.Interface, ns string) *corev1.Service {
	t.Helper()
	svc, err := client.CoreV1().Services(ns).Create(t.Context(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	return svc
}

func TestNodesRenewTheirLeases(t *testing.T) {
	// Without Leases, nodes turn NotReady after the node monitor grace
	// period and their pods stop being endpoints mid-test.
	for _, node := range theLab.Nodes {
		eventually(t, "lease of "+node, func(ctx context.Context) (bool, error) {
			lease, err := theLab.Client.CoordinationV1().Leases("kube-node-lease").Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			return lease.Spec.RenewTime != nil && ptr.Deref(lease.Spec.LeaseDurationSeconds, 0) == 40, nil
		})
	}
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
	createWebService(t, ns)

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

// The audit log records each write once, with its writer, and no reads.
func TestAuditLogRecordsWritesWithTheirWriter(t *testing.T) {
	ctx := t.Context()
	ns := "lab-audit"
	require.NoError(t, theLab.CreateNamespace(ctx, ns, nil))
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "audited", Namespace: ns}, Data: map[string]string{"a": "1"}}
	_, err := theLab.Client.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = theLab.Client.CoreV1().ConfigMaps(ns).Get(ctx, "audited", metav1.GetOptions{})
	require.NoError(t, err)
	require.NoError(t, theLab.Client.CoreV1().ConfigMaps(ns).Delete(ctx, "audited", metav1.DeleteOptions{}))

	events, err := theLab.AuditEvents()
	require.NoError(t, err)
	var seen []string
	for _, e := range events {
		if e.ObjectRef != nil && e.ObjectRef.Namespace == ns && e.ObjectRef.Name == "audited" {
			seen = append(seen, fmt.Sprintf("%s %s %s %d", e.User.Username, e.Verb, e.Resource(), e.Code()))
		}
	}
	assert.Equal(t, []string{"lab-admin create configmaps 201", "lab-admin delete configmaps 200"}, seen)
}

func TestStopEndsEveryProcessAndRemovesTheDirectory(t *testing.T) {
	l, err := lab.Start(t.Context(), lab.Options{Nodes: 1})
	require.NoError(t, err)
	pids := l.PIDs()
	assert.Len(t, pids, 6, "etcd, apiserver, controller manager, scheduler, kwok, kube-proxy")
	l.Stop()
	for name, pid := range pids {
		assert.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "%s (pid %d) still runs", name, pid)
	}
	_, err = os.Stat(l.Dir)
	assert.True(t, os.IsNotExist(err), "lab directory %s still exists", l.Dir)
}

// demoDeployment is a Deployment of the demo image whose pods carry
// app=<app> and, when track is set, fledge.dev/track=<track>: the shape of
// fledge's stable and canary Deployments behind one Service.
func demoDeployment(name, app, track, image string, replicas int32, env ...corev1.EnvVar) *appsv1.Deployment {
	d := deployment(name, image, replicas)
	labels := map[string]string{"app": app}
	if track != "" {
		labels[rollout.LabelTrack] = track
	}
	d.Spec.Selector.MatchLabels = labels
	d.Spec.Template.Labels = labels
	d.Spec.Template.Annotations = map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "8080"}
	d.Spec.Template.Spec.Containers[0].Env = env
	return d
}

// demoApp creates in ns a Service "web" (selector app=web) over the
// Deployment "web" (stable pods of fledge/demo:v1) and "web-canary" (canary
// pods of fledge/demo:v2 with canaryEnv), and waits until the Service has
// stable+canary ready endpoints and every pod has its process. It returns
// the pods.
func demoApp(t *testing.T, ns string, stable, canary int32, canaryEnv ...corev1.EnvVar) []corev1.Pod {
	t.Helper()
	ctx := t.Context()
	require.NoError(t, theLab.CreateNamespace(ctx, ns, nil))
	c := theLab.Client
	_, err := c.AppsV1().Deployments(ns).Create(ctx, demoDeployment("web", "web", "", "fledge/demo:v1", stable), metav1.CreateOptions{})
	require.NoError(t, err)
	if canary > 0 {
		_, err = c.AppsV1().Deployments(ns).Create(ctx, demoDeployment("web-canary", "web", "canary", "fledge/demo:v2", canary, canaryEnv...), metav1.CreateOptions{})
		require.NoError(t, err)
	}
	createWebService(t, ns)

	pods := waitForDemoPods(t, ns, int(stable+canary))
	routedToAll(t, theLab.Client, ns, "web", pods)
	return pods
}

// routedToAll waits until kube-proxy has sent requests to the Service's
// ClusterIP to every one of pods: it programs new endpoints a moment after
// the EndpointSlice lists them. A request that fails or is slow (a lab
// under load) only delays it.
func routedToAll(t *testing.T, client kubernetes.Interface, ns, service string, pods []corev1.Pod) {
	t.Helper()
	svc, err := client.CoreV1().Services(ns).Get(t.Context(), service, metav1.GetOptions{})
	require.NoError(t, err)
	// /pod answers the pod's name and is not counted in the metrics.
	url := "http://" + net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(int(svc.Spec.Ports[0].Port))) + "/pod"
	fresh := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	seen := map[string]bool{}
	eventually(t, "kube-proxy to route "+service+" to all its pods", func(ctx context.Context) (bool, error) {
		for range 10 * len(pods) {
			resp, err := fresh.Get(url)
			if err != nil {
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			seen[strings.TrimSpace(string(body))] = true
		}
		for _, p := range pods {
			if !seen[p.Name] {
				return false, nil
			}
		}
		return true, nil
	})
}

// waitForDemoPods waits until ns has want pods with app=web, each with a
// process, and the Service "web" has want ready endpoints; it returns those
// pods.
func waitForDemoPods(t *testing.T, ns string, want int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	eventually(t, fmt.Sprintf("%d ready endpoints whose pods have a process", want), func(ctx context.Context) (bool, error) {
		list, err := theLab.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return false, err
		}
		pods = list.Items
		running, pids := 0, theLab.DemoPIDs()
		for _, p := range pods {
			if pids[ns+"/"+p.Name] != 0 {
				running++
			}
		}
		return len(pods) == want && running == want && readyEndpoints(ctx, t, ns, "web") == want, nil
	})
	return pods
}

// readyEndpoints counts the ready endpoints of a Service.
func readyEndpoints(ctx context.Context, t *testing.T, ns, service string) int {
	slices, err := theLab.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
	require.NoError(t, err)
	n := 0
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			if ptr.Deref(e.Conditions.Ready, false) {
				n++
			}
		}
	}
	return n
}

// getPod sends GET / to a demo pod's process, on the pod's IP.
func getPod(t *testing.T, p corev1.Pod) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + net.JoinHostPort(p.Status.PodIP, "8080") + "/")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func TestDemoPodsAnswerOnTheirIPsAndStopWithTheirPod(t *testing.T) {
	ctx := t.Context()
	ns := "lab-demo"
	pods := demoApp(t, ns, 2, 1, corev1.EnvVar{Name: "ERROR_RATE", Value: "1"})
	c := theLab.Client

	pids := theLab.DemoPIDs()
	for _, p := range pods {
		assert.True(t, podRange.Contains(netip.MustParseAddr(p.Status.PodIP)), "pod IP %s", p.Status.PodIP)
		code, body := getPod(t, p)
		if p.Labels[rollout.LabelTrack] == rollout.TrackCanary {
			assert.Equal(t, http.StatusInternalServerError, code, p.Name)
			assert.Equal(t, "error v2 "+p.Name+"\n", body, p.Name)
		} else {
			assert.Equal(t, http.StatusOK, code, p.Name)
			assert.Equal(t, "ok v1 "+p.Name+"\n", body, p.Name)
		}
		assert.NotZero(t, pids[ns+"/"+p.Name], "no process for %s", p.Name)
	}

	// A pod that kwok's chaos stage fails gets no process (a bare pod: a
	// Deployment would replace it every second or two).
	crash := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "crash", Labels: map[string]string{"pod-container-running-failed.stage.kwok.x-k8s.io": "true"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "fledge/demo:v3"}}},
	}
	_, err := c.CoreV1().Pods(ns).Create(ctx, crash, metav1.CreateOptions{})
	require.NoError(t, err)
	eventually(t, "the crash pod Failed", func(ctx context.Context) (bool, error) {
		p, err := c.CoreV1().Pods(ns).Get(ctx, "crash", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodFailed, err
	})

	// Deleting a pod stops its process; its replacement gets another.
	victim := pods[0]
	for _, p := range pods {
		if p.Labels[rollout.LabelTrack] == "" {
			victim = p
		}
	}
	oldPID := pids[ns+"/"+victim.Name]
	require.NotZero(t, oldPID)
	require.NoError(t, c.CoreV1().Pods(ns).Delete(ctx, victim.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
	eventually(t, fmt.Sprintf("pid %d of %s gone", oldPID, victim.Name), func(ctx context.Context) (bool, error) {
		_, still := theLab.DemoPIDs()[ns+"/"+victim.Name]
		return !still && errors.Is(syscall.Kill(oldPID, 0), syscall.ESRCH), nil
	})
	pods = waitForDemoPods(t, ns, 3)
	for _, p := range pods {
		assert.NotEqual(t, victim.Name, p.Name)
		assert.NotZero(t, theLab.DemoPIDs()[ns+"/"+p.Name], "no process for %s", p.Name)
	}
	_, crashRuns := theLab.DemoPIDs()[ns+"/crash"]
	assert.False(t, crashRuns, "the failed pod has a process")
}

// TestTrafficSharesFollowPodCounts sends traffic to a Service over 3 stable
// pods and 1 canary pod answering 500 only: the canary gets a quarter of the
// requests (kube-proxy's uniform choice), its errors are counted on its
// track, and Prometheus counted exactly the same answers.
func TestTrafficSharesFollowPodCounts(t *testing.T) {
	ns := "lab-traffic"
	demoApp(t, ns, 3, 1, corev1.EnvVar{Name: "ERROR_RATE", Value: "1"})

	tr := lab.NewTraffic(theLab.Client, ns, "web", 800)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	require.NoError(t, tr.Run(ctx))

	s := tr.Snapshot()
	t.Logf("%d requests in 5s: %s", s.Requests(), s)
	require.GreaterOrEqual(t, s.Requests(), 1000)
	assert.Zero(t, s.NoEndpoint)
	assert.ElementsMatch(t, []string{"stable", "canary"}, slices.Collect(maps.Keys(s.Tracks)))
	assert.InDelta(t, 0.25, s.Share("canary"), 0.03, "canary share")
	assert.Zero(t, s.Tracks["stable"].Errors)
	assert.Equal(t, s.Tracks["canary"].Requests, s.Tracks["canary"].Errors, "every canary answer is a 500")

	var perSecond int
	for _, sec := range tr.Seconds() {
		perSecond += sec.Requests()
	}
	assert.Equal(t, s.Requests(), perSecond, "the seconds add up to the total")

	want := map[string]float64{
		"stable 200": float64(s.Tracks["stable"].Requests),
		"stable 500": 0,
		"canary 200": 0,
		"canary 500": float64(s.Tracks["canary"].Requests),
	}
	var got map[string]float64
	eventually(t, "prometheus to count the same answers", func(ctx context.Context) (bool, error) {
		got = map[string]float64{}
		for _, sample := range promQuery(t, `sum by (track, code) (http_requests_total{namespace="`+ns+`"})`, time.Now()) {
			got[string(sample.Metric["track"])+" "+string(sample.Metric["code"])] = float64(sample.Value)
		}
		return maps.Equal(want, got), nil
	})
}

func TestPolicyManifestIsAValidPolicy(t *testing.T) {
	for _, p := range []lab.Policy{
		{Namespace: "a", Holds: [3]string{"1s", "2s", "3s"}},
		{Namespace: "a", Holds: [3]string{"1s", "2s", "3s"}, Capacity: "shift", PrometheusURL: "http://127.0.0.1:9090", NoDataLimit: 3, LatencyRatio: 1.5},
		{Namespace: "a", Holds: [3]string{"1s", "2s", "3s"}, PrometheusURL: "http://127.0.0.1:9090", Compare: &lab.Comparison{}},
		{Namespace: "a", Holds: [3]string{"1s", "2s", "3s"}, PrometheusURL: "http://127.0.0.1:9090", LatencyRatio: 1.5,
			Compare: &lab.Comparison{Tolerance: 1, Alpha: 0.05, MinRequests: 30}},
	} {
		var cm corev1.ConfigMap
		require.NoError(t, yaml.UnmarshalStrict([]byte(p.Manifest()), &cm))
		parsed, err := policy.FromConfigMap(&cm)
		require.NoError(t, err)
		assert.Len(t, parsed.Steps, 3)
		assert.Equal(t, p.PrometheusURL != "", parsed.Analysis != nil)
		if c := p.Compare; c != nil {
			require.Len(t, parsed.Analysis.Compare, 1)
			got := parsed.Analysis.Compare[0]
			assert.Equal(t, cmp.Or(c.Tolerance, 0.5), got.Tolerance)
			assert.Equal(t, cmp.Or(c.Alpha, 0.01), got.Alpha)
			assert.Equal(t, int32(cmp.Or(c.MinRequests, 100)), parsed.Analysis.MinRequests)
			assert.Equal(t, p.LatencyRatio > 0, len(parsed.Analysis.Checks) == 1)
		}
	}
}
