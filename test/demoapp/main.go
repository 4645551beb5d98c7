// Command demoapp stands in for a pod of the lab's demo Deployments: the lab's
// pod runner starts one per Running pod whose image is fledge/demo:<tag>,
// listening on the pod's IP and container port in the lab's node network, so
// Prometheus has real metrics to scrape and the traffic generator real
// answers to count.
//
// It serves GET / and /metrics (http_requests_total{code} and
// http_request_duration_seconds, for GET / only, so scrapes do not dilute the
// error rate). GET / answers one line naming the version and the pod,
//
//	ok <version> <pod>
//
// or, with a 500, "error <version> <pod>": a client behind a Service counts
// the answers by the pod that gave them (without POD_NAME, the line ends
// after the version). GET /pod answers the pod's name alone and is not
// counted, for probes that must tell pods apart through a Service. Its behaviour comes from the environment, as a
// container's would:
//
//	PORT          port to listen on (required)
//	HOST          address to listen on (default 127.0.0.1; the lab's node
//	              network passes the pod's IP)
//	VERSION       what GET / reports (the runner passes the image tag)
//	POD_NAME      the pod GET / names (the runner passes it, as the
//	              downward API would; POD_NAMESPACE is passed too, unused)
//	ERROR_RATE    share of GET / answered 500, from 0 to 1, chosen at random (default 0)
//	LATENCY       Go duration added to every GET / (default 0)
//	FAIL_AFTER    Go duration: errors start only after this much uptime; with
//	              FAIL_AFTER set and ERROR_RATE unset, every request fails
//	              after it (ERROR_RATE 1), which makes a canary that looks
//	              healthy at first and regresses later
//	FAIL_FILE     path: errors happen only while this file exists (ERROR_RATE
//	              1 when unset), so that whoever runs the app decides when
//	              it regresses, whatever its uptime
//
// A bad value ends the program at once with a message naming the variable.
package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	cfg, err := parseConfig(os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "demoapp: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "demoapp: %v\n", err)
		os.Exit(1)
	}
}

// serve answers on cfg.host:cfg.port until ctx ends, then lets requests in
// flight finish (a pod's container gets SIGTERM and a grace period too).
func serve(ctx context.Context, cfg config) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.host, cfg.port))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           newApp(cfg, time.Now, rand.Float64).handler(),
		ReadHeaderTimeout: 5 * time.Second,
	}
	fmt.Fprintf(os.Stderr, "demoapp: %s serving on %s (error rate %g, latency %s, fail after %s)\n",
		cfg.version, ln.Addr(), cfg.errorRate, cfg.latency, cfg.failAfter)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
