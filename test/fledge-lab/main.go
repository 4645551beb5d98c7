// Command fledge-lab runs fledge's local lab: a real Kubernetes control plane
// (etcd, kube-apiserver, controller manager, scheduler) with kwok's fake nodes,
// on 127.0.0.1, until Ctrl-C; and sends traffic to the lab's demo Services.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/fledge-dev/fledge/rollout"
	"github.com/fledge-dev/fledge/test/lab"
)

const usage = `fledge-lab runs fledge's local lab: a real Kubernetes control plane on 127.0.0.1,
and a real data plane: a node network (a network namespace of its own) with
kube-proxy in it, pods on their own IPs from 198.18.0.0/16 and Services on
ClusterIPs from 198.19.0.0/16. It needs Linux, root, ip and nft (iptables for
--proxy-mode iptables); make tools installs nftables and iptables on Debian.

Usage:
  fledge-lab up [flags]         start the lab and keep it running until Ctrl-C or SIGTERM
  fledge-lab traffic [flags]    send requests to a Service of a running lab, as its users would
  fledge-lab demo [flags]       the demo: a healthy release promoted, a broken one rolled back at 50%, held, undone

With --fledge, the lab also runs the fledge manager built from this checkout
(bin/fledge, from "make build"), its webhooks registered with the lab's
apiserver, so fledge can be tried with plain kubectl.

With --prometheus, the lab also runs Prometheus, and stands in for every
Running pod of the image fledge/demo:<tag> with the demo app (bin/demoapp),
listening on the pod's IP and port in the node network; Prometheus scrapes
the pods annotated prometheus.io/scrape there, with the labels namespace,
pod and track.

traffic sends --rps requests a second to a Service's ClusterIP and first
port, from the host through the lab's node network, where kube-proxy picks a
ready pod for each new connection: with --connections new (the default) a
new TCP connection per request, with keepalive:N a fixed pool of N
persistent HTTP/1.1 connections that the requests take in turn, as a
service's client pool does (kube-proxy balances each connection once, when
it opens). It counts the answers by the pod that gave them (the demo
app names its pod and version) and tells canary from stable by
--track-by: label:KEY=VALUE (a pod with that label is canary; the default,
label:fledge.dev/track=canary, is fledge's) or image:TAG (a pod answering
that version, its image tag, is canary), so any tool's pods can be
measured. It prints one line a second with the requests and errors of each
track and the canary's share, and a summary with the split by pod.

With --json, traffic prints those lines on stderr and, at the end, one JSON
object on stdout:

  {"service": "NAMESPACE/NAME", "rps": N, "connections": "new|keepalive:N",
   "trackBy": "label:KEY=VALUE|image:TAG", "connectionsOpened": N,
   "total": PERIOD, "seconds": [PERIOD, ...]}

where each PERIOD (the whole run, then each second by completion time) is

  {"from": RFC 3339 time, "to": RFC 3339 time,
   "requests": N, "errors": N,
   "tracks": {"stable": TRACK, "canary": TRACK},
   "untracked": {"requests": N, "errors": N},
   "unanswered": N,
   "pods": {"POD": {"requests": N, "errors": N}, ...}}
  TRACK = {"requests": N, "errors": N, "share": 0 to 1}

errors are non-2xx answers and failed requests; share is of the requests
answered by a pod of a known track; untracked are answers of pods whose
labels traffic has not seen yet (label: only; at most a pod's first
milliseconds); unanswered are requests no pod answered or whose answer
names no pod (refused: no ready endpoint; reset; timed out), all errors;
requests is the sum of the tracks, untracked and unanswered; pods are the
answers by the pod that gave them; connectionsOpened counts the TCP
connections traffic opened, which kube-proxy balanced.

demo starts a lab with fledge and Prometheus, applies web v1 and sends it
traffic, then releases a healthy v2 and a v3 that breaks after a while, with
kubectl, showing each rollout live with kubectl fledge status; after v3's
rollback it shows web holding v3 (paused, v2 serving, a re-apply releasing
nothing) and puts v2 back with kubectl fledge undo; it ends with a summary and
stops everything it started. It needs bin/fledge,
bin/kubectl-fledge and bin/demoapp ("make build").
`

