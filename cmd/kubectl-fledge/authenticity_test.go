package main

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/fledge-dev/fledge/rollout"
)

// fledge authenticates its state with a seal the plugin cannot verify
// (the key is fledge's alone), but a state that does not parse or has no
// seal is fledge's in no case: no command, status or list may take it for
// a live rollout. Nor may they take a state in a namespace fledge does not
// act in for one.

// unparseable and unsealed are the two states fledge never wrote.
func unparseable(d *appsv1.Deployment) *appsv1.Deployment {
	d.Annotations[rollout.AnnotationState] = `{"phase":"Progressing",`
	d.Spec.Paused = true
	return d
}

func unsealed(t *testing.T, d *appsv1.Deployment) *appsv1.Deployment {
	s := runningAtStep2()
	s.Seal = ""
	d.Annotations[rollout.AnnotationState] = mustJSON(t, s)
	d.Spec.Paused = true
	return d
}

const unparseableWhy = "it does not parse: unexpected end of JSON input"

func TestStatusOfAStateFledgeDidNotWrite(t *testing.T) {
	for _, tc := range []struct {
		name    string
		objects func(t *testing.T) []runtime.Object
		want    string
	}{{
		name: "a state that does not parse, no outcome: the Deployment, and what fledge does with the state",
		objects: func(t *testing.T) []runtime.Object {
			return []runtime.Object{unparseable(deployment(t, "web", 20, nil, nil)), namespace(optedIn())}
		},
		want: `Rollout:   team-a/web (none in progress)
State:     not written by fledge (` + unparseableWhy + `); fledge does not act on it and drops it
Paused:    yes, and no rollout of fledge's keeps it so: kubectl rollout resume -n team-a deployment/web
`,
	}, {
		name: "a state without a seal on a held revision: the outcome and the hold as usual",
		objects: func(t *testing.T) []runtime.Object {
			web, rs := heldWeb(t)
			return []runtime.Object{unsealed(t, web), rs, namespace(optedIn())}
		},
		want: `Rollout:     team-a/web (finished)
Revisions:   97e990b15c (stable) → 8d7891da7f (canary)
Outcome:     RolledBack
Reason:      error-rate 0.072 > 0.01 at step 3 (50%)
Started:     2026-05-04T10:00:00Z
Finished:    2026-05-04T10:03:00Z (20s ago), after 3m
Holding:     revision 8d7891da7f (rolled back 20s ago); the stable revision 97e990b15c serves all 20 pods
Next:        kubectl fledge undo web | kubectl fledge retry web | apply a new version
State:       not written by fledge (it has no seal); fledge does not act on it and drops it

STEP   ACTION                DEPLOYMENT STATE          USER GROUP            MONITORING RESULT                          NEXT STEP
  1    apply canary          canary running            5% (1 of 21 pods)     no issues                                  increase user group
  2    increase user group   canary running            25% (7 of 27 pods)    no issues                                  increase user group
  3    increase user group   canary running            50% (20 of 40 pods)   issues detected: error-rate 0.072 > 0.01   rollback canary
  4    rollback canary       stable version restored   100% stable           n/a                                        end
`,
	}, {
		name: "a state without a seal in a namespace not opted in: fledge neither acts on it nor drops it",
		objects: func(t *testing.T) []runtime.Object {
			return []runtime.Object{unsealed(t, deployment(t, "web", 20, nil, succeeded())), namespace(nil)}
		},
		want: `namespace team-a is not labelled fledge.dev/enabled=true: fledge ignores web; kubectl label namespace team-a fledge.dev/enabled=true

Rollout:     team-a/web (finished)
Revisions:   5d8f7c6b9a (stable) → 8c7b6a5d4e (canary)
Outcome:     Succeeded
Started:     2026-05-04T10:00:00Z
Finished:    2026-05-04T10:03:00Z (20s ago), after 3m
State:       not written by fledge (it has no seal); fledge does not act on it
Paused:      yes, and no rollout of fledge's keeps it so: kubectl rollout resume -n team-a deployment/web

STEP   ACTION                DEPLOYMENT STATE          USER GROUP            MONITORING RESULT   NEXT STEP
  1    apply canary          canary running            5% (1 of 21 pods)     no issues           increase user group
  2    increase user group   canary running            25% (7 of 27 pods)    no issues           increase user group
  3    increase user group   canary running            50% (20 of 40 pods)   no issues           promote
  4    promote               new version on all pods   100%                  n/a                 end
`,
	}, {
		name: "fledge's state in a namespace not opted in is not shown as live",
		objects: func(t *testing.T) []runtime.Object {
			web := deployment(t, "web", 20, runningAtStep2(), nil)
			return []runtime.Object{web, canaryOf(web, 7, 7), namespace(nil)}
		},
		want: `namespace team-a is not labelled fledge.dev/enabled=true: fledge ignores web; kubectl label namespace team-a fledge.dev/enabled=true

Rollout:   team-a/web (none in progress)
State:     not acted on: namespace not opted in: fledge does not act in team-a, so nothing advances and no command is taken; once the namespace is labelled fledge.dev/enabled=true the router checks the state's seal, then goes on with the rollout or drops the state
`,
	}, {
		name: "an unreadable last outcome beside a live rollout",
		objects: func(t *testing.T) []runtime.Object {
			web := deployment(t, "web", 20, runningAtStep2(), nil)
			web.Annotations[rollout.AnnotationLast] = "{broken"
			return []runtime.Object{web, canaryOf(web, 7, 7), namespace(optedIn())}
		},
		want: `Rollout:     team-a/web
Revisions:   5d8f7c6b9a (stable) → 8c7b6a5d4e (canary)
Attempt:     2
Policy:      configmap/fledge-policy (5% → 25% → 50% → 100%)
Phase:       Progressing at step 2 of 3 (25%)
Message:     canary pods Ready; holding 1m0s
Started:     2026-05-04T10:00:00Z (3m20s ago)
Last:        fledge.dev/last-rollout is unreadable: it does not parse: invalid character 'b' looking for beginning of object key string

STEP   ACTION                DEPLOYMENT STATE   USER GROUP           MONITORING RESULT   NEXT STEP
  1    apply canary          canary running     5% (1 of 21 pods)    no issues           increase user group
▶ 2    increase user group   canary running     25% (7 of 27 pods)   pending             increase user group in 30s
  3    increase user group   -                  50%                  -                   -
  4    promote               -                  100%                 -                   end
`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(tc.objects(t)...)
			if code := h.run(t, "status", "web"); code != 0 {
				t.Fatalf("exit code %d; stderr: %s", code, h.errOut)
			}
			if h.out.String() != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", h.out, tc.want)
			}
		})
	}
}

