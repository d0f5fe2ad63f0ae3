// Package observer is the observer actor: one per observer of a policy,
// child of the task-manager. It runs its check on a schedule (interval with
// jitter, never two runs at once, a hard timeout per run) off its mailbox,
// and sends each observation to the state-manager as a messages.Emit.
//
// A check that panics, in the mailbox or in its goroutine, fails the actor:
// the task-manager restarts it with backoff and quarantines it when it keeps
// failing.
package observer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/polar/observerd/actors/supervision"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
)

// Spec is what an observer runs.
type Spec struct {
	Policy   *policy.Policy
	Observer policy.Observer
	// CorrelationID is the id of the policy event that tasked the observer;
	// every event of the observer carries it.
	CorrelationID string
	// Shared is the policy's shared limits and HTTP client.
	Shared *Shared
	// Gate, while closed, makes the observer skip its turns.
	Gate *messages.Gate
	// State receives the observer's events.
	State *actor.PID
	Log   zerolog.Logger
}

// Path is the observer's actor path relative to the daemon, which is also
// its event source: observer/<policy>/<name>.
func (s *Spec) Path() string {
	return PathOf(s.Policy.Metadata.Name, s.Observer.Name)
}

// PathOf is the path of observer name of policy pol.
func PathOf(pol, name string) string {
	return "observer/" + pol + "/" + name
}

// check runs one observation and returns its event (type and payload set).
type check interface {
	run(ctx context.Context) *messages.Event
}

// Actor is one observer.
type Actor struct {
	spec  Spec
	check check

	timer   *time.Timer
	cancel  context.CancelFunc // of the run in flight, nil when idle
	skipped uint64
}

type tick struct{}

type ran struct{ ev *messages.Event }

type crashed struct{ err error }

// New returns an observer actor for spec.
func New(spec Spec) (*Actor, error) {
	c, err := newCheck(&spec)
	if err != nil {
		return nil, err
	}
	return &Actor{spec: spec, check: c}, nil
}

// Props for an observer. A spec that cannot run is a permanent failure: the
// task-manager gives up on it at once instead of restarting it.
func Props(spec Spec) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		a, err := New(spec)
		if err != nil {
			return &broken{err: &supervision.Permanent{Err: err}}
		}
		return a
	})
}

func newCheck(spec *Spec) (check, error) {
	switch spec.Observer.Kind {
	case "http":
		return newHTTPCheck(spec)
	}
	return nil, fmt.Errorf("observer %s: kind %q is not supported yet", spec.Path(), spec.Observer.Kind)
}

// Receive handles the actor's messages.
func (a *Actor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.lifecycle(ctx, messages.TypeObserverStarted, "")
		// The first run comes soon, spread over a tenth of the interval so
		// that the observers of one policy do not all fire together.
		a.schedule(ctx, jitter(a.interval()/10))
	case *actor.Stopping:
		a.halt()
		a.lifecycle(ctx, messages.TypeObserverStopped, "stopped")
	case *actor.Restarting:
		a.halt()
	case *tick:
		if a.spec.Gate.Closed() {
			a.skip("outbox full (when_full: block)")
			a.schedule(ctx, a.interval())
			return
		}
		a.run(ctx)
	case *ran:
		a.cancel()
		a.cancel = nil
		a.observed(ctx, msg.ev)
		a.schedule(ctx, a.interval()+jitter(a.interval()/10)-a.interval()/20)
	case *crashed:
		panic(msg.err)
	}
}

// skip counts a skipped turn; the log says so for the first and then every
// hundredth, so that a long stretch of skips does not flood it.
func (a *Actor) skip(why string) {
	a.skipped++
	if a.skipped%100 == 1 {
		a.spec.Log.Warn().Uint64("skipped", a.skipped).Str("reason", why).Msg("observation turn skipped")
	}
}

func (a *Actor) interval() time.Duration { return time.Duration(a.spec.Observer.Interval) }
func (a *Actor) timeout() time.Duration  { return time.Duration(a.spec.Observer.Timeout) }

func (a *Actor) schedule(ctx actor.Context, d time.Duration) {
	root, self := ctx.ActorSystem().Root, ctx.Self()
	a.timer = time.AfterFunc(d, func() { root.Send(self, &tick{}) })
}

func (a *Actor) halt() {
	if a.timer != nil {
		a.timer.Stop()
	}
	if a.cancel != nil {
		a.cancel()
	}
}

// run starts one observation off the mailbox, unless one is in flight.
func (a *Actor) run(ctx actor.Context) {
	if a.cancel != nil {
		a.skip("previous observation still running")
		return
	}
	rctx, cancel := context.WithTimeout(context.Background(), a.timeout())
	a.cancel = cancel
	root, self := ctx.ActorSystem().Root, ctx.Self()
	go func() {
		defer supervision.Recover(func(err error) { root.Send(self, &crashed{err: err}) })
		root.Send(self, &ran{ev: a.check.run(rctx)})
	}()
}

// observed fills in the observation's envelope and sends it on.
func (a *Actor) observed(ctx actor.Context, ev *messages.Event) {
	ev.Subject = a.spec.Policy.Spec.Target.Name
	ev.Policy = &messages.PolicyRef{Name: a.spec.Policy.Metadata.Name, Revision: a.spec.Policy.Revision}
	ev.CorrelationId = a.spec.CorrelationID
	ev.CausationId = a.spec.CorrelationID
	ctx.Send(a.spec.State, &messages.Emit{Path: a.spec.Path(), Event: ev})
}

func (a *Actor) lifecycle(ctx actor.Context, typ, reason string) {
	ctx.Send(a.spec.State, &messages.Emit{Path: a.spec.Path(), Event: LifecycleEvent(typ, a.spec.Policy, a.spec.Observer, a.spec.CorrelationID, &messages.ObserverLifecycle{Reason: reason})})
}

// LifecycleEvent builds an observer.* event for observer o of policy p,
// filling in the payload's actor, observer and kind.
func LifecycleEvent(typ string, p *policy.Policy, o policy.Observer, correlation string, payload *messages.ObserverLifecycle) *messages.Event {
	ev := messages.NewEvent(typ)
	ev.Subject = p.Spec.Target.Name
	ev.Policy = &messages.PolicyRef{Name: p.Metadata.Name, Revision: p.Revision}
	ev.CorrelationId = correlation
	ev.CausationId = correlation
	payload.Actor = PathOf(p.Metadata.Name, o.Name)
	payload.Observer = o.Name
	payload.Kind = o.Kind
	switch typ {
	case messages.TypeObserverFailed, messages.TypeObserverQuarantined:
		ev.Severity = messages.Severity_SEVERITY_MEDIUM
	}
	ev.Data = &messages.Event_Observer{Observer: payload}
	return ev
}

// jitter is a uniformly random duration in [0, d].
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d + 1)
}

// broken stands in for an observer whose spec cannot run: it fails at
// start with a permanent error, so its supervisor reports and gives up.
type broken struct{ err error }

func (b *broken) Receive(ctx actor.Context) {
	if _, ok := ctx.Message().(*actor.Started); ok {
		panic(b.err)
	}
}
