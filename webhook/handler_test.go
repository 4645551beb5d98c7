package webhook

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/fledge-dev/fledge/rollout"
)

// server serves the Deployment webhook the way the manager does, over HTTP.
func server(t testing.TB, objs ...runtime.Object) *httptest.Server {
	h := &Deployments{
		Reader: fake.NewClientBuilder().WithRuntimeObjects(objs...).Build(),
		Self:   "system:serviceaccount:fledge-system:fledge",
		Keys:   testKeys,
		Clock:  clocktesting.NewFakePassiveClock(now),
	}
	srv := httptest.NewServer(&admission.Webhook{Handler: h})
	t.Cleanup(srv.Close)
	return srv
}

// review is an AdmissionReview of a Deployment UPDATE from old to cur.
func review(t testing.TB, user string, old, cur any) []byte {
	return reviewOf(t, admissionv1.Update, "", user, old, cur)
}

// reviewOf is an AdmissionReview of a Deployment operation on subresource
// ("" for the Deployment itself); old is nil for a CREATE.
func reviewOf(t testing.TB, op admissionv1.Operation, subresource, user string, old, cur any) []byte {
	var oldRaw []byte
	if old != nil {
		var err error
		oldRaw, err = json.Marshal(old)
		require.NoError(t, err)
	}
	curRaw, err := json.Marshal(cur)
	require.NoError(t, err)
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID("0d4f6a4e-1111-2222-3333-444455556666"),
			Kind:      metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"},
			Resource:  metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"},
			Namespace: "team-a", Name: "web",
			SubResource: subresource,
			Operation:   op,
			UserInfo:    authenticationv1.UserInfo{Username: user},
			Object:      runtime.RawExtension{Raw: curRaw},
			OldObject:   runtime.RawExtension{Raw: oldRaw},
		},
	})
	require.NoError(t, err)
	return body
}

// post sends body to the webhook and decodes its AdmissionReview answer.
func post(t testing.TB, srv *httptest.Server, body []byte) (int, admissionv1.AdmissionReview) {
	resp, err := http.Post(srv.URL, "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	var out admissionv1.AdmissionReview
	if resp.StatusCode == http.StatusOK {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	}
	return resp.StatusCode, out
}

func TestHandlerPatchesAStartedRollout(t *testing.T) {
	srv := server(t)
	code, out := post(t, srv, review(t, "alice", web("demo:v1"), web("demo:v2")))
	require.Equal(t, http.StatusOK, code)
	require.NotNil(t, out.Response)
	assert.Equal(t, types.UID("0d4f6a4e-1111-2222-3333-444455556666"), out.Response.UID)
	assert.True(t, out.Response.Allowed)
	assert.Equal(t, []string{"fledge: canary rollout started for web: 5% → 25% → 50% → 100%"}, out.Response.Warnings)
	require.NotNil(t, out.Response.PatchType)

	var ops []map[string]any
	require.NoError(t, json.Unmarshal(out.Response.Patch, &ops))
	paths := map[string]any{}
	for _, op := range ops {
		paths[op["path"].(string)] = op["value"]
	}
	assert.Equal(t, true, paths["/spec/paused"])
	assert.Contains(t, paths, "/metadata/annotations")
	assert.Len(t, ops, 2, "only spec.paused and the annotations change")
}

func TestHandlerDeniesWithTheReason(t *testing.T) {
	srv := server(t)
	cur := with(web("demo:v2"), func(d *appsv1.Deployment) { d.Annotations = map[string]string{"fledge.dev/policy": "gone"} })
	code, out := post(t, srv, review(t, "alice", web("demo:v1"), cur))
	require.Equal(t, http.StatusOK, code)
	assert.False(t, out.Response.Allowed)
	assert.Equal(t, int32(http.StatusForbidden), out.Response.Result.Code)
	assert.Contains(t, out.Response.Result.Message, `fledge: web: policy gone named by annotation fledge.dev/policy does not exist in this namespace`)
}

func TestHandlerUsesTheNamespacePolicy(t *testing.T) {
	srv := server(t, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "fledge-policy", Namespace: "team-a", Labels: map[string]string{"fledge.dev/policy": "true"}},
		Data:       map[string]string{"policy.yaml": "steps:\n- weight: 10\n  hold: 30s\n- weight: 50\n  hold: 1m\n  approval: manual\n"},
	})
	code, out := post(t, srv, review(t, "alice", web("demo:v1"), web("demo:v2")))
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, []string{"fledge: canary rollout started for web: 10% → 50% (manual) → 100%"}, out.Response.Warnings)
}

func TestHandlerLetsFledgeThrough(t *testing.T) {
	srv := server(t)
	code, out := post(t, srv, review(t, "system:serviceaccount:fledge-system:fledge", web("demo:v1"), web("demo:v2")))
	require.Equal(t, http.StatusOK, code)
	assert.True(t, out.Response.Allowed)
	assert.Nil(t, out.Response.Patch)
	assert.Empty(t, out.Response.Warnings)
}

// patchOps decodes a JSON patch into path → value.
func patchOps(t *testing.T, patch []byte) map[string]any {
	var ops []map[string]any
	require.NoError(t, json.Unmarshal(patch, &ops))
	paths := map[string]any{}
	for _, op := range ops {
		paths[op["path"].(string)] = op["value"]
	}
	return paths
}

