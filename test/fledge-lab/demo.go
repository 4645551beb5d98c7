package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/term"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/fledge-dev/fledge/rollout"
	"github.com/fledge-dev/fledge/test/lab"
)

// The demo plays the seed's process table on the lab: a healthy release
// grows 5% → 25% → 50% and is promoted, a broken one is caught at 50% and
// rolled back. The Deployment then holds the broken revision (paused on the
// template applied, the stable pods serving), which applying it again does
// not change, until `kubectl fledge undo` puts the stable template back.
// Everything a person would type goes through real kubectl and the real
// plugin, so the demo shows what using fledge looks like, not a simulation
// of it.
const (
	demoNamespace = "demo"
	demoApp       = "web"
	demoReplicas  = 10
	// demoRPS is enough traffic for a 5% canary to get ten requests a
	// second, while leaving the two cores to the control plane.
	demoRPS = 200
	// demoWaitFor bounds each wait on the lab, so a stuck demo says what
	// it waited for instead of hanging.
	demoWaitFor = 5 * time.Minute
)

// demoOptions are the flags of demo.
type demoOptions struct {
	hold      time.Duration
	proxyMode string
}

func demoFlags(opts *demoOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	fs.Usage = printUsage
	fs.DurationVar(&opts.hold, "hold", 15*time.Second, "hold of the 5% and 25% steps; the 50% step holds twice as long")
	fs.StringVar(&opts.proxyMode, "proxy-mode", "nftables", "kube-proxy's mode in the lab's node network: nftables or iptables")
	return fs
}

// demoPrograms are the programs `make build` puts next to fledge-lab.
type demoPrograms struct {
	// dir goes first on kubectl's PATH, where kubectl finds kubectl-fledge.
	dir     string
	fledge  string
	demoApp string
}

// findDemoPrograms finds the demo's programs beside fledge-lab and kubectl
// on PATH, naming everything that is missing at once.
func findDemoPrograms() (demoPrograms, error) {
	exe, err := os.Executable()
	if err != nil {
		return demoPrograms{}, err
	}
	dir := filepath.Dir(exe)
	var missing []string
	for _, name := range []string{"fledge", "kubectl-fledge", "demoapp"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			missing = append(missing, filepath.Join(dir, name))
		}
	}
	if len(missing) > 0 {
		return demoPrograms{}, fmt.Errorf("missing %s: run `make build`", strings.Join(missing, ", "))
	}
	if _, err := exec.LookPath("kubectl"); err != nil {
		return demoPrograms{}, errors.New("kubectl is not on PATH: the demo uses it as a person would; install it (v1.32 is tested)")
	}
	return demoPrograms{dir: dir, fledge: filepath.Join(dir, "fledge"), demoApp: filepath.Join(dir, "demoapp")}, nil
}

// demo runs the whole demo and stops every process it started, whatever
// happens, before it returns.
func demo(ctx context.Context, opts demoOptions, out, errOut io.Writer) error {
	began := time.Now()
	if opts.hold < time.Second {
		return fmt.Errorf("demo: --hold %s: want at least 1s", opts.hold)
	}
	progs, err := findDemoPrograms()
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	fmt.Fprint(out, demoIntro(opts.hold))

	l, err := startDemoLab(ctx, progs, opts.proxyMode, out)
	if err != nil {
		return demoEnd(ctx, fmt.Errorf("demo: %w", err))
	}
	d := &demoRun{lab: l, progs: progs, hold: opts.hold, out: out, errOut: errOut, terminal: isTerminal(out)}
	err = d.run(ctx)
	fmt.Fprintln(out, "\nfledge-lab: stopping the lab")
	l.Stop()
	fmt.Fprintf(out, "fledge-lab: the demo took %s\n", time.Since(began).Round(time.Second))
	return demoEnd(ctx, err)
}

// demoEnd says plainly that Ctrl-C ended the demo, rather than repeating
// whatever the interrupted step reported.
func demoEnd(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return errors.New("demo: interrupted; the lab is stopped")
	}
	return err
}

