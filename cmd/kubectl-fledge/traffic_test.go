package main

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/fledge-dev/fledge/rollout"
)

func TestStableReplicaSet(t *testing.T) {
	web, rs := heldWeb(t)
	o, _ := rollout.ParseOutcome(web)
	canaryRS := replicaSetOf(web, web.Spec.Template, 0)
	foreign := rs.DeepCopy()
	foreign.Name, foreign.OwnerReferences[0].UID = "other-web", "uid-other"
	for _, tc := range []struct {
		name string
		rss  []appsv1.ReplicaSet
		want string // the name found, "" for none
	}{
		{"the ReplicaSet of the revision that web controls", []appsv1.ReplicaSet{*canaryRS, *rs}, rs.Name},
		{"one of the revision that another Deployment controls is not web's", []appsv1.ReplicaSet{*foreign}, ""},
		{"one of another revision is not the stable one", []appsv1.ReplicaSet{*canaryRS}, ""},
		{"none", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ""
			if found := rollout.ReplicaSetOf(tc.rss, web.UID, o.StableRevision); found != nil {
				got = found.Name
			}
			if got != tc.want {
				t.Errorf("found %q, want %q", got, tc.want)
			}
		})
	}
}

// The labels Services are matched against, from the best source there is.
func TestStableAndCanaryLabels(t *testing.T) {
	web, rs := heldWeb(t) // template v2, stable ReplicaSet v1
	stablePod := func(version string) corev1.Pod {
		return *pod("web-abc-"+version, map[string]string{"app": "web", "version": version, "tier": "front", appsv1.DefaultDeploymentUniqueLabelKey: "abc"})
	}
	running := runningAtStep2()
	running.StableRevision = rollout.TemplateHash(&rs.Spec.Template)
	canary := canaryOf(web, 1, 1)
	canary.Spec.Template.Labels["version"] = "v3" // lags the Deployment's template
	for _, tc := range []struct {
		name           string
		view           statusView
		traffic        traffic
		canary         *appsv1.Deployment
		stable, canLbl string
	}{{
		name:    "held: the stable ReplicaSet's template, without its pod-template-hash",
		view:    statusView{Outcome: &rollout.Outcome{Phase: rollout.RolledBack, StableRevision: running.StableRevision}, Holding: true},
		traffic: traffic{ReplicaSets: []appsv1.ReplicaSet{*rs}, StablePods: []corev1.Pod{stablePod("v0")}},
		stable:  "app=web,version=v1",
		canLbl:  "app=web,fledge.dev/attempt=1,fledge.dev/track=canary,version=v2",
	}, {
		name:    "running: the canary template of this attempt, whatever the canary Deployment has",
		view:    statusView{State: running},
		traffic: traffic{ReplicaSets: []appsv1.ReplicaSet{*rs}},
		canary:  canary,
		stable:  "app=web,version=v1",
		canLbl:  "app=web,fledge.dev/attempt=2,fledge.dev/track=canary,version=v2",
	}, {
		name:    "stable ReplicaSet gone: the labels all stable pods share",
		view:    statusView{State: running},
		traffic: traffic{StablePods: []corev1.Pod{stablePod("v1"), stablePod("v0")}},
		stable:  "app=web,tier=front",
		canLbl:  "app=web,fledge.dev/attempt=2,fledge.dev/track=canary,version=v2",
	}, {
		name:   "no rollout: the canary Deployment's template",
		view:   statusView{},
		canary: canary,
		stable: "app=web,version=v2",
		canLbl: "app=web,fledge.dev/track=canary,version=v3",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := stableLabels(web, tc.view, tc.traffic).String(); got != tc.stable {
				t.Errorf("stable labels %s, want %s", got, tc.stable)
			}
			if got := canaryLabels(web, tc.canary, tc.view).String(); got != tc.canLbl {
				t.Errorf("canary labels %s, want %s", got, tc.canLbl)
			}
		})
	}
}
