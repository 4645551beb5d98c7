package policy

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// configMap builds a ConfigMap with the given data.
func configMap(name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"}, Data: data}
}

// namespace fakes a namespace's ConfigMaps the way an informer cache read
// answers: a NotFound error for a missing name.
func namespace(cms ...*corev1.ConfigMap) func(string) (*corev1.ConfigMap, error) {
	return func(name string) (*corev1.ConfigMap, error) {
		for _, cm := range cms {
			if cm.Name == name {
				return cm, nil
			}
		}
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
	}
}

const twoStepPolicy = "steps:\n- {weight: 10, hold: 30s}\n- {weight: 60, hold: 2m}\n"

// twoSteps is what twoStepPolicy parses to.
func twoSteps() *Policy {
	return &Policy{
		Steps:    []Step{{Weight: 10, Hold: dur(30 * time.Second)}, {Weight: 60, Hold: dur(2 * time.Minute)}},
		Capacity: CapacitySurge,
		Health:   Health{ReadyTimeout: dur(5 * time.Minute)},
	}
}

func TestFromConfigMap(t *testing.T) {
	tests := []struct {
		name    string
		cm      *corev1.ConfigMap
		want    *Policy
		wantErr string
	}{
		{
			name: "the policy.yaml key is parsed",
			cm:   configMap("team-a", map[string]string{"policy.yaml": twoStepPolicy}),
			want: twoSteps(),
		},
		{
			name:    "a missing key says which key is expected and which were found",
			cm:      configMap("team-a", map[string]string{"policy.yml": twoStepPolicy, "notes": "x"}),
			wantErr: "policy team-a: has no data key policy.yaml; put the policy document under data.policy.yaml (found: notes, policy.yml)",
		},
		{
			name:    "a ConfigMap without data says which key is expected",
			cm:      configMap("team-a", nil),
			wantErr: "policy team-a: has no data key policy.yaml; put the policy document under data.policy.yaml",
		},
		{
			name:    "validation errors are prefixed with the ConfigMap's name",
			cm:      configMap("team-a", map[string]string{"policy.yaml": "steps:\n- {weight: 5, hold: 1m}\n- {weight: 120, hold: 1m}\n"}),
			wantErr: "policy team-a: steps[1].weight: 120 is not between 1 and 99",
		},
		{
			name:    "an empty policy.yaml is named",
			cm:      configMap("team-a", map[string]string{"policy.yaml": ""}),
			wantErr: "policy team-a: policy.yaml is empty",
		},
		{
			name:    "no ConfigMap is an error, not a panic",
			cm:      nil,
			wantErr: "policy: no ConfigMap",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := FromConfigMap(tt.cm)
			if tt.wantErr != "" {
				assert.EqualError(t, err, tt.wantErr)
				assert.Nil(t, p)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, p)
		})
	}
}

func TestFromConfigMapKeepsTheFieldErrorsReachable(t *testing.T) {
	_, err := FromConfigMap(configMap("team-a", map[string]string{"policy.yaml": "steps: []\ncapacity: x\n"}))
	var errs Errors
	require.True(t, errors.As(err, &errs))
	assert.Equal(t, Errors{
		{Field: "steps", Detail: "none given; add at least one step, such as {weight: 5, hold: 1m}"},
		{Field: "capacity", Detail: `"x" is not allowed; use "surge" or "shift"`},
	}, errs)
}

func TestResolve(t *testing.T) {
	named := configMap("team-a", map[string]string{"policy.yaml": twoStepPolicy})
	fallback := configMap("fledge-policy", map[string]string{"policy.yaml": "steps:\n- {weight: 20, hold: 5m}\ncapacity: shift\n"})
	broken := configMap("fledge-policy", map[string]string{"policy.yaml": "steps:\n- {weight: 0, hold: 5m}\n"})
	boom := errors.New("cache not synced")
	tests := []struct {
		name        string
		annotations map[string]string
		get         func(string) (*corev1.ConfigMap, error)
		want        *Policy
		wantSource  string
		wantErr     string
	}{
		{
			name:        "the ConfigMap named by the annotation wins over fledge-policy",
			annotations: map[string]string{"fledge.dev/policy": "team-a"},
			get:         namespace(named, fallback),
			want:        twoSteps(),
			wantSource:  "configmap/team-a",
		},
		{
			name:        "a named ConfigMap that does not exist is refused, not replaced by the default",
			annotations: map[string]string{"fledge.dev/policy": "team-b"},
			get:         namespace(fallback),
			wantErr:     "policy team-b named by annotation fledge.dev/policy does not exist in this namespace (a policy is a ConfigMap labelled fledge.dev/policy: \"true\"); create it or remove the annotation",
		},
		{
			name:        "a named ConfigMap that does not validate is refused with its field",
			annotations: map[string]string{"fledge.dev/policy": "team-a"},
			get:         namespace(configMap("team-a", map[string]string{"policy.yaml": "steps:\n- {weight: 5, hold: 1m}\n- {weight: 120, hold: 1m}\n"})),
			wantErr:     "policy team-a: steps[1].weight: 120 is not between 1 and 99",
		},
		{
			name:        "an empty annotation is refused",
			annotations: map[string]string{"fledge.dev/policy": ""},
			get:         namespace(fallback),
			wantErr:     "annotation fledge.dev/policy is empty; name a policy ConfigMap or remove the annotation",
		},
		{
			name:        "an annotation that cannot be a ConfigMap name is refused",
			annotations: map[string]string{"fledge.dev/policy": "Team A"},
			get:         namespace(fallback),
			wantErr:     `annotation fledge.dev/policy: "Team A" is not a ConfigMap name`,
		},
		{
			name:        "without the annotation fledge-policy is used",
			annotations: map[string]string{"other": "x"},
			get:         namespace(named, fallback),
			want: &Policy{
				Steps:    []Step{{Weight: 20, Hold: dur(5 * time.Minute)}},
				Capacity: CapacityShift,
				Health:   Health{ReadyTimeout: dur(5 * time.Minute)},
			},
			wantSource: "configmap/fledge-policy",
		},
		{
			name:    "an invalid fledge-policy is refused, not replaced by the default",
			get:     namespace(broken),
			wantErr: "policy fledge-policy: steps[0].weight: 0 is not between 1 and 99",
		},
		{
			name:       "without annotation and fledge-policy the built-in default is used",
			get:        namespace(named),
			want:       Default(),
			wantSource: "default",
		},
		{
			name:        "a read error for the named ConfigMap is returned wrapped",
			annotations: map[string]string{"fledge.dev/policy": "team-a"},
			get:         func(string) (*corev1.ConfigMap, error) { return nil, boom },
			wantErr:     "policy team-a: reading the ConfigMap: cache not synced",
		},
		{
			name:    "a read error for fledge-policy is returned wrapped, not taken for absence",
			get:     func(string) (*corev1.ConfigMap, error) { return nil, boom },
			wantErr: "policy fledge-policy: reading the ConfigMap: cache not synced",
		},
		{
			name:    "no reader is an error, not a panic",
			wantErr: "policy: no way to read ConfigMaps",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, source, err := Resolve(tt.annotations, tt.get)
			if tt.wantErr != "" {
				assert.EqualError(t, err, tt.wantErr)
				assert.Nil(t, p)
				assert.Empty(t, source)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, p)
			assert.Equal(t, tt.wantSource, source)
		})
	}
}

func TestResolveWrapsReadErrors(t *testing.T) {
	boom := errors.New("cache not synced")
	_, _, err := Resolve(nil, func(string) (*corev1.ConfigMap, error) { return nil, boom })
	assert.ErrorIs(t, err, boom)
}
