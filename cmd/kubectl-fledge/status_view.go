package main

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/utils/ptr"

	"github.com/fledge-dev/fledge/policy"
	"github.com/fledge-dev/fledge/rollout"
)

// statusView is what `status` shows: the rollout of one Deployment as its
// annotations and the ready pods of the two Deployments tell it.
type statusView struct {
	Namespace, Name string
	// State is the rollout in progress as fledge wrote it: the annotation
	// parses and carries fledge's seal. The plugin holds no key, so it
	// cannot verify the seal; but a state without one, or one that does
	// not parse, is fledge's in no case: State is nil and Rejected says why.
	State *rollout.State
	// Rejected says why fledge.dev/rollout holds no state fledge wrote
	// ("it does not parse: ...", "it has no seal", in the words of the
	// router's StateRejected Event). fledge acts on none of it: the router
	// drops it.
	Rejected string
	// Outcome is the last finished rollout; nil and OutcomeUnreadable set
	// (why) when fledge.dev/last-rollout does not parse.
	Outcome           *rollout.Outcome
	OutcomeUnreadable string
	// Evidence is the canary's last evaluation of the Prometheus checks,
	// of the current attempt and step only (rollout.Evidence.For); zero
	// without a rollout in progress, and when the canary's annotation does
	// not parse or has no seal: such evidence is not fledge's.
	Evidence rollout.Evidence
	// Paused is the Deployment's spec.paused.
	Paused bool
	// Holding is true when no rollout runs and the Deployment holds the
	// failed revision of Outcome: paused on its template, the stable
	// ReplicaSet serving (rollout.Holds).
	Holding bool
	// NamespaceIgnored is true when the namespace was read and does not
	// carry the opt-in label: fledge ignores the Deployment. It stays false
	// when the namespace could not be read.
	NamespaceIgnored bool
	// StableReady is status.readyReplicas of NAME, CanaryReady that of
	// NAME-canary and CanaryDesired its spec.replicas (0 without a canary).
	// Their ratio is the share of traffic the canary gets.
	StableReady, CanaryReady, CanaryDesired int32
	Now                                     time.Time
}

// newStatusView reads the view from the stable Deployment and its canary
// (nil when it does not exist). Annotations that do not parse are part of
// the view, never an error: status, list and the commands still work on
// the Deployment.
func newStatusView(stable, canary *appsv1.Deployment, now time.Time) statusView {
	v := statusView{Namespace: stable.Namespace, Name: stable.Name, StableReady: stable.Status.ReadyReplicas, Paused: stable.Spec.Paused, Now: now}
	if canary != nil {
		v.CanaryReady = canary.Status.ReadyReplicas
		v.CanaryDesired = ptr.Deref(canary.Spec.Replicas, 1)
	}
	v.State, v.Rejected = readState(stable)
	o, err := rollout.ParseOutcome(stable)
	if err != nil {
		v.OutcomeUnreadable = "it does not parse: " + cause(err)
	}
	v.Outcome = o
	v.Holding = v.State == nil && rollout.Holds(stable, v.Outcome)
	if v.State != nil {
		v.Evidence = readEvidence(canary).For(v.State)
	}
	return v
}

// readState reads the rollout state of d as far as a tool without
// fledge's key can tell it is fledge's (rollout.ReadState); otherwise the
// state is nil and why says what is wrong with it.
func readState(d *appsv1.Deployment) (s *rollout.State, why string) {
	s, err := rollout.ReadState(d)
	if rejected, ok := errors.AsType[*rollout.RejectedError](err); ok {
		return nil, rejected.Why
	}
	return s, ""
}

// readEvidence reads the canary's evidence; none when there is no canary,
// or when the annotation is not fledge's.
func readEvidence(canary *appsv1.Deployment) *rollout.Evidence {
	if canary == nil {
		return nil
	}
	ev, _ := rollout.ReadEvidence(canary)
	return ev
}

