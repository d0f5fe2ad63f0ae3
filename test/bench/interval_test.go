package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMedianInterval(t *testing.T) {
	seq := func(n int) []float64 {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = float64(n - i) // given in reverse: the order must not matter
		}
		return xs
	}
	for _, tc := range []struct {
		n            int
		lo, hi       float64 // of 1..n
		coverageOver float64
	}{
		// The published tables of the sign test's interval at 95 %.
		{n: 6, lo: 1, hi: 6, coverageOver: 0.96},
		{n: 10, lo: 2, hi: 9, coverageOver: 0.978},
		{n: 20, lo: 6, hi: 15, coverageOver: 0.958},
		{n: 40, lo: 14, hi: 27, coverageOver: 0.96},
	} {
		lo, hi, coverage, ok := medianInterval(seq(tc.n), 0.95)
		require.True(t, ok, "n=%d", tc.n)
		assert.Equal(t, [2]float64{tc.lo, tc.hi}, [2]float64{lo, hi}, "n=%d", tc.n)
		assert.GreaterOrEqual(t, coverage, 0.95, "n=%d", tc.n)
		assert.Greater(t, coverage, tc.coverageOver, "n=%d", tc.n)
	}
	_, _, _, ok := medianInterval(seq(5), 0.95)
	assert.False(t, ok, "five values cannot give 95 %%: even their extremes cover 93.75 %%")
}

func TestPairVerdict(t *testing.T) {
	pairs := func(ratios ...float64) []loadPair {
		ps := make([]loadPair, len(ratios))
		for i, r := range ratios {
			ps[i] = loadPair{alone: loadRun{requests: 1000, took: time.Second}, observed: loadRun{requests: int64(r * 1000), took: time.Second}}
		}
		return ps
	}
	for _, tc := range []struct {
		name   string
		pairs  []loadPair
		prefix string
		says   string
	}{
		{"all above", pairs(0.995, 1.0, 1.01, 1.02, 0.999, 1.0, 0.998, 1.03), "median 1.000, its 99.2 % interval 0.995–1.030", "decided: at or above 0.99"},
		{"all below", pairs(0.90, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97), "median 0.935, its 99.2 % interval 0.900–0.970", "decided: below 0.99"},
		{"noise", pairs(0.9, 1.1, 0.95, 1.05, 0.98, 1.02, 0.99, 1.0), "median 0.995", "undecided: the interval spans 0.99"},
		{"too few", pairs(1, 1, 1), "3 pairs are too few", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := pairVerdict(tc.pairs, 0.99)
			assert.Contains(t, v, tc.prefix)
			assert.Contains(t, v, tc.says)
		})
	}
}
