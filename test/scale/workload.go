package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/fledge-dev/fledge/policy"
	"github.com/fledge-dev/fledge/rollout"
	"github.com/fledge-dev/fledge/test/lab"
)

// Names of what the run creates.
const (
	partOf = "fledge-scale" // label app.kubernetes.io/part-of of every Deployment
	// image and releasedImage are the versions before and after a rollout:
	// images other than the demo's, so the lab runs no process for the pods.
	image         = "fledge/scale:v1"
	releasedImage = "fledge/scale:v2"
	// The latency probe's namespaces: the same content, one opted in.
	probeOn  = "scale-probe-on"
	probeOff = "scale-probe-off"
	// probeName is the probe's Deployment; its PATCHes switch its policy
	// annotation between the two policies of its namespace.
	probeName   = "probe"
	policyA     = policy.DefaultConfigMapName
	policyB     = policy.DefaultConfigMapName + "-b"
	concurrency = 16 // creates in flight at once
)

// workload creates the run's namespaces and Deployments and watches them.
type workload struct {
	cfg    config
	client kubernetes.Interface
	// deployments are the Deployments of the run, by index.
	deployments []types.NamespacedName

	informer cache.SharedIndexInformer
	stop     chan struct{}
}

// newWorkload makes a client of the lab's admin that sends protobuf (the
// cheapest for the apiserver to decode, on a machine it shares with the
// manager) at no client-side rate limit.
func newWorkload(l *lab.Lab, cfg config) (*workload, error) {
	rc := rest.CopyConfig(l.Config)
	rc.QPS, rc.Burst = -1, 0
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	rc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	rc.WarningHandler = rest.NoWarnings{} // the rollouts' "canary rollout started"
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	w := &workload{cfg: cfg, client: c}
	for i := range cfg.Deployments {
		w.deployments = append(w.deployments, types.NamespacedName{
			Namespace: namespaceName(cfg.namespaceOf(i)), Name: fmt.Sprintf("app-%05d", i),
		})
	}
	return w, nil
}

func namespaceName(i int) string { return fmt.Sprintf("scale-%02d", i) }

// createNamespaces creates the opted-in namespaces, each with its policy,
// and the probe's two namespaces, each with two policies.
func (w *workload) createNamespaces(ctx context.Context) error {
	optedIn := map[string]string{rollout.LabelEnabled: "true"}
	for i := range w.cfg.Namespaces {
		if err := w.createNamespace(ctx, namespaceName(i), optedIn, policyA); err != nil {
			return err
		}
	}
	if w.cfg.Rollouts == 0 {
		return nil
	}
	if err := w.createNamespace(ctx, probeOn, optedIn, policyA, policyB); err != nil {
		return err
	}
	return w.createNamespace(ctx, probeOff, nil, policyA, policyB)
}

func (w *workload) createNamespace(ctx context.Context, name string, labels map[string]string, policies ...string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if _, err := w.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	for _, p := range policies {
		cm, err := w.policy(name, p)
		if err != nil {
			return err
		}
		if _, err := w.client.CoreV1().ConfigMaps(name).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create policy %s/%s: %w", name, p, err)
		}
	}
	return nil
}

// policy is the lab's three-step policy (5%, 25%, 50%) with the run's
// hold and pod-health checks only. Its readyTimeout is 2 minutes, not the
// lab's 30s, so that a lab slow to start canary pods under load does not
// pass for a rollback fledge decided.
func (w *workload) policy(namespace, name string) (*corev1.ConfigMap, error) {
	hold := w.cfg.Hold.String()
	manifest := lab.Policy{Namespace: namespace, Holds: [3]string{hold, hold, hold}, ReadyTimeout: "2m"}.Manifest()
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal([]byte(manifest), &cm); err != nil {
		return nil, fmt.Errorf("the lab's policy manifest: %w", err)
	}
	cm.Name = name
	return &cm, nil
}

// deployment is Deployment name of namespace with replicas pods of image.
func deployment(namespace, name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name, "app.kubernetes.io/part-of": partOf}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers:                    []corev1.Container{{Name: "app", Image: image}},
					TerminationGracePeriodSeconds: ptr.To[int64](0),
				},
			},
		},
	}
}

// createDeployments creates every Deployment of the run, concurrency at a
// time.
func (w *workload) createDeployments(ctx context.Context) error {
	return forEach(ctx, len(w.deployments), concurrency, func(ctx context.Context, i int) error {
		key := w.deployments[i]
		d := deployment(key.Namespace, key.Name, w.cfg.replicasOf(i))
		if _, err := w.client.AppsV1().Deployments(key.Namespace).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create deployment %s: %w", key, err)
		}
		return nil
	})
}