// cause is what rollout's parse error wraps: the JSON decoder's words,
// without the annotation and object, which the caller names.
func cause(err error) string {
	if inner := errors.Unwrap(err); inner != nil {
		return inner.Error()
	}
	return err.Error()
}

// ignoredState says what becomes of a sealed state in a namespace fledge
// does not act in. The plugin cannot tell whether fledge sealed it for this
// Deployment, so it claims nothing of what the state says.
func ignoredState(namespace string) string {
	return fmt.Sprintf("namespace not opted in: fledge does not act in %s, so nothing advances and no command is taken; once the namespace is labelled %s=true the router checks the state's seal, then goes on with the rollout or drops the state",
		namespace, rollout.LabelEnabled)
}

// live reports whether the view shows a rollout fledge runs: a state
// fledge wrote, in a namespace it acts in (as far as the plugin could
// read the namespace).
func (v statusView) live() bool { return v.State != nil && !v.NamespaceIgnored }

// formatStatus renders the rollout in the shape of the seed's process
// table: header lines, then one row per policy step and a final row for the
// promotion or rollback.
func formatStatus(v statusView) string {
	var warning string
	if v.NamespaceIgnored {
		warning = fmt.Sprintf("namespace %s is not labelled %s=true: fledge ignores %s; kubectl label namespace %s %s=true\n\n",
			v.Namespace, rollout.LabelEnabled, v.Name, v.Namespace, rollout.LabelEnabled)
	}
	switch {
	case v.live():
		return warning + runningHeader(v) + "\n" + stepTable(runningRows(v), compares(v.State.Policy.Analysis))
	case v.Outcome != nil:
		return warning + finishedHeader(v) + "\n" + stepTable(finishedRows(v.Outcome), false)
	case v.State != nil || v.Rejected != "" || v.OutcomeUnreadable != "":
		var t table
		t.add("Rollout:", v.Namespace+"/"+v.Name+" (none in progress)")
		notes(&t, v)
		return warning + t.String()
	default:
		return warning + fmt.Sprintf("%s/%s has no rollout in progress and none recorded: fledge starts one when the pod template changes in a namespace labelled %s=true\n",
			v.Namespace, v.Name, rollout.LabelEnabled)
	}
}

func runningHeader(v statusView) string {
	s := v.State
	var t table
	t.add("Rollout:", v.Namespace+"/"+v.Name)
	t.add("Revisions:", revisions(s.StableRevision, s.CanaryRevision))
	if s.Attempt > 1 {
		t.add("Attempt:", fmt.Sprint(s.Attempt))
	}
	t.add("Policy:", fmt.Sprintf("%s (%s)", orDash(s.PolicySource), s.Policy.StepsString()))
	t.add("Phase:", phaseLine(s))
	if s.Reason != nil {
		t.add("Reason:", reasonText(s.Reason))
	}
	if s.Message != "" {
		t.add("Message:", s.Message)
	}
	if line := underServedLine(v); line != "" {
		t.add("Traffic:", line)
	}
	t.add("Started:", fmt.Sprintf("%s (%s ago)", timestamp(s.StartedAt.Time), since(v.Now, s.StartedAt.Time)))
	notes(&t, v)
	return t.String()
}

// notes adds the header lines that say what fledge makes of annotations
// that look like its own and are not acted on: a state it did not write,
// a state in a namespace it does not act in, an unreadable last outcome.
func notes(t *table, v statusView) {
	switch {
	case v.Rejected != "" && v.NamespaceIgnored:
		t.add("State:", fmt.Sprintf("not written by fledge (%s); fledge does not act on it", v.Rejected))
	case v.Rejected != "":
		t.add("State:", fmt.Sprintf("not written by fledge (%s); fledge does not act on it and drops it", v.Rejected))
	case v.State != nil && v.NamespaceIgnored:
		t.add("State:", "not acted on: "+ignoredState(v.Namespace))
	}
	if v.Rejected != "" && v.Paused && !v.Holding {
		t.add("Paused:", fmt.Sprintf("yes, and no rollout of fledge's keeps it so: kubectl rollout resume -n %s deployment/%s", v.Namespace, v.Name))
	}
	if v.OutcomeUnreadable != "" {
		t.add("Last:", fmt.Sprintf("%s is unreadable: %s", rollout.AnnotationLast, v.OutcomeUnreadable))
	}
}

