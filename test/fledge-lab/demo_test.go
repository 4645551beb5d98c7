package main

import (
	"bytes"
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/fledge-dev/fledge/rollout"
	"github.com/fledge-dev/fledge/test/lab"
)

// TestDemoPromotesV2RollsBackV3AtHalfAndUndoesIt runs `fledge-lab demo` as
// `make demo` does, with short holds: kubectl shows fledge's admission
// warning, the summary has v2 Succeeded through 5%, 25% and 50% with the
// measured traffic following the pod counts and no failed request during
// the steps, and v3 RolledBack by its errors at 50% after two clean
// steps; web then holds v3 paused with v2's pods serving, applying v3 again
// is "unchanged", and kubectl fledge undo brings web back to v2 without
// replacing a pod or failing a request; and nothing of the lab is left
// running.
func TestDemoPromotesV2RollsBackV3AtHalfAndUndoesIt(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a lab")
	}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", dir+"/", "./test/fledge-lab", "./cmd/fledge", "./cmd/kubectl-fledge", "./test/demoapp")
	build.Dir = filepath.Join("..", "..")
	out, err := build.CombinedOutput()
	require.NoError(t, err, string(out))

	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	var output bytes.Buffer
	demo := exec.CommandContext(ctx, filepath.Join(dir, "fledge-lab"), "demo", "--hold=8s")
	demo.Stdout, demo.Stderr = &output, &output
	start := time.Now()
	err = demo.Run()
	t.Logf("the demo took %s", time.Since(start).Round(time.Second))
	text := output.String()
	require.NoError(t, err, text)

	m := regexp.MustCompile(`(?m)^export KUBECONFIG=(.+)/kubeconfig$`).FindStringSubmatch(text)
	require.NotNil(t, m, text)
	labDir := m[1]
	assert.Contains(t, text, "Warning: fledge: canary rollout started for web: 5% → 25% → 50% → 100%\n")

	summary := text[strings.LastIndex(text, "== Summary ==\n"):]
	t.Logf("%s", summary)
	v2, v3, ok := strings.Cut(summary, "\nweb v3 ")
	require.True(t, ok, summary)
	assert.Regexp(t, `\nweb v2 \(a healthy version\): Succeeded, `, v2)
	assert.Regexp(t, `^\(answers 500 from 3s after its 50% pods are Ready\): RolledBack: errors: canary [\d.]+% \([\d,]+ of [\d,]+\) vs stable 0% \(0 of [\d,]+\); e-value (?:> )?\S+ >= 100 \(tolerance 1\.5× stable, alpha 0\.01\) at step 3 \(50%\), `, v3)

	rows := stepRows(t, v2)
	require.Len(t, rows, 3, v2)
	for i, weight := range []int{5, 25, 50} {
		assert.Equal(t, weight, rows[i].weight, "v2 step %d", i+1)
		// Through kube-proxy, each new connection goes to a ready endpoint
		// at random: the measured share is binomial around the effective
		// weight. 4 standard deviations, 3.3 to 3.7 points at the demo's
		// 1,200 to 3,000 requests a step.
		p, n := rows[i].effective/100, float64(rows[i].requests)
		require.GreaterOrEqual(t, rows[i].requests, 1000, "v2 step %d", i+1)
		assert.InDelta(t, rows[i].effective, rows[i].measured, 400*math.Sqrt(p*(1-p)/n), "v2 step %d: measured share vs effective weight, %d requests", i+1, rows[i].requests)
		// fledge counts the requests from Prometheus, over a window that
		// begins an interval (2s) after the step's pods were Ready and once
		// every canary pod has a series, and ends at the last scrape: at
		// --hold=8s a few hundred requests. The same binomial bound on its
		// own count, plus a point for the scrape lag at the window's edges.
		nf := float64(rows[i].countedRequests)
		require.GreaterOrEqual(t, rows[i].countedRequests, 100, "v2 step %d: minRequests", i+1)
		assert.InDelta(t, rows[i].effective, rows[i].counted, 400*math.Sqrt(p*(1-p)/nf)+1, "v2 step %d: fledge's count vs the effective weight, %d requests", i+1, rows[i].countedRequests)
		assert.Zero(t, rows[i].failed, "v2 step %d", i+1)
	}
	rows = stepRows(t, v3)
	require.Len(t, rows, 3, v3)
	assert.Zero(t, rows[0].failed, "v3 is healthy at 5%")
	assert.Zero(t, rows[1].failed, "v3 is healthy at 25%")
	// v3 fails at 50%: its users saw canary requests fail. The comparison
	// may cut the canary before the row's window (from a second after the
	// step's pods were Ready) holds any of them, so count the rollout's.
	m = regexp.MustCompile(`(?m)^  users during the rollout: \d+ requests, \d+ failed \([\d.]+%\): stable 0 of \d+, canary (\d+) of \d+`).FindStringSubmatch(v3)
	require.NotNil(t, m, v3)
	failedOnCanary, _ := strconv.Atoi(m[1])
	assert.Positive(t, failedOnCanary, "v3 fails at 50%")
	assert.Regexp(t, `(?m)^fledge-lab: kube-proxy sent the canary its last request (\d+ms|[0-2]\.\d+s) after the cut$`, text)
	assert.Regexp(t, `(?m)^fledge-lab: users in \ds after that: \d+ requests, 0 failed \(0\.0%\): stable 0 of \d+$`, text)

	require.Contains(t, text, "\n== web holds v3: paused on the template applied, v2 serving ==\n")
	hold := text[strings.Index(text, "\n== web holds v3"):strings.LastIndex(text, "== Summary ==\n")]
	assert.Regexp(t, `(?m)^Holding: +revision `, hold, "kubectl fledge status says web holds v3")
	assert.Regexp(t, `(?m)^NAME +PAUSED +TEMPLATE +READY\nweb +true +fledge/demo:v3 +10$`, hold)
	assert.Regexp(t, `(?m)^web-\S+ +10 +10 +10 +\S+ +app +fledge/demo:v2 `, hold, "the stable ReplicaSet serves every pod")
	assert.Contains(t, hold, "deployment.apps/web unchanged\nservice/web unchanged\n")
	assert.Contains(t, hold, "fledge-lab: web holds v3: paused on v3's template as applied")
	assert.Contains(t, hold, `deployment "web" successfully rolled out`+"\n")
	assert.Regexp(t, `(?m)^fledge-lab: users in \ds since kubectl fledge undo: \d+ requests, 0 failed \(0\.0%\): stable 0 of \d+$`, hold)
	assert.Regexp(t, `(?m)^web: back on the stable revision \w+ \(image fledge/demo:v2\), unpaused; git still holds fledge/demo:v3: `, hold,
		"kubectl fledge undo says what it did, and that git must be reverted too")
	assert.Contains(t, hold, "fledge-lab: web is unpaused on v2's template; none of its 10 pods was replaced\n")
	assert.Contains(t, v3, "\n  then web held v3: paused on its template, 10 pods of v2 serving; applying v3 again released nothing\n"+
		"  kubectl fledge undo put v2's template back and unpaused web: none of its 10 pods was replaced\n")
	assert.Regexp(t, `(?m)^fledge-lab: the demo took \dm\d+s$`, text)

	assert.Empty(t, processesMentioning(labDir), "processes of the lab still run")
	assert.Empty(t, processesMentioning(filepath.Join(dir, "demoapp")), "demo processes still run")
	_, err = os.Stat(labDir)
	assert.True(t, os.IsNotExist(err), "lab directory %s remains", labDir)
}

