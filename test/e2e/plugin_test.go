package e2e

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fledge-dev/fledge/rollout"
)

func TestPluginStatusWaitExitCodes(t *testing.T) {
	t.Run("promoted: 0", func(t *testing.T) {
		ns := rolloutNamespace(t, "plugin-wait-ok", "2s", 2)
		release(t, ns, "v2", 2)
		stdout, stderr, code := kubectlFledge(t, "status", "web", "-n", ns, "--wait", "--timeout=90s")
		assert.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
		assert.Contains(t, stdout, "Succeeded")
		assert.Contains(t, stdout, "STEP")
		assert.Contains(t, stdout, "MONITORING RESULT")
	})
	t.Run("rolled back: 1", func(t *testing.T) {
		ns := rolloutNamespace(t, "plugin-wait-crash", "2s", 2)
		release(t, ns, "v3", 2, crashing)
		stdout, stderr, code := kubectlFledge(t, "status", "web", "-n", ns, "--wait", "--timeout=90s")
		assert.Equal(t, 1, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
		assert.Contains(t, stdout, "RolledBack")
		assert.Contains(t, stdout, "containerFailed")
	})
	t.Run("still running at the timeout: 2", func(t *testing.T) {
		ns := rolloutNamespace(t, "plugin-wait-timeout", "5m", 2)
		release(t, ns, "v2", 2)
		stdout, stderr, code := kubectlFledge(t, "status", "web", "-n", ns, "--wait", "--timeout=3s")
		assert.Equal(t, 2, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
	})
}

func TestPluginSteersARollout(t *testing.T) {
	ns := rolloutNamespace(t, "plugin-steer", "5m", 2)
	release(t, ns, "v2", 2)
	waitState(t, ns, "holding", func(s *rollout.State) bool { return s.HoldingSince != nil })

	stdout, stderr, code := kubectlFledge(t, "pause", "web", "-n", ns)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, "web: pause accepted\n", stdout)
	waitState(t, ns, "paused", func(s *rollout.State) bool { return s.Phase == rollout.Paused })

	stdout, stderr, code = kubectlFledge(t, "resume", "web", "-n", ns)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, "web: resume accepted\n", stdout)

	stdout, stderr, code = kubectlFledge(t, "promote", "web", "-n", ns)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, "web: promote accepted\n", stdout)
	waitState(t, ns, "step 2", func(s *rollout.State) bool { return s.Step == 1 })

	stdout, _, code = kubectlFledge(t, "list", "-n", ns)
	require.Equal(t, 0, code)
	assert.Regexp(t, `(?m)^web\s+Progressing\s+2/3\s`, stdout)

	stdout, stderr, code = kubectlFledge(t, "abort", "web", "-n", ns)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, "web: abort accepted\n", stdout)
	out := waitOutcome(t, ns)
	assert.Equal(t, rollout.Aborted, out.Phase)
	canaryGone(t, ns)

	_, stderr, code = kubectlFledge(t, "abort", "web", "-n", ns)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "no rollout")
}

func TestPluginPolicyLint(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "policy.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("steps:\n- weight: 120\n  hold: 1m\n- wieght: 5\n"), 0o644))
	stdout, stderr, code := kubectlFledge(t, "policy", "lint", bad)
	assert.Equal(t, 1, code, stdout)
	assert.Contains(t, stdout+stderr, "steps[1].wieght: unknown field")

	_, stderr, code = kubectlFledge(t, "policy", "lint", "../../manifests/examples/policy.yaml")
	assert.Equal(t, 0, code, stderr)
}