func demoIntro(hold time.Duration) string {
	return fmt.Sprintf(`fledge-lab demo: progressive delivery of a plain Deployment, on a lab started here.
  1. web v1 serves %d requests a second from %d pods, in a namespace that opted in to fledge.
  2. v2, healthy, is applied with kubectl: fledge gives it 5%%, 25%%, 50%% of the pods (and so of
     the traffic), holding %s, %s and %s while it compares v2's errors with v1's, counted by
     Prometheus, in a sequential test, then promotes it.
  3. v3, which starts failing after a while, is applied: caught at 50%%, it is rolled back. web
     then holds v3: the Deployment stays paused on the template applied while v2's pods serve
     everyone, and applying v3 again changes nothing.
  4. kubectl fledge undo puts v2's template back and unpauses web: none of its pods is replaced.

`, demoRPS, demoReplicas, hold, hold, 2*hold)
}

// startDemoLab starts the lab with Prometheus, the pod runner and fledge,
// and prints how to look at it from another shell.
func startDemoLab(ctx context.Context, progs demoPrograms, proxyMode string, out io.Writer) (*lab.Lab, error) {
	fmt.Fprintf(out, "fledge-lab: starting the lab (etcd, kube-apiserver, controller manager, scheduler, kwok, kube-proxy in %s mode, Prometheus)\n", proxyMode)
	start := time.Now()
	l, err := lab.Start(ctx, lab.Options{DemoApp: progs.demoApp, Prometheus: true, ProxyMode: proxyMode})
	if err != nil {
		return nil, err
	}
	f, err := l.StartFledge(ctx, progs.fledge)
	if err != nil {
		l.Stop()
		return nil, err
	}
	fmt.Fprintf(out, "fledge-lab: lab and fledge ready in %.1fs; logs in %s (fledge: %s)\n",
		time.Since(start).Seconds(), l.Dir, filepath.Base(f.Log))
	fmt.Fprintln(out, "fledge-lab: to look around from another shell while the demo runs:")
	fmt.Fprintf(out, "export KUBECONFIG=%s\n", l.Kubeconfig)
	fmt.Fprintf(out, "export PATH=%s:$PATH   # for kubectl fledge\n", progs.dir)
	return l, nil
}

// isTerminal reports whether w is a terminal: the plugin then redraws its
// table in place, over what the demo printed before.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// demoRun is one run of the demo on a started lab.
type demoRun struct {
	lab         *lab.Lab
	progs       demoPrograms
	hold        time.Duration
	out, errOut io.Writer
	terminal    bool
	traffic     *lab.Traffic
}

// release is one `kubectl apply` of a new version and the rollout it made.
type release struct {
	tag, what string
	env       []string
	applied   time.Time
	outcome   *rollout.Outcome
	// hold is what followed a rollback: the Deployment held the failed
	// revision until kubectl fledge undo; nil when nothing was held.
	hold *holdRecord
}

// holdRecord is what the demo saw while web held a failed revision and when
// kubectl fledge undo took it back to the stable one.
type holdRecord struct {
	stableTag string
	// serving is how many pods of the stable version served while held.
	serving int
	// undone is set once web was back on the stable template, unpaused,
	// every pod Ready; replaced is how many of the pods that served while
	// held were replaced on the way (none: nothing rolls).
	undone   bool
	replaced int
}

// run sets up v1 and its users, releases v2 and v3, shows web holding v3
// after its rollback, and undoes it.
func (d *demoRun) run(ctx context.Context) error {
	if err := d.setUp(ctx); err != nil {
		return err
	}
	stopTraffic, err := d.startTraffic(ctx)
	if err != nil {
		return err
	}
	defer stopTraffic()

	v2, err := d.release(ctx, "v2", "a healthy version", "expect 5% → 25% → 50%, then the Deployment rolls to v2")
	if err != nil {
		return err
	}
	if v2.outcome.Phase != rollout.Succeeded {
		stopTraffic()
		d.summary(v2)
		return fmt.Errorf("demo: v2 is healthy but its rollout ended %s%s", v2.outcome.Phase, reasonSuffix(v2.outcome.Reason))
	}

	failFile := filepath.Join(d.lab.Dir, "v3-fails")
	watch, stopWatch := context.WithCancel(ctx)
	switched := d.failAtHalf(watch, failFile)
	v3, err := d.release(ctx, "v3", fmt.Sprintf("answers 500 from %s after its 50%% pods are Ready", breakMargin),
		fmt.Sprintf("v3 passes 5%% and 25%%; %s after its 50%% pods are Ready, the demo makes every v3 pod answer 500 (FAIL_FILE)", breakMargin),
		"FAIL_FILE="+failFile)
	stopWatch()
	<-switched
	if err != nil {
		return err
	}
	if err := d.afterRollback(ctx, v3); err != nil {
		return err
	}
	if v3.outcome.Failed() {
		if err := d.showHold(ctx, v3, v2.tag); err != nil {
			return d.failed(stopTraffic, err, v2, v3)
		}
		if err := d.undo(ctx, v3); err != nil {
			return d.failed(stopTraffic, err, v2, v3)
		}
	}
	stopTraffic()
	d.summary(v2, v3)
	return caughtAtHalf(v3.outcome)
}