// summaryRow is one step of the demo's summary.
type summaryRow struct {
	weight                            int
	effective, counted, measured      float64
	countedRequests, requests, failed int
}

// stepRows reads the step rows of one release's summary.
func stepRows(t *testing.T, block string) []summaryRow {
	t.Helper()
	row := regexp.MustCompile(`(?m)^  \d\s+(\d+)%\s+\d+ of \d+\s+([\d.]+)%\s+([\d.]+% of \d+|-)\s+([\d.]+)%\s+(\d+)\s+(\d+)\s+\S+$`)
	var rows []summaryRow
	for _, m := range row.FindAllStringSubmatch(block, -1) {
		var r summaryRow
		r.weight, _ = strconv.Atoi(m[1])
		r.effective, _ = strconv.ParseFloat(m[2], 64)
		r.counted = math.NaN() // "-": fledge counted nothing at this step
		if share, n, ok := strings.Cut(m[3], "% of "); ok {
			r.counted, _ = strconv.ParseFloat(share, 64)
			r.countedRequests, _ = strconv.Atoi(n)
		}
		r.measured, _ = strconv.ParseFloat(m[4], 64)
		r.requests, _ = strconv.Atoi(m[5])
		r.failed, _ = strconv.Atoi(m[6])
		rows = append(rows, r)
	}
	return rows
}

