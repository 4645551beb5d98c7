package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	"github.com/fledge-dev/fledge/rollout"
)

// level is how much a finding matters.
type level string

const (
	levelOK      level = "ok"
	levelInfo    level = "info"
	levelWarning level = "warning"
	levelProblem level = "problem"
)

// finding is one line of diagnose: what was found and, for a problem, what
// to change.
type finding struct {
	level level
	text  string
	fix   string
}

// maxPodsListed caps the pods listed per version, so that a crash-looping
// canary of forty pods does not bury the rest.
const maxPodsListed = 5

// formatDiagnosis renders the findings, the Services that select the pods,
// and a count of the problems.
func formatDiagnosis(d diagnosis) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Diagnosis of deployment %s/%s\n\n", d.Namespace, d.Stable.Name)
	fs := findings(d)
	var t table
	problems := 0
	for _, f := range fs {
		t.add(string(f.level), f.text)
		if f.fix != "" {
			t.add("", "fix: "+f.fix)
		}
		if f.level == levelProblem {
			problems++
		}
	}
	b.WriteString(t.String())
	if matches := serviceMatches(d); len(matches) > 0 {
		b.WriteString("\n" + serviceTable(matches))
	}
	switch problems {
	case 0:
		b.WriteString("\nNo problems found.\n")
	case 1:
		b.WriteString("\n1 problem found.\n")
	default:
		fmt.Fprintf(&b, "\n%d problems found.\n", problems)
	}
	return b.String()
}

// findings runs every check in the order a person would look.
func findings(d diagnosis) []finding {
	var fs []finding
	fs = append(fs, namespaceFinding(d))
	fs = append(fs, skipFinding(d))
	fs = append(fs, rolloutFindings(d)...)
	fs = append(fs, canaryFindings(d)...)
	fs = append(fs, serviceFindings(d)...)
	fs = append(fs, podFindings("stable", d.StablePods)...)
	fs = append(fs, podFindings("canary", d.CanaryPods)...)
	return fs
}

func namespaceFinding(d diagnosis) finding {
	switch {
	case d.NamespaceErr != nil:
		return finding{level: levelWarning,
			text: fmt.Sprintf("could not read namespace %s (%v); fledge acts only if it is labelled %s=true", d.Namespace, d.NamespaceErr, rollout.LabelEnabled)}
	case !rollout.OptedIn(d.NamespaceLabels):
		return finding{level: levelProblem,
			text: fmt.Sprintf("namespace %s is not labelled %s=true: fledge leaves its Deployments alone, they roll out natively", d.Namespace, rollout.LabelEnabled),
			fix:  fmt.Sprintf("kubectl label namespace %s %s=true", d.Namespace, rollout.LabelEnabled)}
	default:
		return finding{level: levelOK, text: fmt.Sprintf("namespace %s is labelled %s=true", d.Namespace, rollout.LabelEnabled)}
	}
}

func skipFinding(d diagnosis) finding {
	name := d.Stable.Name
	if rollout.Skipped(d.Stable) {
		return finding{level: levelProblem,
			text: fmt.Sprintf("deployment %s carries %s: \"true\": it rolls out natively, without a canary", name, rollout.AnnotationSkip),
			fix:  fmt.Sprintf("kubectl annotate -n %s deployment %s %s-", d.Namespace, name, rollout.AnnotationSkip)}
	}
	return finding{level: levelOK, text: fmt.Sprintf("deployment %s does not carry %s", name, rollout.AnnotationSkip)}
}

