// Package router is the controller that runs a rollout: it creates the
// <name>-canary Deployment, sets canary and stable pod counts so the canary
// takes each step's share of the Service's traffic, and ends in a promotion
// or a rollback that cuts the canary, after which the Deployment holds
// the failed revision, paused, its stable ReplicaSet serving everyone.
//
// A reconcile is three verbs: observe (reads), plan (a pure function of what
// was observed, the rollout state, the policy, the health verdict and the
// time) and apply (writes with optimistic concurrency, and events). The
// rollout state lives only in the Deployment's fledge.dev/rollout annotation.
package router
