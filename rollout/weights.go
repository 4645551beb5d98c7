package rollout

// The canary's share of traffic is its share of the ready pods behind the
// Service: kube-proxy picks endpoints uniformly. The target weight is what
// the policy's step asks for; the effective weight is what the pod counts
// give. Router, plugin and metrics read both from here.

// EffectiveWeight is the canary's share of ready pods, in percent:
// 100·canary / (canary + stable), 0 without pods.
//
//	canary 1, stable 20: 4.76%    canary 7, stable 20: 25.9%
//	canary 4, stable 4:  50%      canary 0, stable 0:  0%
func EffectiveWeight(canary, stable int32) float64 {
	if canary+stable <= 0 {
		return 0
	}
	return 100 * float64(canary) / float64(canary+stable)
}

// TargetWeight is the weight, in percent, that the policy's current step
// gives the canary; 100 for a step past the last (the rollout promotes).
// It does not depend on the phase: a rollback names the weight of the step
// it failed at.
func (s *State) TargetWeight() int32 {
	if step, ok := s.CurrentStep(); ok {
		return step.Weight
	}
	return 100
}