// rolloutFindings say whether a rollout runs, and flag a Deployment that
// could not start one.
func rolloutFindings(d diagnosis) []finding {
	v, name := d.View, d.Stable.Name
	var fs []finding
	if v.Rejected != "" {
		fs = append(fs, finding{level: levelWarning,
			text: fmt.Sprintf("annotation %s of deployment %s was not written by fledge (%s): fledge does not act on it, and drops it where it acts", rollout.AnnotationState, name, v.Rejected)})
	}
	if v.OutcomeUnreadable != "" {
		fs = append(fs, finding{level: levelWarning,
			text: fmt.Sprintf("annotation %s of deployment %s is unreadable (%s)", rollout.AnnotationLast, name, v.OutcomeUnreadable)})
	}
	switch {
	case v.State != nil && v.NamespaceIgnored:
		fs = append(fs, finding{level: levelInfo, text: "a rollout state fledge does not act on: " + ignoredState(d.Namespace)})
	case v.State != nil:
		fs = append(fs, finding{level: levelInfo, text: "rollout " + phaseLine(v.State)})
	case v.Outcome != nil:
		fs = append(fs, finding{level: levelInfo, text: "no rollout in progress; the last one ended " + rolloutSummary(v)})
	default:
		fs = append(fs, finding{level: levelInfo, text: "no rollout has run yet: one starts when the pod template changes"})
	}
	if v.Holding {
		o := v.Outcome
		fs = append(fs, finding{level: levelWarning,
			text: fmt.Sprintf("deployment %s holds the failed revision %s (%s %s ago): it stays paused on that template while the stable revision %s serves all pods",
				name, o.CanaryRevision, o.Phase.Ended(), since(v.Now, o.FinishedAt.Time), orDash(o.StableRevision)),
			fix: holdingWays(name)})
	}
	if v.State == nil && !v.Holding && d.Stable.Spec.Paused {
		fs = append(fs, finding{level: levelWarning,
			text: fmt.Sprintf("deployment %s is paused but no rollout runs: a changed template does not roll out at all", name),
			fix:  fmt.Sprintf("kubectl rollout resume -n %s deployment/%s", d.Namespace, name)})
	}
	if v.State == nil && (ptr.Deref(d.Stable.Spec.Replicas, 1) == 0 || d.Stable.Status.ReadyReplicas == 0) {
		fs = append(fs, finding{level: levelWarning,
			text: fmt.Sprintf("deployment %s has no ready pods: a new template rolls out natively, since there is no stable version to protect", name)})
	}
	return fs
}

// canaryFindings check that the canary exists and has ready pods while a
// rollout runs.
func canaryFindings(d diagnosis) []finding {
	v := d.View
	canaryName := rollout.CanaryName(d.Stable.Name)
	running := v.live()
	if d.Canary == nil {
		if running && !v.State.Phase.Finishing() {
			return []finding{{level: levelProblem,
				text: fmt.Sprintf("canary deployment %s does not exist: the router has not created it", canaryName),
				fix:  "check that fledge runs: kubectl -n fledge-system get pods"}}
		}
		return nil
	}
	desired, ready := v.CanaryDesired, v.CanaryReady
	share := fmt.Sprintf("%d of %d ready pods in all (%.1f%%)", ready, ready+v.StableReady, rollout.EffectiveWeight(ready, v.StableReady))
	switch {
	case desired == 0 && running && (v.State.Phase == rollout.RollingBack || v.State.Phase == rollout.Aborted):
		return []finding{{level: levelInfo, text: fmt.Sprintf("canary %s has 0 replicas: the rollout is %s", canaryName, v.State.Phase)}}
	case desired == 0 && running:
		return []finding{{level: levelProblem,
			text: fmt.Sprintf("canary %s has 0 replicas: it serves no traffic", canaryName),
			fix:  "the router sets the canary's replicas; check its logs: kubectl -n fledge-system logs deployment/fledge"}}
	case desired == 0:
		return []finding{{level: levelInfo, text: fmt.Sprintf("canary %s has 0 replicas (no rollout in progress)", canaryName)}}
	case ready < desired:
		return []finding{{level: levelWarning,
			text: fmt.Sprintf("canary %s: %d desired, %d ready: the canary gets less than its share until all are ready; %s", canaryName, desired, ready, share)}}
	default:
		return []finding{{level: levelOK, text: fmt.Sprintf("canary %s: %d desired, %d ready; %s", canaryName, desired, ready, share)}}
	}
}

// serviceMatches finds the Services that select the stable or the canary
// pods, by their selectors against each version's labels.
func serviceMatches(d diagnosis) []rollout.ServiceMatch {
	return rollout.MatchServices(d.Services, stableLabels(d.Stable, d.View, d.traffic), canaryLabels(d.Stable, d.Canary, d.View))
}

