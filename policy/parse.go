package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"
)

// Parse reads a policy.yaml document: it decodes it strictly, fills in the
// defaults for the fields left out and validates the result. Every problem
// comes back at once as Errors. Decoding problems (syntax, unknown fields,
// wrong types) stop Parse before validation, because a policy that did not
// decode would only produce follow-on errors about fields the user did write.
func Parse(data []byte) (*Policy, error) {
	raw, errs := decodeDocument(data)
	if len(errs) > 0 {
		return nil, errs
	}
	p, err := decodeOverDefaults(raw)
	if err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// decodeDocument turns YAML into a generic JSON object and checks it against
// the Policy type: syntax, unknown fields and wrong types, all with their
// field paths. Explicit nulls are removed, so "hold:" with nothing after it
// counts as left out, as it does in Kubernetes objects.
func decodeDocument(data []byte) (map[string]any, Errors) {
	if line := secondDocumentLine(data); line > 0 {
		return nil, Errors{{Field: documentField, Detail: fmt.Sprintf("line %d: starts a second YAML document; keep one policy per ConfigMap", line)}}
	}
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, yamlErrors(err)
	}
	var doc any
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, Errors{{Field: documentField, Detail: err.Error()}}
	}
	if doc == nil {
		return nil, Errors{{Detail: documentField + " is empty"}}
	}
	if errs := checkValue(doc, reflect.TypeFor[Policy](), nil); len(errs) > 0 {
		return nil, errs
	}
	obj, _ := doc.(map[string]any) // a mapping: checkValue accepted it
	return obj, nil
}

// decodeOverDefaults decodes the checked document into a Policy that
// already holds the defaults, so exactly the fields the user left out keep
// them. Filling defaults after decoding could not tell "failureLimit: 0"
// from a missing failureLimit.
func decodeOverDefaults(raw map[string]any) (*Policy, error) {
	p := &Policy{Capacity: CapacitySurge, Health: defaultHealth()}
	if _, ok := raw["analysis"]; ok {
		p.Analysis = defaultAnalysis()
	}
	j, err := json.Marshal(raw)
	if err != nil {
		return nil, Errors{{Field: documentField, Detail: err.Error()}}
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(p); err != nil {
		// Unreachable for a document checkValue accepted; kept so a schema
		// change that forgets checkValue still fails closed.
		return nil, Errors{{Field: documentField, Detail: err.Error()}}
	}
	defaultComparisons(p.Analysis, raw)
	return p, nil
}

// defaultComparisons fills the defaults inside analysis.compare, which
// decoding over defaults cannot reach (list elements have no prior value):
// tolerance and alpha of each comparison left out, and analysis.minRequests
// when there is a comparison to count requests. raw tells a field left out
// from one written as 0.
func defaultComparisons(a *Analysis, raw map[string]any) {
	if a == nil || len(a.Compare) == 0 {
		return
	}
	section, _ := raw["analysis"].(map[string]any)
	if _, set := section["minRequests"]; !set {
		a.MinRequests = defaultMinRequests
	}
	written, _ := section["compare"].([]any)
	for i := range a.Compare {
		var fields map[string]any
		if i < len(written) {
			fields, _ = written[i].(map[string]any)
		}
		if _, set := fields["tolerance"]; !set {
			a.Compare[i].Tolerance = defaultTolerance
		}
		if _, set := fields["alpha"]; !set {
			a.Compare[i].Alpha = defaultAlpha
		}
	}
}

// yamlErrors turns the YAML library's errors into FieldErrors that name the
// line. The library omits "line N" when the problem is on the first line, so
// a syntax error without a line is on line 1.
func yamlErrors(err error) Errors {
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "yaml: unmarshal errors:\n"); ok {
		var errs Errors
		for _, line := range strings.Split(rest, "\n") {
			errs = append(errs, FieldError{Field: documentField, Detail: strings.TrimSpace(line)})
		}
		return errs
	}
	if strings.HasPrefix(msg, "json: unsupported value:") {
		return Errors{{Field: documentField, Detail: ".inf and .nan are not allowed; use a finite number"}}
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	if !strings.HasPrefix(msg, "line ") && isSyntaxProblem(msg) {
		msg = "line 1: " + msg
	}
	return Errors{{Field: documentField, Detail: msg}}
}

// isSyntaxProblem tells the YAML scanner's and parser's positional problems
// from the decoder's problems about anchors, aliases and tags, which have no
// line.
func isSyntaxProblem(msg string) bool {
	for _, p := range []string{"unknown anchor", "anchor '", "document contains excessive aliasing", "!!binary", "invalid map key", "map merge", "invalid array", "attempted to go past", "cannot decode", "cannot unmarshal"} {
		if strings.HasPrefix(msg, p) {
			return false
		}
	}
	return true
}

// secondDocumentLine returns the line of a "---" marker that starts a second
// document with content, or 0. The YAML library reads only the first
// document and would silently drop the rest of the policy.
func secondDocumentLine(data []byte) int {
	seenContent, marker := false, 0
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimRight(line, " \t\r")
		if line == "---" || strings.HasPrefix(line, "--- ") {
			if seenContent && marker == 0 {
				marker = i + 1
			}
			line = strings.TrimSpace(line[len("---"):])
		}
		if isNotContent(line) {
			continue
		}
		if marker > 0 {
			return marker
		}
		seenContent = true
	}
	return 0
}

// isNotContent reports lines that carry no document content: blank lines,
// comments, directives and the "..." document end.
func isNotContent(line string) bool {
	trimmed := strings.TrimSpace(line)
	return trimmed == "" || trimmed == "..." || strings.HasPrefix(trimmed, "#") || strings.HasPrefix(line, "%")
}

// describe names a JSON value's kind in the user's YAML terms, quoting
// scalars so the offending value shows.
func describe(v any) string {
	switch v := v.(type) {
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case string:
		return strconv.Quote(v)
	case json.Number:
		return v.String()
	case bool:
		return strconv.FormatBool(v)
	default:
		return fmt.Sprint(v)
	}
}

// wrongType reports a value of the wrong kind.
func wrongType(path *field.Path, want string, got any) Errors {
	return Errors{fieldErrorf(path, "must be %s, got %s", want, describe(got))}
}
