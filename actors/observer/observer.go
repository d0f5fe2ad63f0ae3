// Package observer is the observer actor: one per observer of a policy,
// child of the task-manager. It runs its kind's check (package kinds) on
// a schedule (never two runs at once, a hard timeout per run, backoff
// while the target fails) off its mailbox, and sends each observation to
// the state-manager as a protocol.Emit.
//
// The schedule is a fixed grid: after the first (at the observer's place
// in a tenth of the interval, soon after it starts), an observer's turns
// fall at its phase in every interval (Unix time ≡ phase modulo the
// interval), the phase a hash of its path and the daemon's node name. Observers of equal intervals are so spread evenly over the
// interval instead of all firing together, a turn does not drift by the
// time its runs take, and an observer replaced by a new version keeps its
// place. A run that outlasts the interval skips the turns it covered
// (counted as skipped, "still running").
//
// A check that panics, in the mailbox or in its goroutine, fails the actor:
// the task-manager restarts it with backoff and quarantines it when it keeps
// failing.
package observer

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/actors/restart"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/wasm"
)

// Spec is what an observer runs.
type Spec struct {
	// Node is the daemon's node name: with the observer's path, it places
	// the observer's turns in its interval (Phase).
	Node     string
	Policy   *policy.Policy
	Observer policy.Observer
	// CorrelationID is the id of the policy event that tasked the observer;
	// every event of the observer carries it.
	CorrelationID string
	// Access is how the policy's observers reach its target, together:
	// its limits and its HTTP client.
	Access *kinds.TargetAccess
	// Gate, while closed, makes the observer skip its turns.
	Gate *protocol.Gate
	// State receives the observer's events.
	State *actor.PID
	// Metrics counts skipped and late turns (nil: not exposed).
	Metrics *Metrics
	// Plugins runs the wasm kind's modules, found in PluginDir; nil
	// refuses that kind.
	Plugins   *wasm.Host
	PluginDir string
	// PIDDirs are the daemon's allowed_pid_dirs: the process kind opens a
	// pid file only where it resolves inside one of them. nil means
	// configs.DefaultPIDDirs.
	PIDDirs []string
	// MaxResponse is the daemon's limits.max_response_bytes: what one
	// observation reads of an answer at most. 0 means the default.
	MaxResponse yamldoc.ByteSize
	// Stop, set by the task-manager before it stops the observer, says
	// why in its observer.stopped event (nil: "stopped").
	Stop *StopNote
	Log  zerolog.Logger
}

// StopNote is why an observer is stopped and the event that caused it. The
// task-manager writes it before stopping the actor, which reads it while
// stopping: the stop's system message orders the two. The cause is a root
// event (policy.applied, policy.removed): the observer.stopped joins its
// chain, its correlation and causation both the cause's id, as every
// event's correlation is its cause's.
type StopNote struct {
	mu                sync.Mutex
	reason, causation string
}

// Set records why the observer is about to be stopped.
func (n *StopNote) Set(reason, causation string) {
	n.mu.Lock()
	n.reason, n.causation = reason, causation
	n.mu.Unlock()
}