// failed ends a run that went wrong after its releases: the summary still
// shows what was seen.
func (d *demoRun) failed(stopTraffic func(), err error, releases ...*release) error {
	stopTraffic()
	d.summary(releases...)
	return err
}

// setUp applies what a team would have before its first release: the
// opted-in namespace, its policy and web v1 with its Service; and waits
// until every v1 pod answers.
func (d *demoRun) setUp(ctx context.Context) error {
	fmt.Fprintf(d.out, "\n== The team's namespace %q (opted in), its policy, and web v1 ==\n", demoNamespace)
	if err := d.apply(ctx, demoNamespaceYAML()+"---\n"+demoPolicyYAML(d.lab.PrometheusURL, d.hold), "namespace demo, ConfigMap fledge-policy"); err != nil {
		return err
	}
	if err := d.waitFor(ctx, "the default ServiceAccount of namespace demo", func(ctx context.Context) (bool, error) {
		_, err := d.lab.Client.CoreV1().ServiceAccounts(demoNamespace).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		return err
	}
	if err := d.apply(ctx, webYAML("v1"), "web v1: image fledge/demo:v1, 10 replicas, and its Service"); err != nil {
		return err
	}
	return d.waitServing(ctx, "v1")
}

// waitServing waits until all the Deployment's pods run tag, are Ready and
// have a demo process answering for them.
func (d *demoRun) waitServing(ctx context.Context, tag string) error {
	return d.waitFor(ctx, fmt.Sprintf("%d pods of %s:%s serving", demoReplicas, lab.DemoImage, tag), func(ctx context.Context) (bool, error) {
		names, err := d.servingPods(ctx, tag)
		return err == nil && len(names) == demoReplicas, nil
	})
}

// servingPods lists the pods of web serving tag, by name.
func (d *demoRun) servingPods(ctx context.Context, tag string) ([]string, error) {
	pods, err := d.lab.Client.CoreV1().Pods(demoNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + demoApp})
	if err != nil {
		return nil, fmt.Errorf("demo: list the pods of web: %w", err)
	}
	return serving(pods.Items, lab.DemoImage+":"+tag, d.lab.DemoPIDs()), nil
}

// serving names the pods that run image, are Ready, are not being deleted
// and have a demo process answering for them (running, by
// "namespace/name").
func serving(pods []corev1.Pod, image string, running map[string]int) []string {
	var names []string
	for _, p := range pods {
		if p.DeletionTimestamp == nil && len(p.Spec.Containers) > 0 && p.Spec.Containers[0].Image == image &&
			podReady(&p) && running[p.Namespace+"/"+p.Name] != 0 {
			names = append(names, p.Name)
		}
	}
	return names
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// startTraffic starts the users: demoRPS requests a second to the Service
// until the returned function is called (it is safe to call twice). It
// shows the first seconds, so the audience sees what "no errors" looks
// like before any release.
func (d *demoRun) startTraffic(ctx context.Context) (func(), error) {
	d.traffic = lab.NewTraffic(d.lab.Client, demoNamespace, demoApp, demoRPS)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.traffic.Run(runCtx) }()
	var runErr error
	stop := sync.OnceFunc(func() { cancel(); runErr = <-done })

	fmt.Fprintf(d.out, "\nfledge-lab: users send %d requests a second to Service web, spread over its ready pods as kube-proxy does\n", demoRPS)
	from := time.Now()
	if err := sleep(ctx, 3*time.Second); err != nil {
		stop()
		return nil, err
	}
	s, n := wholeSeconds(d.traffic, from)
	if s.Requests() == 0 {
		stop()
		return nil, fmt.Errorf("demo: no request reached Service web in 3s (%v)", runErr)
	}
	fmt.Fprintf(d.out, "fledge-lab: users in %ds: %s\n", n, failures(s))
	return stop, nil
}

