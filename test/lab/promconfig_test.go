package lab

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/fledge-dev/fledge/rollout"
)

func TestPodLabelMetaIsWhatPodDiscoveryNamesTheLabel(t *testing.T) {
	assert.Equal(t, "__meta_kubernetes_pod_label_fledge_dev_track", podLabelMeta(rollout.LabelTrack))
	assert.Equal(t, "__meta_kubernetes_pod_label_app_kubernetes_io_name", podLabelMeta("app.kubernetes.io/name"))
}