func TestListMarksStatesFledgeDoesNotActOn(t *testing.T) {
	objects := func(t *testing.T) []runtime.Object {
		web := deployment(t, "web", 20, runningAtStep2(), nil)
		broken := unparseable(deployment(t, "broken", 3, nil, nil))
		forged := unsealed(t, deployment(t, "forged", 3, nil, succeeded()))
		last := deployment(t, "last", 3, nil, nil)
		last.Annotations[rollout.AnnotationLast] = "{broken"
		// team-b has fledge's state, but fledge does not act there.
		elsewhere := deployment(t, "shop", 4, runningAtStep2(), nil)
		elsewhere.Namespace = "team-b"
		teamB := namespace(nil)
		teamB.Name = "team-b"
		return []runtime.Object{web, canaryOf(web, 7, 7), broken, forged, last, elsewhere, namespace(optedIn()), teamB}
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{{
		name: "one namespace",
		args: []string{"list"},
		want: `NAME     PHASE                     STEP   WEIGHT            AGE/FINISHED   REASON
broken   (not written by fledge)   -      -                 -              fledge.dev/rollout: ` + unparseableWhy + `; fledge does not act on it and drops it
forged   (not written by fledge)   -      -                 -              fledge.dev/rollout: it has no seal; fledge does not act on it and drops it
last     Unknown                   -      -                 -              fledge.dev/last-rollout is unreadable: it does not parse: invalid character 'b' looking for beginning of object key string
web      Progressing               2/3    25% (eff 25.9%)   3m20s          canary pods Ready; holding 1m0s
`,
	}, {
		name: "all namespaces",
		args: []string{"list", "-A"},
		want: `NAMESPACE   NAME     PHASE                      STEP   WEIGHT            AGE/FINISHED   REASON
team-a      broken   (not written by fledge)    -      -                 -              fledge.dev/rollout: ` + unparseableWhy + `; fledge does not act on it and drops it
team-a      forged   (not written by fledge)    -      -                 -              fledge.dev/rollout: it has no seal; fledge does not act on it and drops it
team-a      last     Unknown                    -      -                 -              fledge.dev/last-rollout is unreadable: it does not parse: invalid character 'b' looking for beginning of object key string
team-a      web      Progressing                2/3    25% (eff 25.9%)   3m20s          canary pods Ready; holding 1m0s
team-b      shop     (namespace not opted in)   -      -                 -              fledge does not act in namespace team-b: nothing advances until it is labelled fledge.dev/enabled=true
`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(objects(t)...)
			if code := h.run(t, tc.args...); code != 0 {
				t.Fatalf("exit code %d; stderr: %s", code, h.errOut)
			}
			if h.out.String() != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", h.out, tc.want)
			}
		})
	}
}

