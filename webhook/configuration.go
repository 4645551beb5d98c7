package webhook

import (
	"strconv"
	"strings"

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
	createWebhookName           = "deployment-creates.fledge.dev"
	statusWebhookName           = "deployment-status.fledge.dev"
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
	// Self is the username fledge's manager acts as. The apiserver does
	// not call the Deployment webhooks for its writes, which they would
	// let pass anyway: a rollout's own steps cost no admission, and go on
	// while the webhook is down.
	Self string
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

// NotSelfCondition names the match condition that keeps fledge's own
// writes from its Deployment webhooks.
const NotSelfCondition = "not-fledge"

// notSelf is the NotSelfCondition for t.Self, or none without one.
func (t Target) notSelf() []admissionregistrationv1.MatchCondition {
	if t.Self == "" {
		return nil
	}
	return []admissionregistrationv1.MatchCondition{{Name: NotSelfCondition, Expression: NotSelfExpression(t.Self)}}
}

// NotSelfExpression is the CEL expression of NotSelfCondition for the
// username self.
func NotSelfExpression(self string) string {
	return "request.userInfo.username != " + strconv.Quote(self)
}

// annotation is a CEL expression for a Deployment's annotation key, or "".
func annotation(obj, key string) string {
	return "(has(" + obj + ".metadata.annotations) && '" + key + "' in " + obj + ".metadata.annotations ? " +
		obj + ".metadata.annotations['" + key + "'] : '')"
}

// ownedChanged is a CEL expression: a fledge-owned annotation differs
// between oldObject and object.
func ownedChanged() string {
	var terms []string
	for _, key := range rollout.OwnedAnnotations {
		terms = append(terms, annotation("object", key)+" != "+annotation("oldObject", key))
	}
	return strings.Join(terms, " || ")
}

// updateConditions make the apiserver call the webhook on an update only
// when it has something to decide: a fledge-owned key changed (whatever
// else the update says, fledge.dev/skip included: skipping fledge never
// lets anyone write its state), or, on a Deployment not skipped, the
// template, spec.paused or the policy annotation changed, or the Deployment
// is paused (a rollout runs or a failed revision is held, so even an apply
// that changes nothing gets its warning), or a retry is asked for.
// A Deployment carrying fledge.dev/skip is otherwise never sent, so the
// annotation bypasses fledge even while the webhook is down.
func updateConditions() []admissionregistrationv1.MatchCondition {
	decides := "object.spec.template != oldObject.spec.template" +
		" || (has(object.spec.paused) && object.spec.paused) != (has(oldObject.spec.paused) && oldObject.spec.paused)" +
		" || " + annotation("object", policy.Annotation) + " != " + annotation("oldObject", policy.Annotation) +
		" || (has(oldObject.spec.paused) && oldObject.spec.paused)" +
		" || " + annotation("object", rollout.AnnotationCommand) + " == '" + rollout.CommandRetry + "'"
	notSkipped := annotation("object", rollout.AnnotationSkip) + " != 'true'"
	return []admissionregistrationv1.MatchCondition{{
		Name:       "fledge-keys-or-template-changed",
		Expression: ownedChanged() + " || (" + notSkipped + " && (" + decides + "))",
	}}
}

// createConditions send a create only when it carries a fledge-owned key.
func createConditions() []admissionregistrationv1.MatchCondition {
	var terms []string
	for _, key := range rollout.OwnedAnnotations {
		terms = append(terms, annotation("object", key)+" != ''")
	}
	return []admissionregistrationv1.MatchCondition{{Name: "carries-fledge-keys", Expression: strings.Join(terms, " || ")}}
}

// statusConditions send a status write only when it changes a fledge-owned
// key: the Deployment controller's own status writes never do.
func statusConditions() []admissionregistrationv1.MatchCondition {
	return []admissionregistrationv1.MatchCondition{{Name: "fledge-keys-changed", Expression: ownedChanged()}}
}

// Configurations returns the webhook configurations of ARCHITECTURE.md:
// the mutating webhook on Deployment updates in opted-in namespaces and the
// validating webhook on policy ConfigMaps.
func Configurations(t Target) (*admissionregistrationv1.MutatingWebhookConfiguration, *admissionregistrationv1.ValidatingWebhookConfiguration) {
	deployments := func(name string, op admissionregistrationv1.OperationType, resource string, conditions []admissionregistrationv1.MatchCondition) admissionregistrationv1.MutatingWebhook {
		return admissionregistrationv1.MutatingWebhook{
			Name:         name,
			ClientConfig: t.clientConfig(DeploymentsPath),
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{op},
				Rule: admissionregistrationv1.Rule{
					APIGroups: []string{"apps"}, APIVersions: []string{"v1"},
					Resources: []string{resource}, Scope: ptr.To(admissionregistrationv1.NamespacedScope),
				},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: rollout.LabelEnabled, Operator: metav1.LabelSelectorOpIn, Values: []string{"true"}},
				t.notSystem(),
			}},
			MatchConditions:         append(t.notSelf(), conditions...),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			TimeoutSeconds:          ptr.To[int32](5),
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			MatchPolicy:             ptr.To(admissionregistrationv1.Equivalent),
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.NeverReinvocationPolicy),
			AdmissionReviewVersions: []string{"v1"},
		}
	}
	// Every path that can write fledge's keys is covered: updates,
	// creates (a restored backup), and the status subresource, which can
	// change metadata too.
	mutating := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: MutatingConfigurationName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			deployments(deploymentsWebhookName, admissionregistrationv1.Update, "deployments", updateConditions()),
			deployments(createWebhookName, admissionregistrationv1.Create, "deployments", createConditions()),
			deployments(statusWebhookName, admissionregistrationv1.Update, "deployments/status", statusConditions()),
		},
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
