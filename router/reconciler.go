package router

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/fledge-dev/fledge/policy"
	"github.com/fledge-dev/fledge/rollout"
)

// Analyzer evaluates a rollout's Prometheus checks once. An answer that is
// not a clear pass or fail is an Inconclusive result, never an error.
type Analyzer interface {
	Analyze(ctx context.Context, a *policy.Analysis, s policy.Subject, at time.Time) policy.Evaluation
}

// Reconciler runs rollouts: observe → plan → apply.
type Reconciler struct {
	// Client reads from the manager's cache and writes to the apiserver.
	Client client.Client
	// APIReader reads what the cache does not hold (ReplicaSets, HPAs),
	// only when a rollout needs them.
	APIReader client.Reader
	Events    recorder.EventRecorder
	Clock     clock.PassiveClock
	Analyzer  Analyzer
	Metrics   *Metrics
	// Keys seal the state and evidence the router writes, and tell them
	// from any it did not write, which it never acts on.
	Keys rollout.Keys
	// Workers is how many Deployments are reconciled at once (0: 1). One
	// Deployment is never reconciled by two workers at a time.
	Workers int

	written written
}

// SetupWithManager registers the reconciler: it watches Deployments that
// carry a rollout or a command, their canaries, canary pods, and the
// Namespaces and Services that decide whether a rollout may go on.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("router").
		// A replica that does not lead keeps the router's caches warm, so
		// that a new leader reconciles without first listing every
		// Deployment of the cluster.
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Workers, EnableWarmup: ptr.To(true)}).
		For(&appsv1.Deployment{}, builder.WithPredicates(predicate.NewPredicateFuncs(hasRolloutOrCommand))).
		Owns(&appsv1.Deployment{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(stableOfCanaryPod)).
		// The opt-in label added back resumes the namespace's rollouts at
		// once, not at their next requeue.
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.rolloutsOfNamespace),
			builder.WithPredicates(predicate.LabelChangedPredicate{})).
		// A Service fixed to select the canary lifts a hold at once.
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(r.rolloutsNear)).
		Complete(r)
}

// rolloutsOfNamespace maps a Namespace to the Deployments in it that carry
// a rollout.
func (r *Reconciler) rolloutsOfNamespace(ctx context.Context, obj client.Object) []reconcile.Request {
	return r.rolloutsIn(ctx, obj.GetName())
}

// rolloutsNear maps an object to the Deployments of its namespace that
// carry a rollout.
func (r *Reconciler) rolloutsNear(ctx context.Context, obj client.Object) []reconcile.Request {
	return r.rolloutsIn(ctx, obj.GetNamespace())
}

func (r *Reconciler) rolloutsIn(ctx context.Context, namespace string) []reconcile.Request {
	var ds appsv1.DeploymentList
	if err := r.Client.List(ctx, &ds, client.InNamespace(namespace)); err != nil {
		logf.FromContext(ctx).Error(err, "list deployments", "namespace", namespace)
		return nil
	}
	var out []reconcile.Request
	for _, d := range ds.Items {
		if d.Annotations[rollout.AnnotationState] != "" {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: d.Namespace, Name: d.Name}})
		}
	}
	return out
}

func hasRolloutOrCommand(obj client.Object) bool {
	a := obj.GetAnnotations()
	return a[rollout.AnnotationState] != "" || a[rollout.AnnotationCommand] != ""
}

// stableOfCanaryPod maps a canary pod to its stable Deployment: a restart
// or failure of a canary pod does not always change the canary's status.
func stableOfCanaryPod(_ context.Context, obj client.Object) []reconcile.Request {
	name, ok := rollout.StableOfCanaryPod(obj)
	if !ok {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: name}}}
}

