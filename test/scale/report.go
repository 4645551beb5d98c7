package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fledge-dev/fledge/rollout"
)

// report is everything a run measured; nil parts were not reached.
type report struct {
	Config    config
	Machine   machine
	Fledge    string // the manager measured: -fledge, or this checkout's commit
	Nodes     int
	Pods      int
	Idle      *memory
	Populated *memory
	// Populating is the time from the first create to every pod Ready.
	Populating time.Duration
	Webhook    *webhookResult
	Rollouts   *rolloutsResult
	Wall       time.Duration
	// Failed says why the run did not complete, when it did not.
	Failed string
}

// Goals of the issue.
const (
	rssGoalSmall      = 100 << 20 // at 1,000 Deployments
	rssGoalLarge      = 250 << 20 // at 10,000 Deployments
	stepLagGoal       = time.Second
	deploymentWrites  = 12 // per 3-step rollout
	addedLatencyGoal  = 5 * time.Millisecond
	goalSmallAt       = 1000
	goalLargeAt       = 10000
	interpolatedGoals = "interpolated linearly between 1,000 and 10,000 Deployments"
)

// rssGoal is the RSS budget with n Deployments: 100 MiB up to 1,000, 250
// MiB at 10,000, and linear between (the issue names only those two).
func rssGoal(n int) uint64 {
	switch {
	case n <= goalSmallAt:
		return rssGoalSmall
	case n >= goalLargeAt:
		return rssGoalLarge
	}
	return rssGoalSmall + uint64(float64(rssGoalLarge-rssGoalSmall)*float64(n-goalSmallAt)/float64(goalLargeAt-goalSmallAt))
}

// row is one line of the table.
type row struct {
	Figure   string `json:"figure"`
	Measured string `json:"measured"`
	Goal     string `json:"goal"`
	// Status is "ok", "over", "invalid" (the measurement did not measure
	// what it should), or "" without a goal.
	Status string `json:"status,omitempty"`
}

func check(ok bool) string {
	if ok {
		return "ok"
	}
	return "over"
}

