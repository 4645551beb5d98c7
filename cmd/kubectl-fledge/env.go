package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/term"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

// cluster is where the commands find the Kubernetes API and the namespace
// to work in: the kubeconfig and its flags in real use, a fake clientset in
// tests.
type cluster interface {
	Client() (kubernetes.Interface, error)
	// Namespace is -n, else the kubeconfig context's namespace, else "default".
	Namespace() (string, error)
}

// env is what a command runs against: its streams, the cluster and the
// clock. Commands take it instead of reaching for globals, so tests run them
// whole against a fake clientset and a fixed time.
type env struct {
	in          io.Reader
	out, errOut io.Writer
	cluster     cluster
	clock       clock.Clock
	// terminal is true when out is a terminal: --watch then redraws in
	// place instead of appending tables.
	terminal bool
	// color marks ✓ and ✗ in colour; only on a terminal, never when
	// NO_COLOR is set.
	color bool
	// poll is how often a command checks whether the router took it.
	poll time.Duration
}

// newTerminalEnv is the env of a real invocation; the cluster comes from
// the kubeconfig flags, bound when the command tree is built.
func newTerminalEnv(in io.Reader, out, errOut *os.File) *env {
	tty := term.IsTerminal(int(out.Fd()))
	return &env{
		in:       in,
		out:      out,
		errOut:   errOut,
		clock:    clock.RealClock{},
		terminal: tty,
		color:    tty && os.Getenv("NO_COLOR") == "",
		poll:     500 * time.Millisecond,
	}
}

// connect returns the client and the namespace of the command line.
func (e *env) connect() (kubernetes.Interface, string, error) {
	cs, err := e.cluster.Client()
	if err != nil {
		return nil, "", err
	}
	ns, err := e.cluster.Namespace()
	if err != nil {
		return nil, "", err
	}
	return cs, ns, nil
}

// exitError ends the plugin with a given exit code. An empty message means
// the command already said everything on its output.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// exitCode prints err as kubectl does ("error: ...") and maps it to the
// process's exit code: 0 without error, the exitError's code, else 1.
func exitCode(err error, errOut io.Writer) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(errOut, "error: "+ee.msg)
		}
		return ee.code
	}
	fmt.Fprintln(errOut, "error: "+err.Error())
	return 1
}
