package manifests

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/fledge-dev/fledge/policy"
	"github.com/fledge-dev/fledge/rollout"
)

func TestWebhooksYAMLIsGenerated(t *testing.T) {
	want, err := Webhooks()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("webhooks.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("manifests/webhooks.yaml differs from what webhook.Configurations generates; regenerate it with: go run ./manifests/gen")
	}
}

// kustomization is the part of a Kustomization these manifests use,
// decoded strictly so that a misspelt field fails the test.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewTag  string `json:"newTag"`
		NewName string `json:"newName,omitempty"`
	} `json:"images,omitempty"`
	Labels []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors"`
	} `json:"labels,omitempty"`
}

// TestEveryManifestParses decodes every YAML document under manifests/
// strictly: Kubernetes objects with client-go's scheme (unknown fields are
// errors), Kustomizations into the fields they may use.
func TestEveryManifestParses(t *testing.T) {
	files := yamlFiles(t, ".")
	if len(files) < 10 {
		t.Fatalf("found only %v", files)
	}
	for _, file := range files {
		t.Run(file, func(t *testing.T) {
			for i, doc := range documents(t, file) {
				if filepath.Base(file) == "kustomization.yaml" {
					var k kustomization
					if err := yaml.UnmarshalStrict(doc, &k); err != nil || k.Kind != "Kustomization" {
						t.Errorf("document %d: not a Kustomization: %v", i+1, err)
					}
					continue
				}
				if _, err := decode(doc); err != nil {
					t.Errorf("document %d: %v", i+1, err)
				}
			}
		})
	}
}

func TestKustomizationsListEveryManifest(t *testing.T) {
	for _, dir := range []string{".", "examples"} {
		t.Run(dir, func(t *testing.T) {
			var k kustomization
			data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			if err := yaml.UnmarshalStrict(data, &k); err != nil {
				t.Fatal(err)
			}
			var want []string
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if !e.IsDir() && strings.HasSuffix(e.Name(), ".yaml") && e.Name() != "kustomization.yaml" {
					want = append(want, e.Name())
				}
			}
			got := slices.Sorted(slices.Values(k.Resources))
			if !slices.Equal(got, want) {
				t.Errorf("resources %v, want every manifest of the folder: %v", got, want)
			}
		})
	}
}

func TestExamplePolicyIsValid(t *testing.T) {
	cm := only[*corev1.ConfigMap](t, "examples/policy.yaml")
	p, err := policy.FromConfigMap(cm)
	if err != nil {
		t.Fatal(err)
	}
	if cm.Name != policy.DefaultConfigMapName || cm.Labels[policy.Label] != "true" {
		t.Errorf("the example policy is %s labelled %v; fledge finds only %s labelled %s: \"true\"", cm.Name, cm.Labels, policy.DefaultConfigMapName, policy.Label)
	}
	if got := p.StepsString(); got != "5% → 25% → 50% → 100%" {
		t.Errorf("steps %s", got)
	}
	if p.Analysis == nil || p.Analysis.Prometheus.URL != "http://prometheus.monitoring.svc:9090" || len(p.Analysis.Checks) != 1 || len(p.Analysis.Compare) != 1 {
		t.Fatalf("analysis %+v", p.Analysis)
	}
	errors, latency := p.Analysis.Compare[0], p.Analysis.Checks[0]
	want := policy.Comparison{
		Name:      "errors",
		Requests:  `http_requests_total{namespace="{{.Namespace}}",pod=~"{{.Pods}}"}`,
		Errors:    `http_requests_total{namespace="{{.Namespace}}",pod=~"{{.Pods}}",code=~"5.."}`,
		Tolerance: 0.5, Alpha: 0.01,
	}
	if errors != want {
		t.Errorf("comparison %+v, want %+v", errors, want)
	}
	if p.Analysis.MinRequests != 100 {
		t.Errorf("minRequests %d, want 100", p.Analysis.MinRequests)
	}
	if latency.Name != "p99-latency" || !reflect.DeepEqual(latency.MaxRatio, ptr.To(1.2)) {
		t.Errorf("check %+v, want p99-latency with maxRatio 1.2", latency)
	}
}

func TestExampleApp(t *testing.T) {
	ns := only[*corev1.Namespace](t, "examples/namespace.yaml")
	if ns.Name != "team-a" || ns.Labels[rollout.LabelEnabled] != "true" {
		t.Errorf("namespace %s labels %v: want team-a opted in", ns.Name, ns.Labels)
	}
	objs := objectsIn(t, "examples/app.yaml")
	d, svc := find[*appsv1.Deployment](t, objs), find[*corev1.Service](t, objs)
	c := d.Spec.Template.Spec.Containers[0]
	if d.Namespace != "team-a" || ptr.Deref(d.Spec.Replicas, 0) != 4 || c.Image != "fledge/demo:v1" || c.Ports[0].ContainerPort != 8080 {
		t.Errorf("demo: namespace %s, %d replicas, image %s, port %d", d.Namespace, ptr.Deref(d.Spec.Replicas, 0), c.Image, c.Ports[0].ContainerPort)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("Service %s does not select the demo pods", svc.Name)
	}
	if !reflect.DeepEqual(svc.Spec.Selector, d.Spec.Selector.MatchLabels) {
		t.Errorf("Service selector %v: select only what every version shares, the Deployment's selector %v", svc.Spec.Selector, d.Spec.Selector.MatchLabels)
	}
}

