package main

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// deploymentWatch keeps the latest copies of a few Deployments and signals
// every change to any of them. An informer per name (a field selector on
// metadata.name) relists and rewatches on its own when a watch expires, so
// `status --watch` survives apiserver restarts and long waits.
type deploymentWatch struct {
	namespace string
	stores    []cache.Store
	changed   chan struct{}
}

// watchDeployments starts watching the named Deployments of namespace until
// ctx ends, and returns once their first lists arrived.
func watchDeployments(ctx context.Context, cs kubernetes.Interface, namespace string, names ...string) (*deploymentWatch, error) {
	w := &deploymentWatch{namespace: namespace, changed: make(chan struct{}, 1)}
	notify := func() {
		select {
		case w.changed <- struct{}{}:
		default: // a signal is already pending; the reader sees the latest state
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
		DeleteFunc: func(any) { notify() },
	}
	synced := make([]cache.InformerSynced, 0, len(names))
	for _, name := range names {
		store, informer := cache.NewInformerWithOptions(cache.InformerOptions{
			ListerWatcher: namedDeployments(cs, namespace, name),
			ObjectType:    &appsv1.Deployment{},
			Handler:       handler,
		})
		go informer.RunWithContext(ctx)
		w.stores = append(w.stores, store)
		synced = append(synced, informer.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil, fmt.Errorf("watch deployments in namespace %s: %w", namespace, context.Cause(ctx))
	}
	return w, nil
}

// namedDeployments lists and watches one Deployment by name.
func namedDeployments(cs kubernetes.Interface, namespace, name string) cache.ListerWatcher {
	selector := fields.OneTermEqualSelector("metadata.name", name).String()
	// The wrapper lets a client that cannot stream lists (the fake
	// clientset of the tests) fall back to list and watch.
	return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = selector
			return cs.AppsV1().Deployments(namespace).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = selector
			return cs.AppsV1().Deployments(namespace).Watch(ctx, o)
		},
	}, cs)
}

// get returns the latest copy of the named Deployment, or nil when it does
// not exist. The copy is shared with the informer: read it, never change it.
func (w *deploymentWatch) get(name string) *appsv1.Deployment {
	for _, s := range w.stores {
		if obj, ok, _ := s.GetByKey(w.namespace + "/" + name); ok {
			if d, isDeployment := obj.(*appsv1.Deployment); isDeployment {
				return d
			}
		}
	}
	return nil
}

// screen shows successive renderings of a status: on a terminal it redraws
// in place; elsewhere (a pipe, a CI log) it appends each new table after a
// blank line.
type screen struct {
	e     *env
	shown int
}

// Terminal control: cursor home, clear to the end of the line, clear to the
// end of the screen. Overwriting line by line does not flicker as clearing
// the whole screen first does.
const (
	cursorHome   = "\x1b[H"
	clearLine    = "\x1b[K"
	clearToEnd   = "\x1b[J"
	clearDisplay = "\x1b[2J"
)

func (s *screen) show(text string) {
	text = colourise(text, s.e.color)
	if s.e.terminal {
		if s.shown == 0 {
			fmt.Fprint(s.e.out, cursorHome+clearDisplay)
		}
		fmt.Fprint(s.e.out, cursorHome+lineEnds(text, clearLine)+clearToEnd)
	} else {
		if s.shown > 0 {
			fmt.Fprintln(s.e.out)
		}
		fmt.Fprint(s.e.out, text)
	}
	s.shown++
}

// lineEnds puts suffix before every newline of text.
func lineEnds(text, suffix string) string {
	out := make([]byte, 0, len(text)+len(suffix)*32)
	for i := 0; i < len(text); i++ {
		if text[i] == '\n' {
			out = append(out, suffix...)
		}
		out = append(out, text[i])
	}
	return string(out)
}