// Reconcile implements reconcile.Reconciler.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	var d appsv1.Deployment
	if err := r.Client.Get(ctx, req.NamespacedName, &d); err != nil {
		if apierrors.IsNotFound(err) {
			// Its canary, owned by it, is garbage-collected.
			r.Metrics.forget(req.Namespace, req.Name)
			r.written.forget(req.NamespacedName)
			r.written.forget(types.NamespacedName{Namespace: req.Namespace, Name: rollout.CanaryName(req.Name)})
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	if rollout.IsCanary(&d) || !d.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	if r.written.behind(req.NamespacedName, d.ResourceVersion, true) {
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	}
	enabled, err := r.namespaceEnabled(ctx, d.Namespace)
	if err != nil || !enabled {
		// The router acts only in opted-in namespaces, whatever the
		// annotations say.
		return ctrl.Result{}, err
	}
	state, err := rollout.OpenState(&d, r.Keys)
	if rejected, ok := errors.AsType[*rollout.RejectedError](err); ok {
		return ctrl.Result{}, r.dropState(ctx, &d, rejected)
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if state == nil {
		return ctrl.Result{}, r.ignoreCommand(ctx, &d)
	}

	o, err := r.observe(ctx, &d, state)
	if errors.Is(err, errBehind) {
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	p := plan(o)
	if err := r.apply(ctx, o, p); err != nil {
		if apierrors.IsConflict(err) {
			// The write that won comes as a watch event, which normally
			// reconciles first; the requeue is a floor.
			log.V(1).Info("conflict; observing again", "error", err.Error())
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		}
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: p.RequeueAfter}, nil
}

// conflictRetry is how soon a reconcile that lost a write to a concurrent
// change observes again, if no watch event brings it back sooner.
const conflictRetry = time.Second

// dropState removes a rollout state that fledge did not write for d
// (ARCHITECTURE.md, "State is authenticated") and says why in a Warning
// Event. Nothing of it is acted on: a canary d owns goes, since no
// rollout fledge knows of runs, and the spec is left as it is; the next
// update of the template decides, as for any Deployment.
func (r *Reconciler) dropState(ctx context.Context, d *appsv1.Deployment, why *rollout.RejectedError) error {
	canary, err := r.canary(ctx, d)
	if err != nil {
		return fmt.Errorf("drop the rollout state of %s/%s: %w", d.Namespace, d.Name, err)
	}
	if canary != nil {
		err := r.Client.Delete(ctx, canary, client.Preconditions{UID: ptr.To(canary.UID)})
		if client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("drop the rollout state of %s/%s: delete its canary: %w", d.Namespace, d.Name, err)
		}
	}
	patched := d.DeepCopy()
	delete(patched.Annotations, rollout.AnnotationState)
	if err := r.Client.Patch(ctx, patched, client.MergeFromWithOptions(d, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("drop the rollout state of %s/%s: %w", d.Namespace, d.Name, err)
	}
	paused := "unpaused"
	if d.Spec.Paused {
		paused = "paused (kubectl rollout resume lifts it)"
	}
	r.Events.Eventf(d, nil, corev1.EventTypeWarning, "StateRejected", "Drop",
		"Removed the rollout state of %s without acting on it: %s. No rollout runs; the Deployment is left %s, and its next template change starts a canary rollout",
		d.Name, why.Why, paused)
	logf.FromContext(ctx).Info("dropped a rollout state fledge did not write", "why", why.Why)
	return nil
}

func (r *Reconciler) namespaceEnabled(ctx context.Context, name string) (bool, error) {
	var ns corev1.Namespace
	if err := r.Client.Get(ctx, client.ObjectKey{Name: name}, &ns); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	return rollout.OptedIn(ns.Labels), nil
}

// ignoreCommand clears a command sent while no rollout runs.
func (r *Reconciler) ignoreCommand(ctx context.Context, d *appsv1.Deployment) error {
	cmd := d.Annotations[rollout.AnnotationCommand]
	if cmd == "" {
		return nil
	}
	patched := d.DeepCopy()
	delete(patched.Annotations, rollout.AnnotationCommand)
	if err := r.Client.Patch(ctx, patched, client.MergeFromWithOptions(d, client.MergeFromWithOptimisticLock{})); err != nil {
		return err
	}
	r.Events.Eventf(d, nil, corev1.EventTypeWarning, "CommandIgnored", "Command", "%s: no rollout of %s is running", cmd, d.Name)
	return nil
}

// observe reads what plan needs.
func (r *Reconciler) observe(ctx context.Context, d *appsv1.Deployment, s *rollout.State) (observed, error) {
	o := observed{
		Now:        r.Clock.Now(),
		Deployment: d,
		State:      s,
		Command:    d.Annotations[rollout.AnnotationCommand],
	}
	canary, err := r.canary(ctx, d)
	if err != nil {
		return o, err // says which Deployment is in the way
	}
	if r.written.behind(canaryKey(d), resourceVersion(canary), canary != nil) {
		return o, errBehind
	}
	if canary != nil {
		if o.CanaryPods, err = r.canaryPods(ctx, d); err != nil {
			return o, fmt.Errorf("list the canary pods of %s/%s: %w", d.Namespace, d.Name, err)
		}
	}
	if canary != nil && !canary.DeletionTimestamp.IsZero() {
		// Deleted by hand, with foreground cascading: its pods go first.
		// It is re-created once it is gone.
		o.CanaryDeleting = true
		canary = nil
	}
	o.Canary = canary
	var evidence *rollout.Evidence
	if canary != nil {
		if evidence, err = rollout.OpenEvidence(canary, r.Keys); err != nil {
			// Evidence fledge did not write for this canary is none at
			// all; the next evaluation writes its own.
			logf.FromContext(ctx).Info("ignoring the canary's evidence", "why", err.Error())
		}
	}
	o.Evidence = evidence.For(s)
	if s.Policy.Capacity == policy.CapacityShift {
		if o.HPA, err = r.hasHPA(ctx, d); err != nil {
			return o, fmt.Errorf("list the HorizontalPodAutoscalers of namespace %s: %w", d.Namespace, err)
		}
	}
	if !s.Phase.Live() {
		return o, nil
	}
	// A live step checks, at every look, that the stable ReplicaSet still
	// serves and that every Service reaches the canary.
	owned, err := r.replicaSets(ctx, d.Namespace, d.Spec.Selector)
	if err != nil {
		return o, fmt.Errorf("list the ReplicaSets of %s/%s: %w", d.Namespace, d.Name, err)
	}
	stable := rollout.ReplicaSetOf(owned, d.UID, s.StableRevision)
	o.StableGone = stable == nil
	if stable != nil {
		o.StableLabels = rollout.PodLabels(&stable.Spec.Template)
	}
	var svcs corev1.ServiceList
	if err := r.Client.List(ctx, &svcs, client.InNamespace(d.Namespace)); err != nil {
		return o, fmt.Errorf("list the Services of namespace %s: %w", d.Namespace, err)
	}
	o.Services = svcs.Items
	if analysisDue(s, o.Evidence, o.Now) && r.Analyzer != nil && canary != nil && stable != nil {
		current := rollout.ReplicaSetOf(owned, canary.UID, rollout.TemplateHash(&canary.Spec.Template))
		if current != nil {
			subject := policy.Subject{
				Namespace: d.Namespace, Deployment: d.Name,
				CanaryPods: policy.PodsRegex(current.Name), StablePods: policy.PodsRegex(stable.Name),
			}
			e := r.Analyzer.Analyze(ctx, s.Policy.Analysis, subject, o.Now)
			o.Evaluation = &e
		}
	}
	return o, nil
}

// errBehind says the cache has not seen the router's last write of the
// canary yet.
var errBehind = errors.New("the cache is behind the router's last write")

func canaryKey(d *appsv1.Deployment) types.NamespacedName {
	return types.NamespacedName{Namespace: d.Namespace, Name: rollout.CanaryName(d.Name)}
}

func resourceVersion(d *appsv1.Deployment) string {
	if d == nil {
		return ""
	}
	return d.ResourceVersion
}

// canary returns the Deployment's canary, or nil. A Deployment of that name
// that fledge does not own is an error a person must resolve.
func (r *Reconciler) canary(ctx context.Context, d *appsv1.Deployment) (*appsv1.Deployment, error) {
	var c appsv1.Deployment
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: d.Namespace, Name: rollout.CanaryName(d.Name)}, &c)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the canary %s/%s: %w", d.Namespace, rollout.CanaryName(d.Name), err)
	}
	if !metav1.IsControlledBy(&c, d) {
		return nil, fmt.Errorf("deployment %s/%s exists and is not the canary of %s: rename it or abort the rollout", c.Namespace, c.Name, d.Name)
	}
	return &c, nil
}

