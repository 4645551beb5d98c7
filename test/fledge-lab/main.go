// Command fledge-lab runs fledge's local lab: a real Kubernetes control plane
// (etcd, kube-apiserver, controller manager, scheduler) with kwok's fake nodes,
// on 127.0.0.1, until Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fledge-dev/fledge/test/lab"
)

const usage = `fledge-lab runs fledge's local lab: a real Kubernetes control plane on 127.0.0.1.

Usage:
  fledge-lab up [flags]    start the lab and keep it running until Ctrl-C or SIGTERM

With --fledge, the lab also runs the fledge manager built from this checkout
(bin/fledge, from "make build"), its webhooks registered with the lab's
apiserver, so fledge can be tried with plain kubectl.

Flags of up:
`

// upOptions are the flags of up.
type upOptions struct {
	lab    lab.Options
	fledge bool
}

func main() {
	if len(os.Args) < 2 || os.Args[1] != "up" {
		fmt.Fprint(os.Stderr, usage)
		upFlags(nil).PrintDefaults()
		os.Exit(2)
	}
	var opts upOptions
	fs := upFlags(&opts)
	_ = fs.Parse(os.Args[2:])
	if err := up(opts); err != nil {
		fmt.Fprintf(os.Stderr, "fledge-lab: %v\n", err)
		os.Exit(1)
	}
}

func upFlags(opts *upOptions) *flag.FlagSet {
	if opts == nil {
		opts = &upOptions{}
	}
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage); fs.PrintDefaults() }
	fs.IntVar(&opts.lab.Nodes, "nodes", 2, "number of fake nodes")
	fs.StringVar(&opts.lab.BinDir, "bin-dir", "", "directory of the lab's programs (default: the checkout's bin/)")
	fs.BoolVar(&opts.fledge, "fledge", false, "also run the fledge manager (bin/fledge) against the lab")
	return fs
}

func up(opts upOptions) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var manager string
	if opts.fledge {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		manager = filepath.Join(filepath.Dir(exe), "fledge")
		if _, err := os.Stat(manager); err != nil {
			return fmt.Errorf("--fledge: %s is missing: run `make build`", manager)
		}
	}

	start := time.Now()
	l, err := lab.Start(ctx, opts.lab)
	if err != nil {
		return err
	}
	defer l.Stop()
	fmt.Printf("fledge-lab: ready in %.1fs with %d nodes; logs in %s\n", time.Since(start).Seconds(), len(l.Nodes), l.Dir)
	if manager != "" {
		f, err := l.StartFledge(ctx, manager)
		if err != nil {
			return err
		}
		fmt.Printf("fledge-lab: fledge is running, webhooks at %s; its log: %s\n", f.WebhookURL, f.Log)
	}
	fmt.Printf("export KUBECONFIG=%s\n", l.Kubeconfig)
	fmt.Println("fledge-lab: press Ctrl-C to stop")
	<-ctx.Done()
	fmt.Println("fledge-lab: stopping")
	return nil
}
