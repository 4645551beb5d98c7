package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fledge-dev/fledge/rollout"
)

func TestApplyInOptedInNamespaceStartsPausedRollout(t *testing.T) {
	ns := namespace(t, "webhook-start", true)
	deployed(t, ns, "v1", 4)
	before := get(t, ns, "web")

	_, stderr, err := kubectl(t, app(ns, "v2", 4), "apply", "-f", "-")
	require.NoError(t, err, stderr)
	assert.Contains(t, stderr, "Warning: fledge: canary rollout started for web: 5% → 25% → 50% → 100%")

	d := get(t, ns, "web")
	assert.True(t, d.Spec.Paused, "paused")
	assert.Equal(t, "fledge/demo:v2", d.Spec.Template.Spec.Containers[0].Image, "the new template is stored")
	s, err := rollout.ParseState(d)
	require.NoError(t, err)
	require.NotNil(t, s, "fledge.dev/rollout is written")
	assert.Equal(t, rollout.Progressing, s.Phase)
	assert.Equal(t, int32(0), s.Step)
	assert.Equal(t, rollout.TemplateHash(&before.Spec.Template), s.StableRevision)
	assert.Equal(t, rollout.TemplateHash(&d.Spec.Template), s.CanaryRevision)
	assert.Equal(t, "default", s.PolicySource)
	assert.Len(t, s.Policy.Steps, 3)

	// The Deployment controller leaves a paused Deployment alone: the old
	// ReplicaSet keeps serving every replica.
	eventually(t, "the controller to observe the pause", func(ctx context.Context) (bool, error) {
		d := get(t, ns, "web")
		return d.Status.ObservedGeneration == d.Generation, nil
	})
	assert.Equal(t, map[string]int32{"fledge/demo:v1": 4}, stableRS(t, ns))
	assert.Equal(t, int32(4), get(t, ns, "web").Status.ReadyReplicas)
}

func TestApplyInOtherNamespaceRollsOutNatively(t *testing.T) {
	ns := namespace(t, "webhook-native", false)
	deployed(t, ns, "v1", 2)

	_, stderr, err := kubectl(t, app(ns, "v2", 2), "apply", "-f", "-")
	require.NoError(t, err, stderr)
	assert.NotContains(t, stderr, "fledge")

	d := get(t, ns, "web")
	assert.False(t, d.Spec.Paused)
	assert.NotContains(t, d.Annotations, rollout.AnnotationState)
	eventually(t, "v2 rolled out natively", func(ctx context.Context) (bool, error) {
		rs := stableRS(t, ns)
		return rs["fledge/demo:v2"] == 2 && rs["fledge/demo:v1"] == 0, nil
	})
}