func (r *Reconciler) canaryPods(ctx context.Context, d *appsv1.Deployment) ([]corev1.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(rollout.CanarySelector(d))
	if err != nil {
		return nil, err
	}
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(d.Namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, err
	}
	live := pods.Items[:0]
	for _, p := range pods.Items {
		if p.DeletionTimestamp.IsZero() {
			live = append(live, p)
		}
	}
	return live, nil
}

func (r *Reconciler) hasHPA(ctx context.Context, d *appsv1.Deployment) (bool, error) {
	var hpas autoscalingv2.HorizontalPodAutoscalerList
	if err := r.APIReader.List(ctx, &hpas, client.InNamespace(d.Namespace), fromWatchCache()); err != nil {
		return false, err
	}
	for _, h := range hpas.Items {
		ref := h.Spec.ScaleTargetRef
		if ref.Kind == "Deployment" && ref.Name == d.Name {
			return true, nil
		}
	}
	return false, nil
}

// replicaSets lists the ReplicaSets matching a selector, from the
// apiserver's watch cache.
func (r *Reconciler) replicaSets(ctx context.Context, ns string, selector *metav1.LabelSelector) ([]appsv1.ReplicaSet, error) {
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		return nil, err
	}
	var rss appsv1.ReplicaSetList
	if err := r.APIReader.List(ctx, &rss, client.InNamespace(ns), client.MatchingLabelsSelector{Selector: sel}, fromWatchCache()); err != nil {
		return nil, err
	}
	return rss.Items, nil
}