func (n *StopNote) get() (reason, causation string) {
	if n == nil {
		return "stopped", ""
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.reason == "" {
		return "stopped", n.causation
	}
	return n.reason, n.causation
}

// setup is what the observer's check is made from, with the defaults of
// the daemon's settings.
func (s *Spec) setup() kinds.Setup {
	maxResponse, pidDirs := s.MaxResponse, s.PIDDirs
	if maxResponse <= 0 {
		maxResponse = policy.DefaultBounds().MaxResponseBytes
	}
	if pidDirs == nil {
		pidDirs = policy.DefaultPIDDirs()
	}
	return kinds.Setup{Policy: s.Policy, Observer: &s.Observer, Path: s.Path(), Access: s.Access, MaxResponse: int64(maxResponse),
		PIDDirs: pidDirs, Plugins: s.Plugins, PluginDir: s.PluginDir, Log: s.Log}
}

// Emitter is who the observer is in the events it emits.
func (s *Spec) Emitter() protocol.Emitter {
	return protocol.ObserverEmitter(s.Policy.Metadata.Name, s.Observer.Name)
}

// Path is the observer's path, its event source: observer/<policy>/<name>.
func (s *Spec) Path() string { return s.Emitter().Path() }

// Actor is one observer.
type Actor struct {
	spec  Spec
	check kinds.Check

	timer *time.Timer
	turn  uint64    // generation of the pending timer: ticks of stopped ones are stale
	due   time.Time // when the pending turn is due
	// last is when the last turn taken (or skipped) was due: the next
	// one is due a delay after it. Zero before the first turn.
	last   time.Time
	cancel context.CancelFunc // of the run in flight, nil when idle
	stats  protocol.ObserverStats
}

// maxBackoff caps the backoff of a failing target, so that the end of an
// outage is seen within a minute (for intervals under a minute).
const maxBackoff = time.Minute

type tick struct{ turn uint64 }

type ran struct {
	evs []*messages.Event
	err error
}

type crashed struct{ err error }

// Props for an observer. A spec that cannot run is a permanent failure: the
// task-manager gives up on it at once instead of restarting it. The check
// is made here, once, and shared by the actor's incarnations.
func Props(spec Spec) *actor.Props {
	c, err := kinds.NewCheck(spec.setup())
	return actor.PropsFromProducer(func() actor.Actor {
		if err != nil {
			return &broken{err: &restart.Permanent{Err: err}}
		}
		return &Actor{spec: spec, check: c}
	})
}

// Receive handles the actor's messages.
func (a *Actor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.lifecycle(ctx, messages.TypeObserverStarted, "")
		// The first turn comes soon, at the observer's place in a tenth of
		// the interval, so that observers started together are spread
		// over it; the turns after it are on the grid of the interval.
		spread := a.interval() / 10
		a.schedule(ctx, Slot(time.Now(), spread, Phase(a.spec.Node, a.spec.Path(), spread)))
	case *actor.Stopping:
		a.halt()
		if c, ok := a.check.(io.Closer); ok {
			if err := c.Close(); err != nil {
				a.spec.Log.Warn().Err(err).Msg("close observer")
			}
		}
		reason, causation := a.spec.Stop.get()
		correlation := a.spec.CorrelationID
		if causation != "" {
			correlation = causation
		}
		ev := LifecycleEvent(messages.TypeObserverStopped, a.spec.Policy, a.spec.Observer, correlation, &messages.ObserverLifecycle{Reason: reason})
		ctx.Send(a.spec.State, &protocol.Emit{From: a.spec.Emitter(), Event: ev})
	case *actor.Restarting:
		a.halt()
	case *tick:
		if msg.turn != a.turn {
			return // its timer was stopped after it fired
		}
		late := time.Since(a.due)
		a.metrics().lateness.Observe(late.Seconds())
		if late > a.lateAfter() {
			a.tally(&a.stats.Late, 1, a.metrics().late.WithLabelValues(a.spec.Path()), "observation turn late",
				fmt.Sprintf("started %s after it was due", late.Round(time.Millisecond)))
		}
		a.last = a.due
		if !a.run(ctx) {
			a.scheduleNext(ctx)
		}
	case *protocol.RunNow:
		if a.run(ctx) {
			// The next turn is scheduled when this observation ends.
			a.stopTimer()
		}
	case *ran:
		if a.cancel == nil {
			return // a run of the actor's previous incarnation, before a restart
		}
		a.cancel()
		a.cancel = nil
		for _, ev := range msg.evs {
			a.observed(ctx, ev)
		}
		if w, ok := errors.AsType[*kinds.Warning](msg.err); ok {
			// The observer goes on; its last error says what is wrong.
			ctx.Send(a.spec.State, &protocol.ObserverWarning{From: a.spec.Emitter(), Reason: protocol.Reason(w.Error())})
			msg.err = nil
		}
		if msg.err != nil {
			// The observer failed: its supervisor reports and restarts it,
			// or gives up at once on what no restart mends.
			if _, ok := errors.AsType[*kinds.Permanent](msg.err); ok {
				panic(&restart.Permanent{Err: msg.err})
			}
			panic(msg.err)
		}
		a.scheduleNext(ctx)
	case *protocol.GetObserverStats:
		s := a.stats
		s.Delay = a.delay()
		if a.timer != nil && a.cancel == nil {
			s.Next = a.due
		}
		ctx.Respond(&s)
	case *crashed:
		panic(msg.err)
	}
}