// forEach runs do for 0..n-1, at most parallel at once, and returns the
// first error.
func forEach(ctx context.Context, n, parallel int, do func(context.Context, int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	next := make(chan int)
	for range min(parallel, n) {
		wg.Go(func() {
			for i := range next {
				if err := do(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// watch starts an informer on the run's Deployments (canaries included,
// which carry their Deployment's labels), so that waiting for them costs
// the apiserver one watch rather than a list every few seconds.
func (w *workload) watch(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(w.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = "app.kubernetes.io/part-of=" + partOf }))
	w.informer = factory.Apps().V1().Deployments().Informer()
	w.stop = make(chan struct{})
	factory.Start(w.stop)
	if !cache.WaitForCacheSync(ctx.Done(), w.informer.HasSynced) {
		return fmt.Errorf("watch the Deployments: %w", ctx.Err())
	}
	return nil
}

// stopWatching stops the informer.
func (w *workload) stopWatching() {
	if w.stop != nil {
		close(w.stop)
		w.stop = nil
	}
}

// get returns the watched Deployment key, or nil.
func (w *workload) get(key types.NamespacedName) *appsv1.Deployment {
	obj, ok, _ := w.informer.GetStore().GetByKey(key.String())
	if !ok {
		return nil
	}
	return obj.(*appsv1.Deployment)
}

// rolledOut reports whether d's controller has every pod of its template
// Ready.
func rolledOut(d *appsv1.Deployment) bool {
	want := ptr.Deref(d.Spec.Replicas, 1)
	s := d.Status
	return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.ReadyReplicas == want && s.Replicas == want
}

// waitRolledOut waits until every Deployment of the run has its pods
// Ready, saying every 10s how far it is.
func (w *workload) waitRolledOut(ctx context.Context) error {
	pods := w.cfg.pods()
	return poll(ctx, time.Second, 10*time.Second, func(report bool) (bool, error) {
		ready, readyPods := 0, 0
		for _, key := range w.deployments {
			d := w.get(key)
			if d == nil {
				continue
			}
			readyPods += int(d.Status.ReadyReplicas)
			if rolledOut(d) {
				ready++
			}
		}
		if report || ready == len(w.deployments) {
			say("%d of %d Deployments rolled out, %d of %d pods Ready", ready, len(w.deployments), readyPods, pods)
		}
		return ready == len(w.deployments), nil
	})
}

// poll calls check every interval until it is done, telling it every
// reportEvery to say how far it is.
func poll(ctx context.Context, interval, reportEvery time.Duration, check func(report bool) (bool, error)) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	last := time.Now()
	for {
		report := time.Since(last) >= reportEvery
		if report {
			last = time.Now()
		}
		done, err := check(report)
		if done || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// release changes the image of the rollout Deployments, all at once, and
// checks that each answer carries the rollout fledge's webhook started.
func (w *workload) release(ctx context.Context, targets []types.NamespacedName) error {
	patch := []byte(fmt.Sprintf(`[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":%q}]`, releasedImage))
	return forEach(ctx, len(targets), len(targets), func(ctx context.Context, i int) error {
		key := targets[i]
		d, err := w.client.AppsV1().Deployments(key.Namespace).Patch(ctx, key.Name, types.JSONPatchType, patch, metav1.PatchOptions{})
		if err != nil {
			return fmt.Errorf("change the image of %s: %w", key, err)
		}
		if d.Annotations[rollout.AnnotationState] == "" || !d.Spec.Paused {
			return fmt.Errorf("change the image of %s: fledge started no rollout (the answer is not paused or has no %s)", key, rollout.AnnotationState)
		}
		return nil
	})
}

// waitOutcomes waits until every target's rollout has ended, and returns
// their outcomes. It says every 10s how many ended, and how.
func (w *workload) waitOutcomes(ctx context.Context, targets []types.NamespacedName) (map[types.NamespacedName]*rollout.Outcome, error) {
	out := map[types.NamespacedName]*rollout.Outcome{}
	err := poll(ctx, time.Second, 10*time.Second, func(report bool) (bool, error) {
		for _, key := range targets {
			if out[key] != nil {
				continue
			}
			d := w.get(key)
			if d == nil || d.Annotations[rollout.AnnotationState] != "" || d.Annotations[rollout.AnnotationLast] == "" {
				continue
			}
			o, err := rollout.ParseOutcome(d)
			if err != nil {
				return false, err
			}
			out[key] = o
		}
		if report || len(out) == len(targets) {
			say("rollouts: %s", phaseCounts(out, len(targets)))
		}
		return len(out) == len(targets), nil
	})
	return out, err
}

// phaseCounts says how many rollouts ended in each phase: "97 Succeeded,
// 3 running".
func phaseCounts(outcomes map[types.NamespacedName]*rollout.Outcome, total int) string {
	counts := map[rollout.Phase]int{}
	for _, o := range outcomes {
		counts[o.Phase]++
	}
	var parts []string
	for _, p := range sortedKeys(counts) {
		parts = append(parts, fmt.Sprintf("%d %s", counts[p], p))
	}
	if running := total - len(outcomes); running > 0 || len(parts) == 0 {
		parts = append(parts, fmt.Sprintf("%d running", running))
	}
	return strings.Join(parts, ", ")
}

func sortedKeys[K ~string, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
}

// createProbes creates the latency probe's Deployment, the same in both
// of its namespaces.
func (w *workload) createProbes(ctx context.Context) error {
	for _, ns := range []string{probeOn, probeOff} {
		d := deployment(ns, probeName, 1)
		d.Annotations = map[string]string{policy.Annotation: policyA}
		if _, err := w.client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create the latency probe %s/%s: %w", ns, probeName, err)
		}
	}
	return nil
}

// probePatch switches the probe Deployment of namespace to policy name,
// and returns how long the PATCH took, from sending to the answer.
func (w *workload) probePatch(ctx context.Context, namespace, name string) (time.Duration, error) {
	patch := []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, policy.Annotation, name))
	start := time.Now()
	_, err := w.client.AppsV1().Deployments(namespace).Patch(ctx, probeName, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return 0, fmt.Errorf("patch the latency probe %s/%s: %w", namespace, probeName, err)
	}
	return time.Since(start), nil
}
