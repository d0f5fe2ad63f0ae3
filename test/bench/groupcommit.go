package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/polar/observerd/actors/broker"
	"github.com/polar/observerd/messages"
)

// groupSizes are the events per Append transaction measured: 1 is what an
// outbox without group commit would do for every event; 256 is one confirm
// window's worth.
var groupSizes = []int{1, 16, 256}

type groupResult struct {
	size    int
	commits int
	took    time.Duration
}

func (g groupResult) eventsPerSecond() float64 {
	return float64(g.size*g.commits) / g.took.Seconds()
}

func (g groupResult) commitLatency() time.Duration {
	return g.took / time.Duration(max(1, g.commits))
}

// groupCommit measures the outbox alone (broker.OpenOutbox, no actor, no
// network): Append in a loop for cfg.groupTime with each group size. Every
// Append is one bbolt transaction with its fsyncs, so this shows what the
// group commit buys on this disk, and the cost of one commit.
func (e *env) groupCommit(ctx context.Context) ([]groupResult, error) {
	var out []groupResult
	for _, size := range groupSizes {
		dir, err := os.MkdirTemp(e.work, "group-")
		if err != nil {
			return nil, fmt.Errorf("create outbox dir: %w", err)
		}
		ob, err := broker.OpenOutbox(dir, broker.OutboxOptions{})
		if err != nil {
			return nil, err
		}
		batch := make([]*messages.Event, size)
		for i := range batch {
			batch[i] = event(i)
		}
		r := groupResult{size: size}
		start := time.Now()
		for time.Since(start) < e.cfg.groupTime && ctx.Err() == nil {
			// Append assigns fresh sequences each time: the same events
			// are stored again under new keys, as new events would be.
			if _, err := ob.Append(batch); err != nil {
				_ = ob.Close()
				return nil, err
			}
			r.commits++
		}
		r.took = time.Since(start)
		if err := ob.Close(); err != nil {
			return nil, err
		}
		_ = os.RemoveAll(dir)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e.say("group commit: %3d events per Append: %.0f events/s, %s per commit",
			size, r.eventsPerSecond(), r.commitLatency().Round(10*time.Microsecond))
		out = append(out, r)
	}
	return out, nil
}
