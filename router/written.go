package router

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// written remembers, for each object the router wrote last, the
// resourceVersion it wrote over, or that it created the object. A cache
// that still shows that version (or no object, after a create) has not seen
// the write yet: a plan made from it would be refused with a conflict (or
// AlreadyExists) at best. The write's own watch event reconciles again as
// soon as the cache has it, so a reconcile that is behind does nothing.
type written struct {
	mu   sync.Mutex
	over map[types.NamespacedName]string // "" after a create
}

// record notes a successful write of key over resourceVersion over ("" for
// a create).
func (w *written) record(key types.NamespacedName, over string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.over == nil {
		w.over = map[types.NamespacedName]string{}
	}
	w.over[key] = over
}

// behind reports whether the cache's copy of key, at resourceVersion rv
// (present false when the cache has none), predates the router's last write
// of it. A copy that does not is forgotten: the cache has caught up.
func (w *written) behind(key types.NamespacedName, rv string, present bool) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	over, ok := w.over[key]
	if !ok {
		return false
	}
	if present == (over != "") && (!present || rv == over) {
		return true
	}
	delete(w.over, key)
	return false
}

// forget drops what is remembered of key: the object is gone.
func (w *written) forget(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.over, key)
}
