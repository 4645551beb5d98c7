package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/fledge-dev/fledge/rollout"
	"github.com/fledge-dev/fledge/test/lab"
	"github.com/fledge-dev/fledge/webhook"
)

// controllerName is the router's controller (router.SetupWithManager:
// Named("router")), as controller-runtime's metrics label it: by
// "controller" for reconciles, by "name" for its work queue.
const controllerName = "router"

// Metric names read from the manager and from the apiserver.
const (
	reconcileTime     = "controller_runtime_reconcile_time_seconds"
	reconcileTotal    = "controller_runtime_reconcile_total"
	reconcileWorkers  = "controller_runtime_max_concurrent_reconciles"
	queueDuration     = "workqueue_queue_duration_seconds"
	handlerDuration   = "fledge_admission_duration_seconds"
	apiserverWebhooks = "apiserver_admission_webhook_admission_duration_seconds"
	webhookServed     = "controller_runtime_webhook_latency_seconds"
	apiserverRequests = "apiserver_request_duration_seconds"
)

// fledgeBinary is the manager to measure: -fledge, or cmd/fledge of this
// checkout built into a temporary directory that cleanup removes.
func fledgeBinary(ctx context.Context, path string) (bin string, cleanup func(), err error) {
	if path != "" {
		abs, err := filepath.Abs(path)
		if err != nil {
			return "", nil, err
		}
		if st, err := os.Stat(abs); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return "", nil, fmt.Errorf("-fledge %s: not an executable file", path)
		}
		return abs, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "fledge-scale-")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	say("building cmd/fledge of this checkout (%s)", checkoutRevision(ctx))
	if bin, err = lab.BuildFledge(ctx, dir); err != nil {
		cleanup()
		return "", nil, err
	}
	return bin, cleanup, nil
}

// checkoutRevision names the checkout's commit, and says when its tracked
// files differ from it: "9b53c19", "9b53c19 with changes". It only reads.
func checkoutRevision(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "commit unknown"
	}
	rev := strings.TrimSpace(string(out))
	if exec.CommandContext(ctx, "git", "diff", "--quiet", "HEAD", "--").Run() != nil {
		rev += " with changes"
	}
	return rev
}

// newManager finds the manager's process and the webhooks it registered.
func newManager(ctx context.Context, l *lab.Lab, f *lab.Fledge) (*manager, error) {
	pid, ok := l.PIDs()["fledge"]
	if !ok {
		return nil, fmt.Errorf("the lab has no process named fledge")
	}
	names, err := webhookNames(ctx, l.Client, f.WebhookURL)
	if err != nil {
		return nil, err
	}
	return &manager{pid: pid, metricsURL: f.MetricsURL + "/metrics", http: &http.Client{Timeout: 30 * time.Second}, webhooks: names}, nil
}

// webhookNames are the webhooks of the apiserver's configurations that
// call url: fledge's, whatever a given build names them.
func webhookNames(ctx context.Context, c kubernetes.Interface, url string) ([]string, error) {
	var names []string
	add := func(name string, cc admissionregistrationv1.WebhookClientConfig) {
		if cc.URL != nil && strings.HasPrefix(*cc.URL, url) {
			names = append(names, name)
		}
	}
	mutating, err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list the mutating webhook configurations: %w", err)
	}
	for _, cfg := range mutating.Items {
		for _, w := range cfg.Webhooks {
			add(w.Name, w.ClientConfig)
		}
	}
	validating, err := c.AdmissionregistrationV1().ValidatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list the validating webhook configurations: %w", err)
	}
	for _, cfg := range validating.Items {
		for _, w := range cfg.Webhooks {
			add(w.Name, w.ClientConfig)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no webhook configuration calls the manager at %s", url)
	}
	slices.Sort(names)
	return names, nil
}

// apiserver reads the lab apiserver's own /metrics as the lab's admin.
type apiserver struct {
	http *http.Client
	url  string
}

func newAPIServer(l *lab.Lab) (*apiserver, error) {
	c, err := rest.HTTPClientFor(l.Config)
	if err != nil {
		return nil, err
	}
	return &apiserver{http: c, url: l.Config.Host + "/metrics"}, nil
}

func (a *apiserver) scrape(ctx context.Context) (metrics, error) { return scrape(ctx, a.http, a.url) }

// admissions are the apiserver's counts of calls to each webhook, and the
// seconds they took, as of one scrape.
type admissions map[string]struct{ Count, Seconds float64 }

