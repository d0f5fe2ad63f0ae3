package main

import (
	"context"
	"fmt"
	"time"
)

type outageResult struct {
	outage      time.Duration // from Stop called to Restart called
	stopTook    time.Duration // graceful stop of the node
	restartTook time.Duration // boot of the node until it accepts clients
	produced    int64         // events sent during the outage (Stop called to Restart returned)
	accumulated int           // events in the outbox when Restart returned
	// reconnect is from Restart returned to the actor's connection being
	// open again; negative when it reconnected while Restart still waited
	// for the node's own startup checks.
	reconnect time.Duration
	recovery  time.Duration // Restart returned -> outbox empty
	commits   int           // the actor's outbox write transactions, whole row
	// baselines are the raw publisher's runs, accumulated events each into
	// an empty broker; baseline is the median one.
	baselines []measure
	baseline  measure
}

// outage is one broker outage under a steady producer. It returns when the
// outbox is empty again; the producer stops when Restart returns so that
// "drained" has a clean end (with production going on, the outbox would
// only ever come down to the events in flight).
type outage struct {
	b          *brokerRun
	sentAtStop int64
	stopAt     time.Time
	stopped    time.Time
	restartAt  time.Time
	back       time.Time
	sent       int64
	// accumulated is what the outbox held when Restart returned.
	accumulated int
	connected   time.Time
	drained     time.Time
}

// outageHooks let a row measure around the outage.
type outageHooks struct {
	// beforeStop runs at the end of the steady warm-up, broker up.
	beforeStop func(b *brokerRun) error
	// during runs while the node is down; ctx ends when it is time to
	// restart.
	during func(ctx context.Context, b *brokerRun, stopAt time.Time) error
}

// runOutage starts a broker actor and a producer at cfg.rate, lets it run
// steadily for cfg.warmup, stops the node for d (from Stop called to
// Restart called), restarts it, stops the producer, and waits until the
// outbox is empty. The caller closes o.b.
func (e *env) runOutage(ctx context.Context, kind string, d time.Duration, h outageHooks) (*outage, error) {
	b, err := e.startBroker(ctx, kind)
	if err != nil {
		return nil, err
	}
	o := &outage{b: b}
	pctx, cancel := context.WithCancel(ctx)
	prod := e.startProducer(pctx, b.pid, e.cfg.rate)
	defer prod.stop(cancel)
	if err := sleep(ctx, e.cfg.warmup); err != nil {
		return o, err
	}
	if h.beforeStop != nil {
		if err := h.beforeStop(b); err != nil {
			return o, err
		}
	}

	o.stopAt = time.Now()
	o.sentAtStop = prod.sent.Load()
	e.say("%s: broker down for %s (graceful stop) with %d events/s coming in", kind, d, e.cfg.rate)
	if err := e.node.Stop(ctx); err != nil {
		return o, err
	}
	o.stopped = time.Now()
	dctx, dcancel := context.WithDeadline(ctx, o.stopAt.Add(d))
	defer dcancel()
	if h.during != nil {
		if err := h.during(dctx, b, o.stopAt); err != nil {
			return o, err
		}
	}
	// Whatever during did, the node stays down for d in total.
	<-dctx.Done()
	if ctx.Err() != nil {
		return o, ctx.Err()
	}

	o.restartAt = time.Now()
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Minute)
	err = e.node.Restart(rctx)
	rcancel()
	if err != nil {
		return o, err
	}
	o.back = time.Now()
	o.sent = prod.stop(cancel)
	st, err := b.stats()
	if err != nil {
		return o, err
	}
	o.accumulated = st.Events
	e.say("%s: broker back %s after the stop (boot %s); %d events waiting in the outbox",
		kind, o.back.Sub(o.stopAt).Round(time.Millisecond), o.back.Sub(o.restartAt).Round(time.Millisecond), o.accumulated)

	// The actor's reconnect backoff may reach 30 s: wait well beyond that.
	if o.drained, err = b.waitDrained(ctx, uint64(o.sent), 10*time.Millisecond, 3*time.Minute); err != nil {
		return o, err
	}
	o.connected, _ = b.status.connectedSince(o.stopAt)
	return o, nil
}

