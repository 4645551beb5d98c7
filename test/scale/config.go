package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// config is the run's flags.
type config struct {
	Deployments    int
	Rollouts       int
	Replicas       []int32
	Namespaces     int
	Hold           time.Duration
	LatencySamples int
	Settle         time.Duration
	RolloutTimeout time.Duration
	Fledge         string
	JSON           string
}

// MarshalJSON writes the flags as they are given: durations as "5s".
func (c config) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{
		"deployments": c.Deployments, "rollouts": c.Rollouts, "replicas": c.Replicas, "namespaces": c.Namespaces,
		"hold": c.Hold.String(), "latencySamples": c.LatencySamples, "settle": c.Settle.String(),
		"rolloutTimeout": c.RolloutTimeout.String(), "fledge": c.Fledge,
	})
}

const usage = `fledge-scale measures the fledge manager at scale on the lab: its memory idle,
with N Deployments, and during M rollouts changed at once; the router's
reconciles and queue wait, the lag from a step's hold end to the next step,
fledge's writes and the webhook's admissions per rollout, and the latency
the webhook adds to a Deployment PATCH. It prints one table, each figure
beside its goal, and writes the figures as JSON (-json).

It exits 0 when the run completed, whether or not a goal was met; 1 when
the run failed (a rollout that did not Succeed included); 2 on bad flags.

Flags:
`

// parseFlags reads the flags of a run.
func parseFlags(args []string, out io.Writer) (config, error) {
	c := config{}
	fs := flag.NewFlagSet("fledge-scale", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() { fmt.Fprint(out, usage); fs.PrintDefaults() }
	fs.IntVar(&c.Deployments, "deployments", 1000, "Deployments to create, spread over -namespaces")
	fs.IntVar(&c.Rollouts, "rollouts", 100, "Deployments whose image is changed at once (0: measure memory idle and populated only)")
	replicas := fs.String("replicas", "2,3", "pods per Deployment: a comma-separated list that the Deployments take in turn (2,3: 2,500 pods for 1,000 Deployments; the lab has addresses for about 3,800 pods, so 10,000 Deployments take 1,0,0,0)")
	fs.IntVar(&c.Namespaces, "namespaces", 10, "opted-in namespaces, each with the policy")
	fs.DurationVar(&c.Hold, "hold", 5*time.Second, "hold of each of the policy's three steps (pod-health checks only)")
	fs.IntVar(&c.LatencySamples, "latency-samples", 500, "PATCHes measured on each side (webhook called, namespace not opted in)")
	fs.DurationVar(&c.Settle, "settle", 5*time.Second, "wait before each memory reading")
	fs.DurationVar(&c.RolloutTimeout, "rollout-timeout", 10*time.Minute, "how long the rollouts may take, all together")
	fs.StringVar(&c.Fledge, "fledge", "", "the manager binary to measure (default: cmd/fledge of this checkout, built now)")
	fs.StringVar(&c.JSON, "json", "bin/bench-scale.json", "where to write the figures as JSON (empty: nowhere)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if c.Replicas, err = parseReplicas(*replicas); err != nil {
		return c, err
	}
	return c, c.validate()
}

// parseReplicas reads -replicas: "2,3" alternates 2 and 3 pods.
func parseReplicas(s string) ([]int32, error) {
	var out []int32
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(f), 10, 32)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("-replicas %q: want pod counts ≥ 0 separated by commas, like 2,3", s)
		}
		out = append(out, int32(n))
	}
	return out, nil
}

func (c config) validate() error {
	switch {
	case c.Deployments < 1:
		return errors.New("-deployments must be at least 1")
	case c.Rollouts < 0 || c.Rollouts > c.Deployments:
		return fmt.Errorf("-rollouts %d: want 0 to -deployments (%d)", c.Rollouts, c.Deployments)
	case c.Namespaces < 1:
		return errors.New("-namespaces must be at least 1")
	case c.Rollouts > 0 && c.LatencySamples < 1:
		return errors.New("-latency-samples must be at least 1")
	case c.Hold < 0:
		return errors.New("-hold must not be negative")
	}
	if c.Rollouts > 0 {
		for i := range c.Rollouts {
			if c.replicasOf(c.rolloutIndex(i)) == 0 {
				return fmt.Errorf("-replicas %v gives Deployment %d no pods, and it is one of the rollouts: a Deployment with nothing serving rolls out natively", c.Replicas, c.rolloutIndex(i))
			}
		}
	}
	if peak := c.peakPods(); peak > maxPods {
		return fmt.Errorf("up to %d pods at once (%d Deployments at -replicas %v, and the canaries and surge of %d rollouts) do not fit the lab's %d pod addresses: lower -replicas",
			peak, c.Deployments, c.Replicas, c.Rollouts, maxPods)
	}
	return nil
}

// replicasOf is the pod count of Deployment i.
func (c config) replicasOf(i int) int32 { return c.Replicas[i%len(c.Replicas)] }

// rolloutIndex is the Deployment of rollout i: the rollouts are spread
// evenly over the Deployments, and so over the namespaces (namespaceOf),
// and shifted by i modulo the -replicas list where there is room, so that
// they have its pod counts in turn too.
func (c config) rolloutIndex(i int) int {
	stride := c.Deployments / c.Rollouts
	shift := 0
	if stride >= len(c.Replicas) {
		shift = i % len(c.Replicas)
	}
	return i*c.Deployments/c.Rollouts + shift
}

// namespaceOf is the namespace index of Deployment i: the Deployments fill
// the namespaces in turn, in blocks.
func (c config) namespaceOf(i int) int { return i * c.Namespaces / c.Deployments }

// pods is the number of pods of all Deployments.
func (c config) pods() int {
	n := 0
	for i := range c.Deployments {
		n += int(c.replicasOf(i))
	}
	return n
}

// maxPods is how many pods the lab can give an address: kwok takes pod
// IPs from the nodes' podCIDRs, which split the lab's /20 of pod
// addresses (test/lab/nodenet.go), less room for pods being replaced.
const maxPods = 4096 - 296

// peakPods bounds the pods at once: every Deployment's, and for each
// rollout a canary as large as its Deployment (step 3, 50%: as many canary
// pods as stable ones) and a surge pod of the promotion.
func (c config) peakPods() int {
	peak := c.pods()
	for i := range c.Rollouts {
		peak += int(c.replicasOf(c.rolloutIndex(i))) + 1
	}
	return peak
}

// nodes is the number of kwok nodes: a power of two (so that the nodes'
// podCIDRs split the lab's pod addresses evenly) with room for the peak of
// pods at about 800 a node (a node takes 1,000).
func (c config) nodes() int {
	n := 2
	for n*800 < c.peakPods() {
		n *= 2
	}
	return n
}