func admissionsOf(ms metrics, webhooks []string) admissions {
	out := admissions{}
	for _, name := range webhooks {
		h, _ := ms.histogram(apiserverWebhooks, map[string]string{"name": name})
		out[name] = struct{ Count, Seconds float64 }{float64(h.Count), h.Sum}
	}
	return out
}

// since is the calls made after earlier.
func (a admissions) since(earlier admissions) admissions {
	out := admissions{}
	for name, v := range a {
		e := earlier[name]
		out[name] = struct{ Count, Seconds float64 }{v.Count - e.Count, v.Seconds - e.Seconds}
	}
	return out
}

func (a admissions) total() (count, seconds float64) {
	for _, v := range a {
		count += v.Count
		seconds += v.Seconds
	}
	return count, seconds
}

// webhookResult is what the webhook adds to a Deployment PATCH.
type webhookResult struct {
	// On are the PATCHes in the opted-in namespace, which the apiserver
	// sends to the webhook; Off the same PATCHes where it does not.
	On, Off distribution
	// AddedP50 and AddedP99 are On's quantiles less Off's.
	AddedP50, AddedP99 time.Duration
	// Admissions is how many calls of fledge's webhooks the apiserver
	// counted during the measured PATCHes: one per PATCH in On when every
	// PATCH reached the webhook and none of Off did.
	Admissions float64
	// APIServerMean is the apiserver's mean time of those calls.
	APIServerMean time.Duration
	// WithinGoal is the share of those calls that the apiserver timed at
	// addedLatencyGoal or less, from its histogram's bucket of that bound;
	// HasGoalBucket is false when the histogram has no such bucket.
	WithinGoal    float64
	HasGoalBucket bool
	// Served is the manager's own timing of the Deployment webhook's
	// requests, from reading the request to writing the response.
	Served histogram
	// HandlerMean is the manager's mean time to decide them, and
	// HandlerCount how many it decided.
	HandlerMean  time.Duration
	HandlerCount float64
	// Callers are the writes the apiserver called a mutating webhook of
	// fledge's for during the measured PATCHes, from its audit log.
	Callers map[string]int
	// Series are the apiserver's webhook calls meanwhile, by series.
	Series map[string]float64
}

// reached reports whether every measured PATCH of the opted-in probe, and
// none of the other's, reached the webhook, as the audit log says.
func (r webhookResult) reached() bool {
	return r.Callers[probeCaller(probeOn)] == r.On.N && r.Callers[probeCaller(probeOff)] == 0
}

// retried is how many more calls the apiserver made than PATCHes reached
// the webhook: a PATCH that conflicts, in etcd, with a concurrent write
// (the Deployment controller's status update) is applied again, and
// admitted again.
func (r webhookResult) retried() int { return int(r.Admissions) - r.Callers[probeCaller(probeOn)] }

// probeCaller is how webhookCallers names the probe's PATCHes.
func probeCaller(namespace string) string {
	return fmt.Sprintf("%s patch deployments %s/%s", adminUser, namespace, probeName)
}

// adminUser is the lab's admin identity (test/lab/lab.go), which sends
// the run's own requests.
const adminUser = "lab-admin"

// probeGap separates the probe's PATCHes: the Deployment controller
// answers each with a status update, and a PATCH that meets one in etcd is
// retried by the apiserver, webhook call included, which would time the
// webhook twice.
const probeGap = 20 * time.Millisecond