func serviceFindings(d diagnosis) []finding {
	matches := serviceMatches(d)
	selectsStable := false
	var fs []finding
	for _, m := range matches {
		switch {
		case m.Stable && m.Canary:
			selectsStable = true
			fs = append(fs, finding{level: levelOK, text: fmt.Sprintf("Service %s selects both versions: the canary gets its share of its traffic", m.Service)})
			if m.Sticky {
				fs = append(fs, finding{level: levelWarning,
					text: fmt.Sprintf("Service %s has sessionAffinity: ClientIP: a client stays on one pod, so a step moves only new clients to the canary", m.Service)})
			}
		case m.Stable:
			selectsStable = true
			missing := make([]string, len(m.Missing))
			for i, l := range m.Missing {
				missing[i] = l.String()
			}
			fs = append(fs, finding{level: levelProblem,
				text: fmt.Sprintf("Service %s sends no traffic to the canary: it selects %s", m.Service, strings.Join(missing, ", ")),
				fix:  noCanaryFix(d, m)})
		default:
			fs = append(fs, finding{level: levelWarning,
				text: fmt.Sprintf("Service %s selects only the canary pods: its traffic goes to the new version whatever the step", m.Service)})
		}
	}
	if !selectsStable {
		fs = append(fs, finding{level: levelWarning,
			text: fmt.Sprintf("no Service in namespace %s selects the pods of %s (%s): the canary's share applies to the traffic of a Service that selects both versions",
				d.Namespace, d.Stable.Name, stableLabels(d.Stable, d.View, d.traffic).String())})
	}
	return fs
}

// noCanaryFix says how to make a Service select both versions: keep only
// the labels they share.
func noCanaryFix(d diagnosis, m rollout.ServiceMatch) string {
	shared := labels.Set(maps.Clone(m.Selector))
	keys := make([]string, len(m.Missing))
	for i, l := range m.Missing {
		keys[i] = l.Key
		delete(shared, l.Key)
	}
	keep := shared.String()
	if keep == "" && d.Stable.Spec.Selector != nil {
		keep = labels.Set(d.Stable.Spec.Selector.MatchLabels).String()
	}
	return fmt.Sprintf("remove %s from the selector of Service %s so that it selects what both versions share (%s): kubectl edit -n %s service %s",
		strings.Join(keys, ", "), m.Service, keep, d.Namespace, m.Service)
}

func serviceTable(matches []rollout.ServiceMatch) string {
	var t table
	t.add("SERVICE", "SELECTOR", "STABLE PODS", "CANARY PODS")
	for _, m := range matches {
		t.add(m.Service, labels.Set(m.Selector).String(), yesNo(m.Stable), yesNo(m.Canary))
	}
	return t.String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// podFindings list the pods of one version that are not Running and Ready.
func podFindings(version string, pods []corev1.Pod) []finding {
	var fs []finding
	for _, p := range pods {
		if p.DeletionTimestamp != nil {
			continue // terminating: on its way out, not a problem
		}
		if state, bad := podTrouble(&p); bad {
			fs = append(fs, finding{level: levelProblem, text: fmt.Sprintf("pod %s (%s) is %s", p.Name, version, state)})
		}
	}
	if len(fs) > maxPodsListed {
		more := len(fs) - maxPodsListed
		fs = append(fs[:maxPodsListed], finding{level: levelProblem, text: fmt.Sprintf("and %d more %s pods not Running and Ready", more, version)})
	}
	return fs
}

// podTrouble describes a pod that is not Running and Ready: its phase and
// the most telling reason (the pod's, a waiting container's, a condition's).
func podTrouble(p *corev1.Pod) (string, bool) {
	ready := false
	var condReason string
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			ready = true
		}
		if c.Status == corev1.ConditionFalse && condReason == "" && c.Reason != "" {
			condReason = joinNonEmpty(": ", c.Reason, c.Message)
		}
	}
	if p.Status.Phase == corev1.PodRunning && ready {
		return "", false
	}
	reason := joinNonEmpty(": ", p.Status.Reason, p.Status.Message)
	if reason == "" {
		reason = containerReason(p)
	}
	if reason == "" {
		reason = condReason
	}
	state := string(p.Status.Phase)
	if state == "" {
		state = "Unknown"
	}
	if p.Status.Phase == corev1.PodRunning {
		state = "Running but not Ready"
	}
	if reason == "" {
		return state, true
	}
	return state + " (" + reason + ")", true
}

// containerReason is the first waiting or failed container's reason, such
// as CrashLoopBackOff or ImagePullBackOff.
func containerReason(p *corev1.Pod) string {
	for _, cs := range append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...) {
		if w := cs.State.Waiting; w != nil && w.Reason != "" {
			return joinNonEmpty(": ", cs.Name+" "+w.Reason, w.Message)
		}
		if t := cs.State.Terminated; t != nil && t.ExitCode != 0 {
			return fmt.Sprintf("%s %s, exit code %d", cs.Name, t.Reason, t.ExitCode)
		}
	}
	return ""
}

func joinNonEmpty(sep string, parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, sep)
}