func finishedHeader(v statusView) string {
	o := v.Outcome
	var t table
	t.add("Rollout:", v.Namespace+"/"+v.Name+" (finished)")
	t.add("Revisions:", revisions(o.StableRevision, o.CanaryRevision))
	if o.Attempt > 1 {
		t.add("Attempt:", fmt.Sprint(o.Attempt))
	}
	t.add("Outcome:", string(o.Phase))
	if o.Reason != nil {
		t.add("Reason:", reasonText(o.Reason))
	}
	t.add("Started:", timestamp(o.StartedAt.Time))
	t.add("Finished:", fmt.Sprintf("%s (%s ago), after %s",
		timestamp(o.FinishedAt.Time), since(v.Now, o.FinishedAt.Time), since(o.FinishedAt.Time, o.StartedAt.Time)))
	if v.Holding {
		t.add("Holding:", fmt.Sprintf("revision %s (%s %s ago); the stable revision %s serves all %d pods",
			o.CanaryRevision, o.Phase.Ended(), since(v.Now, o.FinishedAt.Time), orDash(o.StableRevision), v.StableReady))
		t.add("Next:", holdingWays(v.Name))
	}
	notes(&t, v)
	return t.String()
}

// holdingWays are the ways out of a held failed revision.
func holdingWays(name string) string {
	return fmt.Sprintf("kubectl fledge undo %s | kubectl fledge retry %s | apply a new version", name, name)
}

func revisions(stable, canary string) string {
	return fmt.Sprintf("%s (stable) → %s (canary)", orDash(stable), orDash(canary))
}

// phaseLine says where the rollout stands: "Progressing at step 2 of 3
// (25%)"; a promotion names the step it left from, since promote-full may
// skip the rest.
func phaseLine(s *rollout.State) string {
	n := len(s.Policy.Steps)
	if !stepIn(s) {
		return fmt.Sprintf("%s at step %d of %d", s.Phase, s.Step+1, n)
	}
	if s.Phase == rollout.Promoting {
		return fmt.Sprintf("Promoting to 100%% from step %d of %d (%d%%)", s.Step+1, n, s.TargetWeight())
	}
	return fmt.Sprintf("%s at step %d of %d (%d%%)", s.Phase, s.Step+1, n, s.TargetWeight())
}

// stepIn reports whether the state's step is one of its policy's steps.
func stepIn(s *rollout.State) bool {
	_, ok := s.CurrentStep()
	return ok
}

// reasonText is why a rollout failed, where it failed, as the router's
// Events say it: "error-rate 0.072 > 0.01 at step 3 (50%)".
func reasonText(r *rollout.Reason) string {
	return fmt.Sprintf("%s at step %d (%d%%)", reasonMessage(r), r.Step+1, r.Weight)
}