// rows are the table's figures and, for each, how it is measured.
func (r *report) rows() (rows []row, notes []string) {
	add := func(figure, measured, goal, status, note string) {
		rows = append(rows, row{figure, measured, goal, status})
		if note != "" {
			notes = append(notes, note)
		}
	}
	goal := rssGoal(r.Config.Deployments)
	rssGoalText := fmt.Sprintf("≤ %d MiB", goal>>20)
	if n := r.Config.Deployments; n > goalSmallAt && n < goalLargeAt {
		rssGoalText += " (" + interpolatedGoals + ")"
	}
	if m := r.Idle; m != nil {
		add("manager RSS idle", mib(m.RSS), "-", "",
			fmt.Sprintf("RSS: VmRSS of /proc/PID/status; idle: after start, %d opted-in namespaces and their policies created%s, no Deployments, %s settled", r.Config.Namespaces, probeNamespaces(r.Config), r.Config.Settle))
	}
	if m := r.Populated; m != nil {
		add(fmt.Sprintf("manager RSS, %s Deployments", count(r.Config.Deployments)), mib(m.RSS), rssGoalText, check(m.RSS <= goal),
			fmt.Sprintf("populated: every Deployment created and all %s pods Ready (in %s), then %s settled", count(r.Pods), r.Populating.Round(time.Second), r.Config.Settle))
	}
	if m := r.Populated; m != nil && r.Config.Rollouts == 0 {
		add("manager RSS peak (VmHWM)", mib(m.HWM), rssGoalText, check(m.HWM <= goal),
			"peak: VmHWM at the populated reading, the highest RSS since the process started (the Deployments' arrival included)")
	}
	if ro := r.Rollouts; ro != nil && ro.PeakHWM > 0 {
		add("manager RSS peak (VmHWM)", mib(ro.PeakHWM), rssGoalText, check(ro.PeakHWM <= goal),
			"peak: VmHWM after the rollouts, the highest RSS since the process started")
		add("manager RSS max sampled during rollouts", mib(ro.MaxRSS), "-", "", "max sampled: VmRSS read every 500ms from the first change to the last outcome")
	}
	if r.Idle != nil && r.Populated != nil {
		heap := fmt.Sprintf("%s idle, %s populated", mib(r.Idle.HeapInuse), mib(r.Populated.HeapInuse))
		if ro := r.Rollouts; ro != nil && ro.MaxHeap > 0 {
			heap += fmt.Sprintf(", %s max during rollouts", mib(ro.MaxHeap))
		}
		add("Go heap in use", heap, "-", "", "heap: go_memstats_heap_inuse_bytes of the manager's /metrics at the same moments (during rollouts: every 2s)")
		per := (float64(r.Populated.HeapInuse) - float64(r.Idle.HeapInuse)) / float64(r.Config.Deployments)
		add("heap per Deployment", fmt.Sprintf("%.1f KiB", per/1024), "-", "", "heap per Deployment: (populated − idle heap in use) / Deployments")
	}
	if wh := r.Webhook; wh != nil {
		status := check(wh.HasGoalBucket && wh.WithinGoal >= 0.99)
		if !wh.reached() || !wh.HasGoalBucket {
			status = "invalid"
		}
		within := "no bucket at 5 ms"
		if wh.HasGoalBucket {
			within = fmt.Sprintf("%.1f%% of %s calls", 100*wh.WithinGoal, count(int(wh.Admissions)))
		}
		served := ""
		if q, ok := wh.Served.Quantile(0.99); ok {
			served = fmt.Sprintf(", served p99 %s", bounded(q))
		}
		add(fmt.Sprintf("webhook calls within %d ms", addedLatencyGoal/time.Millisecond),
			fmt.Sprintf("%s (mean %s; manager: handler mean %s%s)", within, msec(wh.APIServerMean), msec(wh.HandlerMean), served),
			fmt.Sprintf("p99 ≤ %d ms", addedLatencyGoal/time.Millisecond), status,
			fmt.Sprintf("webhook calls: the apiserver's own timing of its calls of fledge's webhooks (apiserver_admission_webhook_admission_duration_seconds, its bucket le=%g), which is what the webhook adds to an admission, during %d sequential PATCHes (%s apart) switching a Deployment's fledge.dev/policy between two valid policies in an opted-in namespace, after %d warm-ups; the audit log has each calling the webhook; the apiserver called it %s times (%d PATCHes retried after a conflict with the Deployment controller); handler: fledge_admission_duration_seconds sum/count over those PATCHes; served: the manager's controller_runtime_webhook_latency_seconds{webhook=\"/mutate-deployments\"}, from reading the request to writing the response",
				addedLatencyGoal.Seconds(), wh.On.N, probeGap, max(50, wh.On.N/10), count(int(wh.Admissions)), wh.retried()))
		add("PATCH latency added, p50 / p99",
			fmt.Sprintf("%s / %s (with webhook %s / %s, without %s / %s)", msec(wh.AddedP50), msec(wh.AddedP99), msec(wh.On.P50), msec(wh.On.P99), msec(wh.Off.P50), msec(wh.Off.P99)), "-", "",
			"PATCH latency: the same PATCHes timed by the client, less the same PATCHes in a namespace not opted in, taken in turn; quantiles of two noisy sets do not subtract, and the p99s' difference carries the machine's noise (1.6 ms p50, 3.0–6.9 ms p99 over five runs on one day), so the goal is checked on the apiserver's timing above")
	}
	if ro := r.Rollouts; ro != nil {
		r.rolloutRows(ro, add)
	}
	add("wall time", r.Wall.Round(time.Second).String(), "-", "", "")
	return rows, notes
}

