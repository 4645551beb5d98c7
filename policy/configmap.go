package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Names on the cluster (ARCHITECTURE.md, "Names on the cluster").
const (
	// ConfigMapKey is the data key of a policy ConfigMap that holds the
	// policy document.
	ConfigMapKey = "policy.yaml"
	// Annotation on a Deployment names the policy ConfigMap in its
	// namespace.
	Annotation = "fledge.dev/policy"
	// Label with the value "true" marks a ConfigMap as a policy, so the
	// validating webhook checks it when it is written.
	Label = "fledge.dev/policy"
	// DefaultConfigMapName is the policy a namespace's Deployments use when
	// they name none.
	DefaultConfigMapName = "fledge-policy"
	// SourceDefault is Resolve's source for the built-in Default policy.
	SourceDefault = "default"
)

// FromConfigMap parses the policy in a ConfigMap's policy.yaml key. Errors
// start with "policy <name>: " so that a refusal says which ConfigMap to
// fix; the Errors inside stay reachable with errors.As.
func FromConfigMap(cm *corev1.ConfigMap) (*Policy, error) {
	if cm == nil {
		return nil, errors.New("policy: no ConfigMap")
	}
	data, ok := cm.Data[ConfigMapKey]
	if !ok {
		return nil, fmt.Errorf("policy %s: has no data key %s; put the policy document under data.%s%s",
			cm.Name, ConfigMapKey, ConfigMapKey, foundKeys(cm))
	}
	p, err := Parse([]byte(data))
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", cm.Name, err)
	}
	return p, nil
}

// foundKeys lists the data keys a ConfigMap does have, which usually shows
// the typo ("policy.yml").
func foundKeys(cm *corev1.ConfigMap) string {
	if len(cm.Data) == 0 {
		return ""
	}
	keys := make([]string, 0, len(cm.Data))
	for k := range cm.Data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return " (found: " + strings.Join(keys, ", ") + ")"
}

// Resolve finds the policy a Deployment rolls out with: the ConfigMap its
// fledge.dev/policy annotation names, else the namespace's fledge-policy
// ConfigMap, else Default. get reads a ConfigMap of the Deployment's
// namespace (the webhook passes an informer cache read) and returns an error
// satisfying apierrors.IsNotFound when there is none.
//
// A named policy that is missing or invalid is an error, never a silent
// fall back to the default: the user asked for that policy. Policy ConfigMaps
// carry the label fledge.dev/policy: "true"; the manager's cache holds no
// other ConfigMap, so the error for a missing one mentions the label. source is "configmap/<name>" or "default", for
// status output and the rollout snapshot.
func Resolve(deploymentAnnotations map[string]string, get func(name string) (*corev1.ConfigMap, error)) (p *Policy, source string, err error) {
	if get == nil {
		return nil, "", errors.New("policy: no way to read ConfigMaps")
	}
	if name, ok := deploymentAnnotations[Annotation]; ok {
		return resolveNamed(name, get)
	}
	cm, err := get(DefaultConfigMapName)
	if cm == nil && (err == nil || apierrors.IsNotFound(err)) {
		return Default(), SourceDefault, nil
	}
	return fromLookup(DefaultConfigMapName, cm, err)
}

// resolveNamed reads the policy an annotation names.
func resolveNamed(name string, get func(name string) (*corev1.ConfigMap, error)) (*Policy, string, error) {
	if name == "" {
		return nil, "", fmt.Errorf("annotation %s is empty; name a policy ConfigMap or remove the annotation", Annotation)
	}
	if len(validation.IsDNS1123Subdomain(name)) > 0 {
		return nil, "", fmt.Errorf("annotation %s: %q is not a ConfigMap name", Annotation, name)
	}
	cm, err := get(name)
	if cm == nil && (err == nil || apierrors.IsNotFound(err)) {
		return nil, "", fmt.Errorf("policy %s named by annotation %s does not exist in this namespace (a policy is a ConfigMap labelled %s: \"true\"); create it or remove the annotation", name, Annotation, Label)
	}
	return fromLookup(name, cm, err)
}

// fromLookup parses a ConfigMap that get returned, or wraps get's error.
func fromLookup(name string, cm *corev1.ConfigMap, err error) (*Policy, string, error) {
	if err != nil {
		return nil, "", fmt.Errorf("policy %s: reading the ConfigMap: %w", name, err)
	}
	p, err := FromConfigMap(cm)
	if err != nil {
		return nil, "", err
	}
	return p, "configmap/" + name, nil
}