// On a state fledge did not write no command is sent: abort's goal, no
// rollout, already holds (exit 0); the others have nothing to steer (1).
func TestSteerAStateFledgeDidNotWrite(t *testing.T) {
	const why = "web has no rollout in progress: its fledge.dev/rollout was not written by fledge (it has no seal), and fledge does not act on it but drops it; "
	for _, tc := range []struct {
		args          []string
		code          int
		stdout, stder string
	}{
		{[]string{"abort", "web"}, 0, why + "nothing to abort\n", ""},
		{[]string{"promote", "web"}, 1, "", "error: " + why + "nothing to promote\n"},
		{[]string{"promote", "--full", "web"}, 1, "", "error: " + why + "nothing to promote\n"},
		{[]string{"pause", "web"}, 1, "", "error: " + why + "nothing to pause\n"},
		{[]string{"resume", "web"}, 1, "", "error: " + why + "nothing to resume\n"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			h := newHarness(unsealed(t, deployment(t, "web", 20, nil, nil)), namespace(optedIn()))
			if code := h.run(t, tc.args...); code != tc.code {
				t.Errorf("exit code %d, want %d", code, tc.code)
			}
			if h.out.String() != tc.stdout || h.errOut.String() != tc.stder {
				t.Errorf("stdout %q, stderr %q; want %q, %q", h.out, h.errOut, tc.stdout, tc.stder)
			}
			commandLeft(t, h)
		})
	}
}

func TestAbortOfAStateThatDoesNotParse(t *testing.T) {
	h := newHarness(unparseable(deployment(t, "web", 20, nil, nil)), namespace(nil))
	if code := h.run(t, "abort", "web"); code != 0 {
		t.Errorf("exit code %d, want 0; stderr: %s", code, h.errOut)
	}
	// fledge acts in no namespace without the label: it does not drop the
	// state either.
	want := "web has no rollout in progress: its fledge.dev/rollout was not written by fledge (" + unparseableWhy + "), and fledge does not act on it; nothing to abort\n"
	if h.out.String() != want {
		t.Errorf("stdout %q, want %q", h.out, want)
	}
	commandLeft(t, h)
}

// A broken last outcome does not stop a command on a live rollout.
func TestAbortWithAnUnreadableLastOutcome(t *testing.T) {
	web := deployment(t, "web", 20, runningAtStep2(), nil)
	web.Annotations[rollout.AnnotationLast] = "{broken"
	h := newHarness(web)
	taken := takeCommands(t, h)
	if code := h.run(t, "abort", "web"); code != 0 {
		t.Fatalf("exit code %d; stderr: %s", code, h.errOut)
	}
	if got := <-taken; got != rollout.CommandAbort {
		t.Errorf("the router got %q", got)
	}
	if h.out.String() != "web: abort accepted\n" {
		t.Errorf("stdout %q", h.out)
	}
}

func TestStatusWaitDoesNotWaitOnAStateFledgeDidNotWrite(t *testing.T) {
	h := newHarness(unsealed(t, deployment(t, "web", 20, nil, nil)))
	if code := h.run(t, "status", "web", "--wait", "--timeout", "200ms"); code != exitTimeout {
		t.Errorf("exit code %d, want %d", code, exitTimeout)
	}
	want := "web has no rollout in progress (its fledge.dev/rollout was not written by fledge: it has no seal; fledge does not act on it); waiting up to 200ms for one to start and finish\n" +
		"error: timed out after 200ms waiting for the rollout of web to finish: no rollout recorded\n"
	if h.errOut.String() != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", h.errOut, want)
	}
}

