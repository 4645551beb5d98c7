// Package rollout holds what the webhook and the router share: the names
// fledge uses on the cluster, the rollout state kept in a Deployment's
// fledge.dev/rollout annotation, and pure helpers over Deployments.
//
// It lives apart so that webhook and router import it without importing each
// other.
package rollout
