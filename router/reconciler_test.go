package router

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	clientevents "k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/fledge-dev/fledge/policy"
	"github.com/fledge-dev/fledge/rollout"
)

var reconcilerKeys = rollout.StaticKeys{{ID: "20261202T000000Z", Secret: []byte("router-test-key-of-32-bytes-....")}}

// dropFixture is web in an opted-in namespace, paused on demo:v2 with the
// state annotation raw, and a canary it owns.
func dropFixture(t *testing.T, raw string) (*Reconciler, *clientevents.FakeRecorder, client.Client) {
	t.Helper()
	labels := map[string]string{"app": "web"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "uid-web",
			Annotations: map[string]string{rollout.AnnotationState: raw}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](4), Paused: true,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "demo:v2"}}},
			},
		},
	}
	canary := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web-canary", Namespace: "shop", UID: "uid-canary",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "uid-web", Controller: ptr.To(true)}}}}
	rollout.SetCanarySpec(canary, d, 1, 1)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{rollout.LabelEnabled: "true"}}}
	c := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(ns, d, canary).Build()
	rec := clientevents.NewFakeRecorder(10)
	return &Reconciler{
		Client: c, APIReader: c, Events: rec,
		Clock:   clocktesting.NewFakePassiveClock(time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)),
		Metrics: NewMetrics(prometheus.NewRegistry()),
		Keys:    reconcilerKeys,
	}, rec, c
}

func sealedFor(t *testing.T, uid types.UID, s *rollout.State) string {
	t.Helper()
	raw, err := rollout.SealState(s, reconcilerKeys, uid)
	require.NoError(t, err)
	return raw
}

func TestReconcileDropsAStateFledgeDidNotWrite(t *testing.T) {
	promoting := &rollout.State{Phase: rollout.Promoting, Attempt: 1, Policy: *policy.Default()}
	for _, tc := range []struct {
		name, raw, why string
	}{
		{"forged through the status subresource before the webhook covered it", `{"phase":"Promoting"}`,
			"it has no seal"},
		{"copied from another Deployment", sealedFor(t, "uid-other", promoting),
			"its seal does not match: it was copied from another Deployment, restored from a backup, or changed by hand"},
		{"unparseable", `{"phase":`,
			"it does not parse: unexpected end of JSON input"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, rec, c := dropFixture(t, tc.raw)
			res, err := r.Reconcile(t.Context(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "web"}})
			require.NoError(t, err)
			assert.Equal(t, ctrl.Result{}, res)

			var d appsv1.Deployment
			require.NoError(t, c.Get(t.Context(), client.ObjectKey{Namespace: "shop", Name: "web"}, &d))
			assert.NotContains(t, d.Annotations, rollout.AnnotationState)
			assert.True(t, d.Spec.Paused, "the spec is left as it was")
			assert.Equal(t, "demo:v2", d.Spec.Template.Spec.Containers[0].Image)
			assert.Equal(t, int32(4), *d.Spec.Replicas)
			err = c.Get(t.Context(), client.ObjectKey{Namespace: "shop", Name: "web-canary"}, &appsv1.Deployment{})
			assert.True(t, apierrors.IsNotFound(err), "the canary goes: %v", err)

			require.Len(t, rec.Events, 1)
			assert.Equal(t, "Warning StateRejected Removed the rollout state of web without acting on it: "+tc.why+
				". No rollout runs; the Deployment is left paused (kubectl rollout resume lifts it), and its next template change starts a canary rollout", <-rec.Events)
		})
	}
}

func TestReconcileKeepsAStateFledgeWrote(t *testing.T) {
	s := &rollout.State{Phase: rollout.Paused, Attempt: 1, Policy: *policy.Default(),
		StartedAt: metav1.NewMicroTime(time.Date(2026, 12, 2, 0, 59, 0, 0, time.UTC))}
	raw := sealedFor(t, "uid-web", s)
	r, rec, c := dropFixture(t, raw)
	_, err := r.Reconcile(t.Context(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "web"}})
	require.NoError(t, err)

	var d appsv1.Deployment
	require.NoError(t, c.Get(t.Context(), client.ObjectKey{Namespace: "shop", Name: "web"}, &d))
	got, err := rollout.OpenState(&d, reconcilerKeys)
	require.NoError(t, err, "the router's own state stays, sealed")
	assert.Equal(t, rollout.Paused, got.Phase)
	for len(rec.Events) > 0 {
		assert.NotContains(t, <-rec.Events, "StateRejected")
	}
}

func TestReconcileReSealsAStateWithARotatedKey(t *testing.T) {
	old := rollout.StaticKeys{{ID: "20261101T000000Z", Secret: []byte("the-previous-key-of-32-bytes-...")}}
	s := &rollout.State{Phase: rollout.Paused, Attempt: 1, Policy: *policy.Default(),
		StartedAt: metav1.NewMicroTime(time.Date(2026, 12, 2, 0, 59, 0, 0, time.UTC))}
	raw, err := rollout.SealState(s, old, "uid-web")
	require.NoError(t, err)
	r, _, c := dropFixture(t, raw)
	r.Keys = rollout.StaticKeys{reconcilerKeys[0], old[0]}
	_, err = r.Reconcile(t.Context(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "web"}})
	require.NoError(t, err)

	var d appsv1.Deployment
	require.NoError(t, c.Get(t.Context(), client.ObjectKey{Namespace: "shop", Name: "web"}, &d))
	got, err := rollout.OpenState(&d, reconcilerKeys)
	require.NoError(t, err, "sealed again with the signing key alone")
	assert.Contains(t, got.Seal, "20261202T000000Z:")
}

// The router's ReplicaSet and HPA LISTs are served from the apiserver's
// watch cache, each with its own selector: the client writes a call's
// selectors into its options, and workers list concurrently.
func TestListsAreServedFromTheWatchCache(t *testing.T) {
	type seen struct{ kind, rv, labels string }
	var lists []seen
	base := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).Build()
	reader := interceptor.NewClient(base, interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			lo := (&client.ListOptions{}).ApplyOptions(opts).AsListOptions()
			lists = append(lists, seen{fmt.Sprintf("%T", list), lo.ResourceVersion, lo.LabelSelector})
			return c.List(ctx, list, opts...)
		},
	})
	r := &Reconciler{APIReader: reader}
	_, err := r.replicaSets(t.Context(), "shop", &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}})
	require.NoError(t, err)
	_, err = r.replicaSets(t.Context(), "shop", &metav1.LabelSelector{MatchLabels: map[string]string{"app": "cart"}})
	require.NoError(t, err)
	_, err = r.hasHPA(t.Context(), &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}})
	require.NoError(t, err)
	assert.Equal(t, []seen{
		{"*v1.ReplicaSetList", "0", "app=web"},
		{"*v1.ReplicaSetList", "0", "app=cart"},
		{"*v2.HorizontalPodAutoscalerList", "0", ""},
	}, lists)
}