// measureWebhook times n PATCHes of the probe Deployment in each probe
// namespace, in turn, after a warm-up: each switches the Deployment's
// policy annotation between two valid policies, which the webhook must
// see (a policy it cannot resolve is refused) and which starts no
// rollout (the template is the same).
func measureWebhook(ctx context.Context, l *lab.Lab, w *workload, m *manager, api *apiserver, n int) (webhookResult, error) {
	var r webhookResult
	if err := w.createProbes(ctx); err != nil {
		return r, err
	}
	policies := map[string]string{probeOn: policyA, probeOff: policyA}
	patch := func(ns string) (time.Duration, error) {
		next := policyB
		if policies[ns] == policyB {
			next = policyA
		}
		policies[ns] = next
		return w.probePatch(ctx, ns, next)
	}
	// Each round patches both, the opted-in one first in even rounds, so
	// that neither side always follows the other.
	round := func(i int) (on, off time.Duration, err error) {
		defer time.Sleep(probeGap)
		if i%2 == 0 {
			if on, err = patch(probeOn); err == nil {
				off, err = patch(probeOff)
			}
		} else {
			if off, err = patch(probeOff); err == nil {
				on, err = patch(probeOn)
			}
		}
		return on, off, err
	}
	say("webhook latency: %d warm-up and %d measured PATCHes on each side", max(50, n/10), n)
	for i := range max(50, n/10) {
		if _, _, err := round(i); err != nil {
			return r, err
		}
	}
	apiBefore, mgrBefore, err := snapshot(ctx, api, m)
	if err != nil {
		return r, err
	}
	var on, off []time.Duration
	began := time.Now()
	for i := range n {
		a, b, err := round(i)
		if err != nil {
			return r, err
		}
		on, off = append(on, a), append(off, b)
	}
	ended := time.Now()
	apiAfter, mgrAfter, err := snapshot(ctx, api, m)
	if err != nil {
		return r, err
	}
	events, err := l.AuditEvents()
	if err != nil {
		return r, err
	}
	r.Callers = webhookCallers(events, m.webhooks, began, ended)
	r.Series = countsSince(apiAfter.seriesCounts(apiserverWebhooks), apiBefore.seriesCounts(apiserverWebhooks))
	r.On, r.Off = distributionOf(on), distributionOf(off)
	r.AddedP50, r.AddedP99 = r.On.P50-r.Off.P50, r.On.P99-r.Off.P99
	count, seconds := admissionsOf(apiAfter, m.webhooks).since(admissionsOf(apiBefore, m.webhooks)).total()
	r.Admissions = count
	if count > 0 {
		r.APIServerMean = seconds2(seconds / count)
	}
	var calls histogram
	for _, name := range m.webhooks {
		after, _ := apiAfter.histogram(apiserverWebhooks, map[string]string{"name": name})
		before, _ := apiBefore.histogram(apiserverWebhooks, map[string]string{"name": name})
		calls = calls.add(after.sub(before))
	}
	r.WithinGoal, r.HasGoalBucket = calls.within(addedLatencyGoal.Seconds())
	served := func(ms metrics) histogram {
		h, _ := ms.histogram(webhookServed, map[string]string{"webhook": webhook.DeploymentsPath})
		return h
	}
	r.Served = served(mgrAfter).sub(served(mgrBefore))
	h := handler(mgrAfter).sub(handler(mgrBefore))
	r.HandlerCount, r.HandlerMean = float64(h.Count), seconds2(h.Mean())
	return r, nil
}

// snapshot scrapes the apiserver and the manager.
func snapshot(ctx context.Context, api *apiserver, m *manager) (apiMetrics, mgrMetrics metrics, err error) {
	if apiMetrics, err = api.scrape(ctx); err != nil {
		return nil, nil, err
	}
	if mgrMetrics, err = scrape(ctx, m.http, m.metricsURL); err != nil {
		return nil, nil, err
	}
	return apiMetrics, mgrMetrics, nil
}

// handler is the manager's histogram of its webhook's decisions.
func handler(ms metrics) histogram {
	h, _ := ms.histogram(handlerDuration, nil)
	return h
}

