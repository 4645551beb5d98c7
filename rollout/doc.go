// Package rollout holds what the webhook and the router share: the names
// fledge uses on the cluster, the rollout state kept in a Deployment's
// fledge.dev/rollout annotation, and pure helpers over Deployments.
//
// It is the one owner of a rollout's vocabulary: what a canary is (its
// name, selector, template and track labels: canary.go), the target and
// effective weight (weights.go), what each phase means (state.go) and what a
// rollout at a step is waiting for (waiting.go). The router, the webhook,
// the plugin and the lab use these instead of deriving them again.
//
// It lives apart so that webhook and router import it without importing each
// other.
package rollout
