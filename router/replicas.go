package router

import (
	"fmt"
	"strings"

	"github.com/fledge-dev/fledge/rollout"
)

// The share of traffic a canary gets is the share of ready pods behind the
// Service that are canary pods: kube-proxy picks endpoints uniformly. These
// functions turn a target weight (percent) into pod counts. They are pure.
// rollout.EffectiveWeight is the share that the counts give.

// surgeReplicas returns the canary replica count for capacity surge: the
// stable Deployment keeps its stable replicas, and the canary count c ≥ 1 is
// the one whose share c/(c+stable) is nearest weight/100. A tie goes to the
// smaller c: fewer users exposed.
//
// The ideal count solves c/(c+S) = w/100, so c* = w·S/(100−w); the answer is
// the floor or the ceiling of c*.
//
//	S=20, w=5:  c*=1.05 → 1  (1 of 21 pods, 4.76%)
//	S=20, w=25: c*=6.67 → 7  (7 of 27 pods, 25.9%; 6 would give 23.1%)
//	S=4,  w=25: c*=1.33 → 1  (1 of 5 pods, 20%; 2 would give 33.3%)
//	S=3,  w=50: c*=3    → 3  (3 of 6 pods, 50%)
//
// With no stable replicas (someone scaled the app to zero) there is no
// traffic to share and the canary gets none.
func surgeReplicas(stable, weight int32) int32 {
	if stable <= 0 {
		return 0
	}
	s, w := int64(stable), int64(clampWeight(weight))
	ideal := w * s / (100 - w) // floor of c*
	best := max(ideal, 1)
	if next := ideal + 1; nearer(next, best, func(c int64) (int64, int64) { return c, c + s }, w) {
		best = next
	}
	return int32(best)
}

// shiftReplicas returns the canary and stable counts for capacity shift: the
// total stays total, the canary count c is nearest total·weight/100 with
// 1 ≤ c ≤ total−1 (a tie goes to the smaller c), and the stable count is the
// rest. It needs total ≥ 2; callers fall back to surge below that.
//
//	N=10, w=5:  c=1 (10%)    N=10, w=25: c=2 (20%; 3 would give 30%, a tie)
//	N=20, w=25: c=5 (25%)    N=4,  w=50: c=2 (50%)
func shiftReplicas(total, weight int32) (canary, stable int32) {
	n, w := int64(total), int64(clampWeight(weight))
	c := w * n / 100 // floor of N·w/100
	if nearer(c+1, c, func(c int64) (int64, int64) { return c, n }, w) {
		c++
	}
	c = min(max(c, 1), n-1)
	return int32(c), int32(n - c)
}

// nearer reports whether candidate a's share is strictly nearer weight
// percent than b's. share(c) returns the share as a fraction num/den; the
// comparison is exact, in integers.
func nearer(a, b int64, share func(int64) (num, den int64), weight int64) bool {
	an, ad := share(a)
	bn, bd := share(b)
	// |an/ad − w/100| < |bn/bd − w/100|  ⇔  |100·an − w·ad|·bd < |100·bn − w·bd|·ad
	da := abs(100*an-weight*ad) * bd
	db := abs(100*bn-weight*bd) * ad
	return da < db
}

// clampWeight keeps a weight in 1..99, the range policy validation allows,
// so that no input divides by zero.
func clampWeight(w int32) int32 { return min(max(w, 1), 99) }

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// weightTable renders, as a Markdown table, the canary count and effective
// weight that capacity surge gives for 1 to 20 stable replicas at the given
// target weights. docs/replica-math.md holds it; a test keeps it current.
func weightTable(weights ...int32) string {
	var b strings.Builder
	b.WriteString("| stable pods |")
	for _, w := range weights {
		fmt.Fprintf(&b, " %d%% |", w)
	}
	b.WriteString("\n|---|")
	for range weights {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for s := int32(1); s <= 20; s++ {
		fmt.Fprintf(&b, "| %d |", s)
		for _, w := range weights {
			c := surgeReplicas(s, w)
			fmt.Fprintf(&b, " %d → %.1f%% |", c, rollout.EffectiveWeight(c, s))
		}
		b.WriteString("\n")
	}
	return b.String()
}
