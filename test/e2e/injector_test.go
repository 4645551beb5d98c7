package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/fledge-dev/fledge/certs"
	"github.com/fledge-dev/fledge/rollout"
	"github.com/fledge-dev/fledge/test/lab"
)

// The sidecar a Deployment-level injector adds to every template it sees.
const (
	sidecarName  = "sidecar"
	sidecarImage = "fledge/demo:sidecar"
	// injectorConfigName sorts before fledge's MutatingWebhookConfiguration
	// ("fledge"): the apiserver calls configurations in name order, so the
	// injector runs first (docs/decisions.md, "Other mutating webhooks").
	injectorConfigName = "a-sidecar-injector"
)

// injectorCall is one AdmissionReview the injector answered.
type injectorCall struct {
	Op      admissionv1.Operation
	Name    string
	DryRun  bool
	Patched bool
}

func (c injectorCall) String() string {
	s := fmt.Sprintf("%s %s", c.Op, c.Name)
	if c.DryRun {
		s += " (dry run)"
	}
	if c.Patched {
		s += ": sidecar added"
	}
	return s
}

// injector is a mutating admission webhook that adds the sidecar container
// to a Deployment's pod template when it has none, the way workload-level
// injectors do: idempotent, so a template that already has the sidecar is
// admitted as it is.
type injector struct {
	mu    sync.Mutex
	calls []injectorCall
}

func (inj *injector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
		http.Error(w, fmt.Sprintf("decode AdmissionReview: %v", err), http.StatusBadRequest)
		return
	}
	req := review.Request
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	call := injectorCall{Op: req.Operation, Name: req.Name, DryRun: ptr.Deref(req.DryRun, false)}
	var d appsv1.Deployment
	if err := json.Unmarshal(req.Object.Raw, &d); err != nil {
		resp.Allowed = false
		resp.Result = &metav1.Status{Message: "sidecar injector: decode object: " + err.Error(), Code: http.StatusBadRequest}
	} else if !hasSidecar(d.Spec.Template.Spec.Containers) {
		patch, _ := json.Marshal([]map[string]any{{
			"op":    "add",
			"path":  "/spec/template/spec/containers/-",
			"value": map[string]string{"name": sidecarName, "image": sidecarImage},
		}})
		resp.Patch = patch
		resp.PatchType = ptr.To(admissionv1.PatchTypeJSONPatch)
		call.Patched = true
	}
	if call.Name == "" {
		call.Name = d.Name
	}
	inj.mu.Lock()
	inj.calls = append(inj.calls, call)
	inj.mu.Unlock()
	review.Request = nil
	review.Response = resp
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&review)
}

// Calls returns the reviews answered so far, without the probe's.
func (inj *injector) Calls() []injectorCall {
	inj.mu.Lock()
	defer inj.mu.Unlock()
	var out []injectorCall
	for _, c := range inj.calls {
		if c.Name != injectorProbe {
			out = append(out, c)
		}
	}
	return out
}

func hasSidecar(containers []corev1.Container) bool {
	return slices.ContainsFunc(containers, func(c corev1.Container) bool { return c.Name == sidecarName })
}

// injectorProbe is the Deployment that startInjector creates with a dry
// run to see the apiserver call the injector.
const injectorProbe = "injector-probe"

// startInjector serves the injector over HTTPS on 127.0.0.1, with a
// certificate of fledge's certs package, registers it for the Deployments
// of namespace ns (CREATE and UPDATE), and waits until the apiserver calls
// it. The configuration is deleted and the server stopped at cleanup.
func startInjector(t *testing.T, ns string) *injector {
	t.Helper()
	now := time.Now()
	ca, err := certs.NewCA("sidecar-injector-ca", now, time.Hour)
	require.NoError(t, err)
	serving, err := certs.NewServing(ca, now, time.Hour, nil, []net.IP{net.ParseIP("127.0.0.1")})
	require.NoError(t, err)

	inj := &injector{}
	srv := httptest.NewUnstartedServer(inj)
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{serving.Cert.Raw}, PrivateKey: serving.Key, Leaf: serving.Cert}},
		MinVersion:   tls.VersionTLS12,
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: injectorConfigName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "sidecar.injector.lab.fledge.dev",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				URL:      ptr.To(srv.URL + "/inject"),
				CABundle: certs.EncodeCerts(ca.Cert),
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule: admissionregistrationv1.Rule{
					APIGroups: []string{"apps"}, APIVersions: []string{"v1"},
					Resources: []string{"deployments"}, Scope: ptr.To(admissionregistrationv1.NamespacedScope),
				},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpIn, Values: []string{ns},
			}}},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](5),
		}},
	}
	_, err = theLab.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(t.Context(), cfg, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		// t.Context() is over by now.
		err := theLab.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), injectorConfigName, metav1.DeleteOptions{})
		assert.NoError(t, err, "delete the injector's configuration")
	})

	// The apiserver picks configurations up from an informer: probe with a
	// dry-run create until the answer carries the sidecar.
	probe := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: injectorProbe, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": injectorProbe}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": injectorProbe}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: lab.DemoImage + ":v1"}}},
			},
		},
	}
	eventually(t, "the apiserver calling the injector", func(ctx context.Context) (bool, error) {
		got, err := theLab.Client.AppsV1().Deployments(ns).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Logf("probe: %v", err)
			return false, nil
		}
		return hasSidecar(got.Spec.Template.Spec.Containers), nil
	})
	return inj
}

