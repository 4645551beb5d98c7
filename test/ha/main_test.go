// Package ha runs two managers from manifests/ in the lab, as a cluster
// runs them: the Deployment, ServiceAccount, RBAC, Service, PodDisruption
// Budget and webhook configurations applied with kubectl, the manager pods
// run by the lab's pod runner, the webhooks called through the Service's
// ClusterIP and kube-proxy. Its tests stop, evict and kill the leader in the
// middle of rollouts.
package ha

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/fledge-dev/fledge/rollout"
	"github.com/fledge-dev/fledge/test/lab"
)

var (
	theLab *lab.Lab
	// users writes as the lab's admin, without printing the webhook's
	// warnings (each probe write gets one).
	users kubernetes.Interface
)

func TestMain(m *testing.M) {
	os.Exit(lab.Run(m, lab.Options{AuditLog: true}, &theLab, lab.WithManagerPods, installManifests, userClient))
}

// The install of manifests/ and the manager's leader election
// (controller-runtime's defaults; cmd/fledge sets release on cancel).
const (
	namespace     = "fledge-system"
	deployment    = "fledge"
	service       = "fledge-webhook"
	leaseName     = "fledge"
	serviceUser   = "system:serviceaccount:fledge-system:fledge"
	leaseDuration = 15 * time.Second
	retryPeriod   = 2 * time.Second
	// jitterFactor is client-go's: a follower tries to acquire the Lease
	// every RetryPeriod to RetryPeriod×(1+jitterFactor).
	jitterFactor = 1.2
)

// installManifests applies manifests/ as a user installs it and waits for
// two Ready managers and a leader.
func installManifests(ctx context.Context, l *lab.Lab) error {
	if _, stderr, err := l.Kubectl(ctx, "", "apply", "-k", "../../manifests"); err != nil {
		return fmt.Errorf("kubectl apply -k manifests: %w\n%s", err, stderr)
	}
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := readyManagers(ctx, l)
		if err != nil || len(pods) != 2 {
			return false, err
		}
		lease, err := l.Client.CoordinationV1().Leases(namespace).Get(ctx, leaseName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return slices.ContainsFunc(pods, func(p corev1.Pod) bool { return p.Name == holderPod(lease) }), nil
	})
}

func userClient(_ context.Context, l *lab.Lab) error {
	cfg := rest.CopyConfig(l.Config)
	cfg.WarningHandler = rest.NoWarnings{}
	var err error
	users, err = kubernetes.NewForConfig(cfg)
	return err
}