// fromWatchCache has a LIST served from the apiserver's watch cache
// (resourceVersion "0"), as fresh as an informer's copy of the objects
// would be, rather than read through to etcd: at 100 rollouts at once that
// was 31 ms a LIST, and 0.7 ms from the watch cache (make bench-scale). What
// the router reads this way only ever lags: a ReplicaSet just deleted is
// seen gone at the next look, and a canary's new ReplicaSet not yet seen
// waits one look for its analysis. A fresh value each call: the client
// writes the selectors into it.
func fromWatchCache() *client.ListOptions {
	return &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: "0"}}
}

// apply carries out a plan: canary first (a rollback cuts traffic before
// anything else), then the stable Deployment in one optimistic-concurrency
// update, then the canary's removal, then Events and metrics.
func (r *Reconciler) apply(ctx context.Context, o observed, p planned) error {
	d := o.Deployment
	if p.CanaryReplicas != nil && !o.CanaryDeleting {
		if err := r.ensureCanary(ctx, d, o.Canary, o.State.Attempt, *p.CanaryReplicas, p.Evidence); err != nil {
			return fmt.Errorf("set canary of %s/%s to %d pods: %w", d.Namespace, d.Name, *p.CanaryReplicas, err)
		}
	}
	if err := r.updateStable(ctx, d, p); err != nil {
		return fmt.Errorf("update %s/%s: %w", d.Namespace, d.Name, err)
	}
	if p.CanaryReplicas == nil && o.Canary != nil && !o.CanaryDeleting {
		err := r.Client.Delete(ctx, o.Canary, client.Preconditions{UID: ptr.To(o.Canary.UID)})
		if client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete canary %s/%s: %w", o.Canary.Namespace, o.Canary.Name, err)
		}
	}

	for _, e := range p.Events {
		r.Events.Eventf(d, nil, e.Type, e.Reason, e.action(), "%s", e.Message)
		logf.FromContext(ctx).Info(e.Message, "reason", e.Reason)
	}
	r.Metrics.cut(o, p)
	if o.Evaluation != nil && p.Evidence != nil {
		r.Metrics.evaluation(p.Evidence.Checks)
	}
	if p.Outcome != nil {
		r.Metrics.outcome(p.Outcome)
		r.Metrics.forget(d.Namespace, d.Name)
	} else if p.State != nil {
		var canary int32
		if o.Canary != nil {
			canary = o.Canary.Status.ReadyReplicas
		}
		ev := p.Evidence
		if ev == nil {
			ev = &o.Evidence
		}
		r.Metrics.observeRollout(d.Namespace, d.Name, p.State, p.State.TargetWeight(), rollout.EffectiveWeight(canary, d.Status.ReadyReplicas), ev)
	}
	return nil
}

