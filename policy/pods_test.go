package policy

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// anchored compiles a Pods regex the way Prometheus applies it to a label
// value: anchored at both ends.
func anchored(t testing.TB, re string) *regexp.Regexp {
	t.Helper()
	r, err := regexp.Compile("^(?:" + re + ")$")
	require.NoError(t, err)
	return r
}

func TestPodsRegex(t *testing.T) {
	long := strings.Repeat("a", 50) + "-7d4b9c8f6" // 60 characters
	tests := []struct {
		name       string
		replicaSet string
		want       string
		match      []string
		noMatch    []string
	}{
		{
			name:       "the pods of a ReplicaSet match and nothing else does",
			replicaSet: "web-7d4b9c8f6",
			want:       "web-7d4b9c8f6-[a-z0-9]{5}",
			match:      []string{"web-7d4b9c8f6-x1y2z", "web-7d4b9c8f6-bcdfg", "web-7d4b9c8f6-22222"},
			noMatch: []string{
				"web-7d4b9c8f6",         // the ReplicaSet itself
				"web-7d4b9c8f6-x1y2",    // suffix too short
				"web-7d4b9c8f6-x1y2z9",  // suffix too long
				"web-7d4b9c8f6-X1Y2Z",   // generated names are lowercase
				"web-7d4b9c8f6-x1_2z",   // and alphanumeric
				"web-5f6c7b8d9-x1y2z",   // the other ReplicaSet of the Deployment
				"xweb-7d4b9c8f6-x1y2z",  // a longer name ending the same
				"web-7d4b9c8f6-x1y2z-a", // anything after the suffix
			},
		},
		{
			name:       "a ReplicaSet whose name is a prefix of another does not match the other's pods",
			replicaSet: "web-abc",
			want:       "web-abc-[a-z0-9]{5}",
			match:      []string{"web-abc-x1y2z"},
			noMatch:    []string{"web-abcd-x1y2z", "web-abc-canary-x1y2z", "web-abc-canary-7d4b9c8f6-x1y2z", "web-abc-x1y2z-bcdfg"},
		},
		{
			name:       "a dot is quoted without a backslash, which PromQL strings would reject",
			replicaSet: "web.v2-7d4b9c8f6",
			want:       "web[.]v2-7d4b9c8f6-[a-z0-9]{5}",
			match:      []string{"web.v2-7d4b9c8f6-x1y2z"},
			noMatch:    []string{"webxv2-7d4b9c8f6-x1y2z", "web-v2-7d4b9c8f6-x1y2z"},
		},
		{
			name:       "a long ReplicaSet name is cut at 58 characters as the apiserver cuts generated names",
			replicaSet: long,
			want:       long[:58] + "[a-z0-9]{5}",
			match:      []string{long[:58] + "x1y2z"},
			noMatch:    []string{long + "-x1y2z", long[:58] + "x1y2z9"},
		},
		{
			name:       "a 57-character name still gets its dash",
			replicaSet: strings.Repeat("b", 57),
			want:       strings.Repeat("b", 57) + "-[a-z0-9]{5}",
			match:      []string{strings.Repeat("b", 57) + "-x1y2z"},
			noMatch:    []string{strings.Repeat("b", 57) + "x1y2z0"},
		},
		{
			name:       "metacharacters that no Kubernetes name has are still taken literally",
			replicaSet: `a+b*c?(d)|e{1}$f\g[h]^i`,
			want:       `a[+]b[*]c[?][(]d[)][|]e[{]1[}][$]f\\g\[h\]\^i-[a-z0-9]{5}`,
			match:      []string{`a+b*c?(d)|e{1}$f\g[h]^i-x1y2z`},
			noMatch:    []string{"aab-x1y2z", "e1-x1y2z"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := PodsRegex(tt.replicaSet)
			assert.Equal(t, tt.want, got)
			re := anchored(t, got)
			for _, pod := range tt.match {
				assert.True(t, re.MatchString(pod), "should match %s", pod)
			}
			for _, pod := range tt.noMatch {
				assert.False(t, re.MatchString(pod), "should not match %s", pod)
			}
		})
	}
}

// FuzzPodsRegex checks that for any ASCII name the regex compiles, matches
// the pod name the apiserver would generate, and nothing one character
// longer.
func FuzzPodsRegex(f *testing.F) {
	for _, seed := range []string{"web-7d4b9c8f6", "", "a.b", `\`, "[", strings.Repeat("x", 70)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, name string) {
		re := PodsRegex(name)
		if !isASCII(name) {
			return // Kubernetes names are ASCII; PodsRegex only must not panic
		}
		r := anchored(t, re)
		base := name + "-"
		if len(base) > 58 {
			base = base[:58]
		}
		assert.True(t, r.MatchString(base+"x1y2z"), "regex %s does not match %s", re, base+"x1y2z")
		assert.False(t, r.MatchString(base+"x1y2z0"))
	})
}

// isASCII reports whether s is 7-bit ASCII.
func isASCII(s string) bool {
	for i := range len(s) {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