// managerPods are the manager's pods that are not being deleted.
func managerPods(ctx context.Context, l *lab.Lab) ([]corev1.Pod, error) {
	list, err := l.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=fledge"})
	if err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// readyManagers are the manager pods that are Ready.
func readyManagers(ctx context.Context, l *lab.Lab) ([]corev1.Pod, error) {
	pods, err := managerPods(ctx, l)
	return slices.DeleteFunc(pods, func(p corev1.Pod) bool { return !podReady(&p) }), err
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// holderPod is the pod of the Lease's holder: a manager's identity is its
// hostname, the pod's name, "_" and a UUID (controller-runtime).
func holderPod(lease *coordinationv1.Lease) string {
	id := ptr.Deref(lease.Spec.HolderIdentity, "")
	if i := strings.LastIndex(id, "_"); i >= 0 {
		return id[:i]
	}
	return id
}

func getLease(t *testing.T) *coordinationv1.Lease {
	t.Helper()
	lease, err := theLab.Client.CoordinationV1().Leases(namespace).Get(t.Context(), leaseName, metav1.GetOptions{})
	require.NoError(t, err)
	return lease
}

// bothServing waits until two manager pods are Ready, both in kube-proxy's
// rules for the webhook's Service, and one of them leads; it returns the
// pods and the Lease. (kube-proxy applies changes at most once a second:
// the second of two pods that turn Ready together joins up to a second
// after the first.)
func bothServing(t *testing.T) ([]corev1.Pod, *coordinationv1.Lease) {
	t.Helper()
	var pods []corev1.Pod
	var lease *coordinationv1.Lease
	eventually(t, 2*time.Minute, "two Ready managers in the data plane, one leading", func(ctx context.Context) (bool, error) {
		var err error
		if pods, err = readyManagers(ctx, theLab); err != nil || len(pods) != 2 {
			return false, err
		}
		ips := dataPlaneEndpoints(t)
		for _, p := range pods {
			if !slices.Contains(ips, p.Status.PodIP) {
				return false, nil
			}
		}
		lease = getLease(t)
		return slices.ContainsFunc(pods, func(p corev1.Pod) bool { return p.Name == holderPod(lease) }), nil
	})
	return pods, lease
}

// readyEndpoints are the pods the Service's EndpointSlices list as ready.
func readyEndpoints(ctx context.Context) (map[string]string, error) {
	slices, err := theLab.Client.DiscoveryV1().EndpointSlices(namespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			if ptr.Deref(e.Conditions.Ready, false) && e.TargetRef != nil {
				out[e.TargetRef.Name] = e.Addresses[0]
			}
		}
	}
	return out, nil
}

// admissions is a manager's fledge_admission_duration_seconds_count: the
// Deployment admissions it decided since it started.
func admissions(t *testing.T, pod string) int {
	t.Helper()
	n, ok := metric(t, pod, "fledge_admission_duration_seconds_count")
	require.True(t, ok, "%s serves no fledge_admission_duration_seconds_count", pod)
	return int(n)
}

// metric reads one series, as /metrics writes it (labels sorted by name),
// from the manager of pod; ok is false when the pod serves no such series.
func metric(t *testing.T, pod, series string) (v float64, ok bool) {
	t.Helper()
	m, ok := theLab.ManagerPods()[namespace+"/"+pod]
	require.True(t, ok, "the lab runs no manager for pod %s", pod)
	resp, err := http.Get(m.MetricsURL)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			require.NoError(t, err)
			return n, true
		}
	}
	return 0, false
}

// probeAnnotation is what a probe write changes besides fledge's key.
const probeAnnotation = "ha.fledge.dev/write"

// probeDeployment creates an empty Deployment the probe writes update.
func probeDeployment(t *testing.T, ns, name string) {
	t.Helper()
	labels := map[string]string{"app": name}
	_, err := theLab.Client.AppsV1().Deployments(ns).Create(t.Context(), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](0),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: lab.DemoImage + ":v1"}}},
			},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
}

// probeWrite is a user's update that the webhook must decide: it changes
// fledge.dev/last-rollout, which the webhook is called for and puts back
// (only fledge writes it), and a counter. The update succeeds only if the
// webhook answered, and the answer is in the stored object: the key is
// not there. An error says which.
func probeWrite(ctx context.Context, ns, name string, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		rollout.AnnotationLast: "probe-" + strconv.Itoa(n),
		probeAnnotation:        strconv.Itoa(n),
	}}})
	d, err := users.AppsV1().Deployments(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return err
	}
	if v, ok := d.Annotations[rollout.AnnotationLast]; ok {
		return fmt.Errorf("%s/%s stored %s=%q: the webhook did not decide the update", ns, name, rollout.AnnotationLast, v)
	}
	if d.Annotations[probeAnnotation] != strconv.Itoa(n) {
		return fmt.Errorf("%s/%s has %s=%q after write %d", ns, name, probeAnnotation, d.Annotations[probeAnnotation], n)
	}
	return nil
}

// write is one probe write as the writer saw it.
type write struct {
	start, end time.Time
	err        error
}

// since describes w for a log, its times relative to t0.
func (w write) since(t0 time.Time) string {
	return fmt.Sprintf("%+.2fs…%+.2fs: %v", w.start.Sub(t0).Seconds(), w.end.Sub(t0).Seconds(), w.err)
}

func describe(ws []write, t0 time.Time) []string {
	var out []string
	for _, w := range ws {
		out = append(out, w.since(t0))
	}
	return out
}

// writer makes a probe write every 250ms until stopped, as a user or a CI
// job keeps applying while fledge's pods come and go.
type writer struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	log  []write
}

