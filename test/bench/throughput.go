package main

import (
	"cmp"
	"context"
	"fmt"
	"runtime/pprof"
	"slices"
	"time"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/messages"
)

type throughputResult struct {
	actor, raw []measure
}

// warmupEvents go through each side once before anything is timed: the
// first quorum queue of a fresh node, the first TLS sessions and the first
// outbox are slower than the rest, and that would count against whichever
// side ran first.
const warmupEvents = 1000

// throughput alternates the broker actor and the baseline, swapping which
// goes first in every round so that a drift of the machine (page cache,
// RabbitMQ's own state) does not always favour the same side.
func (e *env) throughput(ctx context.Context) (*throughputResult, error) {
	e.say("throughput: warm-up, %d events each side (not counted)", warmupEvents)
	if _, err := e.rawPublish(ctx, "warmup", warmupEvents); err != nil {
		return nil, err
	}
	if _, err := e.pipelineRun(ctx, warmupEvents); err != nil {
		return nil, err
	}
	res := &throughputResult{}
	for i := range e.cfg.runs {
		runActor := func() error {
			m, err := labelled("broker-actor", func() (measure, error) { return e.pipelineRun(ctx, e.cfg.events) })
			if err != nil {
				return err
			}
			res.actor = append(res.actor, m)
			e.say("throughput %d/%d: broker actor %.0f events/s (%d events in %s, %.1f events per outbox commit, %.0f µs CPU per event)",
				i+1, e.cfg.runs, m.rate(), m.events, m.took.Round(time.Millisecond), perCommit(m), m.cpuPerEvent())
			return nil
		}
		runRaw := func() error {
			m, err := labelled("baseline", func() (measure, error) { return e.rawPublish(ctx, "raw", e.cfg.events) })
			if err != nil {
				return err
			}
			res.raw = append(res.raw, m)
			e.say("throughput %d/%d: baseline     %.0f events/s (%d events in %s, %.0f µs CPU per event)",
				i+1, e.cfg.runs, m.rate(), m.events, m.took.Round(time.Millisecond), m.cpuPerEvent())
			return nil
		}
		first, second := runActor, runRaw
		if i%2 == 1 {
			first, second = runRaw, runActor
		}
		if err := first(); err != nil {
			return nil, err
		}
		if err := second(); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// pipelineRun sends n events to a fresh broker actor as fast as one
// goroutine can, and times from the first send until the outbox is empty:
// every event appended, published, confirmed and deleted.
func (e *env) pipelineRun(ctx context.Context, n int) (measure, error) {
	b, err := e.startBroker(ctx, "pipeline")
	if err != nil {
		return measure{}, err
	}
	evs := make([]*messages.Event, n)
	for i := range evs {
		evs[i] = event(i)
	}
	cpu0 := processCPU()
	start := time.Now()
	go func() {
		for _, ev := range evs {
			e.sys.Root.Send(b.pid, &protocol.Publish{Event: ev})
		}
	}()
	// 10 ms of polling resolution against runs of seconds; polling faster
	// would itself slow the actor (GetStats waits for a running commit).
	end, err := b.waitDrained(ctx, uint64(n), 10*time.Millisecond, max(2*time.Minute, time.Duration(n)*5*time.Millisecond))
	cpu := processCPU() - cpu0
	commits := b.close()
	if err != nil {
		return measure{}, err
	}
	ev := event(0)
	ev.Sequence = uint64(n)
	msg, err := publishing(ev)
	if err != nil {
		return measure{}, err
	}
	return measure{events: n, took: end.Sub(start), cpu: cpu, bytes: len(msg.Body), commits: commits}, nil
}

func perCommit(m measure) float64 {
	if m.commits == 0 {
		return 0
	}
	return float64(m.events) / float64(m.commits)
}

// labelled runs f with the pprof label side=name, which the goroutines it
// starts inherit (the actor's mailbox and pipeline, amqp091-go's reader),
// so that a --cpuprofile can be split per side:
// go tool pprof -tagfocus side=broker-actor.
func labelled(name string, f func() (measure, error)) (m measure, err error) {
	pprof.Do(context.Background(), pprof.Labels("side", name), func(context.Context) { m, err = f() })
	return m, err
}

// medianRun is the run with the median rate (the lower middle one of an
// even count).
func medianRun(ms []measure) measure {
	sorted := slices.Clone(ms)
	slices.SortFunc(sorted, func(a, b measure) int { return cmp.Compare(a.rate(), b.rate()) })
	if len(sorted) == 0 {
		return measure{}
	}
	return sorted[(len(sorted)-1)/2]
}

// median of the runs' rates.
func median(ms []measure) float64 {
	rates := make([]float64, len(ms))
	for i, m := range ms {
		rates[i] = m.rate()
	}
	slices.Sort(rates)
	if len(rates) == 0 {
		return 0
	}
	if len(rates)%2 == 1 {
		return rates[len(rates)/2]
	}
	return (rates[len(rates)/2-1] + rates[len(rates)/2]) / 2
}

func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", a/b)
}
