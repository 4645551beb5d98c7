package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/fledge-dev/fledge/policy"
	"github.com/fledge-dev/fledge/rollout"
)

// Paths the webhook server serves.
const (
	DeploymentsPath = "/mutate-deployments"
	PoliciesPath    = "/validate-policies"
)

// Deployments is the mutating webhook on Deployments: updates, creates
// that carry fledge's annotations, and status writes that change them. It
// decodes the request, resolves the policy from the informer cache, calls
// the matching Decide function and encodes the answer as a JSON patch.
type Deployments struct {
	// Reader reads policy ConfigMaps and Services; give it the manager's cache.
	Reader client.Reader
	// Self is the username of fledge's own identity, whose writes pass.
	Self string
	// Keys seal a new rollout's state and check the state of an update.
	Keys  rollout.Keys
	Clock clock.PassiveClock
	// Observe, when set, is told how long each admission took.
	Observe func(time.Duration)
}

// Handle implements admission.Handler.
func (h *Deployments) Handle(ctx context.Context, req admission.Request) admission.Response {
	if h.Observe != nil {
		defer func(start time.Time) { h.Observe(time.Since(start)) }(time.Now())
	}
	fromFledge := req.UserInfo.Username == h.Self
	if fromFledge {
		// fledge's own writes pass as they are on every path (each Decide
		// says so too): nothing to decode, no policy to resolve.
		return admission.Allowed("")
	}
	var cur appsv1.Deployment
	if err := json.Unmarshal(req.Object.Raw, &cur); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode object: %w", err))
	}
	if req.Operation == admissionv1.Create {
		return respond(req, DecideCreate(Create{New: &cur, FromFledge: fromFledge}))
	}
	if req.Operation != admissionv1.Update {
		return admission.Allowed("")
	}
	var old appsv1.Deployment
	if err := json.Unmarshal(req.OldObject.Raw, &old); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode oldObject: %w", err))
	}
	if req.SubResource == "status" {
		return respond(req, DecideStatus(&old, &cur, fromFledge))
	}
	if req.SubResource != "" {
		return admission.Allowed("")
	}

	var services []corev1.Service
	if !apiequality.Semantic.DeepEqual(old.Spec.Template, cur.Spec.Template) {
		// Only a changed template can start a rollout, the one decision
		// that reads the Services.
		var list corev1.ServiceList
		if err := h.Reader.List(ctx, &list, client.InNamespace(req.Namespace)); err != nil {
			return admission.Errored(http.StatusInternalServerError, fmt.Errorf("list the Services of namespace %s: %w", req.Namespace, err))
		}
		services = list.Items
	}
	return respond(req, Decide(Update{
		Old:        &old,
		New:        &cur,
		FromFledge: fromFledge,
		Policy:     h.resolve(ctx, req.Namespace, &cur),
		Services:   services,
		Keys:       h.Keys,
		Now:        h.Clock.Now(),
	}))
}

// respond encodes a decision as the admission response to req.
func respond(req admission.Request, d Decision) admission.Response {
	var resp admission.Response
	switch {
	case d.Denied != "":
		resp = admission.Denied(d.Denied)
	case d.Object == nil:
		resp = admission.Allowed("")
	default:
		patched, err := json.Marshal(d.Object)
		if err != nil {
			return admission.Errored(http.StatusInternalServerError, fmt.Errorf("encode deployment: %w", err))
		}
		resp = admission.PatchResponseFromRaw(req.Object.Raw, patched)
	}
	return resp.WithWarnings(d.Warnings...)
}

// resolve finds the Deployment's policy in the cache.
func (h *Deployments) resolve(ctx context.Context, namespace string, d *appsv1.Deployment) Resolved {
	get := func(name string) (*corev1.ConfigMap, error) {
		var cm corev1.ConfigMap
		if err := h.Reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &cm); err != nil {
			return nil, err
		}
		return &cm, nil
	}
	p, source, err := policy.Resolve(d.Annotations, get)
	return Resolved{Policy: p, Source: source, Err: err}
}

// Policies is the validating webhook on policy ConfigMaps: an invalid policy
// is refused at apply time with the field that is wrong.
type Policies struct{}

// Handle implements admission.Handler.
func (Policies) Handle(_ context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return admission.Allowed("")
	}
	var cm corev1.ConfigMap
	if err := json.Unmarshal(req.Object.Raw, &cm); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode object: %w", err))
	}
	if _, err := policy.FromConfigMap(&cm); err != nil {
		return admission.Denied(fmt.Sprintf("fledge: %v", err))
	}
	return admission.Allowed("")
}
