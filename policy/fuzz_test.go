package policy

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// FuzzParse holds Parse to its promises on any input: no panic, and a
// policy it accepts is valid and survives the snapshot round trip.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"", "~", "[]", "steps: {}", "steps:\n-\n", "? [a]\n: b\n", "x: &a [*a]",
		"steps:\n- {weight: 5, hold: 1m}\n",
		"steps:\n- {weight: 5, hold: 1m}\nanalysis:\n  prometheus: {url: 'http://p:9090'}\n  checks:\n  - {name: a, query: '{{.Pods}}', min: 1}\n",
		twoStepPolicy + "---\nsteps: []\n",
	} {
		f.Add([]byte(seed))
	}
	example, err := os.ReadFile("testdata/architecture-example.yaml")
	require.NoError(f, err)
	f.Add(example)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			assert.Nil(t, p)
			return
		}
		require.NoError(t, p.Validate())
		snapshot, err := json.Marshal(p)
		require.NoError(t, err)
		again, err := Parse(snapshot)
		require.NoError(t, err)
		assert.Equal(t, p, again)
	})
}

// FuzzRender holds query rendering to its promise on any template: an error
// or a non-empty query, never a panic.
func FuzzRender(f *testing.F) {
	for _, seed := range []string{errorQuery, latencyQuery, "{{.Foo}}", "{{range 3}}{{end}}", `{{with .Pods}}{{.}}{{else}}x{{end}}`, "{{printf \"%0999999d\" 1}}"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, query string) {
		got, err := Check{Name: "fuzz", Query: query}.Render(QueryVars{Namespace: "a", Deployment: "b", Track: TrackCanary, Pods: "c"})
		if err == nil {
			assert.NotEmpty(t, got)
		}
	})
}