// tally counts k skipped or late turns in n; the log says so for the
// first and then once per hundred, so that a long stretch does not flood
// it.
func (a *Actor) tally(n *uint64, k uint64, metric prometheus.Counter, msg, why string) {
	before := *n
	*n += k
	metric.Add(float64(k))
	if before == 0 || before/100 != *n/100 {
		a.spec.Log.Warn().Uint64("count", *n).Str("reason", why).Msg(msg)
	}
}

// unexposed counts the turns of observers given no Metrics (tests).
var unexposed = NewMetrics(nil)

func (a *Actor) metrics() *Metrics {
	if a.spec.Metrics == nil {
		return unexposed
	}
	return a.spec.Metrics
}

func (a *Actor) interval() time.Duration { return time.Duration(a.spec.Observer.Interval) }
func (a *Actor) timeout() time.Duration  { return time.Duration(a.spec.Observer.Timeout) }

// delay is the delay before the next turn. While the target fails it is
// stretched, so that a sick service is not hammered: after n consecutive
// non-OK results, the interval times 2^(n-1) (a single failure costs no
// delay), capped at 4 times the interval or maxBackoff, whichever is lower,
// and never below the interval. One OK result returns to the interval.
func (a *Actor) delay() time.Duration {
	interval := a.interval()
	ceiling := max(interval, min(4*interval, maxBackoff))
	d := interval
	for range a.stats.Failures - 1 {
		if d *= 2; d >= ceiling {
			return ceiling
		}
	}
	return d
}

// lateAfter is how long after it was due a turn may start before it counts
// as late: a tenth of the interval, between 10 ms (timer and scheduling
// noise) and 1 s.
func (a *Actor) lateAfter() time.Duration {
	return min(max(a.interval()/10, 10*time.Millisecond), time.Second)
}

// Phase is where in each interval the turns of the observer at path of
// the daemon node fall: a hash of both, so that the observers of equal
// intervals in one daemon spread evenly over it, and so do the daemons of
// a fleet that run the same policy against one service.
func Phase(node, path string, interval time.Duration) time.Duration {
	h := fnv.New64a()
	_, _ = h.Write([]byte(node)) // a hash.Hash never fails
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(path))
	return time.Duration(h.Sum64() % uint64(interval))
}

// slot is the observer's first turn on its grid at or after t.
func (a *Actor) slot(t time.Time) time.Time {
	return Slot(t, a.interval(), Phase(a.spec.Node, a.spec.Path(), a.interval()))
}

// Slot is the first time at or after t whose Unix time is phase modulo
// interval.
func Slot(t time.Time, interval, phase time.Duration) time.Time {
	off := (time.Duration(t.UnixNano()) - phase) % interval
	if off < 0 {
		off += interval
	}
	if off == 0 {
		return t
	}
	return t.Add(interval - off)
}

// scheduleNext schedules the turn a delay after the last one (the
// interval, longer while the target fails), or the first slot from now
// when the run went past it: the turns it covered are skipped.
func (a *Actor) scheduleNext(ctx actor.Context) {
	want := a.due // before the first turn (an ObserveNow), it keeps its place
	if !a.last.IsZero() {
		want = a.slot(a.last.Add(a.delay()))
	}
	next := want
	if now := time.Now(); next.Before(now) {
		next = a.slot(now)
		// On the wall clock, as the grid is: the monotonic readings both
		// carry drift from it by nanoseconds, which made one turn two.
		skipped := (next.Round(0).Sub(want.Round(0)) + a.interval() - 1) / a.interval()
		a.tally(&a.stats.Skipped, uint64(skipped), a.metrics().skipped.WithLabelValues(a.spec.Path(), "still running"),
			"observation turn skipped", "previous observation still running")
	}
	a.schedule(ctx, next)
}