// A state fledge did not write, ended by the router while --wait waits,
// is no rollout: the wait goes on for a real one.
func TestWaiterIgnoresAStateFledgeDidNotWrite(t *testing.T) {
	w := newWaiter(now)
	forged := newStatusView(unsealed(t, deployment(t, "web", 20, nil, nil)), nil, now)
	if o := w.observe(forged); o != nil {
		t.Fatalf("the wait ended on %+v", o)
	}
	if len(w.seen) != 0 {
		t.Errorf("the waiter saw a rollout in a state fledge did not write: %v", w.seen)
	}
}

func TestUndoWithAStateFledgeDidNotWrite(t *testing.T) {
	t.Run("a held revision: undo goes back from the outcome", func(t *testing.T) {
		web, rs := heldWeb(t)
		h := newHarness(unsealed(t, web), rs)
		if code := h.run(t, "undo", "web"); code != 0 {
			t.Fatalf("exit code %d; stderr: %s", code, h.errOut)
		}
		if want := undoLine(web); h.out.String() != want {
			t.Errorf("output:\n%s\nwant:\n%s", h.out, want)
		}
		onStableTemplate(t, h, stableOf(web))
	})
	t.Run("nothing held: refused, naming the annotation", func(t *testing.T) {
		h := newHarness(unsealed(t, deployment(t, "web", 20, nil, nil)))
		if code := h.run(t, "undo", "web"); code != 1 {
			t.Errorf("exit code %d, want 1", code)
		}
		want := "error: web holds no failed revision and no rollout runs: its fledge.dev/rollout was not written by fledge (it has no seal), and fledge does not act on it but drops it; nothing to undo\n"
		if h.errOut.String() != want {
			t.Errorf("stderr %q, want %q", h.errOut, want)
		}
	})
	t.Run("the last outcome does not parse either: refused, naming it", func(t *testing.T) {
		web := unsealed(t, deployment(t, "web", 20, nil, nil))
		web.Annotations[rollout.AnnotationLast] = "{broken"
		h := newHarness(web)
		if code := h.run(t, "undo", "web"); code != 1 {
			t.Errorf("exit code %d, want 1", code)
		}
		want := "error: annotation fledge.dev/last-rollout of team-a/web does not parse (invalid character 'b' looking for beginning of object key string), so undo cannot tell which revision web holds: apply the stable manifest\n"
		if h.errOut.String() != want {
			t.Errorf("stderr %q, want %q", h.errOut, want)
		}
	})
}

// Evidence on the canary without fledge's seal is none: its checks are
// not shown as the rollout's.
func TestEvidenceWithoutASealIsNone(t *testing.T) {
	web := deployment(t, "web", 20, runningAtStep2(), nil)
	ev := passingAtStep2()
	ev.Seal = ""
	v := newStatusView(web, withEvidence(t, canaryOf(web, 7, 7), ev), now)
	if len(v.Evidence.Checks) != 0 {
		t.Errorf("unsealed evidence shown: %+v", v.Evidence.Checks)
	}
	v = newStatusView(web, withEvidence(t, canaryOf(web, 7, 7), passingAtStep2()), now)
	if len(v.Evidence.Checks) != 2 {
		t.Errorf("sealed evidence not shown: %+v", v.Evidence)
	}
}

func TestDiagnoseOfAStateFledgeDidNotWrite(t *testing.T) {
	h := newHarness(unsealed(t, deployment(t, "web", 20, nil, nil)), namespace(optedIn()))
	if code := h.run(t, "diagnose", "web"); code != 0 {
		t.Fatalf("exit code %d; stderr: %s", code, h.errOut)
	}
	for _, want := range []string{
		"warning   annotation fledge.dev/rollout of deployment web was not written by fledge (it has no seal): fledge does not act on it, and drops it where it acts\n",
		"warning   deployment web is paused but no rollout runs: a changed template does not roll out at all\n",
	} {
		if !strings.Contains(h.out.String(), want) {
			t.Errorf("diagnose lacks %q:\n%s", want, h.out)
		}
	}
}
