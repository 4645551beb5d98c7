package policy

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// checkValue checks v against type t and reports every unknown field and
// wrong type below path. It walks the generic document alongside the Go
// types, so the allowed fields are exactly the json tags and cannot drift
// from them. encoding/json alone would stop at the first problem,
// match field names case-insensitively and not say where the problem is.
func checkValue(v any, t reflect.Type, path *field.Path) Errors {
	switch {
	case t == reflect.TypeFor[metav1.Duration]():
		return checkDuration(v, path)
	case t.Kind() == reflect.Pointer:
		return checkValue(v, t.Elem(), path)
	case t.Kind() == reflect.Struct:
		return checkObject(v, t, path)
	case t.Kind() == reflect.Slice:
		return checkList(v, t.Elem(), path)
	case t.Kind() == reflect.String:
		if _, ok := v.(string); !ok {
			return wrongType(path, "a string", v)
		}
	case t.Kind() == reflect.Int32:
		return checkInt32(v, path)
	case t.Kind() == reflect.Float64:
		return checkFloat(v, path)
	}
	return nil
}

// checkObject checks a mapping against struct type t: known fields in
// declaration order, then unknown fields in name order. Null members are
// deleted so that they decode as left out.
func checkObject(v any, t reflect.Type, path *field.Path) Errors {
	obj, ok := v.(map[string]any)
	if !ok {
		return wrongType(path, "a mapping with "+strings.Join(jsonNames(t), ", "), v)
	}
	var errs Errors
	names := jsonNames(t)
	for i, name := range names {
		member, ok := obj[name]
		switch {
		case !ok:
		case member == nil:
			delete(obj, name)
		default:
			errs = append(errs, checkValue(member, t.Field(i).Type, child(path, name))...)
		}
	}
	for _, key := range sortedKeys(obj) {
		if !slices.Contains(names, key) {
			errs = append(errs, fieldErrorf(child(path, key), "unknown field; allowed: %s", strings.Join(names, ", ")))
		}
	}
	return errs
}

// checkList checks every element of a list against elem.
func checkList(v any, elem reflect.Type, path *field.Path) Errors {
	list, ok := v.([]any)
	if !ok {
		return wrongType(path, "a list", v)
	}
	var errs Errors
	for i, item := range list {
		if item == nil {
			errs = append(errs, fieldErrorf(path.Index(i), "is empty; remove the \"-\" or fill it in"))
			continue
		}
		errs = append(errs, checkValue(item, elem, path.Index(i))...)
	}
	return errs
}

// checkDuration accepts what metav1.Duration decodes: a Go duration string.
func checkDuration(v any, path *field.Path) Errors {
	s, ok := v.(string)
	if !ok {
		return wrongType(path, "a duration such as 30s or 1m", v)
	}
	if _, err := time.ParseDuration(s); err != nil {
		return Errors{fieldErrorf(path, "%q is not a duration; use a number and a unit, such as 30s, 1m or 1h", s)}
	}
	return nil
}

// checkInt32 accepts a whole number that fits an int32.
func checkInt32(v any, path *field.Path) Errors {
	n, ok := v.(json.Number)
	if !ok {
		return wrongType(path, "a whole number", v)
	}
	if _, err := strconv.ParseInt(n.String(), 10, 32); err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return Errors{fieldErrorf(path, "%s is out of range", n)}
		}
		return wrongType(path, "a whole number", v)
	}
	return nil
}

// checkFloat accepts a finite number.
func checkFloat(v any, path *field.Path) Errors {
	n, ok := v.(json.Number)
	if !ok {
		return wrongType(path, "a number", v)
	}
	if _, err := n.Float64(); err != nil {
		return Errors{fieldErrorf(path, "%s is out of range", n)}
	}
	return nil
}

// jsonNames lists the json field names of struct type t in declaration
// order; they are the fields policy.yaml may use.
func jsonNames(t reflect.Type) []string {
	names := make([]string, t.NumField())
	for i := range names {
		names[i], _, _ = strings.Cut(t.Field(i).Tag.Get("json"), ",")
	}
	return names
}

// sortedKeys returns the keys of obj in order, so errors come out the same
// every time.
func sortedKeys(obj map[string]any) []string {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