func TestCaughtAtHalf(t *testing.T) {
	tests := []struct {
		name    string
		outcome rollout.Outcome
		err     string
	}{
		{"rolled back by its errors at 50%",
			rollout.Outcome{Phase: rollout.RolledBack, Reason: &rollout.Reason{Check: "errors", Step: 2, Weight: 50}}, ""},
		{"rolled back at 25% is not what the demo shows",
			rollout.Outcome{Phase: rollout.RolledBack, Reason: &rollout.Reason{Check: "errors", Step: 1, Weight: 25, Message: "errors: canary 9% (9 of 100) vs stable 0% (0 of 900); e-value 2e+03 >= 100 (tolerance 1.5× stable, alpha 0.01)"}},
			"demo: v3 was rolled back: errors: canary 9% (9 of 100) vs stable 0% (0 of 900); e-value 2e+03 >= 100 (tolerance 1.5× stable, alpha 0.01) at step 2 (25%), not by its errors at step 3 (50%) as the demo intends; on a busy machine its FAIL_AFTER may have come too early or too late"},
		{"promoted means the failure came too late",
			rollout.Outcome{Phase: rollout.Succeeded},
			"demo: v3 fails after a while, yet its rollout ended Succeeded: it should have been rolled back at 50%"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := caughtAtHalf(&tt.outcome)
			if tt.err == "" {
				assert.NoError(t, err)
				return
			}
			assert.EqualError(t, err, tt.err)
		})
	}
}

func TestFailures(t *testing.T) {
	s := lab.TrafficStats{
		Tracks:     map[string]lab.Counts{"stable": {Requests: 1900, Errors: 1}, "canary": {Requests: 95, Errors: 19}},
		NoEndpoint: 5,
	}
	assert.Equal(t, "2000 requests, 25 failed (1.2%): stable 1 of 1900, canary 19 of 95, no endpoint 5", failures(s))
	assert.Equal(t, "no requests", failures(lab.TrafficStats{}))
}

func TestDemoIntro(t *testing.T) {
	intro := demoIntro(15 * time.Second)
	assert.Contains(t, intro, "holding 15s, 15s and 30s while it compares v2's errors with v1's")
	assert.Contains(t, intro, "web\n     then holds v3: the Deployment stays paused on the template applied while v2's pods serve\n")
	assert.Contains(t, intro, "  4. kubectl fledge undo puts v2's template back and unpauses web: none of its pods is replaced.\n")
}

// webAt is web with the demo image at tag, paused or not, and the outcome
// of its last rollout recorded.
func webAt(t *testing.T, tag string, paused bool, o *rollout.Outcome) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "demo", Generation: 7, Annotations: map[string]string{}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](10),
			Paused:   paused,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "fledge/demo:" + tag}}},
			},
		},
	}
	if o != nil {
		encoded, err := o.Encode()
		require.NoError(t, err)
		d.Annotations[rollout.AnnotationLast] = encoded
	}
	return d
}

// rolledBackV3 is the outcome of v3 rolled back from v2.
func rolledBackV3(t *testing.T) *rollout.Outcome {
	return &rollout.Outcome{
		Phase: rollout.RolledBack, Attempt: 2,
		StableRevision: rollout.TemplateHash(&webAt(t, "v2", false, nil).Spec.Template),
		CanaryRevision: rollout.TemplateHash(&webAt(t, "v3", false, nil).Spec.Template),
		FinishedAt:     metav1.NewMicroTime(time.Unix(1000, 0)),
	}
}