// release applies web at tag with env, follows its rollout with the
// plugin until it ends, and returns the outcome fledge recorded.
func (d *demoRun) release(ctx context.Context, tag, what, expect string, env ...string) (*release, error) {
	r := &release{tag: tag, what: what, env: env}
	fmt.Fprintf(d.out, "\n== web %s: %s ==\n", tag, what)
	fmt.Fprintf(d.out, "fledge-lab: %s\n", expect)
	applying := fmt.Sprintf("web %s: image %s:%s", tag, lab.DemoImage, tag)
	if len(env) > 0 {
		applying += ", env " + strings.Join(env, " ")
	}
	r.applied = time.Now()
	if err := d.apply(ctx, webYAML(tag, env...), applying); err != nil {
		return nil, err
	}
	exitCode, err := d.follow(ctx)
	if err != nil {
		return nil, err
	}
	if r.outcome, err = d.outcomeSince(ctx, r.applied); err != nil {
		return nil, err
	}
	fmt.Fprintf(d.out, "fledge-lab: web %s %s; kubectl fledge status --wait exited %d, as a CI job would see it\n",
		tag, r.outcome.Phase, exitCode)
	return r, nil
}

// outcomeSince reads the outcome of web's last rollout, which must have
// finished after the release: the plugin has just said it did.
func (d *demoRun) outcomeSince(ctx context.Context, applied time.Time) (*rollout.Outcome, error) {
	dep, err := d.lab.Client.AppsV1().Deployments(demoNamespace).Get(ctx, demoApp, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("demo: read deployment web: %w", err)
	}
	o, err := rollout.ParseOutcome(dep)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	if o == nil || o.FinishedAt.Time.Before(applied) {
		return nil, errors.New("demo: kubectl fledge status said the rollout ended, but web records no outcome since the release")
	}
	return o, nil
}

// breakMargin is how long after the canary's pods are Ready at 50% v3
// starts failing: enough for a few evaluations that pass at 50%, well
// within the 50% hold.
const breakMargin = 3 * time.Second