// TestRBACIsExactlyTheDesignedRules pins the manager's permissions: a rule
// added here is a decision, made in review, not a side effect.
func TestRBACIsExactlyTheDesignedRules(t *testing.T) {
	objs := objectsIn(t, "rbac.yaml")
	readOnly := []string{"get", "list", "watch"}
	wantCluster := []rbacv1.PolicyRule{
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}},
		{APIGroups: []string{"apps"}, Resources: []string{"replicasets"}, Verbs: readOnly},
		{APIGroups: []string{""}, Resources: []string{"pods", "namespaces", "configmaps", "services"}, Verbs: readOnly},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		{APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		{APIGroups: []string{"autoscaling"}, Resources: []string{"horizontalpodautoscalers"}, Verbs: readOnly},
		{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations", "validatingwebhookconfigurations"},
			ResourceNames: []string{"fledge"}, Verbs: []string{"get", "update", "patch"}},
	}
	wantNamespaced := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"fledge-webhook-tls", "fledge-state-key"}, Verbs: []string{"get", "update", "patch"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update", "patch"}},
	}
	if cr := find[*rbacv1.ClusterRole](t, objs); !reflect.DeepEqual(cr.Rules, wantCluster) {
		t.Errorf("ClusterRole %s rules:\n%+v\nwant:\n%+v", cr.Name, cr.Rules, wantCluster)
	}
	role := find[*rbacv1.Role](t, objs)
	if role.Namespace != Namespace || !reflect.DeepEqual(role.Rules, wantNamespaced) {
		t.Errorf("Role %s/%s rules:\n%+v\nwant:\n%+v", role.Namespace, role.Name, role.Rules, wantNamespaced)
	}
	sa := only[*corev1.ServiceAccount](t, "serviceaccount.yaml")
	want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: sa.Namespace}}
	crb := find[*rbacv1.ClusterRoleBinding](t, objs)
	if crb.RoleRef.Kind != "ClusterRole" || crb.RoleRef.Name != "fledge" || !reflect.DeepEqual(crb.Subjects, want) {
		t.Errorf("ClusterRoleBinding binds %v to %v", crb.RoleRef, crb.Subjects)
	}
	rb := find[*rbacv1.RoleBinding](t, objs)
	if rb.Namespace != Namespace || rb.RoleRef.Kind != "Role" || rb.RoleRef.Name != "fledge" || !reflect.DeepEqual(rb.Subjects, want) {
		t.Errorf("RoleBinding %s binds %v to %v", rb.Namespace, rb.RoleRef, rb.Subjects)
	}
}

