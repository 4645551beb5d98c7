// Package webhook holds fledge's admission webhooks: the mutating webhook on
// Deployment updates in opted-in namespaces, which turns a template change
// into a paused Deployment and a recorded rollout, and the validating webhook
// on policy ConfigMaps.
//
// Each handler decodes the request, calls a pure decision function of
// (old object, new object, user, resolved policy) and encodes the answer; it
// reads nothing but the informer cache. See ARCHITECTURE.md, "Webhook: what
// an UPDATE does".
package webhook