// reasonMessage is the router's own words, or the same facts assembled
// from the reason's fields.
func reasonMessage(r *rollout.Reason) string {
	if r.Message != "" {
		return r.Message
	}
	text := r.Check
	if r.Value != nil {
		text += " " + formatNumber(*r.Value)
	}
	if r.Bound != nil {
		text += " (bound " + formatNumber(*r.Bound) + ")"
	}
	return text
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// stepRow is one row of the process table. Monitoring may hold several
// lines, one per check. Share is the canary's measured share of the
// step's requests beside its share of pods (canaryShare); "" when none
// was measured.
type stepRow struct {
	step, action, state, group string
	share                      string
	monitoring                 []string
	next                       string
	current                    bool
}

// stepTable renders the rows. The CANARY SHARE column is there when a
// row has a measured share, or when withShare says the policy measures
// them (so that it does not appear from one redraw to the next); a
// policy without a comparison measures none, and its table is as it
// always was.
func stepTable(rows []stepRow, withShare bool) string {
	for _, r := range rows {
		withShare = withShare || r.share != ""
	}
	var t table
	add := func(step, action, state, group, share, monitoring, next string) {
		if withShare {
			t.add(step, action, state, group, share, monitoring, next)
		} else {
			t.add(step, action, state, group, monitoring, next)
		}
	}
	add("STEP", "ACTION", "DEPLOYMENT STATE", "USER GROUP", "CANARY SHARE", "MONITORING RESULT", "NEXT STEP")
	for _, r := range rows {
		mark := "  "
		if r.current {
			mark = markCurrent + " "
		}
		first := ""
		if len(r.monitoring) > 0 {
			first = r.monitoring[0]
		}
		add(mark+r.step, r.action, r.state, r.group, orDash(r.share), first, r.next)
		for _, more := range r.monitoring[min(1, len(r.monitoring)):] {
			add("", "", "", "", "", more, "")
		}
	}
	return t.String()
}

// compares reports whether the analysis has comparisons, which measure
// the canary's share of requests at every step.
func compares(a *policy.Analysis) bool { return a != nil && len(a.Compare) > 0 }

// canaryShare reads "4.8% of pods, 5.1% of 2,180 requests": the canary's
// share of ready pods (its effective weight) and the share of the step's
// requests it served.
func canaryShare(effective, measured, requests float64) string {
	return fmt.Sprintf("%.1f%% of pods, %.1f%% of %s", effective, measured, requestsOf(requests))
}

// recordedShare is the canary share of a step that ended, as the router
// recorded it; "" when it measured none.
func recordedShare(rec *rollout.StepRecord) string {
	if rec == nil || rec.Measured == nil {
		return ""
	}
	return canaryShare(rec.Effective, *rec.Measured, float64(rec.Requests))
}

// liveShare is the current step's measured share of requests and how
// many they are, from the last evaluation of this step, and the canary's
// share of the ready pods now; ok is false before any request counted.
func liveShare(v statusView) (share, requests, effective float64, ok bool) {
	if !freshEvidence(v) {
		return 0, 0, 0, false
	}
	share, requests, ok = v.Evidence.Measured()
	return share, requests, rollout.EffectiveWeight(v.CanaryReady, v.StableReady), ok
}

// underServedLine says, while a step runs, that its canary serves far
// less than its share of pods (rollout.UnderServed), with the numbers and
// the likely cause; "" otherwise.
func underServedLine(v statusView) string {
	s := v.State
	if !s.Phase.Live() || !stepIn(s) {
		return ""
	}
	share, requests, effective, ok := liveShare(v)
	if !ok || !rollout.UnderServed(share, requests, effective) {
		return ""
	}
	return fmt.Sprintf("the canary served %.1f%% of %s at this step, far below its %.1f%% of pods: "+
		"clients that keep connections open (HTTP keep-alive, HTTP/2, gRPC) stay on the stable pods they reached first",
		share, requestsOf(requests), effective)
}

// Actions and states in the seed's words.
const (
	actionApply    = "apply canary"
	actionIncrease = "increase user group"
	actionPromote  = "promote"
	actionRollback = "rollback canary"
	actionAbort    = "abort"
	stateRunning   = "canary running"
	noIssues       = "no issues"
	pending        = "pending"
	notApplicable  = "n/a"
	end            = "end"
)

func actionOf(i int) string {
	if i == 0 {
		return actionApply
	}
	return actionIncrease
}

// nextAfter is what follows step i of n once it passed.
func nextAfter(i, n int) string {
	if i < n-1 {
		return actionIncrease
	}
	return actionPromote
}

// recordFor finds the history of the step at weight; weights rise strictly
// from step to step, so the weight names the step. The last record wins: a
// superseded rollout starts its steps again.
func recordFor(history []rollout.StepRecord, weight int32) *rollout.StepRecord {
	for i := len(history) - 1; i >= 0; i-- {
		if history[i].Weight == weight {
			return &history[i]
		}
	}
	return nil
}

// recordedGroup is a passed step's user group as the router recorded it.
func recordedGroup(weight int32, rec *rollout.StepRecord) string {
	if rec == nil {
		return fmt.Sprintf("%d%%", weight)
	}
	return userGroup(weight, rec.Canary, rec.Stable)
}

func pastRow(i int, weight int32, rec *rollout.StepRecord, next string) stepRow {
	return stepRow{
		step: fmt.Sprint(i + 1), action: actionOf(i), state: stateRunning,
		group: recordedGroup(weight, rec), share: recordedShare(rec), monitoring: []string{noIssues}, next: next,
	}
}

func runningRows(v statusView) []stepRow {
	s := v.State
	steps := s.Policy.Steps
	rows := make([]stepRow, 0, len(steps)+1)
	for i, st := range steps {
		switch {
		case int32(i) < s.Step || (int32(i) == s.Step && s.Phase == rollout.Promoting):
			next := nextAfter(i, len(steps))
			if s.Phase == rollout.Promoting && int32(i) == s.Step {
				next = actionPromote
			}
			rows = append(rows, pastRow(i, st.Weight, recordFor(s.History, st.Weight), next))
		case int32(i) == s.Step:
			rows = append(rows, currentRow(v, i))
		default:
			// Steps ahead, or skipped by promote-full.
			monitoring := "-"
			if s.Phase == rollout.Promoting {
				monitoring = "skipped"
			}
			rows = append(rows, stepRow{step: fmt.Sprint(i + 1), action: actionOf(i), state: "-",
				group: fmt.Sprintf("%d%%", st.Weight), monitoring: []string{monitoring}, next: "-"})
		}
	}
	return append(rows, finalRunningRow(s, len(steps)))
}

// currentRow is the step the rollout is at, with the live pod counts.
func currentRow(v statusView, i int) stepRow {
	s := v.State
	st := s.Policy.Steps[i]
	row := stepRow{
		step: fmt.Sprint(i + 1), action: actionOf(i), state: stateRunning,
		group:      userGroup(st.Weight, v.CanaryReady, v.StableReady),
		monitoring: checkLines(v),
		current:    true,
	}
	share, requests, effective, measured := liveShare(v)
	if measured {
		row.share = canaryShare(effective, share, requests)
	}
	switch s.Phase {
	case rollout.RollingBack, rollout.Aborted:
		// The final row is where the rollout is; this one says why. Its
		// canary is scaled to 0: the step's pods are those recorded.
		row.current = false
		row.state = "canary scaled to 0"
		if rec := recordFor(s.History, st.Weight); rec != nil {
			row.group = recordedGroup(st.Weight, rec)
			row.share = recordedShare(rec)
			if row.share == "" && measured {
				row.share = canaryShare(rec.Effective, share, requests)
			}
		}
		row.monitoring = []string{issueText(s.Phase, s.Reason)}
		row.next = endAction(s.Phase)
	case rollout.Paused:
		row.state = "canary paused"
		row.next = "resume: kubectl fledge resume " + v.Name
		if s.AwaitsApproval(v.Now) {
			row.next = "approve: kubectl fledge promote " + v.Name
		}
	default:
		row.next = holdNext(v, i, st)
		switch {
		case s.HoldingSince == nil:
			row.state = fmt.Sprintf("canary starting (%d of %d ready)", v.CanaryReady, v.CanaryDesired)
		case s.NotReadySince != nil:
			row.state = fmt.Sprintf("canary not ready (%d of %d ready)", v.CanaryReady, v.CanaryDesired)
		}
	}
	return row
}

// holdNext says what follows the current step and when: the hold runs
// from the moment all canary pods were Ready, stops while the step is
// stalled, and with an analysis ends only on passing evidence
// (inconclusive checks never count as a pass).
func holdNext(v statusView, i int, st policy.Step) string {
	s := v.State
	if s.HoldingSince == nil {
		return "wait for canary pods to be ready" + readyTimeoutLeft(v)
	}
	if s.StalledSince != nil {
		return "hold paused for " + since(v.Now, s.StalledSince.Time) + readyTimeoutLeft(v)
	}
	if s.AwaitsPass() && noData(v.Evidence) {
		return "hold cannot complete until the checks pass (no data)"
	}
	left := s.HoldLeft(v.Now)
	waiting := s.AwaitsPass() && gathering(v.Evidence)
	if waiting && left == 0 {
		// Past the hold, the router counts a step still short of requests
		// as one without data, toward noDataLimit.
		return "hold cannot complete until the canary has served enough requests (counted as no data)"
	}
	next := nextAfter(i, len(s.Policy.Steps))
	if st.Approval == policy.ApprovalManual {
		next = "approval (kubectl fledge promote " + v.Name + ")"
	}
	switch {
	case left > 0 && waiting:
		return fmt.Sprintf("%s in %s, once the canary has served enough requests", next, since(v.Now.Add(left), v.Now))
	case left > 0:
		return fmt.Sprintf("%s in %s", next, since(v.Now.Add(left), v.Now))
	case s.AwaitsPass():
		return "wait for passing checks, then " + next
	default:
		return next
	}
}

// readyTimeoutLeft is " (readyTimeout in 4m10s)" while the canary has fewer
// Ready pods than wanted: the rollout rolls back when it runs out.
func readyTimeoutLeft(v statusView) string {
	left, counting := v.State.ReadyTimeoutLeft(v.Now)
	if !counting {
		return ""
	}
	return fmt.Sprintf(" (readyTimeout in %s)", since(v.Now.Add(left), v.Now))
}

// noData reports whether a check of the last evaluation was inconclusive
// for want of data (no data, Prometheus unreachable): such an evaluation
// is never a pass, so the hold cannot complete on it. A result still
// gathering requests is not missing data (see gathering).
func noData(ev rollout.Evidence) bool {
	for _, c := range ev.Checks {
		if c.Result == policy.Inconclusive && !c.Gathering {
			return true
		}
	}
	return false
}

// gathering reports whether a check of the last evaluation waits for the
// canary to serve more requests (a comparison without requests on a
// side yet, analysis.minRequests not met): the step holds on it.
func gathering(ev rollout.Evidence) bool {
	for _, c := range ev.Checks {
		if c.Result == policy.Inconclusive && c.Gathering {
			return true
		}
	}
	return false
}

// freshEvidence reports whether the view's evidence is of its current
// step as it runs now: evaluated since the step started.
func freshEvidence(v statusView) bool {
	s := v.State
	return s != nil && (s.StepStartedAt == nil || !v.Evidence.At.Before(s.StepStartedAt))
}

// checkLines lists the checks of the last evaluation of this attempt's
// step, or "pending" when there is none yet.
func checkLines(v statusView) []string {
	s, ev := v.State, v.Evidence
	if len(ev.Checks) == 0 || !freshEvidence(v) {
		return []string{pending}
	}
	lines := make([]string, len(ev.Checks))
	for i, c := range ev.Checks {
		lines[i] = checkLine(s.Policy.Analysis, ev, c)
	}
	return lines
}

// checkLine shows one result of the last evaluation: a threshold check
// (formatCheck), a comparison (formatComparison), or one that waits for
// requests (formatGathering).
func checkLine(a *policy.Analysis, ev rollout.Evidence, c policy.CheckResult) string {
	comp, tally := comparisonOf(a, ev, c.Check)
	switch {
	case c.Result == policy.Inconclusive && c.Gathering:
		return formatGathering(c, tally)
	case c.EValue != nil:
		alpha := 0.0
		if comp != nil {
			alpha = comp.Alpha
		}
		return formatComparison(c, alpha, tally)
	case comp != nil:
		// A comparison without a reading: its bound is a multiple of
		// stable's error rate.
		return formatCheck(c, true)
	default:
		return formatCheck(c, isRatio(a, c.Check))
	}
}

// comparisonOf finds the analysis's comparison of that name and what it
// counted of the attempt; nil for either when there is none.
func comparisonOf(a *policy.Analysis, ev rollout.Evidence, name string) (*policy.Comparison, *policy.Tally) {
	if a == nil {
		return nil, nil
	}
	for i := range a.Compare {
		if a.Compare[i].Name != name {
			continue
		}
		if i < len(ev.Tallies) {
			return &a.Compare[i], &ev.Tallies[i]
		}
		return &a.Compare[i], nil
	}
	return nil, nil
}

// formatComparison shows a comparison's verdict by its e-value, with the
// error rates it compares over the attempt: "errors 0.7% vs stable 0.5%
// (tolerated 1.5×), e-value 2.1 < 20 ✓". It fails at 1/alpha, whatever
// the ratio of the rates: the e-value is the evidence, over every request
// of the attempt, that the canary is worse than tolerated. alpha 0
// (unknown) leaves the limit out; without the tally the rates are the
// ratio of them, when known ("errors 1.4× stable (tolerated 1.5×)").
func formatComparison(c policy.CheckResult, alpha float64, t *policy.Tally) string {
	text := c.Check
	switch {
	case t != nil:
		text += fmt.Sprintf(" %s%% vs stable %s%%", formatNumber(100*t.Canary.Rate()), formatNumber(100*t.Stable.Rate()))
	case c.Value != nil:
		text += " " + formatNumber(*c.Value) + "× stable"
	}
	text += " (tolerated " + formatNumber(c.Bound) + "×)"
	mark, rel := markPass, "<"
	if c.Result == policy.Fail {
		mark, rel = markFail, ">="
	}
	evalue := "e-value " + formatEValue(*c.EValue, 0)
	if alpha > 0 {
		limit := 1 / alpha
		evalue = fmt.Sprintf("e-value %s %s %s", formatEValue(*c.EValue, limit), rel, formatNumber(limit))
	}
	return fmt.Sprintf("%s, %s %s", text, evalue, mark)
}

// formatEValue shows an e-value as formatNumber does a value, a huge one
// in exponent form ("2.35e+06"), and with the digits it takes not to read
// as the limit it is not.
func formatEValue(e, limit float64) string {
	if e >= 1e4 {
		return strconv.FormatFloat(e, 'e', 2, 64)
	}
	if s := formatNumber(e); s != formatNumber(limit) || e == limit {
		return s
	}
	return strconv.FormatFloat(e, 'g', -1, 64)
}

// formatGathering shows a result that waits for requests, as waiting
// rather than as missing data: "min-requests waiting for requests (120 of
// 500 served)", "errors waiting for requests (none counted on the canary
// pods yet)".
func formatGathering(c policy.CheckResult, t *policy.Tally) string {
	text := c.Check + " waiting for requests"
	switch {
	case c.Value != nil:
		text += fmt.Sprintf(" (%s of %s served)", policy.FormatCount(*c.Value), policy.FormatCount(c.Bound))
	case t != nil && t.Canary.Requests <= 0:
		text += " (none counted on the canary pods yet)"
	case t != nil && t.Stable.Requests <= 0:
		text += " (none counted on the stable pods yet)"
	}
	return text
}

// isRatio reports whether the named check holds the canary to a maxRatio
// of stable: its value and bound are multiples of the stable value.
func isRatio(a *policy.Analysis, check string) bool {
	if a == nil {
		return false
	}
	for _, c := range a.Checks {
		if c.Name == check {
			return c.MaxRatio != nil
		}
	}
	return false
}

// formatCheck shows a check's value against its bound and the verdict:
// "error-rate 0.002 <= 0.01 ✓", "error-rate 0.072 > 0.01 ✗", and for a
// maxRatio check, whose value is canary / stable, "p99-latency 1.31×
// stable > 1.2× ✗".
func formatCheck(c policy.CheckResult, ratio bool) string {
	op := orDash(c.Op)
	bound := formatNumber(c.Bound)
	unit := ""
	if ratio {
		bound += "×"
		unit = "× stable"
	}
	if c.Value == nil {
		if ratio {
			return fmt.Sprintf("%s no data (want %s %s stable)", c.Check, op, bound)
		}
		return fmt.Sprintf("%s no data (want %s %s)", c.Check, op, bound)
	}
	value := formatNumber(*c.Value) + unit
	switch c.Result {
	case policy.Pass:
		return fmt.Sprintf("%s %s %s %s %s", c.Check, value, op, bound, markPass)
	case policy.Fail:
		return fmt.Sprintf("%s %s %s %s %s", c.Check, value, negate(op), bound, markFail)
	default:
		return fmt.Sprintf("%s %s (want %s %s) inconclusive", c.Check, value, op, bound)
	}
}

// negate turns the bound a check must keep into the one it broke.
func negate(op string) string {
	switch op {
	case "<=":
		return ">"
	case ">=":
		return "<"
	default:
		return "not " + op
	}
}

// issueText fills the monitoring cell of the step where a rollout failed;
// the row already names the step and weight.
func issueText(phase rollout.Phase, r *rollout.Reason) string {
	switch {
	case phase == rollout.Aborted && r == nil:
		return "aborted by user"
	case phase == rollout.Aborted:
		return reasonMessage(r)
	case r == nil:
		return "issues detected"
	default:
		return "issues detected: " + reasonMessage(r)
	}
}

func endAction(phase rollout.Phase) string {
	if phase == rollout.Aborted {
		return actionAbort
	}
	return actionRollback
}

// finalRunningRow is the promotion every rollout ends with, or the rollback
// it is in.
func finalRunningRow(s *rollout.State, n int) stepRow {
	row := stepRow{step: fmt.Sprint(n + 1), action: actionPromote, state: "-", group: "100%", monitoring: []string{"-"}, next: end}
	switch s.Phase {
	case rollout.Promoting:
		row.state, row.monitoring, row.current = "stable rolling to new version", []string{notApplicable}, true
	case rollout.RollingBack, rollout.Aborted:
		row.action, row.state, row.group = endAction(s.Phase), "restoring stable version", "100% stable"
		row.monitoring, row.current = []string{notApplicable}, true
	}
	return row
}

// finishedRows is the history of a finished rollout: the steps it reached,
// the one that failed, and how it ended.
func finishedRows(o *rollout.Outcome) []stepRow {
	failed := failedRecord(o)
	rows := make([]stepRow, 0, len(o.History)+1)
	for i, rec := range o.History {
		row := pastRow(i, rec.Weight, &o.History[i], nextAfter(i, len(o.History)))
		switch {
		case i == failed:
			row.monitoring, row.next = []string{issueText(o.Phase, o.Reason)}, endAction(o.Phase)
		case o.Phase != rollout.Succeeded:
			row.next = actionIncrease
		}
		rows = append(rows, row)
	}
	final := stepRow{step: fmt.Sprint(len(o.History) + 1), action: endAction(o.Phase), state: "stable version restored",
		group: "100% stable", monitoring: []string{notApplicable}, next: end}
	if o.Phase == rollout.Succeeded {
		final.action, final.state, final.group = actionPromote, "new version on all pods", "100%"
	}
	return append(rows, final)
}

// failedRecord is the index of the step a failed rollout ended at: the one
// its reason names by weight, else the last one reached; -1 for a success.
func failedRecord(o *rollout.Outcome) int {
	if o.Phase == rollout.Succeeded || len(o.History) == 0 {
		return -1
	}
	if o.Reason != nil {
		for i := len(o.History) - 1; i >= 0; i-- {
			if o.History[i].Weight == o.Reason.Weight {
				return i
			}
		}
	}
	return len(o.History) - 1
}

// rolloutSummary is a one-line description for messages: "Progressing at
// step 2 of 3 (25%)" or "RolledBack 2h ago".
func rolloutSummary(v statusView) string {
	switch {
	case v.State != nil:
		return phaseLine(v.State)
	case v.Outcome != nil:
		return fmt.Sprintf("%s %s ago", v.Outcome.Phase, since(v.Now, v.Outcome.FinishedAt.Time))
	default:
		return "no rollout recorded"
	}
}
