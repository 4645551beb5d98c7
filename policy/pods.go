package policy

import (
	"regexp"
	"strings"
)

// podNameBudget is how much of a generateName Kubernetes keeps: a generated
// name is at most 63 characters, 5 of them random (the apiserver's
// SimpleNameGenerator), so a longer base is cut to 58.
const podNameBudget = 63 - podSuffixLength

// podSuffixLength is the length of the random suffix of a generated name.
const podSuffixLength = 5

// PodsRegex returns a regular expression matching exactly the names of the
// pods of the ReplicaSet named replicaSetName, for QueryVars.Pods. Pods
// are named by their ReplicaSet's generateName, "<rs-name>-", followed by
// five random lowercase letters and digits; a ReplicaSet name of 58
// characters or more is cut so that the pod name fits in 63, the way the
// apiserver cuts it.
//
// Prometheus anchors label-matcher regexes at both ends, so the expression
// is not anchored itself; anchored, it does not match the pods of a
// ReplicaSet whose name merely starts with replicaSetName ("web-abc" does
// not match "web-abcd-x1y2z" or "web-abc-canary-x1y2z").
//
// The name is quoted without backslashes: "." becomes "[.]" where
// regexp.QuoteMeta would write `\.`. Queries put {{.Pods}} inside a
// double-quoted PromQL string, where `\.` is an "unknown escape sequence"
// that fails the query (checked against Prometheus 3); a ReplicaSet name
// holds only lowercase letters, digits, '-' and '.', so "[.]" is the one
// quoting real names need.
func PodsRegex(replicaSetName string) string {
	base := replicaSetName + "-"
	if len(base) > podNameBudget {
		base = base[:podNameBudget]
	}
	return quoteLiteral(base) + "[a-z0-9]{5}"
}

// quoteLiteral quotes s for an RE2 regular expression. Metacharacters that
// are literal inside a character class go into one ("[.]"); the few that
// are not (`\`, '[', ']', '^', none of which a Kubernetes name contains)
// fall back to regexp.QuoteMeta's backslash.
func quoteLiteral(s string) string {
	var b strings.Builder
	for i := range len(s) {
		c := s[i]
		switch {
		case strings.IndexByte(`.+*?()|{}$`, c) >= 0:
			b.WriteString("[" + string(c) + "]")
		case strings.IndexByte(`\[]^`, c) >= 0:
			b.WriteString(regexp.QuoteMeta(string(c)))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
