package main

import (
	"fmt"
	"math"
	"slices"
)

// medianInterval is a distribution-free confidence interval of the median
// of xs: the k-th smallest and k-th largest of them, with k the largest
// for which the chance that the median lies outside is at most 1 − level.
// Why not mean ± t·s: the pairs' ratios of a shared machine are not normal
// (a neighbour's burst makes a long tail), and the order statistics need
// no such assumption. It returns the interval and its exact coverage;
// ok is false when xs are too few for any interval at level.
func medianInterval(xs []float64, level float64) (lo, hi, coverage float64, ok bool) {
	n := len(xs)
	s := slices.Clone(xs)
	slices.Sort(s)
	// The median is below the k-th smallest when fewer than k of n fall
	// below it: P(Binomial(n, ½) ≤ k−1), on each side.
	k := 0
	for j := 1; j <= n/2; j++ {
		if c := 1 - 2*binomialCDF(n, j-1); c >= level {
			k, coverage = j, c
		}
	}
	if k == 0 {
		return 0, 0, 0, false
	}
	return s[k-1], s[n-k], coverage, true
}

// binomialCDF is P(Binomial(n, ½) ≤ k).
func binomialCDF(n, k int) float64 {
	var p float64
	for i := 0; i <= k; i++ {
		lg, _ := math.Lgamma(float64(n + 1))
		a, _ := math.Lgamma(float64(i + 1))
		b, _ := math.Lgamma(float64(n - i + 1))
		p += math.Exp(lg - a - b - float64(n)*math.Ln2)
	}
	return p
}

// pairRatios are the pairs' observed/alone ratios.
func pairRatios(pairs []loadPair) []float64 {
	rs := make([]float64, len(pairs))
	for i, p := range pairs {
		rs[i] = p.ratio()
	}
	return rs
}

// pairVerdict says what the pairs' ratios tell of goal: their median, the
// median's 95 % interval, and whether the interval decides the goal (the
// whole interval at or above it, or below it) or the machine's noise is
// wider than the question.
func pairVerdict(pairs []loadPair, goal float64) string {
	rs := pairRatios(pairs)
	lo, hi, coverage, ok := medianInterval(rs, 0.95)
	if !ok {
		return fmt.Sprintf("%d pairs are too few for a 95 %% interval", len(rs))
	}
	slices.Sort(rs)
	med := rs[len(rs)/2]
	if len(rs)%2 == 0 {
		med = (rs[len(rs)/2-1] + rs[len(rs)/2]) / 2
	}
	verdict := fmt.Sprintf("undecided: the interval spans %.2f", goal)
	switch {
	case lo >= goal:
		verdict = fmt.Sprintf("decided: at or above %.2f", goal)
	case hi < goal:
		verdict = fmt.Sprintf("decided: below %.2f", goal)
	}
	return fmt.Sprintf("median %.3f, its %.1f %% interval %.3f–%.3f, %s", med, coverage*100, lo, hi, verdict)
}
