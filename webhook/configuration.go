package webhook

import (
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/fledge-dev/fledge/policy"
	"github.com/fledge-dev/fledge/rollout"
)

// Names of the webhook configurations and of their webhooks.
const (
	MutatingConfigurationName   = "fledge"
	ValidatingConfigurationName = "fledge"
	deploymentsWebhookName      = "deployments.fledge.dev"
	policiesWebhookName         = "policies.fledge.dev"
)

// Target says where the apiserver reaches the webhook server: a Service in
// a cluster, or a URL (the lab, where the manager runs on 127.0.0.1).
type Target struct {
	// Namespace is fledge's own namespace; its objects are never intercepted.
	Namespace   string
	ServiceName string
	ServicePort int32
	// URL, when set, is used instead of the Service (https://host:port).
	URL      string
	CABundle []byte
}

func (t Target) clientConfig(path string) admissionregistrationv1.WebhookClientConfig {
	if t.URL != "" {
		return admissionregistrationv1.WebhookClientConfig{URL: ptr.To(t.URL + path), CABundle: t.CABundle}
	}
	return admissionregistrationv1.WebhookClientConfig{
		Service: &admissionregistrationv1.ServiceReference{
			Namespace: t.Namespace, Name: t.ServiceName, Path: ptr.To(path), Port: ptr.To(t.ServicePort),
		},
		CABundle: t.CABundle,
	}
}

// notSystem keeps fledge's own namespace and kube-system out of reach.
func (t Target) notSystem() metav1.LabelSelectorRequirement {
	return metav1.LabelSelectorRequirement{
		Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn,
		Values: []string{t.Namespace, "kube-system"},
	}
}

// annotation is a CEL expression for a Deployment's annotation key, or "".
func annotation(obj, key string) string {
	return "(has(" + obj + ".metadata.annotations) && '" + key + "' in " + obj + ".metadata.annotations ? " +
		obj + ".metadata.annotations['" + key + "'] : '')"
}

// deploymentConditions make the apiserver call the webhook only when it has
// something to decide: the template, spec.paused, or a fledge key changed,
// or the Deployment is paused (a rollout runs or a failed revision is held,
// so even an apply that changes nothing gets its warning), or a retry is
// asked for.
// A Deployment carrying fledge.dev/skip is never sent, so the annotation
// bypasses fledge even while the webhook is down.
func deploymentConditions() []admissionregistrationv1.MatchCondition {
	changed := "object.spec.template != oldObject.spec.template" +
		" || (has(object.spec.paused) && object.spec.paused) != (has(oldObject.spec.paused) && oldObject.spec.paused)"
	for _, key := range []string{rollout.AnnotationState, rollout.AnnotationLast, policy.Annotation} {
		changed += " || " + annotation("object", key) + " != " + annotation("oldObject", key)
	}
	changed += " || (has(oldObject.spec.paused) && oldObject.spec.paused)"
	changed += " || " + annotation("object", rollout.AnnotationCommand) + " == '" + rollout.CommandRetry + "'"
	return []admissionregistrationv1.MatchCondition{
		{Name: "not-skipped", Expression: annotation("object", rollout.AnnotationSkip) + " != 'true'"},
		{Name: "template-or-fledge-keys-changed", Expression: changed},
	}
}

// Configurations returns the webhook configurations of ARCHITECTURE.md:
// the mutating webhook on Deployment updates in opted-in namespaces and the
// validating webhook on policy ConfigMaps.
func Configurations(t Target) (*admissionregistrationv1.MutatingWebhookConfiguration, *admissionregistrationv1.ValidatingWebhookConfiguration) {
	mutating := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: MutatingConfigurationName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:         deploymentsWebhookName,
			ClientConfig: t.clientConfig(DeploymentsPath),
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update},
				Rule: admissionregistrationv1.Rule{
					APIGroups: []string{"apps"}, APIVersions: []string{"v1"},
					Resources: []string{"deployments"}, Scope: ptr.To(admissionregistrationv1.NamespacedScope),
				},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: rollout.LabelEnabled, Operator: metav1.LabelSelectorOpIn, Values: []string{"true"}},
				t.notSystem(),
			}},
			MatchConditions:         deploymentConditions(),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			TimeoutSeconds:          ptr.To[int32](5),
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			MatchPolicy:             ptr.To(admissionregistrationv1.Equivalent),
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.NeverReinvocationPolicy),
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
	validating := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: ValidatingConfigurationName},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:         policiesWebhookName,
			ClientConfig: t.clientConfig(PoliciesPath),
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule: admissionregistrationv1.Rule{
					APIGroups: []string{""}, APIVersions: []string{"v1"},
					Resources: []string{"configmaps"}, Scope: ptr.To(admissionregistrationv1.NamespacedScope),
				},
			}},
			// Teams may write their policy before the namespace opts in, so
			// every namespace but the system ones is covered.
			NamespaceSelector:       &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{t.notSystem()}},
			ObjectSelector:          &metav1.LabelSelector{MatchLabels: map[string]string{policy.Label: "true"}},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			TimeoutSeconds:          ptr.To[int32](5),
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			MatchPolicy:             ptr.To(admissionregistrationv1.Equivalent),
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
	return mutating, validating
}