func main() {
	if len(os.Args) < 2 {
		printUsage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "up":
		var opts upOptions
		_ = upFlags(&opts).Parse(os.Args[2:])
		err = up(ctx, opts)
	case "traffic":
		var opts trafficOptions
		_ = trafficFlags(&opts).Parse(os.Args[2:])
		err = traffic(ctx, opts, os.Stdout, os.Stderr)
	case "demo":
		var opts demoOptions
		_ = demoFlags(&opts).Parse(os.Args[2:])
		err = demo(ctx, opts, os.Stdout, os.Stderr)
	default:
		printUsage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "fledge-lab: %v\n", err)
		os.Exit(1)
	}
}

// printUsage prints the usage and the flags of every command.
func printUsage() {
	fmt.Fprint(os.Stderr, usage)
	fmt.Fprintln(os.Stderr, "\nFlags of up:")
	upFlags(&upOptions{}).PrintDefaults()
	fmt.Fprintln(os.Stderr, "\nFlags of traffic:")
	trafficFlags(&trafficOptions{}).PrintDefaults()
	fmt.Fprintln(os.Stderr, "\nFlags of demo:")
	demoFlags(&demoOptions{}).PrintDefaults()
}

// upOptions are the flags of up.
type upOptions struct {
	lab        lab.Options
	fledge     bool
	prometheus bool
}

func upFlags(opts *upOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	fs.Usage = printUsage
	fs.IntVar(&opts.lab.Nodes, "nodes", 2, "number of fake nodes")
	fs.StringVar(&opts.lab.BinDir, "bin-dir", "", "directory of the lab's programs (default: the checkout's bin/)")
	fs.BoolVar(&opts.fledge, "fledge", false, "also run the fledge manager (bin/fledge) against the lab")
	fs.BoolVar(&opts.prometheus, "prometheus", false, "also run Prometheus and the demo app (bin/demoapp) for fledge/demo pods")
	fs.StringVar(&opts.lab.ProxyMode, "proxy-mode", "nftables", "kube-proxy's mode in the node network: nftables or iptables")
	return fs
}

// beside returns the path of a program built next to fledge-lab ("make build").
func beside(flag, name string) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	path := filepath.Join(filepath.Dir(exe), name)
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("--%s: %s is missing: run `make build`", flag, path)
	}
	return path, nil
}

func up(ctx context.Context, opts upOptions) error {
	var manager string
	if opts.fledge {
		var err error
		if manager, err = beside("fledge", "fledge"); err != nil {
			return err
		}
	}
	if opts.prometheus {
		demo, err := beside("prometheus", "demoapp")
		if err != nil {
			return err
		}
		opts.lab.DemoApp, opts.lab.Prometheus = demo, true
	}

	start := time.Now()
	l, err := lab.Start(ctx, opts.lab)
	if err != nil {
		return err
	}
	defer l.Stop()
	fmt.Printf("fledge-lab: ready in %.1fs with %d nodes; logs in %s\n", time.Since(start).Seconds(), len(l.Nodes), l.Dir)
	netns, _ := l.NodeNetwork()
	pods, services := l.AddressBlocks()
	fmt.Printf("fledge-lab: node network %s with kube-proxy (%s): pods on %s, Services on %s\n", netns, l.ProxyMode(), pods, services)
	if manager != "" {
		f, err := l.StartFledge(ctx, manager)
		if err != nil {
			return err
		}
		fmt.Printf("fledge-lab: fledge is running, webhooks at %s; its log: %s\n", f.WebhookURL, f.Log)
	}
	if opts.prometheus {
		fmt.Printf("fledge-lab: pods of image %s:<tag> run the demo app on their own IPs in the node network %s; their log: %s\n",
			lab.DemoImage, netns, filepath.Join(l.Dir, "pods.log"))
		fmt.Printf("Prometheus: %s\n", l.PrometheusURL)
	}
	fmt.Printf("export KUBECONFIG=%s\n", l.Kubeconfig)
	fmt.Println("fledge-lab: press Ctrl-C to stop")
	<-ctx.Done()
	fmt.Println("fledge-lab: stopping")
	return nil
}

