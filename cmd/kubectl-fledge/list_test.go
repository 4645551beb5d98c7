package main

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime"

	"github.com/fledge-dev/fledge/rollout"
)

func listFixture(t *testing.T) []runtime.Object {
	web := deployment(t, "web", 20, runningAtStep2(), rolledBackAtStep3())
	api := deployment(t, "api", 4, nil, rolledBackAtStep3())
	shop := deployment(t, "shop", 2, nil, succeeded())
	shop.Namespace = "team-b"
	quiet := deployment(t, "quiet", 3, nil, nil)
	return []runtime.Object{web, canaryOf(web, 7, 6), api, shop, quiet}
}

func TestList(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{{
		name: "one namespace: rollouts in progress and last outcomes, canaries and quiet deployments left out",
		args: []string{"list"},
		want: `NAME   PHASE         STEP   WEIGHT            AGE/FINISHED   REASON
api    RolledBack    -      0%                20s ago        error-rate 0.072 > 0.01 at step 3 (50%)
web    Progressing   2/3    25% (eff 23.1%)   3m20s          canary pods Ready; holding 1m0s
`,
	}, {
		name: "all namespaces",
		args: []string{"list", "-A"},
		want: `NAMESPACE   NAME   PHASE         STEP   WEIGHT            AGE/FINISHED   REASON
team-a      api    RolledBack    -      0%                20s ago        error-rate 0.072 > 0.01 at step 3 (50%)
team-a      web    Progressing   2/3    25% (eff 23.1%)   3m20s          canary pods Ready; holding 1m0s
team-b      shop   Succeeded     -      100%              20s ago        -
`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(listFixture(t)...)
			if code := h.run(t, tc.args...); code != 0 {
				t.Fatalf("exit code %d; stderr: %s", code, h.errOut)
			}
			if h.out.String() != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", h.out, tc.want)
			}
		})
	}
}

func TestListWithoutRollouts(t *testing.T) {
	h := newHarness(deployment(t, "quiet", 3, nil, nil))
	if code := h.run(t, "list"); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if h.out.String() != "" || h.errOut.String() != "No rollouts found in namespace team-a.\n" {
		t.Errorf("stdout %q, stderr %q", h.out, h.errOut)
	}
}

func TestListWeights(t *testing.T) {
	for _, tc := range []struct {
		name  string
		phase rollout.Phase
		step  int32
		want  string
	}{
		{"progressing shows the step's target and the pods' share", rollout.Progressing, 1, "25% (eff 25.9%)"},
		{"promoting targets all pods", rollout.Promoting, 3, "100%"},
		{"rolling back targets none and shows what is left", rollout.RollingBack, 2, "0% (eff 25.9%)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := runningAtStep2()
			s.Phase, s.Step = tc.phase, tc.step
			if got := weightOf(statusView{State: s, StableReady: 20, CanaryReady: 7}); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestListMarksAHeldRevision(t *testing.T) {
	web, rs := heldWeb(t)
	h := newHarness(web, rs)
	if code := h.run(t, "list"); code != 0 {
		t.Fatalf("exit code %d; stderr: %s", code, h.errOut)
	}
	want := `NAME   PHASE               STEP   WEIGHT   AGE/FINISHED   REASON
web    RolledBack (held)   -      0%       20s ago        error-rate 0.072 > 0.01 at step 3 (50%)
`
	if h.out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", h.out, want)
	}
}
