package lab

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// managerPodOf is a Running pod of the manager as manifests/deployment.yaml
// makes it, on lab-node-1; edit it to taste.
func managerPodOf(edit func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "fledge-6d9f-abcde", Namespace: "fledge-system", UID: "uid-m"},
		Spec: corev1.PodSpec{
			NodeName:                      "lab-node-1",
			ServiceAccountName:            "fledge",
			TerminationGracePeriodSeconds: ptr.To[int64](20),
			Containers: []corev1.Container{{
				Name: "manager", Image: "ghcr.io/fledge-dev/fledge:dev",
				Args: []string{"--cert-dir=/tmp/k8s-webhook-server/serving-certs", "--metrics-bind-address=:8080", "--health-probe-bind-address=:8081", "--leader-elect=true"},
				Env: []corev1.EnvVar{
					{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
					{Name: "LOG", Value: "debug"},
				},
				Ports: []corev1.ContainerPort{{Name: "webhook", ContainerPort: 9443}, {Name: "health", ContainerPort: 8081}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("health")}},
					PeriodSeconds: 5,
				},
				Lifecycle:    &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 5}}},
				VolumeMounts: []corev1.VolumeMount{{Name: "serving-certs", MountPath: "/tmp/k8s-webhook-server/serving-certs"}},
			}},
			Volumes: []corev1.Volume{{Name: "serving-certs", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "198.18.8.3"},
	}
	if edit != nil {
		edit(p)
	}
	return p
}

func TestWantsManager(t *testing.T) {
	nodes := map[string]bool{"lab-node-0": true, "lab-node-1": true}
	now := metav1.NewTime(time.Unix(0, 0))
	spec, ok := wantsManager(managerPodOf(nil), nodes)
	assert.True(t, ok)
	assert.Equal(t, managerSpec{
		uid: "uid-m", container: "manager", image: "ghcr.io/fledge-dev/fledge:dev", hostname: "fledge-6d9f-abcde",
		serviceAccount: "fledge", ip: netip.MustParseAddr("198.18.8.3"),
		args:   []string{"--cert-dir=/tmp/k8s-webhook-server/serving-certs", "--metrics-bind-address=:8080", "--health-probe-bind-address=:8081", "--leader-elect=true"},
		env:    []string{"POD_NAMESPACE=fledge-system", "LOG=debug", "HOSTNAME=fledge-6d9f-abcde"},
		mounts: map[string]string{"/tmp/k8s-webhook-server/serving-certs": "serving-certs"},
		readiness: &probeSpec{scheme: "http", path: "/readyz", port: 8081,
			timeout: time.Second, success: 1, failure: 3},
		preStop: 5 * time.Second,
		grace:   20 * time.Second,
	}, spec)

	for _, tt := range []struct {
		name string
		pod  *corev1.Pod
	}{
		{"no pod", nil},
		{"pending pod", managerPodOf(func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending })},
		{"pod being deleted", managerPodOf(func(p *corev1.Pod) { p.DeletionTimestamp = &now })},
		{"pod on a node that is not the lab's", managerPodOf(func(p *corev1.Pod) { p.Spec.NodeName = "elsewhere" })},
		{"pod that kwok's chaos stage will fail", managerPodOf(func(p *corev1.Pod) { p.Labels = map[string]string{failingLabel: "true"} })},
		{"another image", managerPodOf(func(p *corev1.Pod) { p.Spec.Containers[0].Image = "fledge/demo:v1" })},
		{"an image whose name only starts like the manager's", managerPodOf(func(p *corev1.Pod) { p.Spec.Containers[0].Image = "ghcr.io/fledge-dev/fledge-plugin:dev" })},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, ok := wantsManager(tt.pod, nodes)
			assert.False(t, ok)
		})
	}
}

func TestWantsManagerResolvesWhatTheKubeletWould(t *testing.T) {
	nodes := map[string]bool{"lab-node-1": true}
	spec, ok := wantsManager(managerPodOf(func(p *corev1.Pod) {
		c := &p.Spec.Containers[0]
		c.Image = "ghcr.io/fledge-dev/fledge@sha256:0123"
		c.Env = []corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
			{Name: "TEAM", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['team']"}}},
			{Name: "SECRET", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "k"}}},
		}
		c.ReadinessProbe.HTTPGet.Port = intstr.FromInt32(9000)
		c.ReadinessProbe.FailureThreshold = 1
		c.Lifecycle = nil
		p.Labels = map[string]string{"team": "a"}
		p.Spec.TerminationGracePeriodSeconds = nil
		p.Spec.ServiceAccountName = ""
		p.Spec.Hostname = "mgr"
	}), nodes)
	assert.True(t, ok)
	assert.Equal(t, []string{"POD_NAME=fledge-6d9f-abcde", "NODE=lab-node-1", "TEAM=a", "HOSTNAME=mgr"}, spec.env)
	assert.Equal(t, []string{"SECRET"}, spec.skipped)
	assert.Equal(t, 9000, spec.readiness.port)
	assert.Equal(t, 1, spec.readiness.failure)
	assert.Zero(t, spec.preStop)
	assert.Equal(t, 30*time.Second, spec.grace, "the API's default grace period")
	assert.Equal(t, "default", spec.serviceAccount)
}

func TestManagerArgsBindThePodsOwnAddresses(t *testing.T) {
	spec, _ := wantsManager(managerPodOf(nil), map[string]bool{"lab-node-1": true})
	dir := func(volume string) string { return "/lab/pods/fledge-system_m/volumes/" + volume }
	assert.Equal(t, []string{
		"--cert-dir=/lab/pods/fledge-system_m/volumes/serving-certs",
		"--metrics-bind-address=198.18.8.3:8080",
		"--health-probe-bind-address=198.18.8.3:8081",
		"--leader-elect=true",
		"--webhook-host=198.18.8.3",
		"--kubeconfig=/lab/pods/fledge-system_m/kubeconfig",
	}, managerArgs(spec, dir, "/lab/pods/fledge-system_m/kubeconfig"))

	spec.args = []string{"--webhook-host=0.0.0.0", "--metrics-bind-address=0", "--cert-dir=/tmp/k8s-webhook-server/serving-certs/sub", "--kubeconfig=/etc/kube"}
	assert.Equal(t, []string{
		"--metrics-bind-address=0",
		"--cert-dir=/lab/pods/fledge-system_m/volumes/serving-certs/sub",
		"--health-probe-bind-address=198.18.8.3:8081",
		"--webhook-host=198.18.8.3",
		"--kubeconfig=/k",
	}, managerArgs(spec, dir, "/k"), "a disabled address stays disabled; an address left out is the manager's default on the pod's IP")
}

func TestCrashBackOffIsTheKubelets(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var b crashBackOff
	for _, tt := range []struct {
		exit time.Duration // after t0
		want time.Duration
	}{
		{0, time.Second},                     // first exit: started again at the next sync
		{30 * time.Second, 10 * time.Second}, // then 10s, doubling
		{60 * time.Second, 20 * time.Second},
		{90 * time.Second, 40 * time.Second},
		{150 * time.Second, 80 * time.Second},
		{250 * time.Second, 160 * time.Second},
		{420 * time.Second, 300 * time.Second}, // at most 300s
		{730 * time.Second, 300 * time.Second},
		{730*time.Second + 11*time.Minute, time.Second}, // forgotten after 10 minutes without an exit
		{730*time.Second + 12*time.Minute, 10 * time.Second},
	} {
		assert.Equal(t, tt.want, b.next(t0.Add(tt.exit)), "exit at +%s", tt.exit)
	}
}