// A Deployment restored from a backup taken mid-rollout, or created from
// a copied `kubectl get -o yaml`, carries fledge's state and pause.
func TestHandlerStripsFledgeKeysFromACreate(t *testing.T) {
	srv := server(t)
	restored := with(running(rollout.Progressing), func(d *appsv1.Deployment) {
		d.UID = ""
		d.Annotations[rollout.AnnotationLast] = `{"phase":"RolledBack"}`
		d.Annotations["team.example/owner"] = "shop"
	})
	code, out := post(t, srv, reviewOf(t, admissionv1.Create, "", "alice", nil, restored))
	require.Equal(t, http.StatusOK, code)
	assert.True(t, out.Response.Allowed)
	assert.Equal(t, []string{"fledge: removed fledge.dev/rollout and fledge.dev/last-rollout from the new Deployment web: only fledge writes them, for the Deployment it rolls out; a new Deployment starts with no rollout, so the pause that came with its rollout state is lifted"}, out.Response.Warnings)
	assert.Equal(t, map[string]any{
		"/spec/paused": nil, // removed: false is paused's zero value
		"/metadata/annotations/fledge.dev~1rollout":      nil,
		"/metadata/annotations/fledge.dev~1last-rollout": nil,
	}, patchOps(t, out.Response.Patch))

	// fledge's own creates (its canaries) pass as they are.
	code, out = post(t, srv, reviewOf(t, admissionv1.Create, "", "system:serviceaccount:fledge-system:fledge", nil, restored))
	require.Equal(t, http.StatusOK, code)
	assert.True(t, out.Response.Allowed)
	assert.Nil(t, out.Response.Patch)
}

// kubectl patch deploy web --subresource=status --type=merge -p
// '{"metadata":{"annotations":{"fledge.dev/rollout":"{\"phase\":\"Promoting\"}"}}}'
func TestHandlerPutsBackFledgeKeysOnAStatusWrite(t *testing.T) {
	srv := server(t)
	old := running(rollout.Progressing)
	forged := with(old, func(d *appsv1.Deployment) {
		d.Annotations[rollout.AnnotationState] = `{"phase":"Promoting"}`
		d.Status.ObservedGeneration = 7
	})
	code, out := post(t, srv, reviewOf(t, admissionv1.Update, "status", "alice", old, forged))
	require.Equal(t, http.StatusOK, code)
	assert.True(t, out.Response.Allowed)
	assert.Equal(t, []string{"fledge: annotation fledge.dev/rollout is written by fledge only; your change to it was undone"}, out.Response.Warnings)
	assert.Equal(t, map[string]any{
		"/metadata/annotations/fledge.dev~1rollout": old.Annotations[rollout.AnnotationState],
	}, patchOps(t, out.Response.Patch))

	// A status write that leaves fledge's keys alone passes as it is,
	// even with a new template in it (the status subresource ignores spec).
	code, out = post(t, srv, reviewOf(t, admissionv1.Update, "status", "alice", old, with(old, image("demo:v9"))))
	require.Equal(t, http.StatusOK, code)
	assert.True(t, out.Response.Allowed)
	assert.Nil(t, out.Response.Patch)
	assert.Empty(t, out.Response.Warnings)
}

// FuzzDeploymentsReview feeds arbitrary bodies to the webhook as the
// apiserver would: it must never panic, and every 200 answer is a
// well-formed AdmissionReview for the request's UID.
func FuzzDeploymentsReview(f *testing.F) {
	f.Add(review(f, "alice", web("demo:v1"), web("demo:v2")))
	f.Add(review(f, "alice", running(rollout.Progressing), with(running(rollout.Progressing), image("demo:v1"))))
	f.Add(review(f, "alice", web("demo:v1"), map[string]any{"spec": map[string]any{"replicas": "four"}}))
	f.Add(review(f, "alice", map[string]any{"metadata": map[string]any{"annotations": map[string]string{rollout.AnnotationState: "{not json"}}}, web("demo:v2")))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","operation":"CREATE"}}`))
	f.Add([]byte(`{"request":null}`))
	f.Add([]byte(`not json at all`))
	f.Add([]byte(``))
	srv := server(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		code, out := post(t, srv, body)
		if code != http.StatusOK {
			return
		}
		require.NotNil(t, out.Response, "a 200 answer carries a response")
		var in admissionv1.AdmissionReview
		if json.Unmarshal(body, &in) == nil && in.Request != nil {
			assert.Equal(t, in.Request.UID, out.Response.UID)
		}
		if out.Response.Patch != nil {
			var ops []map[string]any
			assert.NoError(t, json.Unmarshal(out.Response.Patch, &ops), "the patch is a JSON patch")
		}
	})
}

// BenchmarkDeploymentsAdmission measures one admission that starts a
// rollout, the webhook's most expensive path, end to end through the
// handler (decode, decide, patch, encode) without HTTP.
func BenchmarkDeploymentsAdmission(b *testing.B) {
	h := &Deployments{
		Reader: fake.NewClientBuilder().Build(),
		Self:   "fledge",
		Keys:   testKeys,
		Clock:  clocktesting.NewFakePassiveClock(now),
	}
	var rev admissionv1.AdmissionReview
	require.NoError(b, json.Unmarshal(review(b, "alice", web("demo:v1"), web("demo:v2")), &rev))
	req := admission.Request{AdmissionRequest: *rev.Request}
	b.ReportAllocs()
	for b.Loop() {
		if resp := h.Handle(b.Context(), req); !resp.Allowed || len(resp.Patches) == 0 {
			b.Fatalf("unexpected answer: %+v", resp.Result)
		}
	}
	// The goal is under 1ms an admission: report the share of it used.
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "of-1ms-budget")
}