func TestRolloutRestartIsNotIntercepted(t *testing.T) {
	ns := namespace(t, "webhook-restart", true)
	deployed(t, ns, "v1", 2)

	_, stderr, err := kubectl(t, "", "rollout", "restart", "deployment/web", "-n", ns)
	require.NoError(t, err, stderr)
	assert.NotContains(t, stderr, "fledge")

	d := get(t, ns, "web")
	assert.False(t, d.Spec.Paused)
	assert.NotContains(t, d.Annotations, rollout.AnnotationState)
	assert.Contains(t, d.Spec.Template.Annotations, rollout.AnnotationRestartedAt)
	_, stderr, err = kubectl(t, "", "rollout", "status", "deployment/web", "-n", ns, "--timeout=60s")
	require.NoError(t, err, stderr)
	rss, err := theLab.Client.AppsV1().ReplicaSets(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=web"})
	require.NoError(t, err)
	assert.Len(t, rss.Items, 2, "the restart made a new ReplicaSet")
}

func TestUserCannotDropTheRolloutState(t *testing.T) {
	ns := namespace(t, "webhook-owned", true)
	deployed(t, ns, "v1", 2)
	_, stderr, err := kubectl(t, app(ns, "v2", 2), "apply", "-f", "-")
	require.NoError(t, err, stderr)
	// Once the canary holds its step (1m, the default policy), the router
	// leaves the state alone: what the user changes is all that changes.
	waitState(t, ns, "the canary holding", func(s *rollout.State) bool { return s.HoldingSince != nil })
	state := get(t, ns, "web").Annotations[rollout.AnnotationState]

	_, stderr, err = kubectl(t, "", "annotate", "deployment/web", "-n", ns, rollout.AnnotationState+"-")
	require.NoError(t, err, stderr)
	assert.Contains(t, stderr, "Warning: fledge: annotation fledge.dev/rollout is written by fledge only; your change to it was undone")
	assert.Equal(t, state, get(t, ns, "web").Annotations[rollout.AnnotationState])

	_, stderr, err = kubectl(t, "", "rollout", "resume", "deployment/web", "-n", ns)
	require.NoError(t, err, stderr)
	assert.Contains(t, stderr, "Warning: fledge: web stays paused while its rollout runs")
	assert.True(t, get(t, ns, "web").Spec.Paused)
}

func TestInvalidPolicyIsRefusedAtApply(t *testing.T) {
	ns := namespace(t, "webhook-policy", true)
	_, stderr, err := kubectl(t, `apiVersion: v1
kind: ConfigMap
metadata:
  name: team-policy
  namespace: webhook-policy
  labels: {fledge.dev/policy: "true"}
data:
  policy.yaml: |
    steps:
    - weight: 5
      hold: 1m
    - weight: 120
      hold: 1m
`, "apply", "-f", "-")
	require.Error(t, err)
	assert.Contains(t, stderr, `admission webhook "policies.fledge.dev" denied the request: fledge: policy team-policy: steps[1].weight: 120 is not between 1 and 99`)
	_, getErr := theLab.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "team-policy", metav1.GetOptions{})
	assert.True(t, getErr != nil, "the ConfigMap was not stored")
}

func TestDeploymentNamingMissingPolicyIsRefused(t *testing.T) {
	ns := namespace(t, "webhook-missing", true)
	deployed(t, ns, "v1", 2)

	_, stderr, err := kubectl(t, "", "annotate", "deployment/web", "-n", ns, "fledge.dev/policy=nope")
	require.Error(t, err)
	assert.Contains(t, stderr, `admission webhook "deployments.fledge.dev" denied the request: fledge: web: policy nope named by annotation fledge.dev/policy`)
	assert.Contains(t, stderr, `fledge.dev/skip`)
	assert.NotContains(t, get(t, ns, "web").Annotations, "fledge.dev/policy")
}

func TestSkipAnnotationBypassesFledge(t *testing.T) {
	ns := namespace(t, "webhook-skip", true)
	deployed(t, ns, "v1", 2)
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{rollout.AnnotationSkip: "true"}},
		"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
			"containers": []map[string]string{{"name": "app", "image": "fledge/demo:v2"}},
		}}},
	})
	require.NoError(t, err)
	_, stderr, err := kubectl(t, "", "patch", "deployment/web", "-n", ns, "--type=strategic", "-p", string(patch))
	require.NoError(t, err, stderr)
	d := get(t, ns, "web")
	assert.False(t, d.Spec.Paused)
	assert.NotContains(t, d.Annotations, rollout.AnnotationState)
}

func TestManifestsPassServerSideDryRun(t *testing.T) {
	stdout := dryRun // run by TestMain, see applyRBAC
	for _, want := range []string{
		"namespace/fledge-system", "serviceaccount/fledge", "clusterrole.rbac.authorization.k8s.io/fledge",
		"deployment.apps/fledge", "service/fledge-webhook", "poddisruptionbudget.policy/fledge",
		"mutatingwebhookconfiguration.admissionregistration.k8s.io/fledge",
		"validatingwebhookconfiguration.admissionregistration.k8s.io/fledge",
	} {
		assert.Regexp(t, regexp.QuoteMeta(want)+` (created|configured|unchanged) \(server dry run\)`, stdout)
	}
}

func TestManagerRunsAsTheManifestsServiceAccount(t *testing.T) {
	resp, err := http.Get(fledge.MetricsURL + "/metrics")
	require.NoError(t, err)
	resp.Body.Close()
	log, err := os.ReadFile(fledge.Log)
	require.NoError(t, err)
	assert.Contains(t, string(log), `"identity":"system:serviceaccount:fledge-system:fledge"`)
}