func TestHeldFailed(t *testing.T) {
	o := rolledBackV3(t)
	later := *o
	later.Attempt, later.FinishedAt = 3, metav1.NewMicroTime(time.Unix(2000, 0))
	running := webAt(t, "v3", true, o)
	running.Annotations[rollout.AnnotationState] = `{"phase":"Progressing"}`
	tests := []struct {
		name string
		d    *appsv1.Deployment
		err  string
	}{
		{"paused on the template applied after its rollback, web holds v3", webAt(t, "v3", true, o), ""},
		{"a template set back to v2 is not a hold", webAt(t, "v2", false, o),
			"demo: web does not hold the failed revision " + o.CanaryRevision + ": its template is revision " + o.StableRevision + "; a rollback leaves the template as applied"},
		{"unpaused on v3, the Deployment controller would roll it out", webAt(t, "v3", false, o),
			"demo: web holds the failed revision " + o.CanaryRevision + " but is not paused: the Deployment controller would roll it out"},
		{"a rollout running is not a hold", running,
			"demo: web started another rollout after its rollback; it should hold the failed revision " + o.CanaryRevision},
		{"an outcome recorded since is another rollout", webAt(t, "v3", true, &later),
			"demo: web started another rollout after its rollback; it should hold the failed revision " + o.CanaryRevision},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := heldFailed(tt.d, o)
			if tt.err == "" {
				assert.NoError(t, err)
				return
			}
			assert.EqualError(t, err, tt.err)
		})
	}
}

func TestUndone(t *testing.T) {
	o := rolledBackV3(t)
	// at is web on tag after the undo, with the Deployment controller's
	// status: observed generation, pods, updated and ready pods.
	at := func(tag string, paused bool, observed int64, pods, updated, ready int32) *appsv1.Deployment {
		d := webAt(t, tag, paused, o)
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: observed, Replicas: pods, UpdatedReplicas: updated, ReadyReplicas: ready}
		return d
	}
	running := at("v2", true, 7, 10, 0, 10)
	running.Annotations[rollout.AnnotationState] = `{"phase":"Progressing"}`
	tests := []struct {
		name string
		d    *appsv1.Deployment
		want bool
		err  string
	}{
		{"unpaused on v2, its 10 pods updated and Ready: undone", at("v2", false, 7, 10, 10, 10), true, ""},
		{"still paused: not yet", at("v2", true, 7, 10, 10, 10), false, ""},
		{"still on v3: not yet", at("v3", false, 7, 10, 0, 10), false, ""},
		{"the controller has not seen the change: not yet", at("v2", false, 6, 10, 10, 10), false, ""},
		{"pods of another template still run: not yet", at("v2", false, 7, 11, 10, 10), false, ""},
		{"a pod not Ready: not yet", at("v2", false, 7, 10, 10, 9), false, ""},
		{"a rollout started instead is an error", running, false,
			"demo: kubectl fledge undo started a rollout of web; it should put the stable revision " + o.StableRevision + " back and unpause"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := undone(tt.d, o)
			if tt.err != "" {
				assert.EqualError(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestServingAndReplaced(t *testing.T) {
	running := map[string]int{}
	pod := func(name, image string, ready bool, pid int) corev1.Pod {
		if pid != 0 {
			running["demo/"+name] = pid
		}
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		return corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "demo"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
			Status:     corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}},
		}
	}
	deleting := pod("web-a-4", "fledge/demo:v2", true, 404)
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Unix(1000, 0)}
	pods := []corev1.Pod{
		pod("web-a-1", "fledge/demo:v2", true, 401),
		pod("web-a-2", "fledge/demo:v2", false, 402), // not Ready
		pod("web-a-3", "fledge/demo:v2", true, 0),    // no demo process yet
		deleting,
		pod("web-b-1", "fledge/demo:v3", true, 405), // another version
	}
	assert.Equal(t, []string{"web-a-1"}, serving(pods, "fledge/demo:v2", running))

	assert.Equal(t, 0, replaced([]string{"a", "b"}, []string{"b", "a"}))
	assert.Equal(t, 1, replaced([]string{"a", "b"}, []string{"a", "c"}))
	assert.Equal(t, "none of its 10 pods was replaced", replacedText(0, 10))
	assert.Equal(t, "2 of its 10 pods were replaced", replacedText(2, 10))
}