// containersOf renders a template's containers as "name=image", in order.
func containersOf(spec corev1.PodSpec) []string {
	var out []string
	for _, c := range spec.Containers {
		out = append(out, c.Name+"="+c.Image)
	}
	return out
}

// noRollout checks for a few seconds that web stays as it is: no rollout
// state, not paused, the same template and the same last outcome.
func noRollout(t *testing.T, ns, why string, before *appsv1.Deployment) {
	t.Helper()
	hash := rollout.TemplateHash(&before.Spec.Template)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		d := get(t, ns, "web")
		require.Empty(t, d.Annotations[rollout.AnnotationState], "%s: a rollout started", why)
		require.False(t, d.Spec.Paused, "%s: web was paused", why)
		require.Equal(t, hash, rollout.TemplateHash(&d.Spec.Template), "%s: the template changed: %v", why, containersOf(d.Spec.Template.Spec))
		require.Equal(t, before.Annotations[rollout.AnnotationLast], d.Annotations[rollout.AnnotationLast], "%s: the last outcome changed", why)
		time.Sleep(200 * time.Millisecond)
	}
}

// reapply applies web at tag again, as kubectl apply does, as Argo CD's
// server-side sync does and with kubectl replace, and checks that none of
// them starts a rollout.
func reapply(t *testing.T, ns, tag string, replicas int) {
	t.Helper()
	before := get(t, ns, "web")
	out, stderr, err := kubectl(t, app(ns, tag, replicas), "apply", "-f", "-")
	require.NoError(t, err, stderr)
	assert.NotContains(t, stderr, "fledge:", "no warning of fledge")
	// kubectl may say "configured": its patch orders the containers
	// ($setElementOrder) without the sidecar, which keeps it where it is.
	d := get(t, ns, "web")
	t.Logf("kubectl apply of %s again: %q; generation %d -> %d, resourceVersion %s -> %s", tag, out, before.Generation, d.Generation, before.ResourceVersion, d.ResourceVersion)
	assert.Equal(t, before.Generation, d.Generation, "kubectl apply of %s again changed web's spec or annotations", tag)
	assert.Equal(t, before.Annotations, d.Annotations, "kubectl apply of %s again changed web's annotations", tag)
	noRollout(t, ns, "kubectl apply of "+tag+" again", before)

	out, stderr, err = kubectl(t, app(ns, tag, replicas), "apply", "--server-side", "--force-conflicts", "--field-manager=argocd", "-f", "-")
	require.NoError(t, err, stderr)
	assert.Contains(t, out, "deployment.apps/web serverside-applied")
	assert.NotContains(t, stderr, "fledge:", "no warning of fledge")
	d = get(t, ns, "web")
	_, lastApplied := d.Annotations[corev1.LastAppliedConfigAnnotation]
	t.Logf("server-side apply of %s as argocd: generation %d -> %d, resourceVersion %s -> %s, last-applied annotation kept: %v", tag, before.Generation, d.Generation, before.ResourceVersion, d.ResourceVersion, lastApplied)
	noRollout(t, ns, "server-side apply of "+tag+" as argocd", before)
	withSidecar := []string{"app=" + lab.DemoImage + ":" + tag, sidecarName + "=" + sidecarImage}
	assert.Equal(t, withSidecar, containersOf(get(t, ns, "web").Spec.Template.Spec), "the sidecar survives a server-side apply that does not list it")

	// kubectl replace sends a template without the sidecar: the injector,
	// called before fledge, adds it back, so fledge sees the same template.
	deployment, _, _ := strings.Cut(app(ns, tag, replicas), "\n---\n")
	out, stderr, err = kubectl(t, deployment, "replace", "-f", "-")
	require.NoError(t, err, stderr)
	assert.Contains(t, out, "deployment.apps/web replaced")
	// The manifest has no annotations: replacing web drops fledge's record
	// of the last rollout, which fledge puts back, and says so. No more.
	var want []string
	if before.Annotations[rollout.AnnotationLast] != "" {
		want = []string{"Warning: fledge: annotation " + rollout.AnnotationLast + " is written by fledge only; your change to it was undone"}
	}
	assert.Equal(t, want, fledgeWarnings(stderr), "fledge's warnings on kubectl replace of %s", tag)
	noRollout(t, ns, "kubectl replace of "+tag, before)
	assert.Equal(t, withSidecar, containersOf(get(t, ns, "web").Spec.Template.Spec), "the injector put the sidecar back on kubectl replace")
}

