// Package state is the state-manager actor: it owns the daemon's state
// struct (observers, their last results and states, the broker's status,
// the loaded policies), completes the envelope of every event (node,
// source, provenance), detects state transitions from observations, and
// hands every event to the broker.
//
// Transitions: an observer starts "unknown"; an OK observation makes it
// "up"; a failed one makes it "degraded", and DownAfter consecutive
// failures make it "down". Every transition is a state.changed event whose
// causation_id is the observation that caused it.
package state

import (
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/polar/observerd/messages"
)

// Options configure the state-manager.
type Options struct {
	Node    string
	Version string
	// Broker receives a *messages.Publish per event.
	Broker *actor.PID
	// DownAfter consecutive failures make an observer down (default 3).
	DownAfter int
	Log       zerolog.Logger
}

// Actor is the state-manager.
type Actor struct {
	opts      Options
	observers map[string]*observer
	snap      messages.Snapshot
}

type observer struct {
	kind         string
	state        messages.ObserverState
	last         messages.Result
	lastTime     time.Time
	failures     int
	observations uint64
}

// New returns the state-manager.
func New(opts Options) *Actor {
	if opts.DownAfter <= 0 {
		opts.DownAfter = 3
	}
	return &Actor{opts: opts, observers: map[string]*observer{}, snap: messages.Snapshot{Node: opts.Node}}
}

// Props for the state-manager; it has no children.
func Props(opts Options) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return New(opts) })
}

// Receive handles the actor's messages.
func (a *Actor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.opts.Log.Debug().Msg("state-manager started")
	case *messages.Emit:
		a.emit(ctx, msg.Path, msg.Event)
	case *messages.BrokerStatus:
		a.snap.Broker = *msg
	case *messages.PoliciesLoaded:
		a.snap.PoliciesLoaded = true
		a.snap.Policies = slices.Clone(msg.Applied)
		a.snap.Rejected = slices.Clone(msg.Rejected)
	case *messages.GetState:
		ctx.Respond(a.snapshot())
	}
}

// emit completes ev's envelope, updates the state it implies and hands it
// (and any transition it causes) to the broker.
func (a *Actor) emit(ctx actor.Context, path string, ev *messages.Event) {
	a.stamp(path, ev)
	a.publish(ctx, ev)
	switch {
	case ev.Category == messages.Category_CATEGORY_OBSERVATION:
		if change := a.observe(path, ev); change != nil {
			a.stamp(path, change)
			a.publish(ctx, change)
		}
	case ev.Type == messages.TypeObserverStarted:
		if _, ok := a.observers[path]; !ok {
			a.observers[path] = &observer{kind: ev.GetObserver().GetKind(), state: messages.ObserverState_OBSERVER_STATE_UNKNOWN}
		}
	case ev.Type == messages.TypeObserverStopped, ev.Type == messages.TypeObserverQuarantined:
		delete(a.observers, path)
	}
}

func (a *Actor) stamp(path string, ev *messages.Event) {
	messages.Stamp(ev, a.opts.Node, a.opts.Version, path)
}

func (a *Actor) publish(ctx actor.Context, ev *messages.Event) {
	a.snap.EventsEmitted++
	ctx.Send(a.opts.Broker, &messages.Publish{Event: ev})
}

// observe records an observation and returns the state.changed event it
// causes, if any.
func (a *Actor) observe(path string, ev *messages.Event) *messages.Event {
	res, _ := messages.ResultOf(ev)
	o, ok := a.observers[path]
	if !ok {
		o = &observer{state: messages.ObserverState_OBSERVER_STATE_UNKNOWN}
		a.observers[path] = o
	}
	o.kind = strings.TrimPrefix(ev.Type, "observation.")
	o.last, o.lastTime = res, ev.Time.AsTime()
	o.observations++
	next := messages.ObserverState_OBSERVER_STATE_UP
	if res == messages.Result_RESULT_OK {
		o.failures = 0
	} else {
		o.failures++
		next = messages.ObserverState_OBSERVER_STATE_DEGRADED
		if o.failures >= a.opts.DownAfter {
			next = messages.ObserverState_OBSERVER_STATE_DOWN
		}
	}
	if next == o.state {
		return nil
	}
	change := messages.NewEvent(messages.TypeStateChanged)
	change.Subject = ev.Subject
	change.Policy = ev.Policy
	change.CausationId = ev.Id
	change.CorrelationId = ev.CorrelationId
	change.Severity = severityOf(next)
	change.Data = &messages.Event_StateChange{StateChange: &messages.StateChange{
		Observer:            path,
		OldState:            o.state,
		NewState:            next,
		ConsecutiveFailures: int32(o.failures),
		LastResult:          res,
	}}
	o.state = next
	return change
}

func severityOf(s messages.ObserverState) messages.Severity {
	switch s {
	case messages.ObserverState_OBSERVER_STATE_DOWN:
		return messages.Severity_SEVERITY_HIGH
	case messages.ObserverState_OBSERVER_STATE_DEGRADED:
		return messages.Severity_SEVERITY_MEDIUM
	default:
		return messages.Severity_SEVERITY_INFO
	}
}

func (a *Actor) snapshot() *messages.Snapshot {
	s := a.snap
	s.Policies = slices.Clone(a.snap.Policies)
	s.Rejected = slices.Clone(a.snap.Rejected)
	s.Observers = make([]messages.ObserverSnapshot, 0, len(a.observers))
	for path, o := range a.observers {
		s.Observers = append(s.Observers, messages.ObserverSnapshot{
			Path:                path,
			Kind:                o.kind,
			State:               stateName(o.state),
			LastResult:          resultName(o.last),
			LastTime:            o.lastTime,
			ConsecutiveFailures: o.failures,
			Observations:        o.observations,
		})
	}
	slices.SortFunc(s.Observers, func(x, y messages.ObserverSnapshot) int { return strings.Compare(x.Path, y.Path) })
	return &s
}

func stateName(s messages.ObserverState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "OBSERVER_STATE_"))
}

func resultName(r messages.Result) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "RESULT_"))
}