func TestManagerDeployment(t *testing.T) {
	d := only[*appsv1.Deployment](t, "deployment.yaml")
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	if d.Namespace != Namespace || ptr.Deref(d.Spec.Replicas, 0) != 2 || pod.ServiceAccountName != "fledge" {
		t.Errorf("deployment %s/%s: %d replicas, service account %q", d.Namespace, d.Name, ptr.Deref(d.Spec.Replicas, 0), pod.ServiceAccountName)
	}
	if c.Image != "ghcr.io/fledge-dev/fledge:dev" || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %s, pull policy %q: want ghcr.io/fledge-dev/fledge:dev (make image), IfNotPresent (kind loads it)", c.Image, c.ImagePullPolicy)
	}
	// The flags of cmd/fledge; a misspelt one stops the manager at start.
	wantArgs := []string{
		"--service-name=" + ServiceName, "--secret-name=fledge-webhook-tls", "--webhook-port=9443",
		"--cert-dir=/tmp/k8s-webhook-server/serving-certs", "--metrics-bind-address=:8080",
		"--health-probe-bind-address=:8081", "--leader-elect=true",
	}
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("args %v, want %v", c.Args, wantArgs)
	}
	if len(c.Env) != 1 || c.Env[0].Name != "POD_NAMESPACE" || c.Env[0].ValueFrom == nil ||
		c.Env[0].ValueFrom.FieldRef == nil || c.Env[0].ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
		t.Errorf("env %+v: want POD_NAMESPACE from metadata.namespace", c.Env)
	}
	mount := c.VolumeMounts[0]
	if mount.MountPath != "/tmp/k8s-webhook-server/serving-certs" || pod.Volumes[0].Name != mount.Name || pod.Volumes[0].EmptyDir == nil {
		t.Errorf("serving certificates: mount %+v, volume %+v: want an emptyDir at the --cert-dir", mount, pod.Volumes[0])
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["webhook"] != 9443 || ports["metrics"] != 8080 || ports["health"] != 8081 {
		t.Errorf("container ports %v", ports)
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port.String() != "health" || p.PeriodSeconds != 5 {
		t.Errorf("readiness probe %+v", p)
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || p.HTTPGet.Port.String() != "health" {
		t.Errorf("liveness probe %+v", p)
	}
	wantResources := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("96Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
	}
	if !equality.Semantic.DeepEqual(c.Resources, wantResources) {
		t.Errorf("resources %+v, want %+v (the basis is in deployment.yaml)", c.Resources, wantResources)
	}
	// The endpoint leaves the Service before the webhook stops serving, and
	// the grace period covers the sleep and the manager's shutdown.
	if l := c.Lifecycle; l == nil || l.PreStop == nil || l.PreStop.Sleep == nil || l.PreStop.Sleep.Seconds != 5 ||
		l.PreStop.Exec != nil || l.PreStop.HTTPGet != nil || l.PostStart != nil {
		t.Errorf("lifecycle %+v: want a preStop sleep of 5s only", l)
	}
	if got := ptr.Deref(pod.TerminationGracePeriodSeconds, 30); got != 20 {
		t.Errorf("terminationGracePeriodSeconds %d, want 20 (5s preStop + 15s shutdown)", got)
	}
	sc, psc := c.SecurityContext, pod.SecurityContext
	if psc == nil || !ptr.Deref(psc.RunAsNonRoot, false) || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context %+v", psc)
	}
	if sc == nil || !ptr.Deref(sc.ReadOnlyRootFilesystem, false) || ptr.Deref(sc.AllowPrivilegeEscalation, true) ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("container security context %+v", sc)
	}
	podLabels := labels.Set(d.Spec.Template.Labels)
	if len(pod.TopologySpreadConstraints) == 0 || pod.TopologySpreadConstraints[0].TopologyKey != "kubernetes.io/hostname" ||
		pod.Affinity == nil || pod.Affinity.PodAntiAffinity == nil {
		t.Error("replicas are not spread across nodes")
	}

	pdb := only[*policyv1.PodDisruptionBudget](t, "pdb.yaml")
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 || !selects(pdb.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("PodDisruptionBudget %+v", pdb.Spec)
	}
	svc := only[*corev1.Service](t, "service.yaml")
	svcPorts := map[string]string{}
	for _, p := range svc.Spec.Ports {
		svcPorts[p.Name] = p.TargetPort.String()
		if p.Name == "webhook" && p.Port != ServicePort {
			t.Errorf("webhook port %d, want %d", p.Port, ServicePort)
		}
	}
	if svc.Name != ServiceName || svc.Namespace != Namespace || !selects(svc.Spec.Selector, podLabels) ||
		svcPorts["webhook"] != "webhook" || svcPorts["metrics"] != "metrics" {
		t.Errorf("Service %s/%s selects %v, ports %v", svc.Namespace, svc.Name, svc.Spec.Selector, svcPorts)
	}
}

func selects(selector map[string]string, podLabels labels.Set) bool {
	return len(selector) > 0 && labels.SelectorFromSet(selector).Matches(podLabels)
}

// yamlFiles lists the .yaml files under dir.
func yamlFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// documents splits a YAML file into its non-empty documents, each parsed
// once with sigs.k8s.io/yaml.
func documents(t *testing.T, file string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		var v any
		if err := yaml.Unmarshal(doc, &v); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if v != nil {
			docs = append(docs, doc)
		}
	}
}

// decode reads a Kubernetes object strictly: an unknown or duplicate field
// is an error, as kubectl apply --validate=strict makes it.
func decode(doc []byte) (runtime.Object, error) {
	codecs := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict)
	obj, _, err := codecs.UniversalDeserializer().Decode(doc, nil, nil)
	return obj, err
}

func objectsIn(t *testing.T, file string) []runtime.Object {
	t.Helper()
	var objs []runtime.Object
	for _, doc := range documents(t, file) {
		obj, err := decode(doc)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		objs = append(objs, obj)
	}
	return objs
}

// find returns the one object of type T among objs.
func find[T runtime.Object](t *testing.T, objs []runtime.Object) T {
	t.Helper()
	var found []T
	for _, o := range objs {
		if v, ok := o.(T); ok {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("want one %T, found %d", zero, len(found))
	}
	return found[0]
}

// only returns the object of a file that holds exactly one, of type T.
func only[T runtime.Object](t *testing.T, file string) T {
	t.Helper()
	objs := objectsIn(t, file)
	if len(objs) != 1 {
		t.Fatalf("%s: want one object, found %d", file, len(objs))
	}
	return find[T](t, objs)
}
