package policy

import (
	"errors"
	"fmt"
	"strings"
	"text/template"
	"text/template/parse"
)

// QueryVars are the variables a check's query may use. The router fills
// them once per side: the canary's pods, then the stable pods for maxRatio.
type QueryVars struct {
	// Namespace is the Deployment's namespace.
	Namespace string
	// Deployment is the stable Deployment's name.
	Deployment string
	// Track is TrackCanary or TrackStable.
	Track string
	// Pods is a regular expression matching exactly this side's pod names,
	// built from the ReplicaSet's pod-template-hash.
	Pods string
}

// The values of QueryVars.Track, also the value of the fledge.dev/track
// label on canary pods.
const (
	TrackCanary = "canary"
	TrackStable = "stable"
)

// knownVariables lists the variables in error messages.
const knownVariables = ".Namespace, .Deployment, .Track, .Pods"

// templateName is the name every query template gets, so that template
// error messages have a prefix this package can strip.
const templateName = "query"

// Render fills the check's query template with vars. A variable outside
// QueryVars is an error (missingkey=error), never an empty string that would
// turn the query into one that silently matches nothing.
func (c Check) Render(vars QueryVars) (string, error) {
	q, err := render(c.Query, vars)
	if err != nil {
		return "", fmt.Errorf("check %s: %w", c.Name, err)
	}
	return q, nil
}

// checkQuery proves at validation time that a query renders, for both
// tracks, so that branches on .Track are exercised too.
func checkQuery(query string) error {
	for _, track := range []string{TrackCanary, TrackStable} {
		vars := QueryVars{Namespace: "default", Deployment: "web", Track: track, Pods: "web-7d4b9c8f6-.*"}
		if _, err := render(query, vars); err != nil {
			return err
		}
	}
	return nil
}

// render parses and executes a query template against vars given as a map,
// which is what makes missingkey=error apply to unknown variables.
func render(query string, vars QueryVars) (string, error) {
	t, err := template.New(templateName).Option("missingkey=error").Parse(query)
	if err != nil {
		return "", fmt.Errorf("template does not parse: %s", parseErrorDetail(err))
	}
	if t.Tree == nil {
		return "", errors.New("template renders an empty query")
	}
	if err := checkNodes(t.Tree.Root); err != nil {
		return "", err
	}
	var b strings.Builder
	if err := t.Execute(&b, vars.asMap()); err != nil {
		return "", execErrorDetail(err)
	}
	if strings.TrimSpace(b.String()) == "" {
		return "", errors.New("template renders an empty query")
	}
	return b.String(), nil
}

// asMap gives the variables to the template as a map, so that the
// missingkey=error option reports unknown variables by name.
func (v QueryVars) asMap() map[string]string {
	return map[string]string{"Namespace": v.Namespace, "Deployment": v.Deployment, "Track": v.Track, "Pods": v.Pods}
}

// checkNodes refuses range and template calls. A query needs only
// substitution and the odd if or with; without loops and calls, rendering
// takes time in proportion to the query's length, which matters because the
// webhook renders queries inside an admission request.
func checkNodes(n parse.Node) error {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := checkNodes(c); err != nil {
				return err
			}
		}
	case *parse.IfNode:
		return checkBranch(&n.BranchNode)
	case *parse.WithNode:
		return checkBranch(&n.BranchNode)
	case *parse.RangeNode:
		return errors.New("template uses range; a query may use only variables such as {{.Pods}}, if and with")
	case *parse.TemplateNode:
		return errors.New("template calls a template; a query may use only variables such as {{.Pods}}, if and with")
	}
	return nil
}

// checkBranch checks both branches of an if or with.
func checkBranch(b *parse.BranchNode) error {
	if err := checkNodes(b.List); err != nil {
		return err
	}
	return checkNodes(b.ElseList)
}

// parseErrorDetail turns "template: query:2: unclosed action" into
// "line 2: unclosed action".
func parseErrorDetail(err error) string {
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "template: "+templateName+":"); ok {
		return "line " + rest
	}
	return msg
}

// execErrorDetail names an unknown variable the way the user wrote it
// (".Foo") and shortens other execution errors to where and what.
func execErrorDetail(err error) error {
	msg := err.Error()
	const noEntry = `map has no entry for key "`
	if i := strings.LastIndex(msg, noEntry); i >= 0 {
		name, _, _ := strings.Cut(msg[i+len(noEntry):], `"`)
		return fmt.Errorf("template uses unknown variable .%s; allowed: %s", name, knownVariables)
	}
	const executing = `executing "` + templateName + `" `
	if i := strings.Index(msg, executing); i >= 0 {
		return fmt.Errorf("template fails %s", msg[i+len(executing):])
	}
	return fmt.Errorf("template fails: %s", msg)
}