// outageRecovery is row 2.
func (e *env) outageRecovery(ctx context.Context) (*outageResult, error) {
	o, err := e.runOutage(ctx, "outage", e.cfg.outage, outageHooks{})
	commits := 0
	if o != nil {
		commits = o.b.close()
	}
	if err != nil {
		return nil, err
	}
	r := &outageResult{
		commits:     commits,
		outage:      o.restartAt.Sub(o.stopAt),
		stopTook:    o.stopped.Sub(o.stopAt),
		restartTook: o.back.Sub(o.restartAt),
		produced:    o.sent - o.sentAtStop,
		accumulated: o.accumulated,
		recovery:    o.drained.Sub(o.back),
	}
	if !o.connected.IsZero() {
		r.reconnect = o.connected.Sub(o.back)
	}
	e.say("outage: outbox empty %s after the broker was back (reconnected after %s)",
		r.recovery.Round(time.Millisecond), r.reconnect.Round(time.Millisecond))
	if r.accumulated == 0 {
		return nil, fmt.Errorf("no events accumulated during the outage")
	}
	e.say("outage: baseline, %d events by the raw publisher into an empty broker, %d times", r.accumulated, e.cfg.runs)
	// Like row 1, the median of cfg.runs: one baseline run on a shared
	// 2-core machine can be off by half.
	for range e.cfg.runs {
		m, err := e.rawPublish(ctx, "outage-baseline", r.accumulated)
		if err != nil {
			return nil, err
		}
		r.baselines = append(r.baselines, m)
	}
	r.baseline = medianRun(r.baselines)
	return r, nil
}

type memSample struct {
	at       time.Duration // into the outage
	fraction float64       // of the outage
	proc     procMem
	heap     uint64 // Go heap in use
	outbox   int    // events in the outbox
	outboxB  int64  // their bytes
}

type memoryResult struct {
	outage      time.Duration
	before      memSample   // just before the node stopped
	samples     []memSample // at 25, 50, 75 and 100 % of the outage
	peakRSS     uint64      // the highest VmRSS seen every 100 ms during the outage
	hwm         uint64      // VmHWM of the process at the end (whole run)
	produced    int64
	accumulated int
	drain       time.Duration // Restart returned -> outbox empty
	reconnect   time.Duration // Restart returned -> connected again
	commits     int
}

// memory is row 3: RSS during a long outage at a steady rate. The outbox
// is on disk, so the process should not grow with the events waiting.
func (e *env) memory(ctx context.Context) (*memoryResult, error) {
	r := &memoryResult{outage: e.cfg.memOutage}
	sample := func(b *brokerRun, at time.Duration, frac float64) (memSample, error) {
		s := memSample{at: at, fraction: frac, heap: heapInUse()}
		var err error
		if s.proc, err = readProcMem(); err != nil {
			return s, err
		}
		st, err := b.stats()
		if err != nil {
			return s, err
		}
		s.outbox, s.outboxB = st.Events, st.Bytes
		return s, nil
	}
	hooks := outageHooks{
		beforeStop: func(b *brokerRun) error {
			var err error
			r.before, err = sample(b, 0, 0)
			e.say("memory: before the outage: RSS %s (anon %s, file %s), outbox %d events",
				mib(r.before.proc.rss), mib(r.before.proc.anon), mib(r.before.proc.file), r.before.outbox)
			return err
		},
		during: func(ctx context.Context, b *brokerRun, stopAt time.Time) error {
			fractions := []float64{0.25, 0.5, 0.75, 1}
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for len(fractions) > 0 {
				select {
				case <-ctx.Done():
				case <-tick.C:
				}
				at := time.Since(stopAt)
				if pm, err := readProcMem(); err == nil {
					r.peakRSS = max(r.peakRSS, pm.rss)
				}
				// The 100 % sample is taken on the last tick before the
				// restart, not after it.
				due := time.Duration(fractions[0] * float64(r.outage))
				if fractions[0] == 1 {
					due -= 150 * time.Millisecond
				}
				if at < due && ctx.Err() == nil {
					continue
				}
				s, err := sample(b, at, fractions[0])
				if err != nil {
					return err
				}
				r.samples = append(r.samples, s)
				e.say("memory: %3.0f%% of the outage: RSS %s (anon %s, file %s), outbox %d events",
					fractions[0]*100, mib(s.proc.rss), mib(s.proc.anon), mib(s.proc.file), s.outbox)
				fractions = fractions[1:]
			}
			return nil
		},
	}
	o, err := e.runOutage(ctx, "memory", r.outage, hooks)
	if o != nil {
		r.commits = o.b.close()
	}
	if err != nil {
		return nil, err
	}
	r.produced = o.sent - o.sentAtStop
	r.accumulated = o.accumulated
	r.drain = o.drained.Sub(o.back)
	if !o.connected.IsZero() {
		r.reconnect = o.connected.Sub(o.back)
	}
	if pm, err := readProcMem(); err == nil {
		r.hwm = pm.hwm
	}
	return r, nil
}
