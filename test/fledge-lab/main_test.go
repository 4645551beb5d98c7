package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestUpServesKubectlAndCtrlCLeavesNothing runs `fledge-lab up --fledge` as a
// person would: kubectl with the printed KUBECONFIG sees Ready nodes and
// fledge's webhook, and Ctrl-C (SIGINT) leaves no process of the lab running.
func TestUpServesKubectlAndCtrlCLeavesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a lab")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "fledge-lab")
	build := exec.Command("go", "build", "-o", dir+"/", ".", "../../cmd/fledge")
	out, err := build.CombinedOutput()
	require.NoError(t, err, string(out))

	up := exec.Command(bin, "up", "--nodes=3", "--fledge")
	stdout, err := up.StdoutPipe()
	require.NoError(t, err)
	var stderr bytes.Buffer
	up.Stderr = &stderr
	require.NoError(t, up.Start())
	defer up.Process.Kill()

	var kubeconfig, labDir, fledgeLine string
	lines := bufio.NewScanner(stdout)
	deadline := time.AfterFunc(2*time.Minute, func() { up.Process.Kill() })
	defer deadline.Stop()
	for kubeconfig == "" && lines.Scan() {
		line := lines.Text()
		if strings.HasPrefix(line, "fledge-lab: fledge is running") {
			fledgeLine = line
		}
		if k, ok := strings.CutPrefix(line, "export KUBECONFIG="); ok {
			kubeconfig = k
			labDir = filepath.Dir(k)
		}
	}
	require.NotEmpty(t, kubeconfig, "no export line; stderr: %s", stderr.String())
	assert.Regexp(t, `^fledge-lab: fledge is running, webhooks at https://127\.0\.0\.1:\d+; its log: `+labDir+`/fledge\.log$`, fledgeLine)

	webhooks := exec.Command("kubectl", "get", "mutatingwebhookconfigurations", "-o", "jsonpath={.items[*].webhooks[*].name}")
	webhooks.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	out, err = webhooks.CombinedOutput()
	require.NoError(t, err, string(out))
	assert.Equal(t, "deployments.fledge.dev", string(out))

	kubectl := exec.Command("kubectl", "get", "nodes", "--no-headers", "-o", "custom-columns=NAME:.metadata.name,READY:.status.conditions[?(@.type=='Ready')].status")
	kubectl.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	out, err = kubectl.CombinedOutput()
	require.NoError(t, err, string(out))
	assert.Equal(t, "lab-node-0   True\nlab-node-1   True\nlab-node-2   True\n", string(out))

	require.NoError(t, up.Process.Signal(syscall.SIGINT))
	go func() {
		for lines.Scan() {
		}
	}()
	require.NoError(t, up.Wait(), stderr.String())

	assert.Empty(t, processesMentioning(labDir), "processes of the lab still run")
	_, err = os.Stat(labDir)
	assert.True(t, os.IsNotExist(err), "lab directory %s remains", labDir)
}

// processesMentioning returns the command lines of running processes that
// mention s (every lab program is given paths inside the lab directory).
func processesMentioning(s string) []string {
	var found []string
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, path := range cmdlines {
		data, err := os.ReadFile(path)
		if err == nil && bytes.Contains(data, []byte(s)) {
			found = append(found, path+": "+string(bytes.ReplaceAll(data, []byte{0}, []byte{' '})))
		}
	}
	return found
}
