package main

import (
	"slices"
	"strings"
	"testing"
)

func TestCommandTree(t *testing.T) {
	root := newRootCommand(newHarness().e)
	var names []string
	for _, c := range root.Commands() {
		names = append(names, c.Name())
		for _, sub := range c.Commands() {
			names = append(names, c.Name()+" "+sub.Name())
		}
	}
	want := []string{"abort", "diagnose", "list", "pause", "policy", "policy lint", "promote", "resume", "retry", "status", "undo"}
	if !slices.Equal(names, want) {
		t.Errorf("commands %v, want %v", names, want)
	}
}

// The root help names every command in its examples, undo and retry among
// them, and says what holding a failed revision means.
func TestRootHelpListsUndoAndRetry(t *testing.T) {
	h := newHarness()
	if code := h.run(t, "--help"); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	for _, want := range []string{
		"  kubectl fledge undo web\n",
		"  kubectl fledge retry web\n",
		"After a rollback or an abort the Deployment holds the failed revision",
		"  undo        Put the stable template back into a Deployment and unpause it\n",
		"  retry       Roll out the failed revision NAME holds again, as a new attempt on fresh evidence\n",
	} {
		if !strings.Contains(h.out.String(), want) {
			t.Errorf("root --help lacks %q:\n%s", want, h.out)
		}
	}
}

// The connection flags work as kubectl's: run binds them to every command.
func TestKubectlFlags(t *testing.T) {
	h := newHarness()
	if code := run(t.Context(), []string{"status", "--help"}, h.e); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	for _, flag := range []string{"--kubeconfig string", "-n, --namespace string", "--context string", "-s, --server string", "--token string", "--as string"} {
		if !strings.Contains(h.out.String(), flag) {
			t.Errorf("status --help lacks %q", flag)
		}
	}
	if !strings.Contains(h.out.String(), "kubectl fledge status NAME [flags]") {
		t.Errorf("usage does not read as a kubectl plugin:\n%s", h.out)
	}
}

func TestUsageErrorsExit1(t *testing.T) {
	h := newHarness()
	if code := h.run(t, "status"); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if want := "error: accepts 1 arg(s), received 0\n"; h.errOut.String() != want {
		t.Errorf("stderr %q, want %q", h.errOut, want)
	}
}

func TestColourOnlyOnTheMarks(t *testing.T) {
	in := "a ✓\nb ✗\n▶ 2\n"
	if got := colourise(in, false); got != in {
		t.Errorf("colour off changed the text: %q", got)
	}
	want := "a \x1b[32m✓\x1b[0m\nb \x1b[31m✗\x1b[0m\n\x1b[1;36m▶\x1b[0m 2\n"
	if got := colourise(in, true); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestScreenOnATerminalRedrawsInPlace(t *testing.T) {
	h := newHarness()
	h.e.terminal = true
	s := &screen{e: h.e}
	s.show("one\n")
	s.show("two\n")
	want := "\x1b[H\x1b[2J" + "\x1b[Hone\x1b[K\n\x1b[J" + "\x1b[Htwo\x1b[K\n\x1b[J"
	if h.out.String() != want {
		t.Errorf("got %q, want %q", h.out, want)
	}
}