func (r *report) rolloutRows(ro *rolloutsResult, add func(figure, measured, goal, status, note string)) {
	n := float64(ro.Rollouts)
	succeeded := ro.Phases[rollout.Succeeded]
	add("rollouts Succeeded", fmt.Sprintf("%d of %d (%s)", succeeded, ro.Rollouts, phaseSummary(ro.Phases)), "all", check(succeeded == ro.Rollouts),
		fmt.Sprintf("rollouts: phase of the Outcome in fledge.dev/last-rollout; %d changed at once; %s", ro.Rollouts, ended(ro)))
	if ro.Reconciles.Count == 0 {
		return // the rollouts did not get that far
	}
	q99, _ := ro.Reconciles.Quantile(0.99)
	busy := ro.Reconciles.Sum / ro.Took.Seconds() / max(ro.Workers, 1)
	add("reconciles (router)", fmt.Sprintf("%s (%.0f a rollout), mean %s, p99 %s; %.0f errors; %.0f worker(s), busy %.0f%%",
		count(int(ro.Reconciles.Count)), float64(ro.Reconciles.Count)/n, msecF(ro.Reconciles.Mean()), bounded(q99), ro.ReconcileErrors, ro.Workers, 100*busy), "-", "",
		"reconciles: controller_runtime_reconcile_time_seconds{controller=\"router\"} from the first change to the last outcome; p99 from its buckets, interpolated linearly, true value in the bucket shown; busy: their total time / the rollouts' time / workers")
	add("ReplicaSet LISTs (router's APIReader)", fmt.Sprintf("%s, mean %s at the apiserver", count(int(ro.ListReplicaSets.Count)), msecF(ro.ListReplicaSets.Mean())), "-", "",
		"LISTs: the apiserver's apiserver_request_duration_seconds{verb=\"LIST\",resource=\"replicasets\"}, same window (the lab's controllers watch, so these are the router's)")
	w99, _ := ro.QueueWait.Quantile(0.99)
	add("queue wait (router)", fmt.Sprintf("mean %s, p99 %s", msecF(ro.QueueWait.Mean()), bounded(w99)), "-", "",
		"queue wait: workqueue_queue_duration_seconds{name=\"router\"}, the same way")
	if ro.Steps.N > 0 {
		add("hold end → next step p50 / p99", fmt.Sprintf("%s / %s (max %s; promotions p99 %s)", msec(ro.Steps.P50), msec(ro.Steps.P99), msec(ro.Steps.Max), msec(ro.Promotions.P99)),
			"p99 ≤ "+stepLagGoal.String(), check(ro.Steps.P99 <= stepLagGoal),
			fmt.Sprintf("step lag: %d transitions of the Succeeded rollouts' history: next step's Started − (Ready + hold); last step: its Ended (the reconcile that starts the promotion) − (Ready + hold)", ro.Steps.N))
	}
	wr := ro.Writes
	add("Deployment writes per rollout", fmt.Sprintf("%.1f (stable %.1f, canary %.1f; deletes %.1f, status %.1f; %d more refused with a conflict; %s mean at the apiserver)",
		float64(wr.deployments())/n, float64(wr.Stable.writes())/n, float64(wr.Canary.writes())/n, float64(wr.Stable.Delete+wr.Canary.Delete)/n, float64(wr.Status)/n, wr.Conflicts, msec(wr.deploymentMean())),
		fmt.Sprintf("≤ %d", deploymentWrites), check(float64(wr.deployments())/n <= deploymentWrites),
		"writes: the audit log's create/update/patch of deployments by the manager's identity from the first change to the last outcome (+2s), / rollouts; deletes, status and 409s apart; mean: its stageTimestamp − requestReceivedTimestamp")
	other := ""
	if len(wr.Other) > 0 {
		other = fmt.Sprintf("; other: %v", wr.Other)
	}
	add("Events, Leases per rollout", fmt.Sprintf("%.1f Events, %.1f Lease writes (%d in %s)%s", float64(wr.Events)/n, float64(wr.Leases)/n, wr.Leases, ro.Took.Round(time.Second), other), "-", "",
		"Events and Leases: the same writes to events and leases (leader election renews every few seconds, whatever the rollouts)")
	admitted := ro.admitted()
	add("admissions per rollout", fmt.Sprintf("%.1f (%s for %d user changes; the manager decided %s)", admitted/n, count(int(admitted)), ro.Rollouts, count(int(ro.Decided))), "-", "",
		"admissions: the apiserver's apiserver_admission_webhook_admission_duration_seconds_count over fledge's webhooks, same window, / rollouts; decided: fledge_admission_duration_seconds_count")
}

func probeNamespaces(c config) string {
	if c.Rollouts == 0 {
		return ""
	}
	return " (and the latency probe's two)"
}

// ended says when the rollouts ended: "all ended 1m2s after the first
// change", or how many had not when the wait stopped.
func ended(ro *rolloutsResult) string {
	n := 0
	for _, c := range ro.Phases {
		n += c
	}
	if n == ro.Rollouts {
		return fmt.Sprintf("all ended %s after the first change", ro.Took.Round(time.Second))
	}
	return fmt.Sprintf("%d had not ended when the wait stopped, %s after the first change", ro.Rollouts-n, ro.Took.Round(time.Second))
}

func phaseSummary(phases map[rollout.Phase]int) string {
	var parts []string
	for _, p := range sortedKeys(phases) {
		parts = append(parts, fmt.Sprintf("%d %s", phases[p], p))
	}
	if len(parts) == 0 {
		return "none ended"
	}
	return strings.Join(parts, ", ")
}

