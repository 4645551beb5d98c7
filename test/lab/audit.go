package lab

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The lab's audit log (Options.AuditLog) records every write request the
// apiserver completes, at the Metadata level: who wrote, with which verb,
// to which object, and the answer. Reads are not recorded, so the log stays
// small enough to scan after a test.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: None
`

// AuditEvent is one write request as the apiserver's audit log records it
// (the fields of audit.k8s.io/v1 Event that tests read).
type AuditEvent struct {
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	User       struct {
		Username string `json:"username"`
		// Extra carries, for a pod-bound ServiceAccount token, the pod:
		// "authentication.kubernetes.io/pod-name".
		Extra map[string][]string `json:"extra"`
	} `json:"user"`
	UserAgent string `json:"userAgent"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
		APIGroup    string `json:"apiGroup"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	// Annotations carry, among others, one
	// "mutation.webhook.admission.k8s.io/round_R_index_I" per mutating
	// webhook the apiserver called for the request.
	Annotations              map[string]string `json:"annotations"`
	RequestReceivedTimestamp time.Time         `json:"requestReceivedTimestamp"`
	StageTimestamp           time.Time         `json:"stageTimestamp"`
}

// Pod is the pod whose bound token made the request, or "".
func (e AuditEvent) Pod() string {
	if v := e.User.Extra["authentication.kubernetes.io/pod-name"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Resource is "resource" or "resource/subresource" of the object written.
func (e AuditEvent) Resource() string {
	if e.ObjectRef == nil {
		return ""
	}
	if e.ObjectRef.Subresource != "" {
		return e.ObjectRef.Resource + "/" + e.ObjectRef.Subresource
	}
	return e.ObjectRef.Resource
}

// MutatingWebhooks are the names of the mutating webhooks the apiserver
// called for the request, in no particular order.
func (e AuditEvent) MutatingWebhooks() []string {
	var names []string
	for key, value := range e.Annotations {
		if !strings.HasPrefix(key, "mutation.webhook.admission.k8s.io/") {
			continue
		}
		var v struct {
			Webhook string `json:"webhook"`
		}
		if json.Unmarshal([]byte(value), &v) == nil {
			names = append(names, v.Webhook)
		}
	}
	return names
}

// Code is the HTTP status of the answer (0 when the log has none).
func (e AuditEvent) Code() int {
	if e.ResponseStatus == nil {
		return 0
	}
	return e.ResponseStatus.Code
}

func (l *Lab) auditLog() string { return filepath.Join(l.Dir, "audit.log") }

func writeAuditPolicy(dir string) (string, error) {
	path := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(path, []byte(auditPolicy), 0o600); err != nil {
		return "", fmt.Errorf("lab: audit policy: %w", err)
	}
	return path, nil
}

// AuditEvents returns the write requests the apiserver has completed so
// far, oldest first. The lab must have been started with Options.AuditLog.
func (l *Lab) AuditEvents() ([]AuditEvent, error) {
	f, err := os.Open(l.auditLog())
	if err != nil {
		return nil, fmt.Errorf("lab: audit log (start the lab with Options.AuditLog): %w", err)
	}
	defer f.Close()
	var events []AuditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var e AuditEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// The apiserver may be writing the last line right now.
			continue
		}
		events = append(events, e)
	}
	return events, sc.Err()
}