// ensureCanary creates or updates the canary of attempt with replicas
// pods and, when set, the evidence of the last evaluation.
// Evidence is sealed for the canary's UID, which a canary only has once
// created: a new canary gets its evidence in a second write.
func (r *Reconciler) ensureCanary(ctx context.Context, d, existing *appsv1.Deployment, attempt, replicas int32, evidence *rollout.Evidence) error {
	if existing == nil {
		if replicas == 0 {
			return nil
		}
		c := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: rollout.CanaryName(d.Name), Namespace: d.Namespace}}
		rollout.SetCanarySpec(c, d, attempt, replicas)
		if err := controllerutil.SetControllerReference(d, c, r.Client.Scheme()); err != nil {
			return err
		}
		if err := r.Client.Create(ctx, c); err != nil {
			return err
		}
		r.written.record(client.ObjectKeyFromObject(c), "")
		if evidence == nil {
			return nil
		}
		existing = c
	}
	c := existing.DeepCopy()
	rollout.SetCanarySpec(c, d, attempt, replicas)
	if evidence != nil {
		encoded, err := rollout.SealEvidence(evidence, r.Keys, c.UID)
		if err != nil {
			return err
		}
		c.Annotations[rollout.AnnotationEvidence] = encoded
	}
	if equalCanary(existing, c) {
		return nil
	}
	// A patch of what changed, at the version read: the cache holds
	// Deployments without what fledge never reads (StripUnread), which an
	// update would erase.
	if err := r.Client.Patch(ctx, c, client.MergeFromWithOptions(existing, client.MergeFromWithOptimisticLock{})); err != nil {
		return err
	}
	r.written.record(client.ObjectKeyFromObject(c), existing.ResourceVersion)
	return nil
}

func equalCanary(a, b *appsv1.Deployment) bool {
	return ptr.Deref(a.Spec.Replicas, 0) == ptr.Deref(b.Spec.Replicas, 0) &&
		rollout.TemplateHash(&a.Spec.Template) == rollout.TemplateHash(&b.Spec.Template) &&
		rollout.Skipped(a) &&
		a.Annotations[rollout.AnnotationEvidence] == b.Annotations[rollout.AnnotationEvidence] &&
		a.Spec.MinReadySeconds == b.Spec.MinReadySeconds
}

// updateStable writes the stable Deployment's part of a plan, as a patch of
// what changed (never the whole object: the cached copy lacks what
// StripUnread took, the user's last-applied configuration among it), with
// the resourceVersion it was read at: a concurrent change makes it fail
// with a conflict and the reconcile starts over from a fresh read.
func (r *Reconciler) updateStable(ctx context.Context, d *appsv1.Deployment, p planned) error {
	u := d.DeepCopy()
	if u.Annotations == nil {
		u.Annotations = map[string]string{}
	}
	if p.State != nil {
		// Sealed again at every write, so a state sealed with a key being
		// rotated out is re-sealed with the signing key.
		encoded, err := rollout.SealState(p.State, r.Keys, d.UID)
		if err != nil {
			return err
		}
		u.Annotations[rollout.AnnotationState] = encoded
	} else {
		delete(u.Annotations, rollout.AnnotationState)
	}
	if p.Outcome != nil {
		encoded, err := p.Outcome.Encode()
		if err != nil {
			return err
		}
		u.Annotations[rollout.AnnotationLast] = encoded
	}
	if p.ClearCommand {
		delete(u.Annotations, rollout.AnnotationCommand)
	}
	u.Spec.Paused = p.Paused
	if p.StableReplicas != nil {
		u.Spec.Replicas = p.StableReplicas
	}
	if equalStable(d, u) {
		return nil
	}
	if err := r.Client.Patch(ctx, u, client.MergeFromWithOptions(d, client.MergeFromWithOptimisticLock{})); err != nil {
		return err
	}
	r.written.record(client.ObjectKeyFromObject(d), d.ResourceVersion)
	return nil
}

func equalStable(a, b *appsv1.Deployment) bool {
	return a.Spec.Paused == b.Spec.Paused &&
		ptr.Deref(a.Spec.Replicas, 1) == ptr.Deref(b.Spec.Replicas, 1) &&
		rollout.TemplateHash(&a.Spec.Template) == rollout.TemplateHash(&b.Spec.Template) &&
		a.Annotations[rollout.AnnotationState] == b.Annotations[rollout.AnnotationState] &&
		a.Annotations[rollout.AnnotationLast] == b.Annotations[rollout.AnnotationLast] &&
		a.Annotations[rollout.AnnotationCommand] == b.Annotations[rollout.AnnotationCommand]
}