// trafficOptions are the flags of traffic.
type trafficOptions struct {
	namespace   string
	service     string
	rps         int
	duration    time.Duration
	kubeconfig  string
	connections string // lab.ParseConnections
	trackBy     string // lab.ParseTrackBy
	json        bool
}

func trafficFlags(opts *trafficOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("traffic", flag.ExitOnError)
	fs.Usage = printUsage
	fs.StringVar(&opts.namespace, "namespace", "default", "namespace of the Service")
	fs.StringVar(&opts.service, "service", "", "the Service to send requests to (required)")
	fs.IntVar(&opts.rps, "rps", 100, fmt.Sprintf("requests per second, 1 to %d", lab.MaxRPS))
	fs.DurationVar(&opts.duration, "duration", 0, "how long to send (default: until Ctrl-C)")
	fs.StringVar(&opts.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the lab (the one fledge-lab up prints)")
	fs.StringVar(&opts.connections, "connections", "new", fmt.Sprintf("new (a TCP connection per request) or keepalive:N (a fixed pool of N kept-alive connections taken in turn, N from 1 to %d)", lab.MaxKeepAlive))
	fs.StringVar(&opts.trackBy, "track-by", lab.DefaultTrackBy.String(), "how to tell a canary pod: label:KEY=VALUE (it has that label) or image:TAG (it answers that version)")
	fs.BoolVar(&opts.json, "json", false, "print one JSON summary on stdout at the end (the lines a second go to stderr)")
	return fs
}

// traffic runs the generator, printing a line a second and a summary, or
// with --json the lines on stderr and the summary as JSON on stdout.
func traffic(ctx context.Context, opts trafficOptions, stdout, stderr io.Writer) error {
	if opts.service == "" {
		return errors.New("traffic: --service is required")
	}
	if opts.rps < 1 || opts.rps > lab.MaxRPS {
		return fmt.Errorf("traffic: --rps %d is not between 1 and %d", opts.rps, lab.MaxRPS)
	}
	connections, err := lab.ParseConnections(opts.connections)
	if err != nil {
		return fmt.Errorf("traffic: %w", err)
	}
	trackBy, err := lab.ParseTrackBy(opts.trackBy)
	if err != nil {
		return fmt.Errorf("traffic: %w", err)
	}
	if opts.kubeconfig == "" {
		return errors.New("traffic: no kubeconfig: pass --kubeconfig or set KUBECONFIG to the one fledge-lab up prints")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", opts.kubeconfig)
	if err != nil {
		return fmt.Errorf("traffic: %w", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("traffic: %w", err)
	}
	if opts.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.duration)
		defer cancel()
	}
	lines := stdout
	if opts.json {
		lines = stderr
	}
	t := lab.NewTraffic(client, opts.namespace, opts.service, opts.rps)
	t.Connections, t.TrackBy = connections, trackBy
	t.OnSecond = func(s lab.TrafficStats) { fmt.Fprintf(lines, "%s %s\n", s.From.Format("15:04:05"), s) }
	fmt.Fprintf(lines, "fledge-lab: sending %d requests a second to service %s/%s on %s connections, canary by %s\n",
		opts.rps, opts.namespace, opts.service, connections, trackBy)
	if err := t.Run(ctx); err != nil {
		return err
	}
	total := t.Snapshot()
	if opts.json {
		return writeReport(stdout, newReport(opts.namespace+"/"+opts.service, opts.rps, connections, trackBy, t.Opened(), total, t.Seconds()))
	}
	fmt.Fprintln(stdout, summary(total))
	fmt.Fprintln(stdout, split(total, t.Opened()))
	return nil
}

// summary is the last line but one of traffic: what users got in all.
func summary(s lab.TrafficStats) string {
	if s.Requests() == 0 {
		return "fledge-lab: no requests were sent"
	}
	errRate := 100 * float64(s.Errors()) / float64(s.Requests())
	return fmt.Sprintf("fledge-lab: %d requests in %.1fs: %s; users saw %d errors (%.1f%%)",
		s.Requests(), s.To.Sub(s.From).Seconds(), s, s.Errors(), errRate)
}

// split is the last line of traffic: the answers by pod, and how many
// connections kube-proxy balanced them over.
func split(s lab.TrafficStats, opened int) string {
	answered := 0
	for _, c := range s.Pods {
		answered += c.Requests
	}
	var parts []string
	for _, pod := range s.PodNames() {
		c := s.Pods[pod]
		parts = append(parts, fmt.Sprintf("%s %d req %d err (%.1f%%)", pod, c.Requests, c.Errors, 100*float64(c.Requests)/float64(answered)))
	}
	if len(parts) == 0 {
		parts = append(parts, "no pod answered")
	}
	return fmt.Sprintf("fledge-lab: by pod: %s; over %d connections", strings.Join(parts, ", "), opened)
}

// report is the JSON summary of traffic (its schema is in the usage).
type report struct {
	Service           string `json:"service"`
	RPS               int    `json:"rps"`
	Connections       string `json:"connections"`
	TrackBy           string `json:"trackBy"`
	ConnectionsOpened int    `json:"connectionsOpened"`
	Total             period `json:"total"`
	// Seconds are the seconds of the run, by completion time.
	Seconds []period `json:"seconds"`
}

func newReport(service string, rps int, c lab.Connections, b lab.TrackBy, opened int, total lab.TrafficStats, seconds []lab.TrafficStats) report {
	r := report{
		Service: service, RPS: rps, Connections: c.String(), TrackBy: b.String(), ConnectionsOpened: opened,
		Total: periodOf(total), Seconds: []period{},
	}
	for _, s := range seconds {
		r.Seconds = append(r.Seconds, periodOf(s))
	}
	return r
}

// writeReport writes r as one JSON object, indented.
func writeReport(w io.Writer, r report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// period is a lab.TrafficStats in the JSON summary.
type period struct {
	From       time.Time         `json:"from"`
	To         time.Time         `json:"to"`
	Requests   int               `json:"requests"`
	Errors     int               `json:"errors"`
	Tracks     map[string]track  `json:"tracks"`
	Untracked  counts            `json:"untracked"`
	Unanswered int               `json:"unanswered"`
	Pods       map[string]counts `json:"pods"`
}

type counts struct {
	Requests int `json:"requests"`
	Errors   int `json:"errors"`
}

type track struct {
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	Share    float64 `json:"share"`
}

// periodOf is s as the JSON summary shows it: both tracks always there.
func periodOf(s lab.TrafficStats) period {
	p := period{
		From: s.From, To: s.To,
		Requests: s.Requests(), Errors: s.Errors(),
		Tracks:     map[string]track{},
		Untracked:  counts(s.Untracked),
		Unanswered: s.NoEndpoint,
		Pods:       map[string]counts{},
	}
	for _, name := range []string{rollout.TrackStable, rollout.TrackCanary} {
		c := s.Tracks[name]
		p.Tracks[name] = track{Requests: c.Requests, Errors: c.Errors, Share: s.Share(name)}
	}
	for name, c := range s.Pods {
		p.Pods[name] = counts(c)
	}
	return p
}
