// Command scale (make bench-scale) measures the fledge manager at scale on
// the lab, as a repeatable run: its memory idle, with -deployments
// Deployments and during -rollouts rollouts changed at once; the router's
// reconciles, queue wait and lag from a step's hold end to the next step;
// fledge's writes and the webhook's admissions per rollout; and the latency
// the webhook adds to a Deployment PATCH through the apiserver. It prints
// one table, each figure beside its goal and how it was measured, and
// writes the same figures to bin/bench-scale.json.
//
// It is a benchmark, not a test: a missed goal is a figure, and the exit
// status is 0; only a run that failed (a rollout that did not Succeed
// included) exits 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fledge-dev/fledge/test/lab"
)

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fledge-scale:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, cfg)
	stop()
	os.Exit(code)
}

// run measures, prints the report and writes its JSON; it returns the
// exit status.
func run(ctx context.Context, cfg config) int {
	r := measure(ctx, cfg)
	r.print(os.Stdout)
	if cfg.JSON != "" {
		if err := r.writeJSON(cfg.JSON); err != nil {
			fmt.Fprintln(os.Stderr, "fledge-scale:", err)
			return 1
		}
		say("figures written to %s", cfg.JSON)
	}
	if r.Failed != "" || (r.Rollouts != nil && len(r.Rollouts.Failures) > 0) {
		return 1
	}
	return 0
}

// measure is the run, step by step. The lab, and the manager in it, stop
// on every way out, Ctrl-C included (ctx ends, the step under way returns
// its error, and the deferred Stop runs).
func measure(ctx context.Context, cfg config) (r *report) {
	began := time.Now()
	r = &report{Config: cfg, Machine: machineNow(), Pods: cfg.pods(), Nodes: cfg.nodes()}
	defer func() { r.Wall = time.Since(began) }()
	fail := func(err error) *report {
		r.Failed = err.Error()
		return r
	}

	bin, cleanup, err := fledgeBinary(ctx, cfg.Fledge)
	if err != nil {
		return fail(err)
	}
	defer cleanup()
	r.Fledge = bin
	if cfg.Fledge == "" {
		r.Fledge = "cmd/fledge of this checkout at " + checkoutRevision(ctx)
	}

	say("starting a lab with %d kwok nodes", r.Nodes)
	l, err := lab.Start(ctx, lab.Options{Nodes: r.Nodes, AuditLog: cfg.Rollouts > 0, UnlimitedClients: true})
	if err != nil {
		return fail(err)
	}
	defer l.Stop()
	defer func() { r.Machine.OtherLabs += fmt.Sprintf(", %d at end", kubeAPIServers()-1) }()
	f, err := l.StartFledge(ctx, bin)
	if err != nil {
		return fail(err)
	}
	m, err := newManager(ctx, l, f)
	if err != nil {
		return fail(err)
	}
	api, err := newAPIServer(l)
	if err != nil {
		return fail(err)
	}
	w, err := newWorkload(l, cfg)
	if err != nil {
		return fail(err)
	}
	if err := w.watch(ctx); err != nil {
		return fail(err)
	}
	defer w.stopWatching()

	say("idle: %d opted-in namespaces with their policy, no Deployments", cfg.Namespaces)
	if err := w.createNamespaces(ctx); err != nil {
		return fail(err)
	}
	idle, err := m.settledMemory(ctx, cfg.Settle)
	if err != nil {
		return fail(err)
	}
	r.Idle = &idle

	say("populating: %s Deployments, %s pods", count(cfg.Deployments), count(r.Pods))
	populating := time.Now()
	if err := w.createDeployments(ctx); err != nil {
		return fail(err)
	}
	if err := w.waitRolledOut(ctx); err != nil {
		return fail(fmt.Errorf("wait for the Deployments' pods: %w", err))
	}
	r.Populating = time.Since(populating)
	populated, err := m.settledMemory(ctx, cfg.Settle)
	if err != nil {
		return fail(err)
	}
	r.Populated = &populated
	if cfg.Rollouts == 0 {
		return r
	}

	wh, err := measureWebhook(ctx, l, w, m, api, cfg.LatencySamples)
	if err != nil {
		return fail(fmt.Errorf("webhook latency: %w", err))
	}
	r.Webhook = &wh

	ro, err := measureRollouts(ctx, cfg, l, w, m, api)
	r.Rollouts = &ro
	if err != nil {
		return fail(fmt.Errorf("rollouts: %w", err))
	}
	return r
}

// machine is where the run ran.
type machine struct {
	GOMAXPROCS int    `json:"gomaxprocs"`
	NProc      int    `json:"nproc"`
	Go         string `json:"go"`
	// OtherLabs counts the kube-apiserver processes of other labs, which
	// share the machine's cores, when the run began and when it ended.
	OtherLabs string `json:"otherLabs"`
}

func machineNow() machine {
	m := machine{GOMAXPROCS: runtime.GOMAXPROCS(0), NProc: runtime.NumCPU(), Go: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH}
	if out, err := exec.Command("nproc").Output(); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil {
			m.NProc = n
		}
	}
	m.OtherLabs = fmt.Sprintf("%d at start", kubeAPIServers())
	return m
}

// kubeAPIServers counts the processes running a kube-apiserver program,
// as `pgrep -f kube-apiserver` would.
func kubeAPIServers() int {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	n := 0
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if argv0, _, _ := strings.Cut(string(cmdline), "\x00"); filepath.Base(argv0) == "kube-apiserver" {
			n++
		}
	}
	return n
}

// say reports progress on stderr; the table goes to stdout.
func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "fledge-scale: "+format+"\n", args...)
}
