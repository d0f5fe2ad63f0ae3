package broker

import (
	"context"
	"hash/fnv"
	"math/rand/v2"
	"slices"
)

// Why does each daemon go round broker.urls in an order of its own?
//
// A fleet shares one config: every daemon lists the same nodes in the same
// order. Tried in that order, every daemon would connect to the first node,
// and when a node dies all its daemons would move to the same next one.
// RabbitMQ's own guidance is that clients shuffle the node list. The order
// is a permutation derived from the daemon's node name, so the fleet
// spreads over the cluster, the daemons of a lost node spread over the
// others, and one host always prefers the same node (which makes its logs
// comparable from one restart to the next). `url_order: listed` keeps the
// list's order, for a primary and its standbys.

// spreadOrder is urls in the order of node: a permutation seeded by the
// node's name.
func spreadOrder(urls []string, node string) []string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(node))
	out := slices.Clone(urls)
	rand.New(rand.NewPCG(h.Sum64(), 0)).Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// ring goes round the URLs: each dial starts after the URL of the last
// connection, so that a connection lost or given up moves to the next
// node rather than back to the same, possibly dead, one. A round that
// finds no node up starts the next round where it started. Only the
// publisher's goroutine dials, so the ring needs no lock.
type ring struct {
	urls []string
	next int // where the next dial starts
}

// dial tries each URL once, from the ring's position, until try
// succeeds, and returns every failure otherwise (or the ones before ctx
// ended).
func (r *ring) dial(ctx context.Context, try func(url string) error) []error {
	var errs []error
	for i := range r.urls {
		at := (r.next + i) % len(r.urls)
		err := try(r.urls[at])
		if err == nil {
			r.next = (at + 1) % len(r.urls)
			return nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return errs
}