// header says what ran, where.
func (r *report) header() string {
	c := r.Config
	fledge := "fledge " + r.Fledge
	rollouts := "no rollouts"
	if c.Rollouts > 0 {
		rollouts = fmt.Sprintf("%d rollouts at once, hold %s, %d latency samples", c.Rollouts, c.Hold, c.LatencySamples)
	}
	return fmt.Sprintf("fledge-scale: %s Deployments (%s pods, replicas %s in turn) in %d namespaces, %s; %s; lab: %d kwok nodes; machine: GOMAXPROCS %d, nproc %d, %s; other labs running: %s",
		count(c.Deployments), count(r.Pods), joinInts(c.Replicas), c.Namespaces, rollouts, fledge, r.Nodes,
		r.Machine.GOMAXPROCS, r.Machine.NProc, r.Machine.Go, r.Machine.OtherLabs)
}

// print writes the header, the table and the notes.
func (r *report) print(out io.Writer) {
	rows, notes := r.rows()
	fmt.Fprintln(out, r.header())
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FIGURE\tMEASURED\tGOAL\t")
	for _, row := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", row.Figure, row.Measured, row.Goal, row.Status)
	}
	tw.Flush()
	fmt.Fprintln(out)
	for _, n := range notes {
		fmt.Fprintln(out, "  "+n)
	}
	if wh := r.Webhook; wh != nil && !wh.reached() {
		fmt.Fprintf(out, "\nfledge-scale: THE WEBHOOK LATENCY IS NOT VALID: of %d PATCHes in %s, %d called fledge's webhook, and %d of those in %s (want all and none)\n",
			wh.On.N, probeOn, wh.Callers[probeCaller(probeOn)], wh.Callers[probeCaller(probeOff)], probeOff)
		fmt.Fprintln(out, "  the audit log's writes that called a mutating webhook of fledge's meanwhile:")
		for _, who := range sortedKeys(wh.Callers) {
			fmt.Fprintf(out, "  %5d  %s\n", wh.Callers[who], who)
		}
		fmt.Fprintln(out, "  the apiserver's calls of webhooks meanwhile, by series:")
		for _, s := range sortedKeys(wh.Series) {
			fmt.Fprintf(out, "  %5.0f  %s\n", wh.Series[s], s)
		}
	}
	if ro := r.Rollouts; ro != nil && len(ro.Failures) > 0 {
		fmt.Fprintf(out, "\nfledge-scale: %d OF %d ROLLOUTS DID NOT SUCCEED:\n", len(ro.Failures), ro.Rollouts)
		for i, f := range ro.Failures {
			if i == 10 {
				fmt.Fprintf(out, "  … and %d more\n", len(ro.Failures)-10)
				break
			}
			fmt.Fprintln(out, "  "+f)
		}
	}
	if r.Failed != "" {
		fmt.Fprintf(out, "\nfledge-scale: THE RUN FAILED: %s\n", r.Failed)
	}
}

// jsonReport is the JSON of bin/bench-scale.json: the table as rows, and
// the figures as numbers (bytes, milliseconds, counts).
type jsonReport struct {
	Header  string             `json:"header"`
	Config  config             `json:"config"`
	Machine machine            `json:"machine"`
	Fledge  string             `json:"fledge"`
	Nodes   int                `json:"nodes"`
	Pods    int                `json:"pods"`
	Rows    []row              `json:"rows"`
	Notes   []string           `json:"notes"`
	Figures map[string]float64 `json:"figures"`
	Writes  *writeCounts       `json:"writesDuringRollouts,omitempty"`
	// Admissions are the apiserver's webhook calls during the rollouts, by webhook.
	Admissions map[string]float64 `json:"admissionsDuringRollouts,omitempty"`
	Failures   []string           `json:"failures,omitempty"`
	Failed     string             `json:"failed,omitempty"`
}

