package main

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fledge-dev/fledge/test/lab"
)

// TestUpServesKubectlAndCtrlCLeavesNothing runs `fledge-lab up --fledge
// --prometheus` as a person would: kubectl with the printed KUBECONFIG sees
// Ready nodes and fledge's webhook, the printed Prometheus is ready,
// `fledge-lab traffic` reaches the demo pods of a Deployment applied with
// kubectl, and Ctrl-C (SIGINT) leaves no process of the lab running, demo
// processes included.
func TestUpServesKubectlAndCtrlCLeavesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a lab")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "fledge-lab")
	build := exec.Command("go", "build", "-o", dir+"/", ".", "../../cmd/fledge", "../demoapp")
	out, err := build.CombinedOutput()
	require.NoError(t, err, string(out))

	up := exec.Command(bin, "up", "--nodes=3", "--fledge", "--prometheus")
	stdout, err := up.StdoutPipe()
	require.NoError(t, err)
	var stderr bytes.Buffer
	up.Stderr = &stderr
	require.NoError(t, up.Start())
	defer up.Process.Kill()

	var kubeconfig, labDir, fledgeLine, prometheusURL string
	lines := bufio.NewScanner(stdout)
	deadline := time.AfterFunc(3*time.Minute, func() { up.Process.Kill() })
	defer deadline.Stop()
	for kubeconfig == "" && lines.Scan() {
		line := lines.Text()
		if strings.HasPrefix(line, "fledge-lab: fledge is running") {
			fledgeLine = line
		}
		if u, ok := strings.CutPrefix(line, "Prometheus: "); ok {
			prometheusURL = u
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
	assert.Equal(t, "deployments.fledge.dev deployment-creates.fledge.dev deployment-status.fledge.dev", string(out))

	kubectl := exec.Command("kubectl", "get", "nodes", "--no-headers", "-o", "custom-columns=NAME:.metadata.name,READY:.status.conditions[?(@.type=='Ready')].status")
	kubectl.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	out, err = kubectl.CombinedOutput()
	require.NoError(t, err, string(out))
	assert.Equal(t, "lab-node-0   True\nlab-node-1   True\nlab-node-2   True\n", string(out))

	assert.Regexp(t, `^http://127\.0\.0\.1:\d+$`, prometheusURL)
	resp, err := http.Get(prometheusURL + "/-/ready")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	sendTraffic(t, bin, kubeconfig)

	require.NoError(t, up.Process.Signal(syscall.SIGINT))
	go func() {
		for lines.Scan() {
		}
	}()
	require.NoError(t, up.Wait(), stderr.String())

	assert.Empty(t, processesMentioning(labDir), "processes of the lab still run")
	assert.Empty(t, processesMentioning(filepath.Join(dir, "demoapp")), "demo processes still run")
	_, err = os.Stat(labDir)
	assert.True(t, os.IsNotExist(err), "lab directory %s remains", labDir)
}

// sendTraffic applies a Deployment of 2 demo pods and a Service with
// kubectl, waits until the lab runs both pods, and checks what
// `fledge-lab traffic` prints: a line a second and a summary that adds up.
func sendTraffic(t *testing.T, bin, kubeconfig string) {
	t.Helper()
	kubectl := func(stdin string, args ...string) string {
		cmd := exec.CommandContext(t.Context(), "kubectl", args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
		return string(out)
	}
	kubectl(`apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: "fledge/demo:v1"}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
`, "apply", "-f", "-")
	require.Eventually(t, func() bool {
		ports := kubectl("", "get", "pods", "-l", "app=web", "-o", `jsonpath={.items[*].metadata.annotations.lab\.fledge\.dev/port}`)
		return len(strings.Fields(ports)) == 2
	}, time.Minute, 200*time.Millisecond, "the demo pods never got their ports")

	cmd := exec.CommandContext(t.Context(), bin, "traffic", "--service=web", "--rps=50", "--duration=2500ms", "--kubeconfig="+kubeconfig)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.GreaterOrEqual(t, len(lines), 4, string(out))
	assert.Equal(t, "fledge-lab: sending 50 requests a second to service default/web", lines[0])
	perSecond := 0
	for _, line := range lines[1 : len(lines)-1] {
		m := regexp.MustCompile(`^\d\d:\d\d:\d\d stable (\d+) req 0 err \| canary share 0\.0%$`).FindStringSubmatch(line)
		require.NotNil(t, m, "per-second line %q", line)
		n, _ := strconv.Atoi(m[1])
		perSecond += n
	}
	m := regexp.MustCompile(`^fledge-lab: (\d+) requests in \d\.\ds: stable (\d+) req 0 err \| canary share 0\.0%; users saw 0 errors \(0\.0%\)$`).FindStringSubmatch(lines[len(lines)-1])
	require.NotNil(t, m, "summary %q", lines[len(lines)-1])
	total, _ := strconv.Atoi(m[1])
	assert.Equal(t, m[1], m[2], "every request went to a stable pod")
	assert.Equal(t, total, perSecond, "the lines add up to the summary")
	assert.LessOrEqual(t, total, 125, "at most 2.5s at 50 requests a second")
	assert.GreaterOrEqual(t, total, 60, "at least 1.2s at 50 requests a second")
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

func TestTrafficRefusesBadFlags(t *testing.T) {
	tests := []struct {
		name string
		opts trafficOptions
		err  string
	}{
		{"no service", trafficOptions{rps: 10, kubeconfig: "k"}, "traffic: --service is required"},
		{"too many requests", trafficOptions{service: "web", rps: 5000, kubeconfig: "k"}, "traffic: --rps 5000 is not between 1 and 1000"},
		{"no requests", trafficOptions{service: "web", rps: 0, kubeconfig: "k"}, "traffic: --rps 0 is not between 1 and 1000"},
		{"no kubeconfig", trafficOptions{service: "web", rps: 10}, "traffic: no kubeconfig: pass --kubeconfig or set KUBECONFIG to the one fledge-lab up prints"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.EqualError(t, traffic(t.Context(), tt.opts, io.Discard), tt.err)
		})
	}
}

func TestSummary(t *testing.T) {
	from := time.Unix(0, 0)
	s := lab.TrafficStats{
		From: from, To: from.Add(10 * time.Second),
		Tracks: map[string]lab.Counts{"stable": {Requests: 750}, "canary": {Requests: 250, Errors: 50}},
	}
	assert.Equal(t, "fledge-lab: 1000 requests in 10.0s: stable 750 req 0 err | canary 250 req 50 err | canary share 25.0%; users saw 50 errors (5.0%)", summary(s))
	assert.Equal(t, "fledge-lab: no requests were sent", summary(lab.TrafficStats{}))
}
