package webhook

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// The manager's own writes never reach its Deployment webhooks; the policy
// webhook, which fledge never writes through, has no such condition.
func TestConfigurationsLeaveOutFledgesOwnWrites(t *testing.T) {
	m, v := Configurations(Target{Namespace: "fledge-system", ServiceName: "fledge-webhook", ServicePort: 443, Self: "system:serviceaccount:fledge-system:fledge"})
	var names []string
	for _, w := range m.Webhooks {
		names = append(names, w.Name)
		if assert.NotEmpty(t, w.MatchConditions, w.Name) {
			assert.Equal(t, NotSelfCondition, w.MatchConditions[0].Name, w.Name)
			assert.Equal(t, `request.userInfo.username != "system:serviceaccount:fledge-system:fledge"`, w.MatchConditions[0].Expression, w.Name)
		}
	}
	assert.Equal(t, []string{deploymentsWebhookName, createWebhookName, statusWebhookName}, names)
	assert.Empty(t, v.Webhooks[0].MatchConditions)

	m, _ = Configurations(Target{Namespace: "fledge-system", URL: "https://127.0.0.1:9443"})
	for _, w := range m.Webhooks {
		assert.NotEqual(t, NotSelfCondition, w.MatchConditions[0].Name, "no Self, no condition: %s", w.Name)
	}
	assert.Equal(t, `request.userInfo.username != "a \"quoted\" name"`, NotSelfExpression(`a "quoted" name`))
}
