package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fledge-dev/fledge/rollout"
)

func newDiagnoseCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "diagnose NAME",
		Short: "Explain why traffic does or does not reach the canary of a Deployment",
		Long: `Looks at what decides whether the canary of Deployment NAME gets its share of
the traffic, and says what to change where it does not:

  - the namespace carries the opt-in label fledge.dev/enabled=true
  - the Deployment does not carry fledge.dev/skip: "true"
  - the rollout in progress, and NAME-canary's desired and ready replicas
    (zero canary replicas serve nothing); or the failed revision NAME holds
    after a rollback, and the ways out of it
  - the Services whose selector matches the stable pods, and whether each also
    matches the canary pods: a Service selecting a label the new version
    changed (version: v1) sends the canary no traffic
  - pods of either version that are not Running or not Ready, with the reason
  - Services with sessionAffinity: ClientIP, which move only new clients

It only reads; it changes nothing. The exit code is 0 whatever it finds.`,
		Example: "  kubectl fledge diagnose web -n team-a",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cs, ns, err := e.connect()
			if err != nil {
				return err
			}
			d, err := gatherDiagnosis(cmd.Context(), cs, ns, args[0], e)
			if err != nil {
				return err
			}
			fmt.Fprint(e.out, colourise(formatDiagnosis(d), e.color))
			return nil
		},
	}
}

// diagnosis is what diagnose reads from the cluster.
type diagnosis struct {
	Namespace string
	// NamespaceLabels are nil and NamespaceErr set when the user may not
	// read the Namespace (a cluster-scoped object).
	NamespaceLabels map[string]string
	NamespaceErr    error
	Stable          *appsv1.Deployment
	// Canary is NAME-canary, nil when it does not exist.
	Canary *appsv1.Deployment
	View   statusView
	traffic
}

func gatherDiagnosis(ctx context.Context, cs kubernetes.Interface, ns, name string, e *env) (diagnosis, error) {
	d := diagnosis{Namespace: ns}
	if n, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
		d.NamespaceErr = err
	} else {
		d.NamespaceLabels = n.Labels
	}
	var err error
	if d.Stable, d.Canary, err = getDeployments(ctx, cs, ns, name); err != nil {
		return d, err
	}
	d.View = newStatusView(d.Stable, d.Canary, e.clock.Now())
	d.View.NamespaceIgnored = d.NamespaceErr == nil && !rollout.OptedIn(d.NamespaceLabels)
	if d.traffic, err = getTraffic(ctx, cs, d.Stable); err != nil {
		return d, err
	}
	return d, nil
}
