package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/fledge-dev/fledge/policy"
)

func newPolicyCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Work with policy documents offline",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "lint FILE|-",
		Short: "Check a policy offline with the webhook's own validation",
		Long: `Checks a policy without a cluster, with the same parsing and validation the
admission webhook applies. FILE (or - for standard input) is either a bare
policy.yaml document or Kubernetes manifests: then every ConfigMap labelled
fledge.dev/policy: "true" or holding a data key policy.yaml is checked (a lone
ConfigMap is checked whatever it holds).

A valid policy prints its steps ("ok: 3 steps: 5% → 25% → 50% → 100%"); an
invalid one prints each problem on its own line, as "<field>: <what is wrong>",
and the command exits with 1. Lines about a ConfigMap name it as the webhook
does ("policy fledge-policy: steps[1].weight: ..."). A policy ConfigMap without the label
fledge.dev/policy: "true" is an error too: fledge does not see it and would
roll out with the default policy.`,
		Example: `  kubectl fledge policy lint policy.yaml
  kubectl fledge policy lint manifests/examples/policy.yaml
  kubectl get configmap fledge-policy -o yaml | kubectl fledge policy lint -`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return runLint(e, args[0])
		},
	})
	return cmd
}

func runLint(e *env, file string) error {
	data, err := readInput(e.in, file)
	if err != nil {
		return err
	}
	results, err := lint(data)
	if err != nil {
		return fmt.Errorf("%s: %w", displayName(file), err)
	}
	failed := false
	for _, r := range results {
		if r.err == nil {
			fmt.Fprintln(e.out, r.okLine())
			continue
		}
		failed = true
		for _, line := range r.errorLines() {
			fmt.Fprintln(e.errOut, line)
		}
	}
	if failed {
		return &exitError{code: 1}
	}
	return nil
}

func readInput(in io.Reader, file string) ([]byte, error) {
	if file == "-" {
		data, err := io.ReadAll(in)
		if err != nil {
			return nil, fmt.Errorf("read standard input: %w", err)
		}
		return data, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	return data, nil
}

func displayName(file string) string {
	if file == "-" {
		return "standard input"
	}
	return file
}

// lintResult is the verdict on one policy: a bare document (name empty)
// or a ConfigMap.
type lintResult struct {
	name   string
	policy *policy.Policy
	err    error
}

// okLine is "ok: 3 steps: 5% → 25% → 50% → 100%", naming the ConfigMap
// when the policy came from one.
func (r lintResult) okLine() string {
	n := len(r.policy.Steps)
	steps := fmt.Sprintf("%d steps", n)
	if n == 1 {
		steps = "1 step"
	}
	if r.name == "" {
		return fmt.Sprintf("ok: %s: %s", steps, r.policy.StepsString())
	}
	return fmt.Sprintf("ok: policy %s: %s: %s", r.name, steps, r.policy.StepsString())
}

// errorLines puts every field error on its own line, prefixed with the
// ConfigMap as the webhook's refusal names it ("policy team-a: ...").
func (r lintResult) errorLines() []string {
	prefix := ""
	if r.name != "" {
		prefix = "policy " + r.name + ": "
	}
	var errs policy.Errors
	if !errors.As(r.err, &errs) {
		msg := r.err.Error()
		if !strings.HasPrefix(msg, prefix) {
			msg = prefix + msg
		}
		return []string{msg}
	}
	lines := make([]string, len(errs))
	for i, fe := range errs {
		lines[i] = prefix + fe.Error()
	}
	return lines
}

// lint checks data as a bare policy, or as manifests when its first
// document is a Kubernetes object (it has apiVersion and kind).
func lint(data []byte) ([]lintResult, error) {
	docs, err := splitDocuments(data)
	if err != nil || len(docs) == 0 || !isObject(docs[0]) {
		// Parse reports syntax errors and a second document with lines.
		p, err := policy.Parse(data)
		return []lintResult{{policy: p, err: err}}, nil
	}
	var configMaps []*corev1.ConfigMap
	for _, doc := range docs {
		if cm, ok := asConfigMap(doc); ok {
			configMaps = append(configMaps, cm)
		}
	}
	var results []lintResult
	for _, cm := range configMaps {
		if len(docs) > 1 && cm.Labels[policy.Label] != "true" && !hasKey(cm) {
			continue // some other ConfigMap among the manifests
		}
		p, err := policy.FromConfigMap(cm)
		if err == nil && cm.Labels[policy.Label] != "true" {
			err = fmt.Errorf("metadata.labels: %s: \"true\" is missing; fledge reads only labelled policy ConfigMaps and would use the default policy", policy.Label)
		}
		results = append(results, lintResult{name: cm.Name, policy: p, err: err})
	}
	if len(results) == 0 {
		return nil, fmt.Errorf("no policy found: expected a policy.yaml document or a ConfigMap with data key %s", policy.ConfigMapKey)
	}
	return results, nil
}

// splitDocuments returns the non-empty YAML documents of data.
func splitDocuments(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(stripComments(doc))) > 0 {
			docs = append(docs, doc)
		}
	}
}

// stripComments drops whole-line comments, to tell empty documents apart.
func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' && !bytes.Equal(t, []byte("---")) {
			out = append(append(out, line...), '\n')
		}
	}
	return out
}

// isObject reports whether a YAML document is a Kubernetes object.
func isObject(doc []byte) bool {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	return yaml.Unmarshal(doc, &head) == nil && head.APIVersion != "" && head.Kind != ""
}

func asConfigMap(doc []byte) (*corev1.ConfigMap, bool) {
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal(doc, &cm); err != nil || cm.Kind != "ConfigMap" {
		return nil, false
	}
	return &cm, true
}

func hasKey(cm *corev1.ConfigMap) bool {
	_, ok := cm.Data[policy.ConfigMapKey]
	return ok
}