// failAtHalf makes v3 regress at 50%: it watches web's rollout state and,
// breakMargin after the 50% step's pods were all Ready, creates failFile,
// whose presence makes every v3 process answer 500 (the demo app's
// FAIL_FILE). A regression switched on at 50% does not depend on how long
// the steps before took, which an uptime (FAIL_AFTER) would. The channel
// closes when the watch ends: the file is made, or ctx ends, or the
// rollout is over without reaching 50%.
func (d *demoRun) failAtHalf(ctx context.Context, failFile string) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		started := false
		for ctx.Err() == nil {
			dep, err := d.lab.Client.AppsV1().Deployments(demoNamespace).Get(ctx, demoApp, metav1.GetOptions{})
			if err == nil {
				s, _ := rollout.ParseState(dep)
				started = started || s != nil
				if s == nil && started {
					return // the rollout ended before 50%
				}
				if s != nil && int(s.Step) == len(s.Policy.Steps)-1 && s.HoldingSince != nil {
					select {
					case <-time.After(time.Until(s.HoldingSince.Add(breakMargin))):
					case <-ctx.Done():
						return
					}
					_ = os.WriteFile(failFile, nil, 0o644)
					return
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	return done
}

// apply runs `kubectl apply -f -` with manifest, as a person would, showing
// what kubectl says on both streams (fledge's admission warning comes on
// stderr).
func (d *demoRun) apply(ctx context.Context, manifest, what string) error {
	fmt.Fprintf(d.out, "$ kubectl apply -f -   # %s\n", what)
	cmd := d.kubectl(ctx, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("demo: kubectl apply (%s): %w", what, err)
	}
	return nil
}

// follow shows the live rollout with `kubectl fledge status --watch --wait`
// until it ends, and returns the plugin's exit code: 0 Succeeded, 1
// RolledBack (or Aborted).
func (d *demoRun) follow(ctx context.Context) (int, error) {
	fmt.Fprintf(d.out, "$ kubectl fledge status %s -n %s --watch --wait\n", demoApp, demoNamespace)
	if d.terminal {
		// The plugin redraws on a cleared screen: leave a moment to read
		// what kubectl apply said.
		if err := sleep(ctx, 3*time.Second); err != nil {
			return 0, err
		}
	}
	cmd := d.kubectl(ctx, "fledge", "status", demoApp, "-n", demoNamespace, "--watch", "--wait", "--timeout", demoWaitFor.String())
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return 0, ctx.Err()
	case err == nil:
		return 0, nil
	case errors.As(err, &exit) && exit.ExitCode() == 1:
		return 1, nil // rolled back: release reads why
	}
	return 0, fmt.Errorf("demo: kubectl fledge status: %w", err)
}

// kubectl is a kubectl command on the lab, with the plugin on its PATH and
// the demo's streams. Cancelling ctx interrupts it as Ctrl-C would, so the
// plugin ends cleanly.
func (d *demoRun) kubectl(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "kubectl", args...)
	cmd.Env = append(os.Environ(),
		"KUBECONFIG="+d.lab.Kubeconfig,
		"PATH="+d.progs.dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = d.out, d.errOut
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// afterRollback shows a few seconds of traffic once v3 is cut. kube-proxy
// takes a moment to stop sending new connections to the canary's pods,
// which keep answering while they drain: the demo says when the last
// canary answer came after the cut, then shows every request on the stable
// version again, the seed's last row.
func (d *demoRun) afterRollback(ctx context.Context, r *release) error {
	o := r.outcome
	if !o.Failed() || len(o.History) == 0 || o.History[len(o.History)-1].Ended == nil {
		return nil
	}
	cut := o.History[len(o.History)-1].Ended.Time
	if err := sleep(ctx, 3*time.Second); err != nil {
		return err
	}
	last := d.traffic.LastRequest(rollout.TrackCanary)
	if last.After(cut) {
		fmt.Fprintf(d.out, "fledge-lab: kube-proxy sent the canary its last request %s after the cut\n", last.Sub(cut).Round(10*time.Millisecond))
	}
	from := time.Now()
	if err := sleep(ctx, 3*time.Second); err != nil {
		return err
	}
	s, n := wholeSeconds(d.traffic, from)
	fmt.Fprintf(d.out, "fledge-lab: users in %ds after that: %s\n", n, failures(s))
	return nil
}

// wholeSeconds returns the traffic of the whole seconds of t between from
// and now, and how many seconds that is: a count over 2s must not be
// reported as 3s of traffic.
func wholeSeconds(t *lab.Traffic, from time.Time) (lab.TrafficStats, int) {
	now := time.Now()
	var first, last time.Time
	n := 0
	for _, s := range t.Seconds() {
		if s.From.Before(from) || s.To.After(now) {
			continue
		}
		if n == 0 {
			first = s.From
		}
		last = s.To
		n++
	}
	return t.Between(first, last), n
}

// Columns that show a Deployment holding a failed revision: paused, its
// template the version applied, its pods Ready (they are the stable
// ReplicaSet's). The stable selector leaves canary ReplicaSets out.
const (
	holdColumns    = "custom-columns=NAME:.metadata.name,PAUSED:.spec.paused,TEMPLATE:.spec.template.spec.containers[0].image,READY:.status.readyReplicas"
	stableSelector = "app=" + demoApp + ",!" + rollout.LabelTrack
)

// showHold shows web holding the failed revision of r, the way a person or
// a GitOps tool finds it: fledge's status, the Deployment paused on the
// template applied, the stable ReplicaSet serving every pod; then applies
// r's manifest again, which must change nothing. It records in r.hold what
// it verified, for the summary.
func (d *demoRun) showHold(ctx context.Context, r *release, stableTag string) error {
	fmt.Fprintf(d.out, "\n== web holds %s: paused on the template applied, %s serving ==\n", r.tag, stableTag)
	if err := d.checkHeld(ctx, r.outcome); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"fledge", "status", demoApp, "-n", demoNamespace},
		{"get", "deployment", demoApp, "-n", demoNamespace, "-o", holdColumns},
		{"get", "replicasets", "-n", demoNamespace, "-l", stableSelector, "-o", "wide"},
	} {
		if err := d.shown(ctx, args...); err != nil {
			return err
		}
	}
	if err := d.apply(ctx, webYAML(r.tag, r.env...), fmt.Sprintf("web %s again, as a GitOps tool re-syncing it would", r.tag)); err != nil {
		return err
	}
	if err := d.checkHeld(ctx, r.outcome); err != nil {
		return err
	}
	if err := d.waitServing(ctx, stableTag); err != nil {
		return err
	}
	r.hold = &holdRecord{stableTag: stableTag, serving: demoReplicas}
	fmt.Fprintf(d.out, "fledge-lab: web holds %s: paused on %s's template as applied (no drift for a GitOps tool), %d pods of %s serve, "+
		"and applying %s again released nothing\n", r.tag, r.tag, demoReplicas, stableTag, r.tag)
	return nil
}