func TestShellLine(t *testing.T) {
	assert.Equal(t, "kubectl fledge undo web -n demo", shellLine([]string{"kubectl", "fledge", "undo", "web", "-n", "demo"}))
	assert.Equal(t, "kubectl get replicasets -l 'app=web,!fledge.dev/track' -o wide",
		shellLine([]string{"kubectl", "get", "replicasets", "-l", "app=web,!fledge.dev/track", "-o", "wide"}))
	assert.Equal(t, "kubectl get deployment web -o 'custom-columns=IMAGE:.spec.template.spec.containers[0].image'",
		shellLine([]string{"kubectl", "get", "deployment", "web", "-o", "custom-columns=IMAGE:.spec.template.spec.containers[0].image"}))
	assert.Equal(t, `echo 'it'\''s' ''`, shellLine([]string{"echo", "it's", ""}))
}

// TestSummaryOfAHeldRelease renders the summary of a rolled-back release
// that web held and kubectl fledge undo took back, without traffic.
func TestSummaryOfAHeldRelease(t *testing.T) {
	at := func(s float64) *metav1.MicroTime {
		m := metav1.NewMicroTime(time.Unix(1000, 0).Add(time.Duration(s * float64(time.Second))))
		return &m
	}
	o := &rollout.Outcome{
		Phase:      rollout.RolledBack,
		Reason:     &rollout.Reason{Check: "error-rate", Step: 2, Weight: 50, Message: "error-rate 0.0844 > 0.05"},
		FinishedAt: *at(40.9),
		History: []rollout.StepRecord{
			{Step: 0, Weight: 5, Effective: 100.0 / 11, Measured: ptr.To(8.94), Requests: 2980, Canary: 1, Stable: 10, Started: *at(0), Ready: at(1), Ended: at(16)},
			{Step: 1, Weight: 25, Effective: 300.0 / 13, Measured: ptr.To(23.6), Requests: 2600, Canary: 3, Stable: 10, Started: *at(16), Ready: at(17), Ended: at(30)},
			{Step: 2, Weight: 50, Effective: 50, Canary: 10, Stable: 10, Started: *at(30), Ready: at(30.5), Ended: at(40.7)},
		},
	}
	r := &release{tag: "v3", what: "answers 500 once it has run 33s", applied: time.Unix(1000, 0), outcome: o,
		hold: &holdRecord{stableTag: "v2", serving: 10, undone: true}}
	var out bytes.Buffer
	d := &demoRun{out: &out, traffic: lab.NewTraffic(nil, demoNamespace, demoApp, demoRPS)}
	d.summary(r)
	assert.Equal(t, `
== Summary ==
web v3 (answers 500 once it has run 33s): RolledBack: error-rate 0.0844 > 0.05 at step 3 (50%), 40.9s after kubectl apply
  step  target  canary pods  effective  served (fledge)  served (users)  requests  failed  duration
  1     5%      1 of 11      9.1%       8.9% of 2980     0.0%            0         0       16s
  2     25%     3 of 13      23.1%      23.6% of 2600    0.0%            0         0       14s
  3     50%     10 of 20     50.0%      -                0.0%            0         0       10.7s
  then the canary was cut (100% stable) in 200ms
  users during the rollout: no requests
  then web held v3: paused on its template, 10 pods of v2 serving; applying v3 again released nothing
  kubectl fledge undo put v2's template back and unpaused web: none of its 10 pods was replaced
`, out.String())

	out.Reset()
	r.hold.undone = false
	d.summary(r)
	assert.True(t, strings.HasSuffix(out.String(), "  then web held v3: paused on its template, 10 pods of v2 serving; applying v3 again released nothing\n"),
		"an undo that did not complete is not reported:\n%s", out.String())
}
