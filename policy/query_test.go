package policy

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestRender(t *testing.T) {
	canary := QueryVars{Namespace: "shop", Deployment: "web", Track: TrackCanary, Pods: "web-canary-7d4b9c8f6-.*"}
	tests := []struct {
		name    string
		query   string
		want    string
		wantErr string
	}{
		{
			name:  "the error-rate query of the example gets namespace and pods",
			query: errorQuery,
			want: `sum(rate(http_requests_total{namespace="shop",pod=~"web-canary-7d4b9c8f6-.*",code=~"5.."}[1m]))
/ sum(rate(http_requests_total{namespace="shop",pod=~"web-canary-7d4b9c8f6-.*"}[1m]))
`,
		},
		{
			name:  "all four variables are filled in",
			query: `x{ns="{{.Namespace}}",d="{{.Deployment}}",t="{{.Track}}",p=~"{{.Pods}}"}`,
			want:  `x{ns="shop",d="web",t="canary",p=~"web-canary-7d4b9c8f6-.*"}`,
		},
		{
			name:  "a query may branch on the track",
			query: `{{if eq .Track "canary"}}canary_up{{else}}stable_up{{end}}`,
			want:  "canary_up",
		},
		{
			name:    "an unknown variable is an error naming the check, not an empty string",
			query:   `up{app="{{.App}}"}`,
			wantErr: "check error-rate: template uses unknown variable .App; allowed: .Namespace, .Deployment, .Track, .Pods",
		},
		{
			name:    "a query that does not parse is an error naming the check",
			query:   "{{.Pods",
			wantErr: "check error-rate: template does not parse: line 1: unclosed action",
		},
		{
			name:    "range is refused when rendering too",
			query:   "{{range 1000000000}}{{end}}up",
			wantErr: "check error-rate: template uses range; a query may use only variables such as {{.Pods}}, if and with",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Check{Name: "error-rate", Query: tt.query}.Render(canary)
			if tt.wantErr != "" {
				assert.EqualError(t, err, tt.wantErr)
				assert.Empty(t, got)
				return
			}
			assert.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}
