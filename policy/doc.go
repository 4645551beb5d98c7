// Package policy owns fledge's rollout policy: the policy.yaml format a team
// keeps in a ConfigMap, its strict decoding, its defaults, its validation,
// the lookup that picks a Deployment's policy (Resolve), and the rendering
// of Prometheus queries. The evaluation of checks against Kubernetes and
// Prometheus will live here too; it is not written yet.
//
// Everything here is a pure function of its inputs: ConfigMaps come in
// through a get function (an informer cache read in the webhook), so the
// package imports no client and no other fledge package.
//
// # Decoding
//
// Parse converts YAML to JSON with sigs.k8s.io/yaml (the library kubectl
// uses, so scalars mean what they mean in a manifest), then walks the
// document alongside the Go types before decoding it. The walk reports every
// unknown field with its path and the allowed names
// ("steps[0].wieght: unknown field; allowed: weight, hold, approval") and
// every wrong type ("steps[0].hold: must be a duration such as 30s or 1m,
// got 60"), all at once. encoding/json alone stops at the first problem,
// does not say where it is and matches names case-insensitively; the walk
// matches them exactly. Duplicate keys are errors. A YAML syntax error names
// its line as the YAML library reports it. A second YAML document ("---"
// followed by content) is an error, because the library would silently read
// the first one only. An explicit null ("hold:" with nothing after it) counts
// as the field left out. When decoding fails, validation does not run: its
// errors would only repeat the decoding problems in other words.
//
// # Defaults
//
// The document is decoded over the defaults, so a field takes its default
// exactly when it is left out, and an explicit value (even 0) is kept. This
// matters for failureLimit and noDataLimit, whose 0 is a stricter setting
// than the default, not a request for it. The defaults:
//
//	capacity:      surge
//	health.readyTimeout: 5m
//	health.maxRestarts:  0
//	analysis.interval:     15s   (only when an analysis section is present)
//	analysis.failureLimit: 1
//	analysis.noDataLimit:  4
//
// Steps and holds have no default: a policy that writes steps says how long
// each one holds. A document without steps is invalid rather than the
// built-in steps, because a ConfigMap that forgot its steps is a mistake.
// Default is the built-in policy of a namespace without a policy ConfigMap:
// 5%, 25%, 50%, each held 1m, health checks only, capacity surge.
//
// # Validation
//
// Validate returns every problem at once as Errors, each reading
// "<field path>: <what is wrong and what is allowed>", for example
// "steps[1].weight: 120 is not between 1 and 99". The bounds, where
// ARCHITECTURE.md is silent:
//
//   - steps: at least one; weights whole percents from 1 to 99, strictly
//     increasing (100 is the promotion after the last step, and 0 would
//     be no canary at all); at most 99 steps follows from that.
//   - steps[].hold: above 0 and at most 24h; a rollout that needs longer is
//     better served by a manual approval step.
//   - steps[].approval: "" or "manual".
//   - capacity: "surge" or "shift".
//   - health.readyTimeout: from 10s (pods rarely pull and start faster) to
//     1h (longer and a broken canary holds users hostage).
//   - health.maxRestarts, analysis.failureLimit, analysis.noDataLimit: 0 or
//     more, no upper bound.
//   - analysis.interval: from 1s (Prometheus scrapes are seconds apart; less
//     is load without information) to 1h.
//   - analysis.prometheus.url: required when there are checks; an absolute
//     http or https URL without user credentials, because the ConfigMap and
//     the rollout annotation that copies the policy are not secrets.
//   - analysis.checks: at least one when analysis is present (an analysis
//     section with no checks would promote on less evidence than the user
//     asked for); names required, unique, and DNS labels, because they are
//     metric label values, appear in Events and are typed in commands.
//   - checks[].query: required; a text/template over .Namespace,
//     .Deployment, .Track and .Pods that must parse and execute, with
//     missingkey=error, for both tracks, and render to a non-empty query.
//     range and template calls are refused: the webhook renders queries
//     during admission, and without loops rendering time is bounded by the
//     query's length.
//   - checks[]: exactly one of max, min and maxRatio (finite numbers;
//     maxRatio above 0), so a failed check has one reason.
//
// # Snapshot
//
// A resolved Policy is copied as JSON into the fledge.dev/rollout
// annotation, so editing the ConfigMap later does not change a running
// rollout. The JSON form is compact (zero fields omitted) except for
// failureLimit and noDataLimit, which are always written: their 0 differs
// from their default, and a snapshot read back with Parse must mean the
// same policy.
//
// # Lookup
//
// Resolve takes the ConfigMap named by the Deployment annotation
// fledge.dev/policy; else the ConfigMap fledge-policy; else Default. A named
// ConfigMap that is missing or invalid is an error, as is an invalid
// fledge-policy: a team that wrote a policy never silently gets the default.
// An empty annotation, or one that cannot be a ConfigMap name, is an error
// too. A read error other than NotFound is returned wrapped, never taken for
// absence: an unsynced cache must not turn a team's policy into the default.
// A policy ConfigMap carries the label fledge.dev/policy: "true": the webhook
// validates it when it is written, and the manager caches only ConfigMaps
// with that label, so get does not see one without it (the error says so).
package policy
