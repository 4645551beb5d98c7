package lab

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"
)

// Run is the TestMain of a package whose tests share one lab: it starts the
// lab, stores it in *shared, runs each setup (for example starting fledge),
// runs the tests, prints the tail of every component's log when a test
// failed, and stops the lab.
//
//	var theLab *lab.Lab
//	func TestMain(m *testing.M) { os.Exit(lab.Run(m, lab.Options{}, &theLab)) }
//
// With -short no lab is started and no test of the package runs.
func Run(m *testing.M, opts Options, shared **Lab, setup ...func(context.Context, *Lab) error) int {
	flag.Parse()
	if testing.Short() {
		fmt.Println("lab tests skipped in -short mode")
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	l, err := Start(ctx, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "lab: %v\n", err)
		return 1
	}
	fmt.Printf("lab: started in %.1fs (%s)\n", time.Since(start).Seconds(), l.Dir)
	defer l.Stop()
	for _, s := range setup {
		if err := s(ctx, l); err != nil {
			fmt.Fprintf(os.Stderr, "lab: setup: %v\n%s", err, l.LogTails(30))
			return 1
		}
	}
	*shared = l
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "lab: a test failed; the components said:\n%s", l.LogTails(30))
	}
	return code
}

// WithFledge is a setup for Run: it builds the manager of this checkout into
// the lab's directory and runs it against the lab (Lab.StartFledge).
func WithFledge(ctx context.Context, l *Lab) error {
	bin, err := BuildFledge(ctx, l.Dir)
	if err != nil {
		return err
	}
	_, err = l.StartFledge(ctx, bin)
	return err
}
