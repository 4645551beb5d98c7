package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/fledge-dev/fledge/rollout"
)

// promServer is the lab's Prometheus: one port and one data directory for
// the lab's life, so a test can stop it and start it again (an outage in
// the middle of a rollout) and find the same URL and the samples of before.
type promServer struct {
	bin     string
	port    int
	dataDir string
	config  string
	proc    *process // nil until started
	runs    int
}

// promConfig is the lab's Prometheus configuration: the ordinary
// kubernetes_sd_configs of role pod a user writes, keeping the pods that
// ask to be scraped with the prometheus.io/scrape annotation and scraping
// them on their own IP at their prometheus.io/port, through the lab's
// node network. Every series gets namespace, pod and track
// (rollout.LabelTrack, rollout.TrackStable when absent), the labels
// fledge's queries select on.
const promConfig = `global:
  scrape_interval: 2s
  scrape_timeout: 2s
  evaluation_interval: 2s
scrape_configs:
  - job_name: lab-pods
    kubernetes_sd_configs:
      - role: pod
        kubeconfig_file: %q
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
        regex: "true"
        action: keep
      - source_labels: [__meta_kubernetes_pod_ip, __meta_kubernetes_pod_annotation_prometheus_io_port]
        regex: "(.+);([0-9]+)"
        target_label: __address__
        replacement: "$1:$2"
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
      - target_label: track
        replacement: %q
      - source_labels: [%s]
        regex: "(.+)"
        target_label: track
`

// podLabelMeta is the meta label that Prometheus's pod discovery gives a
// pod label: __meta_kubernetes_pod_label_<name>, every character of the
// name that may not be in a Prometheus label name made "_".
func podLabelMeta(label string) string {
	return "__meta_kubernetes_pod_label_" + strings.Map(func(r rune) rune {
		if r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, label)
}

// StartPrometheus starts the lab's Prometheus (bin/prometheus) on
// 127.0.0.1, scraping every pod annotated prometheus.io/scrape every 2s,
// and waits until it is ready.
// After StopPrometheus it starts again on the same port with the same data.
// Options.Prometheus calls it from Start; Lab.Stop stops it. Starting it
// while it runs does nothing.
func (l *Lab) StartPrometheus(ctx context.Context) error {
	if l.prom == nil {
		p, err := l.newPromServer()
		if err != nil {
			return err
		}
		l.prom = p
		l.PrometheusURL = "http://127.0.0.1:" + strconv.Itoa(p.port)
	}
	p := l.prom
	if p.proc != nil {
		if done, _ := p.proc.exited(); !done {
			return nil
		}
	}
	if err := p.keepLog(l.Dir); err != nil {
		return err
	}
	proc, err := startProcess("prometheus", p.bin, l.Dir,
		"--config.file="+p.config,
		"--storage.tsdb.path="+p.dataDir,
		"--web.listen-address=127.0.0.1:"+strconv.Itoa(p.port),
		"--storage.tsdb.retention.time=1d",
	)
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	l.replaceProcess(p.proc, proc)
	p.proc = proc
	p.runs++
	return l.waitFor(ctx, "prometheus ready", func(ctx context.Context) error {
		return httpOK(ctx, l.PrometheusURL+"/-/ready")
	})
}

// StopPrometheus stops the lab's Prometheus (SIGTERM, as on a node drain)
// and waits for it to end; its URL then refuses connections until
// StartPrometheus. Stopping it when it does not run does nothing.
func (l *Lab) StopPrometheus() {
	if l.prom != nil && l.prom.proc != nil {
		l.prom.proc.stop(20 * time.Second)
	}
}

// newPromServer chooses the port and writes the configuration.
func (l *Lab) newPromServer() (*promServer, error) {
	bin := filepath.Join(l.bins, "prometheus")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("lab: prometheus is missing from %s: run `make tools` to build the lab's programs", l.bins)
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	p := &promServer{
		bin:     bin,
		port:    ports[0],
		dataDir: filepath.Join(l.Dir, "prometheus"),
		config:  filepath.Join(l.Dir, "prometheus.yml"),
	}
	if l.Kubeconfig == "" {
		return nil, errors.New("lab: prometheus needs the lab's kubeconfig")
	}
	config := fmt.Sprintf(promConfig, l.Kubeconfig, rollout.TrackStable, podLabelMeta(rollout.LabelTrack))
	if err := os.WriteFile(p.config, []byte(config), 0o644); err != nil {
		return nil, fmt.Errorf("lab: write the prometheus configuration: %w", err)
	}
	return p, nil
}

// keepLog moves the log of the previous run aside (prometheus.1.log, ...),
// since startProcess starts a fresh prometheus.log.
func (p *promServer) keepLog(dir string) error {
	if p.runs == 0 {
		return nil
	}
	old := filepath.Join(dir, "prometheus.log")
	kept := filepath.Join(dir, "prometheus."+strconv.Itoa(p.runs)+".log")
	if err := os.Rename(old, kept); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("lab: keep the log of prometheus: %w", err)
	}
	return nil
}

// replaceProcess puts next in old's place among the lab's programs (or
// after them when old is nil), so Stop, PIDs and LogTails see the Prometheus
// that runs now.
func (l *Lab) replaceProcess(old, next *process) {
	for i, p := range l.procs {
		if p == old && old != nil {
			l.procs[i] = next
			return
		}
	}
	l.procs = append(l.procs, next)
}
