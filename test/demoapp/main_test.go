package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMain lets a test run the real main in a child process
// (DEMOAPP_RUN_MAIN=1), to check how it exits.
func TestMain(m *testing.M) {
	if os.Getenv("DEMOAPP_RUN_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want config
		err  string
	}{
		{
			name: "port alone serves without errors or delay",
			env:  map[string]string{"PORT": "8080"},
			want: config{host: "127.0.0.1", port: "8080", version: "unknown"},
		},
		{
			name: "every setting",
			env:  map[string]string{"PORT": "1", "VERSION": "v2", "POD_NAME": "web-7d4b9-x2k4q", "ERROR_RATE": "0.25", "LATENCY": "50ms", "FAIL_AFTER": "1m"},
			want: config{host: "127.0.0.1", port: "1", version: "v2", pod: "web-7d4b9-x2k4q", errorRate: 0.25, latency: 50 * time.Millisecond, failAfter: time.Minute},
		},
		{
			name: "FAIL_AFTER without ERROR_RATE fails every request after it",
			env:  map[string]string{"PORT": "8080", "FAIL_AFTER": "30s"},
			want: config{host: "127.0.0.1", port: "8080", version: "unknown", errorRate: 1, failAfter: 30 * time.Second},
		},
		{
			name: "FAIL_AFTER with ERROR_RATE 0 never fails",
			env:  map[string]string{"PORT": "8080", "FAIL_AFTER": "30s", "ERROR_RATE": "0"},
			want: config{host: "127.0.0.1", port: "8080", version: "unknown", failAfter: 30 * time.Second},
		},
		{
			name: "empty values count as unset",
			env:  map[string]string{"PORT": "8080", "ERROR_RATE": "", "LATENCY": "", "FAIL_AFTER": ""},
			want: config{host: "127.0.0.1", port: "8080", version: "unknown"},
		},
		{
			name: "a pod's address to listen on",
			env:  map[string]string{"PORT": "8080", "HOST": "198.18.0.5"},
			want: config{host: "198.18.0.5", port: "8080", version: "unknown"},
		},
		{name: "host not an address", env: map[string]string{"PORT": "8080", "HOST": "web-1"}, err: `HOST="web-1": want an IP address to listen on, such as the pod's 198.18.0.5`},
		{name: "missing port", env: map[string]string{}, err: "PORT is not set: the port to listen on"},
		{name: "port not a number", env: map[string]string{"PORT": "http"}, err: `PORT="http": want a port number from 1 to 65535`},
		{name: "port out of range", env: map[string]string{"PORT": "70000"}, err: `PORT="70000": want a port number from 1 to 65535`},
		{name: "error rate above 1", env: map[string]string{"PORT": "1", "ERROR_RATE": "5"}, err: `ERROR_RATE="5": want a share from 0 to 1, such as 0.05`},
		{name: "error rate in percent", env: map[string]string{"PORT": "1", "ERROR_RATE": "5%"}, err: `ERROR_RATE="5%": want a share from 0 to 1, such as 0.05`},
		{name: "error rate NaN", env: map[string]string{"PORT": "1", "ERROR_RATE": "NaN"}, err: `ERROR_RATE="NaN": want a share from 0 to 1, such as 0.05`},
		{name: "latency without unit", env: map[string]string{"PORT": "1", "LATENCY": "50"}, err: `LATENCY="50": want a Go duration of at least 0, such as 50ms or 2m`},
		{name: "negative fail-after", env: map[string]string{"PORT": "1", "FAIL_AFTER": "-1s"}, err: `FAIL_AFTER="-1s": want a Go duration of at least 0, such as 50ms or 2m`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConfig(env(tt.env))
			if tt.err != "" {
				require.EqualError(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// get sends GET path to h and returns the status and body.
func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

// metricLines returns the lines of /metrics that start with prefix.
func metricLines(t *testing.T, h http.Handler, prefix string) []string {
	t.Helper()
	code, body := get(t, h, "/metrics")
	require.Equal(t, http.StatusOK, code)
	var lines []string
	for l := range strings.Lines(body) {
		if strings.HasPrefix(l, prefix) {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	return lines
}

// dice returns the given numbers in turn, as the app's random source.
func dice(values ...float64) func() float64 {
	i := 0
	return func() float64 { v := values[i%len(values)]; i++; return v }
}

func TestHealthyAppAnswersOKAndCountsOnlyItsPage(t *testing.T) {
	now := time.Unix(0, 0)
	a := newApp(config{version: "v1", pod: "web-1"}, func() time.Time { return now }, dice(0))
	h := a.handler()
	for range 3 {
		code, body := get(t, h, "/")
		assert.Equal(t, http.StatusOK, code)
		assert.Equal(t, "ok v1 web-1\n", body)
	}
	code, _ := get(t, h, "/other")
	assert.Equal(t, http.StatusNotFound, code)
	code, body := get(t, h, "/pod")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "web-1\n", body, "/pod names the pod, uncounted")

	assert.Equal(t, []string{
		`http_requests_total{code="200"} 3`,
		`http_requests_total{code="500"} 0`,
	}, metricLines(t, h, "http_requests_total"))
	assert.Equal(t, []string{"http_request_duration_seconds_count 3"}, metricLines(t, h, "http_request_duration_seconds_count"))
}

func TestAnswersNameTheVersionAndThePod(t *testing.T) {
	now := time.Unix(0, 0)
	tests := []struct {
		name string
		cfg  config
		roll float64
		code int
		body string
	}{
		{"ok names the pod", config{version: "v1", pod: "web-7d4b9-x2k4q"}, 0, http.StatusOK, "ok v1 web-7d4b9-x2k4q\n"},
		{"an error names the pod too", config{version: "v2", pod: "web-canary-5f6c8-9zt2m", errorRate: 1}, 0, http.StatusInternalServerError, "error v2 web-canary-5f6c8-9zt2m\n"},
		{"without POD_NAME the line ends after the version", config{version: "v1"}, 0, http.StatusOK, "ok v1\n"},
		{"an error without POD_NAME", config{version: "v3", errorRate: 1}, 0, http.StatusInternalServerError, "error v3\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newApp(tt.cfg, func() time.Time { return now }, dice(tt.roll)).handler()
			code, body := get(t, h, "/")
			assert.Equal(t, tt.code, code)
			assert.Equal(t, tt.body, body)
		})
	}
}

func TestErrorRateFailsTheShareTheDiceSay(t *testing.T) {
	now := time.Unix(0, 0)
	// With ERROR_RATE 0.5, a roll below 0.5 fails: 0.1 and 0.49 fail, 0.5 and 0.9 pass.
	a := newApp(config{version: "v2", errorRate: 0.5}, func() time.Time { return now }, dice(0.1, 0.5, 0.49, 0.9))
	h := a.handler()
	var codes []int
	for range 4 {
		code, _ := get(t, h, "/")
		codes = append(codes, code)
	}
	assert.Equal(t, []int{500, 200, 500, 200}, codes)
	_, body := get(t, h, "/")
	assert.Equal(t, "error v2\n", body)
	assert.Equal(t, []string{
		`http_requests_total{code="200"} 2`,
		`http_requests_total{code="500"} 3`,
	}, metricLines(t, h, "http_requests_total"))
}

func TestErrorRateOneFailsEveryRequest(t *testing.T) {
	now := time.Unix(0, 0)
	a := newApp(config{version: "v2", errorRate: 1}, func() time.Time { return now }, dice(0, 0.999999))
	h := a.handler()
	for range 10 {
		code, _ := get(t, h, "/")
		require.Equal(t, http.StatusInternalServerError, code)
	}
}

func TestFailAfterStartsErrorsOnlyAfterTheUptime(t *testing.T) {
	start := time.Unix(1000, 0)
	now := start
	a := newApp(config{version: "v2", errorRate: 1, failAfter: time.Minute}, func() time.Time { return now }, dice(0))
	h := a.handler()

	now = start.Add(59 * time.Second)
	code, _ := get(t, h, "/")
	assert.Equal(t, http.StatusOK, code, "before FAIL_AFTER")

	now = start.Add(time.Minute)
	code, _ = get(t, h, "/")
	assert.Equal(t, http.StatusInternalServerError, code, "at FAIL_AFTER")
}

func TestFailFileStartsAndStopsErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "fail")
	now := time.Unix(0, 0)
	cfg, err := parseConfig(func(k string) string { return map[string]string{"PORT": "8080", "FAIL_FILE": file}[k] })
	require.NoError(t, err)
	assert.Equal(t, 1.0, cfg.errorRate, "FAIL_FILE alone fails every request once the file exists")
	h := newApp(cfg, func() time.Time { return now }, dice(0)).handler()

	code, _ := get(t, h, "/")
	assert.Equal(t, http.StatusOK, code, "no file yet")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	code, _ = get(t, h, "/")
	assert.Equal(t, http.StatusInternalServerError, code, "the file exists")
	require.NoError(t, os.Remove(file))
	code, _ = get(t, h, "/")
	assert.Equal(t, http.StatusOK, code, "the file is gone")
}

func TestLatencyIsAddedAndObserved(t *testing.T) {
	a := newApp(config{version: "v1", latency: 30 * time.Millisecond}, time.Now, dice(0))
	h := a.handler()
	begin := time.Now()
	code, _ := get(t, h, "/")
	require.Equal(t, http.StatusOK, code)
	assert.GreaterOrEqual(t, time.Since(begin), 30*time.Millisecond)
	// 30ms lands above the 25ms bucket and within the 50ms one.
	buckets := metricLines(t, h, `http_request_duration_seconds_bucket{le="0.0`)
	assert.Contains(t, buckets, `http_request_duration_seconds_bucket{le="0.025"} 0`)
	assert.Contains(t, buckets, `http_request_duration_seconds_bucket{le="0.05"} 1`)
}

func TestServeListensOnLoopbackUntilCancelled(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, config{host: "127.0.0.1", port: strconv.Itoa(port), version: "v7", pod: "web-0"})
	}()

	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/"
	var body string
	require.Eventually(t, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusOK
	}, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, "ok v7 web-0\n", body)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after its context ended")
	}
	_, err = http.Get(url)
	assert.Error(t, err, "still answering after shutdown")
}

func TestBadEnvironmentExitsNamingTheVariable(t *testing.T) {
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
	cmd.Env = []string{"DEMOAPP_RUN_MAIN=1", "PORT=8080", "LATENCY=fast"}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	assert.Equal(t, 2, exit.ExitCode())
	assert.Equal(t, "demoapp: LATENCY=\"fast\": want a Go duration of at least 0, such as 50ms or 2m\n", string(out))
}
