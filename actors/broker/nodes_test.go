package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRingMovesOnFromTheLastNode(t *testing.T) {
	urls := []string{"a", "b", "c"}
	for _, tc := range []struct {
		name  string
		start int
		up    map[string]bool
		tried []string
		got   string // "" when every node failed
		next  int
	}{
		{"the first up", 0, map[string]bool{"a": true, "b": true, "c": true}, []string{"a"}, "a", 1},
		{"after the node last connected to", 1, map[string]bool{"a": true, "b": true, "c": true}, []string{"b"}, "b", 2},
		{"skips the dead ones", 1, map[string]bool{"a": true}, []string{"b", "c", "a"}, "a", 1},
		{"round the end", 2, map[string]bool{"a": true, "c": true}, []string{"c"}, "c", 0},
		{"none up: the next round starts where this one did", 2, map[string]bool{}, []string{"c", "a", "b"}, "", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &ring{urls: urls, next: tc.start}
			var tried []string
			got := ""
			errs := r.dial(t.Context(), func(u string) error {
				tried = append(tried, u)
				if !tc.up[u] {
					return fmt.Errorf("%s: refused", u)
				}
				got = u
				return nil
			})
			assert.Equal(t, tc.tried, tried, "one dial at a time, in the ring's order")
			assert.Equal(t, tc.got, got)
			assert.Equal(t, tc.next, r.next)
			if got == "" {
				assert.Len(t, errs, len(urls), "every node's failure")
			} else {
				assert.Empty(t, errs)
			}
		})
	}
}

func TestRingStopsWhenTheContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	r := &ring{urls: []string{"a", "b", "c"}}
	n := 0
	errs := r.dial(ctx, func(string) error {
		n++
		cancel()
		return errors.New("refused")
	})
	assert.Equal(t, 1, n)
	assert.Len(t, errs, 1)
}

func TestSpreadOrderSpreadsAFleet(t *testing.T) {
	urls := []string{"amqps://n1/", "amqps://n2/", "amqps://n3/"}
	assert.Equal(t, spreadOrder(urls, "web-17"), spreadOrder(urls, "web-17"), "a host always prefers the same node")
	assert.Equal(t, []string{"amqps://n1/", "amqps://n2/", "amqps://n3/"}, urls, "the config's list is left as it is")

	const daemons = 300
	first := map[string]int{}
	// next[a][b]: daemons on a that move to b when a is lost.
	next := map[string]map[string]int{}
	for i := range daemons {
		o := spreadOrder(urls, fmt.Sprintf("host-%03d.example", i))
		require.ElementsMatch(t, urls, o, "a permutation")
		first[o[0]]++
		if next[o[0]] == nil {
			next[o[0]] = map[string]int{}
		}
		next[o[0]][o[1]]++
	}
	// The order is a hash of the name, so these counts are fixed for these
	// names; the bounds say what they show: no node takes most of the fleet.
	for _, u := range urls {
		assert.InDelta(t, daemons/3, first[u], daemons/3*0.25, "daemons that start on %s", u)
		others := slices.DeleteFunc(slices.Clone(urls), func(o string) bool { return o == u })
		for _, o := range others {
			assert.Greater(t, next[u][o], first[u]/4, "the daemons of a lost %s spread: those moving to %s", u, o)
		}
	}
}
