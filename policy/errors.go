package policy

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// FieldError is one thing wrong with a policy. Field is the path of the
// offending field as written in policy.yaml ("steps[1].weight"), or
// "policy.yaml" for the document as a whole; Detail says what is wrong and
// what is allowed. The short "<field>: <detail>" form is what a person reads
// in an admission refusal or `kubectl fledge policy lint`, so it carries no
// "Invalid value:" boilerplate.
type FieldError struct {
	Field  string
	Detail string
}

// Error renders "<field>: <detail>", or the detail alone when the error is
// about no particular field.
func (e FieldError) Error() string {
	if e.Field == "" {
		return e.Detail
	}
	return e.Field + ": " + e.Detail
}

// Errors holds every problem found in a policy, so a user fixes them all in
// one round instead of one per apply. Callers that want a list use
// errors.As and range over it; Error gives one line.
type Errors []FieldError

// Error joins the errors with "; " so they fit one admission message.
func (e Errors) Error() string {
	msgs := make([]string, len(e))
	for i, fe := range e {
		msgs[i] = fe.Error()
	}
	return strings.Join(msgs, "; ")
}

// orNil returns nil for no errors, so a nil Errors never becomes a non-nil
// error interface.
func (e Errors) orNil() error {
	if len(e) == 0 {
		return nil
	}
	return e
}

// fieldErrorf builds a FieldError for path with a formatted detail.
func fieldErrorf(path *field.Path, format string, args ...any) FieldError {
	return FieldError{Field: pathString(path), Detail: fmt.Sprintf(format, args...)}
}

// documentField names the whole policy document in errors that concern no
// particular field.
const documentField = ConfigMapKey

// pathString renders a field path; the nil path is the document itself.
func pathString(path *field.Path) string {
	if path == nil {
		return documentField
	}
	return path.String()
}

// child extends path by one field name, starting a path at the document root.
func child(path *field.Path, name string) *field.Path {
	if path == nil {
		return field.NewPath(name)
	}
	return path.Child(name)
}
