package rollout

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
	// LabelTrack tells canary pods apart; its value is TrackCanary.
	LabelTrack = "fledge.dev/track"
	// TrackCanary and TrackStable name the two sides of a rollout.
	TrackCanary = "canary"
	TrackStable = "stable"
	// AnnotationRestartedAt is what `kubectl rollout restart` changes in the
	// pod template; a restart is not a release.
	AnnotationRestartedAt = "kubectl.kubernetes.io/restartedAt"
	// CanarySuffix is appended to a Deployment's name to name its canary.
	CanarySuffix = "-canary"
)

// Commands people send through AnnotationCommand; the router consumes them.
const (
	CommandPromote     = "promote"
	CommandPromoteFull = "promote-full"
	CommandAbort       = "abort"
	CommandPause       = "pause"
	CommandResume      = "resume"
)

// OwnedAnnotations are the keys only fledge may write; the webhook puts back
// what anyone else changes.
var OwnedAnnotations = []string{AnnotationState, AnnotationLast}