func (r *report) figures() map[string]float64 {
	f := map[string]float64{"wallSeconds": r.Wall.Seconds()}
	if m := r.Idle; m != nil {
		f["rssIdleBytes"], f["heapIdleBytes"] = float64(m.RSS), float64(m.HeapInuse)
	}
	if m := r.Populated; m != nil {
		f["rssPopulatedBytes"], f["heapPopulatedBytes"] = float64(m.RSS), float64(m.HeapInuse)
		f["populatingSeconds"] = r.Populating.Seconds()
		f["rssPopulatedHWMBytes"] = float64(m.HWM)
		if r.Idle != nil {
			f["heapPerDeploymentBytes"] = (float64(m.HeapInuse) - float64(r.Idle.HeapInuse)) / float64(r.Config.Deployments)
		}
	}
	if wh := r.Webhook; wh != nil {
		f["webhookOnP50Ms"], f["webhookOnP99Ms"] = ms(wh.On.P50), ms(wh.On.P99)
		f["webhookOffP50Ms"], f["webhookOffP99Ms"] = ms(wh.Off.P50), ms(wh.Off.P99)
		f["webhookAddedP50Ms"], f["webhookAddedP99Ms"] = ms(wh.AddedP50), ms(wh.AddedP99)
		if wh.HasGoalBucket {
			f["webhookCallsWithinGoal"] = wh.WithinGoal
		}
		f["webhookHandlerMeanMs"], f["webhookAPIServerCallMeanMs"] = ms(wh.HandlerMean), ms(wh.APIServerMean)
		f["webhookProbeAdmissions"] = wh.Admissions
	}
	if ro := r.Rollouts; ro != nil {
		n := float64(ro.Rollouts)
		f["rolloutsSucceeded"] = float64(ro.Phases[rollout.Succeeded])
		f["rolloutsSeconds"] = ro.Took.Seconds()
		f["rssPeakHWMBytes"], f["rssMaxSampledBytes"], f["heapMaxSampledBytes"] = float64(ro.PeakHWM), float64(ro.MaxRSS), float64(ro.MaxHeap)
		f["reconciles"], f["reconcileMeanMs"] = float64(ro.Reconciles.Count), ro.Reconciles.Mean()*1000
		if q, ok := ro.Reconciles.Quantile(0.99); ok {
			f["reconcileP99Ms"], f["reconcileP99BucketUpperMs"] = q.Value*1000, q.Upper*1000
		}
		f["queueWaitMeanMs"] = ro.QueueWait.Mean() * 1000
		f["replicaSetLists"], f["replicaSetListMeanMs"] = float64(ro.ListReplicaSets.Count), ro.ListReplicaSets.Mean()*1000
		if q, ok := ro.QueueWait.Quantile(0.99); ok {
			f["queueWaitP99Ms"], f["queueWaitP99BucketUpperMs"] = q.Value*1000, q.Upper*1000
		}
		f["stepLagP50Ms"], f["stepLagP99Ms"], f["stepLagMaxMs"] = ms(ro.Steps.P50), ms(ro.Steps.P99), ms(ro.Steps.Max)
		f["promotionLagP99Ms"] = ms(ro.Promotions.P99)
		f["deploymentWritesPerRollout"] = float64(ro.Writes.deployments()) / n
		f["deploymentWriteMeanMs"] = ms(ro.Writes.deploymentMean())
		f["eventsPerRollout"], f["leaseWrites"] = float64(ro.Writes.Events)/n, float64(ro.Writes.Leases)
		f["admissionsPerRollout"], f["decidedPerRollout"] = ro.admitted()/n, ro.Decided/n
	}
	return f
}

// writeJSON writes the report to path, making its directory.
func (r *report) writeJSON(path string) error {
	rows, notes := r.rows()
	out := jsonReport{Header: r.header(), Config: r.Config, Machine: r.Machine, Fledge: r.Fledge, Nodes: r.Nodes, Pods: r.Pods,
		Rows: rows, Notes: notes, Figures: r.figures(), Failed: r.Failed}
	if ro := r.Rollouts; ro != nil {
		out.Writes, out.Admissions, out.Failures = &ro.Writes, ro.Admissions, ro.Failures
	}
	data, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// msec renders a duration in milliseconds: "2.6 ms", "0.48 ms".
func msec(d time.Duration) string { return msecF(d.Seconds()) }

func msecF(seconds float64) string {
	v := seconds * 1000
	switch {
	case v >= 100 || v <= -100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 1 || v <= -1:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.2f ms", v)
	}
}

// bounded renders a quantile from buckets with the bucket that bounds it:
// "7.9 ms (7.6–8.3)".
func bounded(q quantile) string {
	if q.Upper == 0 && q.Lower == 0 {
		return "n/a"
	}
	lo, hi := q.Lower*1000, q.Upper*1000
	if hi > 1e12 {
		return fmt.Sprintf("> %s (last bucket)", msecF(q.Lower))
	}
	return fmt.Sprintf("%s (in %s–%s)", msecF(q.Value), trimFloat(lo), msecF(q.Upper))
}

func trimFloat(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2g", v)
	}
}

// count renders n with thousands separators: 9,832.
func count(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + count(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func joinInts(v []int32) string {
	var parts []string
	for _, n := range v {
		parts = append(parts, fmt.Sprint(n))
	}
	return strings.Join(parts, ",")
}