// fledgeWarnings are the lines of kubectl's stderr that fledge's webhook wrote.
func fledgeWarnings(stderr string) []string {
	var out []string
	for _, line := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(line, "Warning: fledge:") {
			out = append(out, line)
		}
	}
	return out
}

// replicaSetWatch records every ReplicaSet of web and of its canary seen
// while it runs, with its containers: a router fighting the injector would
// show as more than one canary ReplicaSet per attempt.
type replicaSetWatch struct {
	mu     sync.Mutex
	seen   map[string]string // ReplicaSet name → "owner: containers"
	cancel context.CancelFunc
	done   chan struct{}
}

func watchReplicaSets(t *testing.T, ns string) *replicaSetWatch {
	ctx, cancel := context.WithCancel(t.Context())
	w := &replicaSetWatch{seen: map[string]string{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			rss, err := theLab.Client.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
			if err == nil {
				w.mu.Lock()
				for _, rs := range rss.Items {
					owner := "-"
					if ref := metav1.GetControllerOf(&rs); ref != nil {
						owner = ref.Name
					}
					w.seen[rs.Name] = owner + ": " + strings.Join(containersOf(rs.Spec.Template.Spec), ", ")
				}
				w.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(w.stop)
	return w
}

func (w *replicaSetWatch) stop() { w.cancel(); <-w.done }

// byOwner returns what was seen, "owner: containers" per ReplicaSet, sorted.
func (w *replicaSetWatch) byOwner() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, v := range w.seen {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// TestSidecarInjectorIsNotARelease runs a Deployment-level sidecar injector
// (a real HTTPS mutating webhook, registered before fledge's) in an
// opted-in namespace: re-applying the manifest that lacks the sidecar is no
// release, a real release rolls out a canary that keeps the sidecar without
// the router and the injector fighting over it, and the promotion is not
// followed by another rollout (OPERATIONS.md, "Another mutating webhook
// that changes the template").
func TestSidecarInjectorIsNotARelease(t *testing.T) {
	ns := namespace(t, "injector", true)
	// Step 1 holds long enough to watch the canary for 5s.
	_, stderr, err := kubectl(t, lab.Policy{Namespace: ns, Holds: [3]string{"10s", "3s", "3s"}}.Manifest(), "apply", "-f", "-")
	require.NoError(t, err, stderr)
	inj := startInjector(t, ns)

	// 1. web v1 gets the sidecar at its creation; applying v1 again is no release.
	deployed(t, ns, "v1", 4)
	d := get(t, ns, "web")
	require.Equal(t, []string{"app=fledge/demo:v1", "sidecar=" + sidecarImage}, containersOf(d.Spec.Template.Spec), "the stored template has the sidecar")
	assert.Empty(t, d.Annotations[rollout.AnnotationState])
	assert.False(t, d.Spec.Paused)
	reapply(t, ns, "v1", 4)
	assert.Equal(t, map[string]int32{"fledge/demo:v1": 4}, stableRS(t, ns), "one ReplicaSet, never replaced")

	// 2. v2 is a release: its canary is the mutated template, left alone.
	rsWatch := watchReplicaSets(t, ns)
	warnings := release(t, ns, "v2", 4)
	t.Logf("kubectl said on release:\n%s", warnings)
	holding := waitState(t, ns, "step 1 holding", func(s *rollout.State) bool { return s.Step == 0 && s.HoldingSince != nil })
	assert.Equal(t, int32(1), holding.Attempt)
	c, err := theLab.Client.AppsV1().Deployments(ns).Get(t.Context(), "web-canary", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, []string{"app=fledge/demo:v2", "sidecar=" + sidecarImage}, containersOf(c.Spec.Template.Spec),
		"the canary runs the new app image with exactly one sidecar")
	assert.Equal(t, holding.CanaryRevision, rollout.TemplateHash(&get(t, ns, "web").Spec.Template), "the rollout is of the template as stored, sidecar included")

	// The router does not fight the injector: for 5s of the hold the canary
	// is not written (its generation stays), nor its ReplicaSet replaced.
	gen := c.Generation
	canaryRS := func() []string {
		rss, err := theLab.Client.AppsV1().ReplicaSets(ns).List(t.Context(), metav1.ListOptions{LabelSelector: rollout.LabelTrack + "=" + rollout.TrackCanary})
		require.NoError(t, err)
		var names []string
		for _, rs := range rss.Items {
			names = append(names, rs.Name)
		}
		return names
	}
	rsBefore := canaryRS()
	require.Len(t, rsBefore, 1, "one canary ReplicaSet")
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		c, err := theLab.Client.AppsV1().Deployments(ns).Get(t.Context(), "web-canary", metav1.GetOptions{})
		require.NoError(t, err)
		require.Equal(t, gen, c.Generation, "the canary was written during its hold: %v", containersOf(c.Spec.Template.Spec))
	}
	assert.Equal(t, rsBefore, canaryRS(), "the canary's ReplicaSet is the same after 5s of hold")
	s, err := rollout.ParseState(get(t, ns, "web"))
	require.NoError(t, err)
	require.NotNil(t, s)
	require.Equal(t, int32(0), s.Step, "the 10s hold of step 1 outlasted the 5s watch")
	pods, err := theLab.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: rollout.LabelTrack + "=" + rollout.TrackCanary})
	require.NoError(t, err)
	for _, p := range pods.Items {
		assert.Equal(t, []string{"app=fledge/demo:v2", "sidecar=" + sidecarImage}, containersOf(p.Spec), "canary pod %s", p.Name)
	}

	out := waitOutcome(t, ns)
	assert.Equal(t, rollout.Succeeded, out.Phase, "reason: %+v", out.Reason)
	assert.Equal(t, int32(1), out.Attempt)
	assert.Equal(t, holding.CanaryRevision, out.CanaryRevision)
	canaryGone(t, ns)
	eventually(t, "4 pods of v2 with the sidecar", func(ctx context.Context) (bool, error) {
		pods, err := theLab.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return false, err
		}
		n := 0
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			if !slices.Equal([]string{"app=fledge/demo:v2", "sidecar=" + sidecarImage}, containersOf(p.Spec)) {
				return false, nil
			}
			n++
		}
		return n == 4, nil
	})
	d = get(t, ns, "web")
	assert.False(t, d.Spec.Paused)
	assert.Equal(t, map[string]int32{"fledge/demo:v2": 4}, stableRS(t, ns))

	// No rollout follows the promotion, nor the GitOps sync of v2 after it.
	noRollout(t, ns, "after the promotion", d)
	reapply(t, ns, "v2", 4)
	after, err := rollout.ParseOutcome(get(t, ns, "web"))
	require.NoError(t, err)
	assert.Equal(t, out, after, "the outcome stays that of attempt 1")

	rsWatch.stop()
	seen := rsWatch.byOwner()
	t.Logf("ReplicaSets seen during the rollout:\n  %s", strings.Join(seen, "\n  "))
	assert.Equal(t, []string{
		"web-canary: app=fledge/demo:v2, sidecar=" + sidecarImage,
		"web: app=fledge/demo:v1, sidecar=" + sidecarImage,
		"web: app=fledge/demo:v2, sidecar=" + sidecarImage,
	}, seen, "one canary ReplicaSet, and web's v1 and v2: nothing replaced a template")

	// The injector had to add the sidecar at web's creation and to the
	// templates of kubectl replace only: every template fledge wrote (the
	// canary, the pause, the promotion) kept it.
	var patched []string
	calls := inj.Calls()
	for _, c := range calls {
		if c.Patched {
			patched = append(patched, c.String())
		}
	}
	t.Logf("the injector answered %d reviews: %v", len(calls), calls)
	assert.Equal(t, []string{
		"CREATE web: sidecar added",
		"UPDATE web: sidecar added", // kubectl replace of v1
		"UPDATE web: sidecar added", // kubectl replace of v2
	}, patched)
	assert.True(t, slices.ContainsFunc(calls, func(c injectorCall) bool { return c.Op == admissionv1.Create && c.Name == "web-canary" }),
		"the injector saw the canary's creation")
}
