package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodPolicy = `steps:
  - weight: 5
    hold: 1m
  - weight: 25
    hold: 1m
  - weight: 50
    hold: 2m
`

const badPolicy = `steps:
  - weight: 50
    hold: 1m
  - weight: 25
    hold: 0s
capacity: sideways
`

// configMap wraps a policy document in a policy ConfigMap manifest.
func configMap(name, labels, doc string) string {
	return `apiVersion: v1
kind: ConfigMap
metadata:
  name: ` + name + `
` + labels + `data:
  policy.yaml: |
` + indentLines(doc, "    ")
}

const policyLabel = "  labels:\n    fledge.dev/policy: \"true\"\n"

func indentLines(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "")
}

func TestPolicyLint(t *testing.T) {
	for _, tc := range []struct {
		name     string
		input    string
		wantCode int
		wantOut  string
		wantErr  string
	}{{
		name:    "a valid bare policy prints its steps",
		input:   goodPolicy,
		wantOut: "ok: 3 steps: 5% → 25% → 50% → 100%\n",
	}, {
		name:     "every field error of a bare policy on its own line",
		input:    badPolicy,
		wantCode: 1,
		wantErr: `steps[1].hold: 0s is not above 0s; set how long to stay at this weight, at most 24h
steps[1].weight: 25 is not above 50 of steps[0].weight; weights must increase from step to step
capacity: "sideways" is not allowed; use "surge" or "shift"
`,
	}, {
		name:     "an unknown field names the allowed ones",
		input:    "steps:\n  - weight: 5\n    hold: 1m\n    wieght: 3\n",
		wantCode: 1,
		wantErr:  "steps[0].wieght: unknown field; allowed: weight, hold, approval\n",
	}, {
		name:     "a syntax error names the line",
		input:    "steps: [\n",
		wantCode: 1,
		wantErr:  "policy.yaml: line 1: did not find expected node content\n",
	}, {
		name:    "a policy ConfigMap is read from data[policy.yaml]",
		input:   configMap("fledge-policy", policyLabel, goodPolicy),
		wantOut: "ok: policy fledge-policy: 3 steps: 5% → 25% → 50% → 100%\n",
	}, {
		name:     "errors of a ConfigMap name it as the webhook does",
		input:    configMap("fledge-policy", policyLabel, badPolicy),
		wantCode: 1,
		wantErr: `policy fledge-policy: steps[1].hold: 0s is not above 0s; set how long to stay at this weight, at most 24h
policy fledge-policy: steps[1].weight: 25 is not above 50 of steps[0].weight; weights must increase from step to step
policy fledge-policy: capacity: "sideways" is not allowed; use "surge" or "shift"
`,
	}, {
		name:     "a ConfigMap without the policy label is invisible to fledge",
		input:    configMap("fledge-policy", "", goodPolicy),
		wantCode: 1,
		wantErr:  "policy fledge-policy: metadata.labels: fledge.dev/policy: \"true\" is missing; fledge reads only labelled policy ConfigMaps and would use the default policy\n",
	}, {
		name:     "a lone ConfigMap without the data key says which keys it has",
		input:    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: p\n  labels:\n    fledge.dev/policy: \"true\"\ndata:\n  policy.yml: x\n",
		wantCode: 1,
		wantErr:  "policy p: has no data key policy.yaml; put the policy document under data.policy.yaml (found: policy.yml)\n",
	}, {
		name: "manifests: only policy ConfigMaps are checked, each on its own",
		input: "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n---\n" +
			"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: b\n---\n" +
			configMap("fast", policyLabel, goodPolicy) + "---\n" + configMap("broken", policyLabel, "steps: []\n"),
		wantCode: 1,
		wantOut:  "ok: policy fast: 3 steps: 5% → 25% → 50% → 100%\n",
		wantErr:  "policy broken: steps: none given; add at least one step, such as {weight: 5, hold: 1m}\n",
	}, {
		name:     "manifests without a policy",
		input:    "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: b\n",
		wantCode: 1,
		wantErr:  "error: FILE: no policy found: expected a policy.yaml document or a ConfigMap with data key policy.yaml\n",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "policy.yaml")
			if err := os.WriteFile(file, []byte(tc.input), 0o600); err != nil {
				t.Fatal(err)
			}
			h := newHarness()
			code := h.run(t, "policy", "lint", file)
			if code != tc.wantCode {
				t.Errorf("exit code %d, want %d", code, tc.wantCode)
			}
			if h.out.String() != tc.wantOut {
				t.Errorf("stdout:\n%s\nwant:\n%s", h.out, tc.wantOut)
			}
			if got := strings.ReplaceAll(h.errOut.String(), file, "FILE"); got != tc.wantErr {
				t.Errorf("stderr:\n%s\nwant:\n%s", got, tc.wantErr)
			}
		})
	}
}

func TestPolicyLintReadsStandardInput(t *testing.T) {
	h := newHarness()
	h.e.in = strings.NewReader(configMap("fledge-policy", policyLabel, goodPolicy))
	if code := h.run(t, "policy", "lint", "-"); code != 0 {
		t.Fatalf("exit code %d; stderr: %s", code, h.errOut)
	}
	if want := "ok: policy fledge-policy: 3 steps: 5% → 25% → 50% → 100%\n"; h.out.String() != want {
		t.Errorf("stdout %q, want %q", h.out, want)
	}
}

func TestPolicyLintOfTheExamplePolicy(t *testing.T) {
	h := newHarness()
	if code := h.run(t, "policy", "lint", "../../manifests/examples/policy.yaml"); code != 0 {
		t.Fatalf("exit code %d; stderr: %s", code, h.errOut)
	}
	if want := "ok: policy fledge-policy: 3 steps: 5% → 25% → 50% → 100%\n"; h.out.String() != want {
		t.Errorf("stdout %q, want %q", h.out, want)
	}
}

func TestPolicyLintOfAMissingFile(t *testing.T) {
	h := newHarness()
	if code := h.run(t, "policy", "lint", "does-not-exist.yaml"); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if want := "error: read policy: open does-not-exist.yaml: no such file or directory\n"; h.errOut.String() != want {
		t.Errorf("stderr %q, want %q", h.errOut, want)
	}
}
