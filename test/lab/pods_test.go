package lab

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// demoPod is a Running pod of fledge/demo:v2 on lab-node-0; edit it to taste.
func demoPod(edit func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", UID: "uid-1"},
		Spec: corev1.PodSpec{
			NodeName: "lab-node-0",
			Containers: []corev1.Container{{
				Name: "app", Image: "fledge/demo:v2",
				Env: []corev1.EnvVar{{Name: "ERROR_RATE", Value: "1"}},
			}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	if edit != nil {
		edit(p)
	}
	return p
}

func TestWantsDemo(t *testing.T) {
	nodes := map[string]bool{"lab-node-0": true, "lab-node-1": true}
	now := metav1.NewTime(time.Unix(0, 0))
	tests := []struct {
		name string
		pod  *corev1.Pod
		want demoSpec
		ok   bool
	}{
		{
			name: "running demo pod gets VERSION from its tag and its literal env",
			pod:  demoPod(nil),
			want: demoSpec{uid: "uid-1", port: 8080, tag: "v2", env: []string{"VERSION=v2", "POD_NAME=web-1", "POD_NAMESPACE=shop", "ERROR_RATE=1"}},
			ok:   true,
		},
		{
			name: "a container's own VERSION comes after the tag, so it wins",
			pod: demoPod(func(p *corev1.Pod) {
				p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "VERSION", Value: "blue"}}
			}),
			want: demoSpec{uid: "uid-1", port: 8080, tag: "v2", env: []string{"VERSION=v2", "POD_NAME=web-1", "POD_NAMESPACE=shop", "VERSION=blue"}},
			ok:   true,
		},
		{
			name: "valueFrom, envFrom and PORT are skipped and reported",
			pod: demoPod(func(p *corev1.Pod) {
				p.Spec.Containers[0].Env = []corev1.EnvVar{
					{Name: "LATENCY", Value: "10ms"},
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "PORT", Value: "80"},
				}
				p.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}}}}
			}),
			want: demoSpec{uid: "uid-1", port: 8080, tag: "v2", env: []string{"VERSION=v2", "POD_NAME=web-1", "POD_NAMESPACE=shop", "LATENCY=10ms"}, skipped: []string{"POD_NAME", "PORT", "envFrom configMap settings"}},
			ok:   true,
		},
		{
			name: "demo image in a second container",
			pod: demoPod(func(p *corev1.Pod) {
				p.Spec.Containers = append([]corev1.Container{{Name: "sidecar", Image: "busybox:1"}}, p.Spec.Containers...)
			}),
			want: demoSpec{uid: "uid-1", port: 8080, tag: "v2", env: []string{"VERSION=v2", "POD_NAME=web-1", "POD_NAMESPACE=shop", "ERROR_RATE=1"}},
			ok:   true,
		},
		{
			name: "image without tag is latest",
			pod:  demoPod(func(p *corev1.Pod) { p.Spec.Containers[0].Image = "fledge/demo"; p.Spec.Containers[0].Env = nil }),
			want: demoSpec{uid: "uid-1", port: 8080, tag: "latest", env: []string{"VERSION=latest", "POD_NAME=web-1", "POD_NAMESPACE=shop"}},
			ok:   true,
		},
		{name: "no pod", pod: nil},
		{name: "pending pod", pod: demoPod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending })},
		{name: "failed pod", pod: demoPod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed })},
		{name: "pod being deleted", pod: demoPod(func(p *corev1.Pod) { p.DeletionTimestamp = &now })},
		{name: "pod on a node that is not the lab's", pod: demoPod(func(p *corev1.Pod) { p.Spec.NodeName = "elsewhere" })},
		{name: "unscheduled pod", pod: demoPod(func(p *corev1.Pod) { p.Spec.NodeName = "" })},
		{
			name: "pod that kwok's chaos stage will fail",
			pod:  demoPod(func(p *corev1.Pod) { p.Labels = map[string]string{failingLabel: "true"} }),
		},
		{name: "another image", pod: demoPod(func(p *corev1.Pod) { p.Spec.Containers[0].Image = "nginx:1.27" })},
		{name: "an image whose name only starts like the demo's", pod: demoPod(func(p *corev1.Pod) { p.Spec.Containers[0].Image = "fledge/demo-admin:v1" })},
		{name: "an empty tag", pod: demoPod(func(p *corev1.Pod) { p.Spec.Containers[0].Image = "fledge/demo:" })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := wantsDemo(tt.pod, nodes)
			assert.Equal(t, tt.ok, ok)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestPrefixWriterPassesWholeLines(t *testing.T) {
	log, err := openLineLog(filepath.Join(t.TempDir(), "pods.log"))
	require.NoError(t, err)
	w := &prefixWriter{log: log, prefix: "shop/web-1: "}
	for _, chunk := range []string{"listen", "ing on 1\nsecond ", "line\n", "unfinished"} {
		n, err := w.Write([]byte(chunk))
		require.NoError(t, err)
		require.Equal(t, len(chunk), n)
	}
	w.flush()
	log.close()
	p := &process{logPath: log.path}
	assert.Equal(t, "shop/web-1: listening on 1\nshop/web-1: second line\nshop/web-1: unfinished\n", p.tail(10))
}

func TestNodeCIDRsSplitTheLabsPodBlock(t *testing.T) {
	got, err := nodeCIDRs(netip.MustParsePrefix("198.18.16.0/20"), 3)
	require.NoError(t, err)
	assert.Equal(t, []netip.Prefix{
		netip.MustParsePrefix("198.18.16.0/22"),
		netip.MustParsePrefix("198.18.20.0/22"),
		netip.MustParsePrefix("198.18.24.0/22"),
	}, got)
	got, err = nodeCIDRs(netip.MustParsePrefix("198.18.0.0/20"), 2)
	require.NoError(t, err)
	assert.Equal(t, []netip.Prefix{netip.MustParsePrefix("198.18.0.0/21"), netip.MustParsePrefix("198.18.8.0/21")}, got)
}