// schedule replaces the pending turn, if any, with one at due.
func (a *Actor) schedule(ctx actor.Context, due time.Time) {
	a.stopTimer()
	root, self, turn := ctx.ActorSystem().Root, ctx.Self(), a.turn
	a.due = due
	a.timer = time.AfterFunc(time.Until(due), func() { root.Send(self, &tick{turn: turn}) })
}

// stopTimer cancels the pending turn; a tick of it already in the mailbox
// is recognised as stale by its generation.
func (a *Actor) stopTimer() {
	if a.timer != nil {
		a.timer.Stop()
	}
	a.turn++
}

func (a *Actor) halt() {
	a.stopTimer()
	if a.cancel != nil {
		a.cancel()
	}
}

// run starts one observation off the mailbox, unless the gate is closed or
// one is in flight; it reports whether it did.
func (a *Actor) run(ctx actor.Context) bool {
	switch {
	case a.spec.Gate.Closed():
		a.tally(&a.stats.Skipped, 1, a.metrics().skipped.WithLabelValues(a.spec.Path(), "outbox full"), "observation turn skipped", "outbox full (when_full: block)")
		return false
	case a.cancel != nil:
		a.tally(&a.stats.Skipped, 1, a.metrics().skipped.WithLabelValues(a.spec.Path(), "still running"), "observation turn skipped", "previous observation still running")
		return false
	}
	rctx, cancel := context.WithTimeout(context.Background(), a.timeout())
	a.cancel = cancel
	root, self := ctx.ActorSystem().Root, ctx.Self()
	go func() {
		defer restart.Recover(func(err error) { root.Send(self, &crashed{err: err}) })
		evs, err := a.check.Observe(rctx)
		root.Send(self, &ran{evs: evs, err: err})
	}()
	return true
}

// observed counts the observation's result, fills in its envelope and
// sends it on.
func (a *Actor) observed(ctx actor.Context, ev *messages.Event) {
	a.stats.Observations++
	if r, _ := messages.ResultOf(ev); r == messages.Result_RESULT_OK {
		a.stats.Failures = 0
	} else {
		a.stats.Failures++
	}
	if ev.Subject == "" {
		ev.Subject = a.spec.Policy.Spec.Target.Name
	}
	ev.Policy = &messages.PolicyRef{Name: a.spec.Policy.Metadata.Name, Revision: a.spec.Policy.Revision}
	ev.CorrelationId = a.spec.CorrelationID
	ev.CausationId = a.spec.CorrelationID
	ctx.Send(a.spec.State, &protocol.Emit{From: a.spec.Emitter(), Event: ev, Observer: &a.spec.Observer})
}

func (a *Actor) lifecycle(ctx actor.Context, typ, reason string) {
	ctx.Send(a.spec.State, &protocol.Emit{From: a.spec.Emitter(), Event: LifecycleEvent(typ, a.spec.Policy, a.spec.Observer, a.spec.CorrelationID, &messages.ObserverLifecycle{Reason: reason})})
}

// LifecycleEvent builds an observer.* event for observer o of policy p,
// filling in the payload's actor, observer and kind.
func LifecycleEvent(typ string, p *policy.Policy, o policy.Observer, correlation string, payload *messages.ObserverLifecycle) *messages.Event {
	ev := messages.NewEvent(typ)
	ev.Subject = p.Spec.Target.Name
	ev.Policy = &messages.PolicyRef{Name: p.Metadata.Name, Revision: p.Revision}
	ev.CorrelationId = correlation
	ev.CausationId = correlation
	payload.Actor = protocol.ObserverEmitter(p.Metadata.Name, o.Name).Path()
	payload.Observer = o.Name
	payload.Kind = o.Kind
	switch typ {
	case messages.TypeObserverFailed, messages.TypeObserverQuarantined:
		ev.Severity = messages.Severity_SEVERITY_MEDIUM
	}
	ev.Data = &messages.Event_Observer{Observer: payload}
	return ev
}

// broken stands in for an observer whose spec cannot run: it fails at
// start with a permanent error, so its supervisor reports and gives up.
type broken struct{ err error }

func (b *broken) Receive(ctx actor.Context) {
	if _, ok := ctx.Message().(*actor.Started); ok {
		panic(b.err)
	}
}