// undo runs kubectl fledge undo on the held r, waits until web is back on
// the stable template, unpaused, every pod Ready, and shows what kubectl
// rollout status says then and what users saw.
func (d *demoRun) undo(ctx context.Context, r *release) error {
	h := r.hold
	fmt.Fprintf(d.out, "\n== kubectl fledge undo: web back on %s's template ==\n", h.stableTag)
	before, err := d.servingPods(ctx, h.stableTag)
	if err != nil {
		return err
	}
	from := time.Now()
	if err := d.shown(ctx, "fledge", "undo", demoApp, "-n", demoNamespace); err != nil {
		return err
	}
	if err := d.waitFor(ctx, fmt.Sprintf("web unpaused on %s's template, all its pods Ready", h.stableTag), func(ctx context.Context) (bool, error) {
		dep, err := d.lab.Client.AppsV1().Deployments(demoNamespace).Get(ctx, demoApp, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return undone(dep, r.outcome)
	}); err != nil {
		return err
	}
	if err := d.waitServing(ctx, h.stableTag); err != nil {
		return err
	}
	after, err := d.servingPods(ctx, h.stableTag)
	if err != nil {
		return err
	}
	h.undone, h.replaced = true, replaced(before, after)
	if err := d.shown(ctx, "rollout", "status", "deployment/"+demoApp, "-n", demoNamespace, "--timeout=1m"); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "fledge-lab: web is unpaused on %s's template; %s\n", h.stableTag, replacedText(h.replaced, h.serving))
	if err := sleep(ctx, 3*time.Second); err != nil {
		return err
	}
	s, n := wholeSeconds(d.traffic, from)
	fmt.Fprintf(d.out, "fledge-lab: users in %ds since kubectl fledge undo: %s\n", n, failures(s))
	return nil
}

// checkHeld reads web and checks that it holds the failed revision of o.
func (d *demoRun) checkHeld(ctx context.Context, o *rollout.Outcome) error {
	dep, err := d.lab.Client.AppsV1().Deployments(demoNamespace).Get(ctx, demoApp, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("demo: read deployment web: %w", err)
	}
	return heldFailed(dep, o)
}

// heldFailed checks that d holds the failed revision of its rollout o, as
// ARCHITECTURE.md's "Rollback" says: no rollout since o, its template still
// the one rolled out, and paused, so that its stable ReplicaSet serves.
func heldFailed(d *appsv1.Deployment, o *rollout.Outcome) error {
	last, err := rollout.ParseOutcome(d)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	switch {
	case d.Annotations[rollout.AnnotationState] != "" || last == nil || last.Attempt != o.Attempt || !last.FinishedAt.Equal(&o.FinishedAt):
		return fmt.Errorf("demo: %s started another rollout after its rollback; it should hold the failed revision %s", d.Name, o.CanaryRevision)
	case !rollout.Holds(d, o):
		return fmt.Errorf("demo: %s does not hold the failed revision %s: its template is revision %s; a rollback leaves the template as applied",
			d.Name, o.CanaryRevision, rollout.TemplateHash(&d.Spec.Template))
	case !d.Spec.Paused:
		return fmt.Errorf("demo: %s holds the failed revision %s but is not paused: the Deployment controller would roll it out", d.Name, o.CanaryRevision)
	}
	return nil
}

// undone reports whether d is back on the stable revision of o, unpaused,
// with the Deployment controller done: every pod of that template Ready,
// none of another. A rollout started instead is an error.
func undone(d *appsv1.Deployment, o *rollout.Outcome) (bool, error) {
	if d.Annotations[rollout.AnnotationState] != "" {
		return false, fmt.Errorf("demo: kubectl fledge undo started a rollout of %s; it should put the stable revision %s back and unpause", d.Name, o.StableRevision)
	}
	want := ptr.Deref(d.Spec.Replicas, 1)
	return !d.Spec.Paused && rollout.TemplateHash(&d.Spec.Template) == o.StableRevision &&
		d.Status.ObservedGeneration >= d.Generation &&
		d.Status.Replicas == want && d.Status.UpdatedReplicas == want && d.Status.ReadyReplicas == want, nil
}

// replaced counts the pods of before that are not in after.
func replaced(before, after []string) int {
	n := 0
	for _, name := range before {
		if !slices.Contains(after, name) {
			n++
		}
	}
	return n
}

// replacedText says how many of the n pods that served while held the undo
// replaced.
func replacedText(replaced, n int) string {
	if replaced == 0 {
		return fmt.Sprintf("none of its %d pods was replaced", n)
	}
	return fmt.Sprintf("%d of its %d pods were replaced", replaced, n)
}