func startWriter(t *testing.T, ns, name string) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for n := 1; ; n++ {
			start := time.Now()
			err := probeWrite(t.Context(), ns, name, n)
			w.mu.Lock()
			w.log = append(w.log, write{start: start, end: time.Now(), err: err})
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// finish stops the writer and returns its writes.
func (w *writer) finish() []write {
	close(w.stop)
	<-w.done
	return w.log
}

func failures(ws []write) []write {
	return slices.DeleteFunc(slices.Clone(ws), func(w write) bool { return w.err == nil })
}

// eventually polls cond every 100ms for up to timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, timeout, true, cond)
	require.NoError(t, err, "waiting for %s", what)
}

// kubectl runs kubectl as the lab's admin with stdin.
func kubectl(t *testing.T, stdin string, args ...string) {
	t.Helper()
	_, stderr, err := theLab.Kubectl(t.Context(), stdin, args...)
	require.NoError(t, err, stderr)
}

// rolloutNamespace makes an opted-in namespace with a policy of holds
// (pod-health checks only: no Prometheus), web at v1 with 4 Ready pods,
// and an empty Deployment "probe" for probe writes.
func rolloutNamespace(t *testing.T, ns string, holds [3]string) {
	t.Helper()
	require.NoError(t, theLab.CreateNamespace(t.Context(), ns, map[string]string{rollout.LabelEnabled: "true"}))
	kubectl(t, lab.Policy{Namespace: ns, Holds: holds}.Manifest(), "apply", "-f", "-")
	kubectl(t, lab.App{Namespace: ns, Tag: "v1", Replicas: 4}.Manifest(), "apply", "-f", "-")
	eventually(t, time.Minute, "web ready", func(ctx context.Context) (bool, error) {
		d, err := theLab.Client.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		return err == nil && d.Status.ReadyReplicas == 4 && d.Status.UpdatedReplicas == 4, err
	})
	probeDeployment(t, ns, "probe")
}

// release applies web at v2: the webhook starts a rollout.
func release(t *testing.T, ns string) {
	t.Helper()
	kubectl(t, lab.App{Namespace: ns, Tag: "v2", Replicas: 4}.Manifest(), "apply", "-f", "-")
}

// waitState waits until the rollout state of web satisfies cond.
func waitState(t *testing.T, ns, what string, cond func(*rollout.State) bool) *rollout.State {
	t.Helper()
	var got *rollout.State
	eventually(t, 90*time.Second, what, func(ctx context.Context) (bool, error) {
		d, err := theLab.Client.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		got, err = rollout.ParseState(d)
		return got != nil && cond(got), err
	})
	return got
}

// waitOutcome waits until web's rollout is over and returns its outcome.
func waitOutcome(t *testing.T, ns string) *rollout.Outcome {
	t.Helper()
	var out *rollout.Outcome
	eventually(t, 2*time.Minute, "the rollout to end", func(ctx context.Context) (bool, error) {
		d, err := theLab.Client.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil || d.Annotations[rollout.AnnotationState] != "" {
			return false, err
		}
		out, err = rollout.ParseOutcome(d)
		return out != nil, err
	})
	return out
}

// stepEvents are web's Step Events (one per step started), oldest first,
// each with how many times it was reported.
func stepEvents(t *testing.T, ns string) (msgs []string, counts []int32) {
	t.Helper()
	list, err := theLab.Client.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.name=web,reason=Step"})
	require.NoError(t, err)
	events := list.Items
	slices.SortStableFunc(events, func(a, b corev1.Event) int { return eventTime(a).Compare(eventTime(b)) })
	for _, e := range events {
		n := max(e.Count, 1)
		if e.Series != nil {
			n = max(n, e.Series.Count)
		}
		msgs, counts = append(msgs, e.Message), append(counts, n)
	}
	return msgs, counts
}

func eventTime(e corev1.Event) time.Time {
	if !e.EventTime.IsZero() {
		return e.EventTime.Time
	}
	return e.FirstTimestamp.Time
}

// managerLogs prints the tail of every manager's log when t failed.
func managerLogs(t *testing.T) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for key, m := range theLab.ManagerPods() {
			out, _ := exec.Command("tail", "-n", "40", m.Log).Output()
			t.Logf("----- manager %s (%s)\n%s", key, m.Log, out)
		}
	})
}
