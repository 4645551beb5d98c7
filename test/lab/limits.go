package lab

// clientLimits are the arguments of the controller manager and the
// scheduler for Options.UnlimitedClients: kwokctl's values for
// --disable-qps-limits. Without them the controller manager's clients send
// at most 20 requests a second each, so 1,000 Deployments take minutes to
// get their ReplicaSets and pods; kwok itself has no client-side limit.
func clientLimits(opts Options) []string {
	if !opts.UnlimitedClients {
		return nil
	}
	return []string{"--kube-api-qps=5000", "--kube-api-burst=10000"}
}