// shown runs kubectl with args, showing the command line as a person would
// type it and what kubectl says.
func (d *demoRun) shown(ctx context.Context, args ...string) error {
	line := shellLine(append([]string{"kubectl"}, args...))
	fmt.Fprintln(d.out, "$ "+line)
	if err := d.kubectl(ctx, args...).Run(); err != nil {
		return fmt.Errorf("demo: %s: %w", line, err)
	}
	return nil
}

// shellLine joins words into a line a shell reads back as the same words,
// quoting those with characters a shell would expand.
func shellLine(words []string) string {
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = w
		if w == "" || strings.IndexFunc(w, unsafeInShell) >= 0 {
			quoted[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
	}
	return strings.Join(quoted, " ")
}

func unsafeInShell(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=,@%+", r))
}

// caughtAtHalf checks that v3 ended as the seed's table says: issues
// detected at 50% by the comparison of its errors with v2's, rolled back.
func caughtAtHalf(o *rollout.Outcome) error {
	switch {
	case o.Phase != rollout.RolledBack:
		return fmt.Errorf("demo: v3 fails after a while, yet its rollout ended %s: it should have been rolled back at 50%%", o.Phase)
	case o.Reason == nil || o.Reason.Step != 2 || o.Reason.Check != "errors":
		return fmt.Errorf("demo: v3 was rolled back%s, not by its errors at step 3 (50%%) as the demo intends; "+
			"on a busy machine its FAIL_AFTER may have come too early or too late", reasonSuffix(o.Reason))
	}
	return nil
}

func reasonSuffix(r *rollout.Reason) string {
	if r == nil {
		return ""
	}
	return fmt.Sprintf(": %s at step %d (%d%%)", r.Message, r.Step+1, r.Weight)
}

// summary prints each rollout: its outcome, and per step the target, the
// share the pod counts gave, the share of requests the canary served as
// fledge counted them (from Prometheus) and as the users saw them (the
// traffic generator's own count), and what users saw fail.
func (d *demoRun) summary(releases ...*release) {
	fmt.Fprintln(d.out, "\n== Summary ==")
	for _, r := range releases {
		o := r.outcome
		fmt.Fprintf(d.out, "web %s (%s): %s%s, %s after kubectl apply\n", r.tag, r.what, o.Phase, reasonSuffix(o.Reason),
			o.FinishedAt.Sub(r.applied).Round(100*time.Millisecond))
		tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  step\ttarget\tcanary pods\teffective\tserved (fledge)\tserved (users)\trequests\tfailed\tduration")
		for _, h := range o.History {
			fmt.Fprintln(tw, d.stepRow(h, o))
		}
		tw.Flush()
		if n := len(o.History); n > 0 && o.History[n-1].Ended != nil {
			fmt.Fprintln(d.out, d.endLine(o, o.History[n-1].Ended.Time))
		}
		// Two seconds more: requests already sent to a canary pod as it
		// was cut still count.
		fmt.Fprintf(d.out, "  users during the rollout: %s\n", failures(d.traffic.Between(r.applied, o.FinishedAt.Add(2*time.Second))))
		fmt.Fprint(d.out, r.hold.lines(r.tag))
	}
}

// lines are the summary's account of what followed the rollback of tag:
// the hold, and the undo when it completed.
func (h *holdRecord) lines(tag string) string {
	if h == nil {
		return ""
	}
	s := fmt.Sprintf("  then web held %s: paused on its template, %d pods of %s serving; applying %s again released nothing\n",
		tag, h.serving, h.stableTag, tag)
	if h.undone {
		s += fmt.Sprintf("  kubectl fledge undo put %s's template back and unpaused web: %s\n", h.stableTag, replacedText(h.replaced, h.serving))
	}
	return s
}

// endLine is how the rollout ended after its last step. Requests that fail
// while pods are deleted are named: the lab stops a pod's process as soon
// as the pod is deleted, before the users' view of the endpoints catches up
// (a real cluster has the same race without a preStop delay), so even a
// healthy promotion can show a few.
func (d *demoRun) endLine(o *rollout.Outcome, lastStep time.Time) string {
	line := fmt.Sprintf("  then %s in %s", endAction(o.Phase), o.FinishedAt.Sub(lastStep).Round(100*time.Millisecond))
	failed := d.traffic.Between(lastStep, o.FinishedAt.Add(2*time.Second)).Errors()
	switch {
	case failed > 0 && o.Phase == rollout.Succeeded:
		line += fmt.Sprintf("; %d requests failed meanwhile, sent to pods as they were deleted", failed)
	case failed > 0:
		line += fmt.Sprintf("; %d requests failed meanwhile", failed)
	}
	return line
}

// stepRow is one step of the summary. The users' share leaves out the
// first second after the canary pods were Ready, which the EndpointSlice
// and the pod runner take to catch up; fledge's is counted from the step's
// first reading of the counters, at about the same time.
func (d *demoRun) stepRow(h rollout.StepRecord, o *rollout.Outcome) string {
	ended := o.FinishedAt.Time
	if h.Ended != nil {
		ended = h.Ended.Time
	}
	counted, measured, requests, failed := "-", "-", "-", "-"
	if h.Measured != nil {
		counted = fmt.Sprintf("%.1f%% of %d", *h.Measured, h.Requests)
	}
	if h.Ready != nil {
		s := d.traffic.Between(h.Ready.Add(time.Second), ended)
		measured = fmt.Sprintf("%.1f%%", 100*s.Share(rollout.TrackCanary))
		requests = fmt.Sprint(s.Requests())
		failed = fmt.Sprint(s.Errors())
	}
	return fmt.Sprintf("  %d\t%d%%\t%d of %d\t%.1f%%\t%s\t%s\t%s\t%s\t%s",
		h.Step+1, h.Weight, h.Canary, h.Canary+h.Stable, h.Effective, counted, measured, requests, failed,
		ended.Sub(h.Started.Time).Round(100*time.Millisecond))
}

func endAction(p rollout.Phase) string {
	if p == rollout.Succeeded {
		return "the Deployment rolled to the new version (100%)"
	}
	return "the canary was cut (100% stable)"
}

// failures says how many requests users saw fail, by track: "2000
// requests, 0 failed (stable 0 of 1900, canary 0 of 100)".
func failures(s lab.TrafficStats) string {
	n, failed := s.Requests(), s.Errors()
	if n == 0 {
		return "no requests"
	}
	pct := 100 * float64(failed) / float64(n)
	var parts []string
	for _, track := range []string{rollout.TrackStable, rollout.TrackCanary} {
		if c, ok := s.Tracks[track]; ok {
			parts = append(parts, fmt.Sprintf("%s %d of %d", track, c.Errors, c.Requests))
		}
	}
	if s.NoEndpoint > 0 {
		parts = append(parts, fmt.Sprintf("no endpoint %d", s.NoEndpoint))
	}
	return fmt.Sprintf("%d requests, %d failed (%.1f%%): %s", n, failed, pct, strings.Join(parts, ", "))
}

// waitFor polls cond until it holds, up to demoWaitFor.
func (d *demoRun) waitFor(ctx context.Context, what string, cond wait.ConditionWithContextFunc) error {
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, demoWaitFor, true, cond); err != nil {
		return fmt.Errorf("demo: waiting for %s: %w", what, err)
	}
	return nil
}

