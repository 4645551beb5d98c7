package rollout

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// Names on the cluster (ARCHITECTURE.md, "Names on the cluster").
const (
	// LabelEnabled on a Namespace opts it in ("true").
	LabelEnabled = "fledge.dev/enabled"
	// AnnotationSkip on a Deployment ("true") lets it roll out natively.
	AnnotationSkip = "fledge.dev/skip"
	// AnnotationState holds the JSON State of the rollout in progress.
	AnnotationState = "fledge.dev/rollout"
	// AnnotationLast holds the JSON Outcome of the last finished rollout.
	AnnotationLast = "fledge.dev/last-rollout"
	// AnnotationCommand carries a person's command to the router.
	AnnotationCommand = "fledge.dev/command"
	// AnnotationEvidence, on the canary Deployment, holds the JSON Evidence
	// of the last evaluation of the Prometheus checks: it changes at every
	// evaluation, so it is kept off the stable Deployment, whose every
	// annotation change bumps its generation.
	AnnotationEvidence = "fledge.dev/analysis"
	// LabelTrack tells canary pods apart; its value is TrackCanary.
	LabelTrack = "fledge.dev/track"
	// LabelAttempt on canary pods is the number of the rollout they belong
	// to (State.Attempt): pods and metrics of an earlier attempt of the same
	// revision are never this attempt's evidence.
	LabelAttempt = "fledge.dev/attempt"
	// TrackCanary and TrackStable name the two sides of a rollout.
	TrackCanary = "canary"
	TrackStable = "stable"
	// AnnotationRestartedAt is what `kubectl rollout restart` changes in the
	// pod template; a restart is not a release.
	AnnotationRestartedAt = "kubectl.kubernetes.io/restartedAt"
	// canarySuffix is appended to a Deployment's name to name its canary
	// (CanaryName, StableName).
	canarySuffix = "-canary"
)

// Commands people send through AnnotationCommand; the router consumes them.
const (
	CommandPromote     = "promote"
	CommandPromoteFull = "promote-full"
	CommandAbort       = "abort"
	CommandPause       = "pause"
	CommandResume      = "resume"
	// CommandRetry starts a new attempt of a failed revision the Deployment
	// holds; the webhook takes it, since it resolves policies.
	CommandRetry = "retry"
)

// Commands lists the commands, for messages.
const Commands = "promote, promote-full, abort, pause, resume or retry"

// OwnedAnnotations are the keys only fledge may write; the webhook puts back
// what anyone else changes.
var OwnedAnnotations = []string{AnnotationState, AnnotationLast}

// OptedIn reports whether a Namespace with these labels opted in to
// fledge (LabelEnabled: "true"): the webhook and the router act only there.
func OptedIn(namespaceLabels map[string]string) bool {
	return namespaceLabels[LabelEnabled] == "true"
}

// Skipped reports whether a Deployment carries AnnotationSkip: "true": it
// rolls out natively, and a canary carries it so that the webhook never
// takes a change to it for a release.
func Skipped(d metav1.Object) bool {
	return d.GetAnnotations()[AnnotationSkip] == "true"
}
