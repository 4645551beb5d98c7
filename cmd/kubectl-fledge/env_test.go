package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"
)

// fakeCluster serves a fake clientset and a fixed namespace.
type fakeCluster struct {
	cs *fake.Clientset
	ns string
}

func (f fakeCluster) Client() (kubernetes.Interface, error) { return f.cs, nil }
func (f fakeCluster) Namespace() (string, error)            { return f.ns, nil }

// harness runs the plugin's commands against a fake clientset in team-a,
// at the fixed time now, and keeps what they print.
type harness struct {
	cs          *fake.Clientset
	e           *env
	out, errOut *syncBuffer
}

func newHarness(objects ...runtime.Object) *harness {
	h := &harness{cs: fake.NewClientset(objects...), out: &syncBuffer{}, errOut: &syncBuffer{}}
	h.e = &env{
		in:      strings.NewReader(""),
		out:     h.out,
		errOut:  h.errOut,
		cluster: fakeCluster{cs: h.cs, ns: "team-a"},
		clock:   clocktesting.NewFakeClock(now),
		poll:    10 * time.Millisecond,
	}
	return h
}

// run executes one command line and returns its exit code.
func (h *harness) run(t *testing.T, args ...string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	root := newRootCommand(h.e)
	root.SetArgs(args)
	return exitCode(root.ExecuteContext(ctx), h.errOut)
}

// watchesStarted is closed once n watches of Deployments were opened: a
// change made before then could fall between the informers' list and watch,
// which the fake tracker does not replay.
func (h *harness) watchesStarted(n int) <-chan struct{} {
	started := make(chan struct{})
	var mu sync.Mutex
	count := 0
	h.cs.PrependWatchReactor("deployments", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := h.cs.Tracker().Watch(a.GetResource(), a.GetNamespace())
		if err != nil {
			return false, nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		if count++; count == n {
			close(started)
		}
		return true, w, nil
	})
	return started
}

// syncBuffer is a bytes.Buffer safe for a command writing while a test
// goroutine plays the router.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
