// Package policy owns fledge's rollout policy: the policy.yaml format a team
// keeps in a ConfigMap, its strict decoding, its defaults, its validation,
// the lookup that picks a Deployment's policy (Resolve), the rendering of
// Prometheus queries, and the evaluation of the Prometheus checks (Analyze)
// and the verdict drawn from it (Judge).
//
// Everything here except Analyzer.Analyze is a pure function of its inputs:
// ConfigMaps come in through a get function (an informer cache read in the
// webhook), and Prometheus through the one-method Source. The package
// imports no Kubernetes client and no other fledge package; the only client
// it imports is client_golang's Prometheus API, for NewPrometheusSource.
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
//
// # Analysis
//
// Analyzer.Analyze evaluates every check of an analysis once and returns an
// Evaluation: one CheckResult per check, in policy order. For each check it
// renders the query with Track "canary" and Pods the canary's PodsRegex and
// reads one number from the answer: a scalar, or a vector of exactly one
// sample. max passes a value at or below the bound, min one at or above it.
// maxRatio runs the query a second time with Track "stable" and the stable
// pods, and passes canary / stable at or below the bound; a stable value of
// 0 or below has no meaningful ratio and is inconclusive. Checks run
// concurrently; a check's canary and stable queries run one after the other,
// and the stable query is skipped when the canary has no value.
//
// Inconclusive is never a pass: a rollout is never promoted on missing
// evidence. A check is Inconclusive, with a Reason that says why, when its
// query finds no series ("no data for error-rate"), returns several series
// ("error-rate returned 3 series; aggregate the query (for example with
// sum())"), a range vector or a string, NaN or ±Inf ("error-rate is NaN"),
// when Prometheus refuses or fails the query ("error-rate: query failed:
// bad_data: ...", in Prometheus's words), answers too late ("error-rate:
// prometheus did not answer within 7.5s") or cannot be reached ("error-rate:
// prometheus unreachable: dial tcp ...: connect: connection refused"), and
// when the evaluation is cancelled. Such text is folded into one line of at
// most 300 characters. Analyze returns no error: to the rollout all of these
// mean missing evidence, and Judge decides how much of it to tolerate.
// Prometheus warnings and infos are not read.
//
// Each query has its own timeout, half the analysis interval, at most 10s
// and at least 1s, so that a maxRatio check's two queries fit in one
// interval (except at the 1s minimum interval). The timeout bounds the HTTP
// request through the context and is also sent to Prometheus, so that it
// stops evaluating a query nobody waits for.
//
// An Analyzer keeps one Source per Prometheus URL for its lifetime, made by
// NewPrometheusSource unless NewAnalyzer was given another constructor; a
// URL that cannot be made into a Source makes every check inconclusive.
//
// # Judging
//
// Judge folds an Evaluation into the Counters kept in the rollout state and
// returns the Verdict. A failed check counts a failure and clears the
// no-data count; more than failureLimit failures fail the rollout with the
// first failing check's reason ("error-rate 0.072 > 0.01"), fewer leave it
// Inconclusive ("error-rate 0.072 > 0.01 (failure 1 of 1 tolerated)"). An
// inconclusive check, or an evaluation with no results at all, counts an
// evaluation without data and leaves the failure count as it is: going
// quiet must not wipe out a failure. More than noDataLimit of them in a row
// fail the rollout ("no data for error-rate in 5 consecutive evaluations
// (noDataLimit 4)", followed by "; last: <reason>" when the reason was
// something other than absence); fewer leave it Inconclusive ("no data for
// error-rate (no data 2 of 4 tolerated)"). Only an evaluation where every
// check passes is a Pass, and it clears both counts.
//
// # Numbers
//
// Bounds are written as the user wrote them: the shortest decimal that reads
// back as the same float64 (strconv 'g', -1), as in validation errors.
// Measured values are rounded to three significant digits and then written
// the same way ("0.0723", "3.02", "12300", "1.23e+09"), because a query's
// full float64 says nothing more to a person; when three digits would show
// the value on the bound or on its other side (0.010004 against 0.01),
// digits are added until the shown value is on the same side as the real
// one. CheckResult.Value keeps the full value. A ratio reads "3.02× stable"
// against a bound of "1.2×".
//
// # Pods
//
// PodsRegex turns a ReplicaSet's name into QueryVars.Pods: the name, a dash
// and five lowercase letters or digits, cut like the apiserver cuts
// generated names over 63 characters. Prometheus anchors label regexes, so
// a ReplicaSet whose name starts with another's does not match the other's
// pods. The name is quoted without backslashes ("[.]" for "."), because
// queries put {{.Pods}} inside double-quoted PromQL strings, where `\.` is
// an invalid escape.
package policy
