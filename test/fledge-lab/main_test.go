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

	var kubeconfig, labDir, fledgeLine, prometheusURL, netns string
	lines := bufio.NewScanner(stdout)
	deadline := time.AfterFunc(3*time.Minute, func() { up.Process.Kill() })
	defer deadline.Stop()
	for kubeconfig == "" && lines.Scan() {
		line := lines.Text()
		if strings.HasPrefix(line, "fledge-lab: fledge is running") {
			fledgeLine = line
		}
		if rest, ok := strings.CutPrefix(line, "fledge-lab: node network "); ok {
			netns = strings.Fields(rest)[0]
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
	require.NotEmpty(t, netns, "no node network line")
	namespaces, err := exec.Command("ip", "netns", "list").CombinedOutput()
	require.NoError(t, err, string(namespaces))
	assert.NotRegexp(t, `(?m)^`+netns+`\b`, string(namespaces), "the node network remains")
}

// sendTraffic applies a Deployment of 2 demo pods and a Service with
// kubectl, waits until both pods answer through the Service's ClusterIP
// (kube-proxy has programmed it), and checks what
// `fledge-lab traffic` prints: a line a second, a summary that adds up and
// the split by pod.
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
  ports: [{port: 80, targetPort: 8080}]
`, "apply", "-f", "-")
	probe := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	clusterIP := kubectl("", "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}")
	answered := map[string]bool{}
	require.Eventually(t, func() bool {
		for range 20 {
			resp, err := probe.Get("http://" + clusterIP + "/")
			if err != nil {
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if f := strings.Fields(string(body)); len(f) == 3 {
				answered[f[2]] = true
			}
		}
		return len(answered) == 2
	}, time.Minute, 200*time.Millisecond, "the 2 demo pods never both answered through the ClusterIP %s", clusterIP)

	cmd := exec.CommandContext(t.Context(), bin, "traffic", "--service=web", "--rps=50", "--duration=2500ms", "--kubeconfig="+kubeconfig)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.GreaterOrEqual(t, len(lines), 5, string(out))
	assert.Equal(t, "fledge-lab: sending 50 requests a second to service default/web on new connections, canary by label:fledge.dev/track=canary", lines[0])
	split := lines[len(lines)-1]
	lines = lines[:len(lines)-1]
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
	m = regexp.MustCompile(`^fledge-lab: by pod: web-\S+ (\d+) req 0 err \(\d+\.\d%\), web-\S+ (\d+) req 0 err \(\d+\.\d%\); over (\d+) connections$`).FindStringSubmatch(split)
	require.NotNil(t, m, "split %q", split)
	a, _ := strconv.Atoi(m[1])
	b, _ := strconv.Atoi(m[2])
	assert.Equal(t, total, a+b, "both pods answered, and only they")
	assert.Equal(t, strconv.Itoa(total), m[3], "a connection per request")
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

// trafficArgs parses the flags of traffic as main does.
func trafficArgs(t *testing.T, args ...string) trafficOptions {
	t.Helper()
	t.Setenv("KUBECONFIG", "")
	var opts trafficOptions
	require.NoError(t, trafficFlags(&opts).Parse(args))
	return opts
}

func TestTrafficFlags(t *testing.T) {
	assert.Equal(t, trafficOptions{
		namespace: "default", service: "web", rps: 100,
		connections: "new", trackBy: "label:fledge.dev/track=canary",
	}, trafficArgs(t, "--service=web"), "the defaults")
	assert.Equal(t, trafficOptions{
		namespace: "shop", service: "web", rps: 500, duration: 30 * time.Second, kubeconfig: "lab.kubeconfig",
		connections: "keepalive:64", trackBy: "image:v2", json: true,
	}, trafficArgs(t, "--namespace=shop", "--service=web", "--rps=500", "--duration=30s", "--kubeconfig=lab.kubeconfig",
		"--connections=keepalive:64", "--track-by=image:v2", "--json"))
}

func TestTrafficRefusesBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		err  string
	}{
		{"no service", []string{"--kubeconfig=k"}, "traffic: --service is required"},
		{"too many requests", []string{"--service=web", "--rps=5000", "--kubeconfig=k"}, "traffic: --rps 5000 is not between 1 and 1000"},
		{"no requests", []string{"--service=web", "--rps=0", "--kubeconfig=k"}, "traffic: --rps 0 is not between 1 and 1000"},
		{"a pool of none", []string{"--service=web", "--connections=keepalive:0", "--kubeconfig=k"},
			`traffic: --connections: want new or keepalive:N with N from 1 to 1000, got "keepalive:0"`},
		{"connections misspelt", []string{"--service=web", "--connections=keep-alive", "--kubeconfig=k"},
			`traffic: --connections: want new or keepalive:N with N from 1 to 1000, got "keep-alive"`},
		{"a track by nothing", []string{"--service=web", "--track-by=canary", "--kubeconfig=k"},
			`traffic: --track-by: want label:KEY=VALUE (such as label:fledge.dev/track=canary) or image:TAG (such as image:v2), got "canary"`},
		{"no kubeconfig", []string{"--service=web"}, "traffic: no kubeconfig: pass --kubeconfig or set KUBECONFIG to the one fledge-lab up prints"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.EqualError(t, traffic(t.Context(), trafficArgs(t, tt.args...), io.Discard, io.Discard), tt.err)
		})
	}
}

func TestSummary(t *testing.T) {
	from := time.Unix(0, 0)
	s := lab.TrafficStats{
		From: from, To: from.Add(10 * time.Second),
		Tracks: map[string]lab.Counts{"stable": {Requests: 750}, "canary": {Requests: 250, Errors: 50}},
		Pods:   map[string]lab.Counts{"web-b": {Requests: 400}, "web-a": {Requests: 350}, "web-canary": {Requests: 250, Errors: 50}},
	}
	assert.Equal(t, "fledge-lab: 1000 requests in 10.0s: stable 750 req 0 err | canary 250 req 50 err | canary share 25.0%; users saw 50 errors (5.0%)", summary(s))
	assert.Equal(t, "fledge-lab: by pod: web-a 350 req 0 err (35.0%), web-b 400 req 0 err (40.0%), web-canary 250 req 50 err (25.0%); over 4 connections", split(s, 4))
	assert.Equal(t, "fledge-lab: no requests were sent", summary(lab.TrafficStats{}))
	assert.Equal(t, "fledge-lab: by pod: no pod answered; over 0 connections", split(lab.TrafficStats{}, 0))
}

func TestJSONReport(t *testing.T) {
	from := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	first := lab.TrafficStats{
		From: from, To: from.Add(time.Second),
		Tracks: map[string]lab.Counts{"stable": {Requests: 150}},
		Pods:   map[string]lab.Counts{"web-a": {Requests: 80}, "web-b": {Requests: 70}},
	}
	second := lab.TrafficStats{
		From: from.Add(time.Second), To: from.Add(2 * time.Second),
		Tracks:     map[string]lab.Counts{"stable": {Requests: 30}, "canary": {Requests: 10, Errors: 10}},
		Pods:       map[string]lab.Counts{"web-a": {Requests: 30}, "web-canary-1": {Requests: 10, Errors: 10}, "web-new": {Requests: 2}},
		Untracked:  lab.Counts{Requests: 2},
		NoEndpoint: 8,
	}
	total := lab.TrafficStats{
		From: from, To: from.Add(2*time.Second + 500*time.Millisecond),
		Tracks:     map[string]lab.Counts{"stable": {Requests: 180}, "canary": {Requests: 20, Errors: 10}},
		Pods:       map[string]lab.Counts{"web-a": {Requests: 110}, "web-b": {Requests: 70}, "web-canary-1": {Requests: 20, Errors: 10}, "web-new": {Requests: 2}},
		Untracked:  lab.Counts{Requests: 2},
		NoEndpoint: 8,
	}
	var out bytes.Buffer
	r := newReport("shop/web", 100, lab.Connections{KeepAlive: 8}, lab.DefaultTrackBy, 8, total, []lab.TrafficStats{first, second})
	require.NoError(t, writeReport(&out, r))
	assert.Equal(t, `{
  "service": "shop/web",
  "rps": 100,
  "connections": "keepalive:8",
  "trackBy": "label:fledge.dev/track=canary",
  "connectionsOpened": 8,
  "total": {
    "from": "2026-12-02T10:00:00Z",
    "to": "2026-12-02T10:00:02.5Z",
    "requests": 210,
    "errors": 18,
    "tracks": {
      "canary": {
        "requests": 20,
        "errors": 10,
        "share": 0.1
      },
      "stable": {
        "requests": 180,
        "errors": 0,
        "share": 0.9
      }
    },
    "untracked": {
      "requests": 2,
      "errors": 0
    },
    "unanswered": 8,
    "pods": {
      "web-a": {
        "requests": 110,
        "errors": 0
      },
      "web-b": {
        "requests": 70,
        "errors": 0
      },
      "web-canary-1": {
        "requests": 20,
        "errors": 10
      },
      "web-new": {
        "requests": 2,
        "errors": 0
      }
    }
  },
  "seconds": [
    {
      "from": "2026-12-02T10:00:00Z",
      "to": "2026-12-02T10:00:01Z",
      "requests": 150,
      "errors": 0,
      "tracks": {
        "canary": {
          "requests": 0,
          "errors": 0,
          "share": 0
        },
        "stable": {
          "requests": 150,
          "errors": 0,
          "share": 1
        }
      },
      "untracked": {
        "requests": 0,
        "errors": 0
      },
      "unanswered": 0,
      "pods": {
        "web-a": {
          "requests": 80,
          "errors": 0
        },
        "web-b": {
          "requests": 70,
          "errors": 0
        }
      }
    },
    {
      "from": "2026-12-02T10:00:01Z",
      "to": "2026-12-02T10:00:02Z",
      "requests": 50,
      "errors": 18,
      "tracks": {
        "canary": {
          "requests": 10,
          "errors": 10,
          "share": 0.25
        },
        "stable": {
          "requests": 30,
          "errors": 0,
          "share": 0.75
        }
      },
      "untracked": {
        "requests": 2,
        "errors": 0
      },
      "unanswered": 8,
      "pods": {
        "web-a": {
          "requests": 30,
          "errors": 0
        },
        "web-canary-1": {
          "requests": 10,
          "errors": 10
        },
        "web-new": {
          "requests": 2,
          "errors": 0
        }
      }
    }
  ]
}
`, out.String())

	empty := newReport("default/web", 10, lab.Connections{}, lab.TrackBy{Image: "v2"}, 0, lab.TrafficStats{}, nil)
	assert.Equal(t, []period{}, empty.Seconds, "an empty list, not null")
	assert.Equal(t, map[string]track{"stable": {}, "canary": {}}, empty.Total.Tracks, "both tracks, always")
	assert.Equal(t, "image:v2", empty.TrackBy)
	assert.Equal(t, "new", empty.Connections)
}
