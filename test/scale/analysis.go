package main

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/fledge-dev/fledge/rollout"
	"github.com/fledge-dev/fledge/test/lab"
)

// stepLags measures, from the history of each finished rollout, how long
// the router took to act once a step's hold had ended:
//
//	step i → i+1:    History[i+1].Started − (History[i].Ready + hold)
//	last step → promotion: History[last].Ended − (History[last].Ready + hold)
//
// The last step's Ended is set by the reconcile that starts the promotion
// (planner.advance → endStep, then startPromotion, in one plan): the
// history records no later "promoted" time for a step, and the outcome's
// FinishedAt is when the Deployment's own rolling update was done, which
// is the Deployment controller's time, not the router's. Ready is when
// the step's canary pods were all Ready: its hold began. A step that
// stalled holds longer by the stall, which shows here as lag.
//
// steps are all transitions, promotions included; promotions the last
// steps' alone. An outcome whose history lacks a time is an error: the
// run's rollouts all hold every step.
func stepLags(outcomes []*rollout.Outcome, hold time.Duration) (steps, promotions []time.Duration, err error) {
	for _, o := range outcomes {
		h := o.History
		if len(h) == 0 {
			return nil, nil, fmt.Errorf("a %s rollout (attempt %d) has no step history", o.Phase, o.Attempt)
		}
		for i, rec := range h {
			if rec.Ready == nil {
				return nil, nil, fmt.Errorf("step %d of a %s rollout (attempt %d) was never Ready", rec.Step+1, o.Phase, o.Attempt)
			}
			holdEnd := rec.Ready.Add(hold)
			if i+1 < len(h) {
				steps = append(steps, h[i+1].Started.Sub(holdEnd))
				continue
			}
			if rec.Ended == nil {
				return nil, nil, fmt.Errorf("the last step (%d) of a %s rollout (attempt %d) has no end", rec.Step+1, o.Phase, o.Attempt)
			}
			lag := rec.Ended.Sub(holdEnd)
			steps = append(steps, lag)
			promotions = append(promotions, lag)
		}
	}
	return steps, promotions, nil
}

// percentile is the q-quantile (0 ≤ q ≤ 1) of samples, linearly
// interpolated between the two nearest ranks (Hyndman and Fan's type 7,
// as numpy's default): the 0.5-quantile of 1, 2, 3, 4 is 2.5.
func percentile(samples []time.Duration, q float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(s)-1)
	frac := pos - float64(lo)
	return s[lo] + time.Duration(frac*float64(s[hi]-s[lo]))
}

// distribution summarises samples of a duration.
type distribution struct {
	N   int           `json:"n"`
	P50 time.Duration `json:"p50"`
	P99 time.Duration `json:"p99"`
	Max time.Duration `json:"max"`
}

func distributionOf(samples []time.Duration) distribution {
	return distribution{N: len(samples), P50: percentile(samples, 0.5), P99: percentile(samples, 0.99), Max: percentile(samples, 1)}
}

// verbs counts writes to one kind of object by verb.
type verbs struct {
	Create int `json:"create"`
	Update int `json:"update"`
	Patch  int `json:"patch"`
	Delete int `json:"delete"`
}

// writes are create, update and patch: the changes of an object that stays.
func (v verbs) writes() int { return v.Create + v.Update + v.Patch }

func (v *verbs) add(verb string) bool {
	switch verb {
	case "create":
		v.Create++
	case "update":
		v.Update++
	case "patch":
		v.Patch++
	case "delete":
		v.Delete++
	default:
		return false
	}
	return true
}

// writeCounts are the write requests of one identity, by what they wrote.
type writeCounts struct {
	// Stable are writes of the rolled-out Deployments, Canary of their
	// canaries (named <name>-canary); Status of either's status subresource.
	Stable verbs `json:"stable"`
	Canary verbs `json:"canary"`
	Status int   `json:"status"`
	Events int   `json:"events"`
	Leases int   `json:"leases"`
	// Other are writes of anything else, by resource.
	Other map[string]int `json:"other,omitempty"`
	// Conflicts are the writes answered 409 Conflict, counted in no other
	// field: they changed nothing.
	Conflicts int `json:"conflicts"`
	// DeploymentSeconds is the time the apiserver took for the Deployment
	// writes (create, update, patch), from receiving each to answering it.
	DeploymentSeconds float64 `json:"deploymentSeconds"`
}

// deploymentMean is the mean time the apiserver took for a Deployment write.
func (w writeCounts) deploymentMean() time.Duration {
	if w.deployments() == 0 {
		return 0
	}
	return time.Duration(w.DeploymentSeconds / float64(w.deployments()) * float64(time.Second))
}

// deployments is the Deployment writes of the goal: create, update and
// patch of the stable Deployments and the canaries (deletes not included).
func (w writeCounts) deployments() int { return w.Stable.writes() + w.Canary.writes() }

// countWrites counts the write requests of user that the apiserver
// received from from to to, as its audit log records them.
func countWrites(events []lab.AuditEvent, user string, from, to time.Time) writeCounts {
	c := writeCounts{Other: map[string]int{}}
	for _, e := range events {
		at := e.RequestReceivedTimestamp
		if e.User.Username != user || at.Before(from) || at.After(to) || e.ObjectRef == nil {
			continue
		}
		if e.Code() == 409 {
			// Refused, so not a write: counted apart, as the e2e
			// tests count them.
			c.Conflicts++
			continue
		}
		ref := e.ObjectRef
		switch {
		case ref.Resource == "deployments" && ref.Subresource == "status":
			c.Status++
		case ref.Resource == "deployments" && ref.Subresource == "":
			v := &c.Stable
			if _, canary := rollout.StableName(ref.Name); canary {
				v = &c.Canary
			}
			if !v.add(e.Verb) {
				c.Other[e.Resource()+" "+e.Verb]++
			} else if e.Verb != "delete" {
				c.DeploymentSeconds += e.StageTimestamp.Sub(at).Seconds()
			}
		case ref.Resource == "events":
			c.Events++
		case ref.Resource == "leases":
			c.Leases++
		default:
			c.Other[e.Resource()]++
		}
	}
	if len(c.Other) == 0 {
		c.Other = nil
	}
	return c
}

// webhookCallers counts the write requests received from from to to for
// which the apiserver called one of webhooks (mutating ones: the audit log
// records only those), by "user verb resource namespace/name": to say what
// else than the probe's PATCHes reached fledge's webhook.
func webhookCallers(events []lab.AuditEvent, webhooks []string, from, to time.Time) map[string]int {
	out := map[string]int{}
	for _, e := range events {
		at := e.RequestReceivedTimestamp
		if at.Before(from) || at.After(to) || e.ObjectRef == nil {
			continue
		}
		for _, name := range e.MutatingWebhooks() {
			if slices.Contains(webhooks, name) {
				out[fmt.Sprintf("%s %s %s %s/%s", e.User.Username, e.Verb, e.Resource(), e.ObjectRef.Namespace, e.ObjectRef.Name)]++
				break
			}
		}
	}
	return out
}
