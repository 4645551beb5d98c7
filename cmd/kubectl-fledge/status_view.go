package main

import (
	"errors"
	"fmt"
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
		return warning + runningHeader(v) + "\n" + stepTable(runningRows(v))
	case v.Outcome != nil:
		return warning + finishedHeader(v) + "\n" + stepTable(finishedRows(v.Outcome))
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
// lines, one per check.
type stepRow struct {
	step, action, state, group string
	monitoring                 []string
	next                       string
	current                    bool
}

func stepTable(rows []stepRow) string {
	var t table
	t.add("STEP", "ACTION", "DEPLOYMENT STATE", "USER GROUP", "MONITORING RESULT", "NEXT STEP")
	for _, r := range rows {
		mark := "  "
		if r.current {
			mark = markCurrent + " "
		}
		first := ""
		if len(r.monitoring) > 0 {
			first = r.monitoring[0]
		}
		t.add(mark+r.step, r.action, r.state, r.group, first, r.next)
		for _, more := range r.monitoring[min(1, len(r.monitoring)):] {
			t.add("", "", "", "", more, "")
		}
	}
	return t.String()
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
		group: recordedGroup(weight, rec), monitoring: []string{noIssues}, next: next,
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
	switch s.Phase {
	case rollout.RollingBack, rollout.Aborted:
		// The final row is where the rollout is; this one says why.
		row.current = false
		row.state = "canary scaled to 0"
		if rec := recordFor(s.History, st.Weight); rec != nil {
			row.group = recordedGroup(st.Weight, rec)
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
	next := nextAfter(i, len(s.Policy.Steps))
	if st.Approval == policy.ApprovalManual {
		next = "approval (kubectl fledge promote " + v.Name + ")"
	}
	switch {
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
// (no data, Prometheus unreachable): such an evaluation is never a pass,
// so the hold cannot complete on it.
func noData(ev rollout.Evidence) bool {
	for _, c := range ev.Checks {
		if c.Result == policy.Inconclusive {
			return true
		}
	}
	return false
}

// checkLines lists the checks of the last evaluation of this attempt's
// step, or "pending" when there is none yet.
func checkLines(v statusView) []string {
	s, ev := v.State, v.Evidence
	stale := s.StepStartedAt != nil && ev.At.Before(s.StepStartedAt)
	if len(ev.Checks) == 0 || stale {
		return []string{pending}
	}
	lines := make([]string, len(ev.Checks))
	for i, c := range ev.Checks {
		lines[i] = formatCheck(c, isRatio(s.Policy.Analysis, c.Check))
	}
	return lines
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