func seconds2(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// rolloutsResult is what the rollouts cost and how they went.
type rolloutsResult struct {
	Rollouts int
	Took     time.Duration // from the first change to the last outcome
	Phases   map[rollout.Phase]int
	// Failures say which rollouts did not Succeed, and why.
	Failures []string

	// PeakHWM is VmHWM after the rollouts; MaxRSS and MaxHeap the highest
	// sampled during them.
	PeakHWM, MaxRSS, MaxHeap uint64

	Reconciles, QueueWait histogram
	ReconcileErrors       float64
	Workers               float64
	// ListReplicaSets are the apiserver's LISTs of ReplicaSets meanwhile:
	// the router's reads that do not come from its cache (the lab's
	// controllers watch instead of listing).
	ListReplicaSets histogram

	Steps, Promotions distribution
	Writes            writeCounts
	// Admissions are the apiserver's calls of fledge's webhooks, by
	// webhook; Decided those the manager's Deployment handler counted.
	Admissions map[string]float64
	Decided    float64
}

// measureRollouts changes the image of the rollout Deployments at once,
// waits until every rollout has ended, and gathers what it cost.
func measureRollouts(ctx context.Context, cfg config, l *lab.Lab, w *workload, m *manager, api *apiserver) (rolloutsResult, error) {
	r := rolloutsResult{Rollouts: cfg.Rollouts}
	var targets []types.NamespacedName
	for i := range cfg.Rollouts {
		targets = append(targets, w.deployments[cfg.rolloutIndex(i)])
	}
	apiBefore, mgrBefore, err := snapshot(ctx, api, m)
	if err != nil {
		return r, err
	}
	s := m.sample(ctx)
	defer s.finish()
	say("changing the image of %d Deployments at once", len(targets))
	began := time.Now()
	if err := w.release(ctx, targets); err != nil {
		return r, err
	}
	waitCtx, cancel := context.WithTimeout(ctx, cfg.RolloutTimeout)
	defer cancel()
	outcomes, err := w.waitOutcomes(waitCtx, targets)
	r.Took = time.Since(began)
	r.Phases = map[rollout.Phase]int{}
	for _, o := range outcomes {
		r.Phases[o.Phase]++
	}
	if err != nil {
		return r, fmt.Errorf("wait for the rollouts (%s after %s): %w", phaseCounts(outcomes, len(targets)), r.Took.Round(time.Second), err)
	}
	// fledge's Events are sent asynchronously: give the last ones, and
	// the audit log's last lines, a moment.
	if err := sleep(ctx, 2*time.Second); err != nil {
		return r, err
	}
	ended := time.Now()

	if r.MaxRSS, r.MaxHeap, err = s.finish(); err != nil {
		return r, err
	}
	if _, r.PeakHWM, err = procMemory(m.pid); err != nil {
		return r, err
	}
	if err := r.outcomes(targets, outcomes, cfg.Hold); err != nil {
		return r, err
	}
	apiAfter, mgrAfter, err := snapshot(ctx, api, m)
	if err != nil {
		return r, err
	}
	if err := r.reconciles(mgrBefore, mgrAfter); err != nil {
		return r, err
	}
	r.Admissions = map[string]float64{}
	for name, v := range admissionsOf(apiAfter, m.webhooks).since(admissionsOf(apiBefore, m.webhooks)) {
		r.Admissions[name] = v.Count
	}
	r.Decided = float64(handler(mgrAfter).sub(handler(mgrBefore)).Count)
	lists := map[string]string{"verb": "LIST", "resource": "replicasets"}
	l1, _ := apiAfter.histogram(apiserverRequests, lists)
	l0, _ := apiBefore.histogram(apiserverRequests, lists)
	r.ListReplicaSets = l1.sub(l0)
	events, err := l.AuditEvents()
	if err != nil {
		return r, err
	}
	r.Writes = countWrites(events, lab.FledgeUser, began, ended)
	return r, nil
}

// outcomes lists the rollouts that did not Succeed, and measures the
// step lags of those that did.
func (r *rolloutsResult) outcomes(targets []types.NamespacedName, outcomes map[types.NamespacedName]*rollout.Outcome, hold time.Duration) error {
	var succeeded []*rollout.Outcome
	for _, key := range targets {
		o := outcomes[key]
		if o.Phase == rollout.Succeeded {
			succeeded = append(succeeded, o)
			continue
		}
		why := ""
		if o.Reason != nil {
			why = ": " + o.Reason.Message
		}
		r.Failures = append(r.Failures, fmt.Sprintf("%s %s%s", key, o.Phase, why))
	}
	steps, promotions, err := stepLags(succeeded, hold)
	if err != nil {
		return err
	}
	r.Steps, r.Promotions = distributionOf(steps), distributionOf(promotions)
	return nil
}

// reconciles reads the router's reconciles and queue wait between two
// scrapes of the manager.
func (r *rolloutsResult) reconciles(before, after metrics) error {
	byController := map[string]string{"controller": controllerName}
	rt, ok := after.histogram(reconcileTime, byController)
	if !ok {
		return fmt.Errorf("the manager's /metrics has no %s of controller %q", reconcileTime, controllerName)
	}
	rt0, _ := before.histogram(reconcileTime, byController)
	r.Reconciles = rt.sub(rt0)
	byQueue := map[string]string{"name": controllerName}
	qd, ok := after.histogram(queueDuration, byQueue)
	if !ok {
		return fmt.Errorf("the manager's /metrics has no %s of queue %q", queueDuration, controllerName)
	}
	qd0, _ := before.histogram(queueDuration, byQueue)
	r.QueueWait = qd.sub(qd0)
	errs := map[string]string{"controller": controllerName, "result": "error"}
	e1, _ := after.value(reconcileTotal, errs)
	e0, _ := before.value(reconcileTotal, errs)
	r.ReconcileErrors = e1 - e0
	r.Workers, _ = after.value(reconcileWorkers, byController)
	return nil
}

// admitted is the total of Admissions.
func (r rolloutsResult) admitted() float64 {
	var n float64
	for _, v := range r.Admissions {
		n += v
	}
	return n
}