// sleep waits for d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func demoNamespaceYAML() string {
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %s
  labels: {%s: "true"}
`, demoNamespace, rollout.LabelEnabled)
}

// demoPolicyYAML is the team's policy: holds long enough to watch, the 50%
// step twice as long (the last look before everyone gets the version, and
// room for v3's failure to show), and the comparison of the canary's
// errors with the stable pods', evaluated every 2s, with its defaults
// (tolerance 0.5, alpha 0.01, 100 requests a step). noDataLimit covers the
// seconds a new canary pod waits for Prometheus to discover it and scrape
// it: about 4s (2 evaluations) on an idle machine; 10 leaves room for a
// busy one.
func demoPolicyYAML(prometheusURL string, hold time.Duration) string {
	return lab.Policy{
		Namespace: demoNamespace, Holds: [3]string{hold.String(), hold.String(), (2 * hold).String()},
		PrometheusURL: prometheusURL, NoDataLimit: 10, Compare: &lab.Comparison{},
	}.Manifest()
}

// webYAML is the demo app web at tag, answering in 10ms, with env
// ("NAME=value") added, and its Service.
func webYAML(tag string, env ...string) string {
	vars := map[string]string{"LATENCY": "10ms"}
	for _, e := range env {
		name, value, _ := strings.Cut(e, "=")
		vars[name] = value
	}
	return lab.App{Namespace: demoNamespace, Name: demoApp, Tag: tag, Replicas: demoReplicas, Env: vars}.Manifest()
}
