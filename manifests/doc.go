// Package manifests is fledge's kustomize base (kustomization.yaml and the
// files it lists) and the examples under examples/. The Go code here only
// generates webhooks.yaml from webhook.Configurations, so the installed
// webhook configurations are the ones the manager itself would register;
// manifests_test.go fails when the committed file is stale.
//
// Regenerate with
//
//	go run ./manifests/gen
//
// from the repository root, or go generate ./manifests.
package manifests

//go:generate go run ./gen -o webhooks.yaml
