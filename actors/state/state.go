// Package state is the state-manager actor: it owns the daemon's state
// struct (observers, their last results and states, the broker's status,
// the loaded policies), completes the envelope of every event (node,
// source, provenance), detects state transitions from observations, and
// hands every event to the broker.
//
// States: an observer starts "unknown". Its first OK observation makes it
// "up"; thresholds.down_after consecutive failures make it "down" (fewer
// leave it as it is: one failed check is not an outage), and
// thresholds.up_after consecutive successes bring it back "up". Flapping
// is damped: an observer that goes up or down FlapTransitions times within
// FlapIntervals of its intervals is "degraded" instead, one event, until
// it has held one state for that long. Every transition is a state.changed
// event whose causation_id is the observation that caused it.
//
// Event budgets: each policy may publish Options.EventsPerSecond
// observations a second (limits.max_events_per_second), from a token
// bucket of burstOf(EventsPerSecond), and all policies together
// Options.EventsPerSecondTotal (limits.max_events_per_second_total), from
// one bucket of burstOf(EventsPerSecondTotal), so that many policies
// cannot together do what one may not. An observation is published only
// when both buckets have a token for it, and then takes one from each;
// when either refuses it takes nothing from the other (see admit). An
// observation over budget is not handed to the broker (it takes no
// sequence and evicts nothing from the outbox) but still counts for its
// observer's state, so a state.changed may name an unpublished
// observation as its causation_id. A drop is the policy's, whichever
// bucket refused: its first drop opens a report window of
// Options.ThrottleWindow; when it ends, one policy.throttled says how many
// observations the policy dropped in it, and how many of those the total
// refused. A policy that drops nothing has no window and no timer.
// Lifecycle, state and policy events are not budgeted: supervision's
// backoff bounds them. Budgets follow the policy name: a policy.removed,
// or a PoliciesLoaded that no longer lists the policy, reports what its
// open window dropped and forgets its budget.
//
// Messages: it accepts protocol.Emit, ObserverWarning, BrokerStatus,
// PoliciesLoaded and GetState (answered with a *protocol.Snapshot); it
// sends protocol.Publish to Options.Broker.
package state

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
)

// Options configure the state-manager.
type Options struct {
	Node    string
	Version string
	// Broker receives a *messages.Publish per event.
	Broker *actor.PID
	// Actors are the daemon's own actors, in start order, as the snapshot
	// lists them.
	Actors []string
	// EventsPerSecond is each policy's budget of observation events
	// (limits.max_events_per_second); zero means DefaultEventsPerSecond.
	EventsPerSecond float64
	// EventsPerSecondTotal is the budget of all policies' observation
	// events together (limits.max_events_per_second_total); zero means
	// DefaultEventsPerSecondTotal.
	EventsPerSecondTotal float64
	// ThrottleWindow is the period a policy.throttled report covers; zero
	// means DefaultThrottleWindow.
	ThrottleWindow time.Duration
	// Now and AfterFunc are the clock of the budgets and their report
	// windows (nil: the wall clock's time.Now and time.AfterFunc); tests
	// drive their own. AfterFunc's stop reports whether it stopped f.
	Now       func() time.Time
	AfterFunc func(d time.Duration, f func()) (stop func() bool)
	// Metrics registers the state-manager's metrics (nil: none).
	Metrics prometheus.Registerer
	Log     zerolog.Logger
}

// Defaults of Options, and the smallest burst of a budget.
const (
	DefaultEventsPerSecond      = 100
	DefaultEventsPerSecondTotal = 1000
	// DefaultThrottleWindow: long enough that a flooding policy costs one
	// event every 10 s, short enough that the report comes while the
	// operator still looks.
	DefaultThrottleWindow = 10 * time.Second
	// MinBurst is one plugin call's worth of observations (wasm.MaxEmits):
	// a policy within its budget on average publishes a whole call.
	MinBurst = 64
)

// burstOf is the size of a budget's bucket: one second's worth, so that
// the observers of a policy firing together (as they do after a policy
// change) pass whole, and at least MinBurst.
func burstOf(perSecond float64) int {
	return max(int(math.Ceil(perSecond)), MinBurst)
}

// Actor is the state-manager.
type Actor struct {
	opts      Options
	metrics   *metrics
	observers map[protocol.Emitter]*observer
	actors    map[string]*lifecycle // the daemon's own, by name
	// budgets are the event budgets, by policy name: at most the running
	// policies, and those whose observations arrived since the last
	// PoliciesLoaded.
	budgets map[string]*budget
	// total is the budget of all policies together.
	total *rate.Limiter
	// rejections is why each rejected file is (Snapshot.Rejections), at
	// most the files of the last PoliciesLoaded and those rejected since.
	rejections map[string]string
	snap       protocol.Snapshot
}

// budget is one policy's token bucket for observation events, and what it
// dropped.
type budget struct {
	limiter *rate.Limiter
	// dropped counts the observations dropped in the open window, which
	// began at since, and byTotal those of them the total refused; stop
	// cancels the timer that ends the window. All zero while none is
	// open.
	dropped, byTotal uint64
	since            time.Time
	stop             func() bool
	// total counts every observation dropped, for the snapshot.
	total uint64
	// revision is the policy's revision of the last dropped observation.
	revision string
}

// windowEnded is sent by a budget's timer; it is stale unless budget is
// still the policy's and the window that began at since is still open.
type windowEnded struct {
	policy string
	budget *budget
	since  time.Time
}

// lifecycle is what the failure events say of an actor.
type lifecycle struct {
	status    string
	failures  int
	restarts  int
	lastError string
	lastTime  time.Time
}

// record applies an observer.* event about the actor.
func (l *lifecycle) record(ev *messages.Event) {
	switch ev.Type {
	case messages.TypeObserverFailed:
		l.status, l.failures = protocol.StatusRestarting, l.failures+1
		l.lastError, l.lastTime = ev.GetObserver().GetReason(), ev.Time.AsTime()
	case messages.TypeObserverRestarted:
		l.status, l.restarts = protocol.StatusRunning, l.restarts+1
	case messages.TypeObserverQuarantined:
		l.status = protocol.StatusQuarantined
		l.lastError, l.lastTime = ev.GetObserver().GetReason(), ev.Time.AsTime()
	}
}

type observer struct {
	lifecycle
	policy, revision string
	kind             string
	state            messages.ObserverState // as published
	last             messages.Result
	lastTime         time.Time
	failedInARow     int // consecutive non-OK results
	okInARow         int // consecutive OK results
	observations     uint64
	latency          time.Duration // of the last observation that measured one
	// held is the state the thresholds give, which state shows unless
	// the observer is flapping; flips are the times held changed between
	// up and down within the flap window.
	held  messages.ObserverState
	flips []time.Time
}

func newObserver(kind string, ref *messages.PolicyRef) *observer {
	unknown := messages.ObserverState_OBSERVER_STATE_UNKNOWN
	return &observer{
		lifecycle: lifecycle{status: protocol.StatusRunning},
		policy:    ref.GetName(), revision: ref.GetRevision(),
		kind: kind, state: unknown, held: unknown,
	}
}

// Flap damping: FlapTransitions changes between up and down within
// FlapIntervals intervals of the observer make it degraded.
const (
	FlapTransitions = 4
	FlapIntervals   = 20
)

func newActor(opts Options, m *metrics) *Actor {
	if opts.EventsPerSecond <= 0 {
		opts.EventsPerSecond = DefaultEventsPerSecond
	}
	if opts.EventsPerSecondTotal <= 0 {
		opts.EventsPerSecondTotal = DefaultEventsPerSecondTotal
	}
	if opts.ThrottleWindow <= 0 {
		opts.ThrottleWindow = DefaultThrottleWindow
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.AfterFunc == nil {
		opts.AfterFunc = func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
	}
	a := &Actor{
		opts: opts, metrics: m,
		observers: map[protocol.Emitter]*observer{}, actors: map[string]*lifecycle{}, budgets: map[string]*budget{},
		rejections: map[string]string{},
		total:      rate.NewLimiter(rate.Limit(opts.EventsPerSecondTotal), burstOf(opts.EventsPerSecondTotal)),
		snap:       protocol.Snapshot{Node: opts.Node, Version: opts.Version, Started: time.Now()},
	}
	for _, name := range opts.Actors {
		a.actors[name] = &lifecycle{status: protocol.StatusRunning}
	}
	return a
}

// Props for the state-manager; it has no children. Its metrics are
// registered once and shared by its incarnations.
func Props(opts Options) *actor.Props {
	m := newMetrics(opts.Metrics)
	return actor.PropsFromProducer(func() actor.Actor { return newActor(opts, m) })
}

// Receive handles the actor's messages.
func (a *Actor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.opts.Log.Debug().Msg("state-manager started")
	case *actor.Stopping, *actor.Restarting:
		// What open windows dropped is reported now, not lost with them.
		for _, name := range slices.Sorted(maps.Keys(a.budgets)) {
			a.closeWindow(ctx, name, a.budgets[name])
		}
	case *protocol.Emit:
		a.emit(ctx, msg)
	case *protocol.ObserverWarning:
		// An observer it does not list (stopped since) has no row to show.
		if o, ok := a.observers[msg.From]; ok {
			o.lastError = msg.Reason
		}
	case *windowEnded:
		if b := a.budgets[msg.policy]; b == msg.budget && b.stop != nil && b.since.Equal(msg.since) {
			a.report(ctx, msg.policy, b, a.opts.ThrottleWindow)
		}
	case *protocol.BrokerStatus:
		a.snap.Broker = *msg
	case *protocol.PoliciesLoaded:
		a.snap.PoliciesLoaded = true
		a.snap.Policies = slices.Clone(msg.Applied)
		a.snap.Rejected = slices.Clone(msg.Rejected)
		maps.DeleteFunc(a.rejections, func(file, _ string) bool { return !slices.Contains(msg.Rejected, file) })
		// Observations still in flight when their policy was removed
		// made a budget for it again.
		running := make(map[string]bool, len(msg.Applied))
		for _, name := range msg.Applied {
			running[name] = true
		}
		for _, name := range slices.Sorted(maps.Keys(a.budgets)) {
			if !running[name] {
				a.forget(ctx, name)
			}
		}
	case *protocol.GetState:
		ctx.Respond(a.snapshot())
	}
}

// emit completes ev's envelope, updates the state it implies and hands it
// (and any transition it causes) to the broker.
func (a *Actor) emit(ctx actor.Context, msg *protocol.Emit) {
	from, ev := msg.From, msg.Event
	path := from.Path()
	a.stamp(path, ev)
	observation := ev.Category == messages.Category_CATEGORY_OBSERVATION
	switch {
	case ev.Type == messages.TypePolicyRemoved:
		// Its last report comes before its removal.
		a.forget(ctx, ev.GetPolicyOutcome().GetName())
		a.publish(ctx, path, ev, nil)
	case observation && !a.admit(ctx, ev):
		a.metrics.count(path, ev) // made, and counted for the state, but not published
	default:
		a.publish(ctx, path, ev, msg.Accepted)
	}
	switch ev.Type {
	case messages.TypeObserverStarted:
		// A fresh incarnation (a new version, or a resume) is running;
		// what its predecessors went through stays counted.
		o, ok := a.observers[from]
		if !ok {
			o = newObserver(ev.GetObserver().GetKind(), ev.Policy)
			a.observers[from] = o
		}
		o.status = protocol.StatusRunning
		o.policy, o.revision = ev.Policy.GetName(), ev.Policy.GetRevision()
	case messages.TypeObserverStopped:
		o, ok := a.observers[from]
		switch {
		case !ok:
		case ev.GetObserver().GetReason() == protocol.StopReasonReplaced:
			// Its replacement's observer.started follows (the
			// task-manager starts it once this one has terminated):
			// what the observer went through stays counted.
		case ev.GetObserver().GetReason() == protocol.StopReasonPaused:
			o.status = protocol.StatusPaused // listed until it resumes
		case o.status == protocol.StatusQuarantined:
			// Stopped by its quarantine: listed, with its reason, until
			// its policy changes or an operator resumes it; an operator
			// needs to see it most of all.
		default:
			delete(a.observers, from)
		}
	case messages.TypeObserverFailed, messages.TypeObserverRestarted, messages.TypeObserverQuarantined:
		switch o, ok := a.observers[from]; {
		case ok:
			o.record(ev)
		case from.IsObserver():
			// One that never started (its spec cannot run) or that a
			// give-up just stopped: listed with its failure.
			o = newObserver(ev.GetObserver().GetKind(), ev.Policy)
			o.record(ev)
			a.observers[from] = o
		default:
			l, ok := a.actors[from.Actor]
			if !ok {
				l = &lifecycle{}
				a.actors[from.Actor] = l
			}
			l.record(ev)
		}
	case messages.TypePolicyRejected:
		out := ev.GetPolicyOutcome()
		a.rejections[out.GetFile()] = protocol.Reason(out.GetReason())
	case messages.TypePolicyApplied, messages.TypePolicyRemoved:
		// Observers a policy no longer has are forgotten, whatever state
		// they were left in (a quarantined one sends no stop).
		out := ev.GetPolicyOutcome()
		for _, name := range out.GetRemoved() {
			delete(a.observers, protocol.ObserverEmitter(out.GetName(), name))
		}
	}
	if observation {
		if change := a.observe(from, ev, msg.Observer); change != nil {
			a.stamp(path, change)
			a.publish(ctx, path, change, nil)
		}
	}
}

func (a *Actor) stamp(path string, ev *messages.Event) {
	messages.Stamp(ev, a.opts.Node, a.opts.Version, path)
}

func (a *Actor) publish(ctx actor.Context, path string, ev *messages.Event, accepted func(*messages.Event)) {
	a.snap.EventsEmitted++
	a.metrics.count(path, ev)
	ctx.Send(a.opts.Broker, &protocol.Publish{Event: ev, Accepted: accepted})
}

// admit reports whether ev may be published: when both its policy's
// budget and the total budget have a token for it, and then it takes one
// from each. When either refuses, it takes nothing from the other, for
// fairness both ways: an observation over its own policy's budget does
// not spend the share of the total the other policies need (a flooding
// policy takes at most its own budget from the total), and one the total
// refuses leaves its policy's tokens for when the total has room again
// (a policy is not charged for what the others did). So the total only
// bites when many policies together exceed it, and then every
// observation has the same chance: each policy gets a share in proportion
// to what it makes, never more than its own budget. A drop, by either,
// is the policy's and opens its report window if none is open.
func (a *Actor) admit(ctx actor.Context, ev *messages.Event) bool {
	name := ev.Policy.GetName()
	b := a.budgets[name]
	if b == nil {
		b = &budget{limiter: rate.NewLimiter(rate.Limit(a.opts.EventsPerSecond), burstOf(a.opts.EventsPerSecond))}
		a.budgets[name] = b
	}
	// The actor handles one message at a time: nothing takes a token
	// between the look and the take.
	now := a.opts.Now()
	own := b.limiter.TokensAt(now) >= 1
	if own && a.total.TokensAt(now) >= 1 {
		b.limiter.AllowN(now, 1)
		a.total.AllowN(now, 1)
		return true
	}
	b.dropped++
	if own {
		b.byTotal++
	}
	b.total++
	b.revision = ev.Policy.GetRevision()
	a.metrics.throttled.WithLabelValues(name).Inc()
	if b.stop == nil {
		root, self := ctx.ActorSystem().Root, ctx.Self()
		b.since = now
		b.stop = a.opts.AfterFunc(a.opts.ThrottleWindow, func() { root.Send(self, &windowEnded{policy: name, budget: b, since: now}) })
	}
	return false
}

// report publishes policy.throttled for the open window of b (which
// covered window) and closes it.
func (a *Actor) report(ctx actor.Context, name string, b *budget, window time.Duration) {
	ev := messages.NewEvent(messages.TypePolicyThrottled)
	// Observations of this policy are lost to every consumer: more than
	// news, less than an outage.
	ev.Severity = messages.Severity_SEVERITY_MEDIUM
	ev.Policy = &messages.PolicyRef{Name: name, Revision: b.revision}
	ev.Data = &messages.Event_PolicyThrottled{PolicyThrottled: &messages.PolicyThrottled{
		Name:                 name,
		Window:               durationpb.New(window),
		DroppedEvents:        b.dropped,
		EventsPerSecond:      a.opts.EventsPerSecond,
		Burst:                uint32(burstOf(a.opts.EventsPerSecond)),
		DroppedByTotal:       b.byTotal,
		EventsPerSecondTotal: a.opts.EventsPerSecondTotal,
		BurstTotal:           uint32(burstOf(a.opts.EventsPerSecondTotal)),
	}}
	a.opts.Log.Warn().Str("policy", name).Uint64("dropped", b.dropped).Uint64("dropped_by_total", b.byTotal).Stringer("window", window).
		Float64("events_per_second", a.opts.EventsPerSecond).Float64("events_per_second_total", a.opts.EventsPerSecondTotal).
		Msg("policy throttled: observations over its event budget, or over all policies' total, were not published")
	b.stop()
	b.dropped, b.byTotal, b.since, b.stop = 0, 0, time.Time{}, nil
	a.stamp(protocol.StateManager, ev)
	a.publish(ctx, protocol.StateManager, ev, nil)
}

// closeWindow reports b's open window, if any, before its end: the report
// covers the time since its first drop.
func (a *Actor) closeWindow(ctx actor.Context, name string, b *budget) {
	if b.stop != nil {
		a.report(ctx, name, b, a.opts.Now().Sub(b.since))
	}
}

// forget drops the budget and the metric of a policy that no longer runs,
// reporting its open window first. The metric goes even without a budget:
// a restarted state-manager shares its predecessor's metrics.
func (a *Actor) forget(ctx actor.Context, name string) {
	if b, ok := a.budgets[name]; ok {
		a.closeWindow(ctx, name, b)
		delete(a.budgets, name)
	}
	a.metrics.throttled.DeleteLabelValues(name)
}

// observe records an observation and returns the state.changed event it
// causes, if any.
func (a *Actor) observe(from protocol.Emitter, ev *messages.Event, spec *policy.Observer) *messages.Event {
	rules := rulesOf(spec)
	res, _ := messages.ResultOf(ev)
	o, ok := a.observers[from]
	if !ok {
		o = newObserver("", ev.Policy)
		a.observers[from] = o
	}
	now := ev.Time.AsTime()
	if kind, ok := kinds.KindOf(ev); ok {
		o.kind = kind // the policy's name for it: wasm, not plugin.<suffix>
	}
	o.last, o.lastTime = res, now
	if _, d, ok := kinds.Latency(ev); ok {
		o.latency = d
	}
	o.observations++
	if res == messages.Result_RESULT_OK {
		o.failedInARow, o.okInARow = 0, o.okInARow+1
	} else {
		o.failedInARow, o.okInARow = o.failedInARow+1, 0
	}

	held := o.held
	switch {
	case res == messages.Result_RESULT_OK && (held != messages.ObserverState_OBSERVER_STATE_DOWN || o.okInARow >= rules.UpAfter):
		held = messages.ObserverState_OBSERVER_STATE_UP
	case res != messages.Result_RESULT_OK && o.failedInARow >= rules.DownAfter:
		held = messages.ObserverState_OBSERVER_STATE_DOWN
	}
	if held != o.held && o.held != messages.ObserverState_OBSERVER_STATE_UNKNOWN {
		o.flips = append(o.flips, now)
	}
	o.held = held
	window := FlapIntervals * rules.interval
	o.flips = slices.DeleteFunc(o.flips, func(t time.Time) bool { return now.Sub(t) > window })

	next, reason := held, ""
	flapping := len(o.flips) >= FlapTransitions ||
		(o.state == messages.ObserverState_OBSERVER_STATE_DEGRADED && len(o.flips) > 0)
	switch {
	case flapping:
		next = messages.ObserverState_OBSERVER_STATE_DEGRADED
		reason = fmt.Sprintf("flapping: %d changes between up and down within %s", len(o.flips), window)
	case next == messages.ObserverState_OBSERVER_STATE_DOWN:
		reason = fmt.Sprintf("%d consecutive failures (down_after %d)", o.failedInARow, rules.DownAfter)
	case o.state == messages.ObserverState_OBSERVER_STATE_DEGRADED:
		reason = fmt.Sprintf("stable for %s", window)
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
		Observer:            from.Path(),
		OldState:            o.state,
		NewState:            next,
		ConsecutiveFailures: int32(o.failedInARow),
		LastResult:          res,
		Reason:              reason,
	}}
	o.state = next
	return change
}

// rules are the thresholds and interval of an observer's spec, or the
// defaults.
type rules struct {
	policy.Thresholds
	interval time.Duration
}

func rulesOf(spec *policy.Observer) rules {
	if spec == nil {
		var r rules
		r.SetDefaults()
		r.interval = DefaultInterval
		return r
	}
	return rules{Thresholds: spec.Thresholds, interval: time.Duration(spec.Interval)}
}

// DefaultInterval stands in for the interval of an observation whose spec
// is unknown, for the flap window.
const DefaultInterval = 10 * time.Second

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

func (a *Actor) snapshot() *protocol.Snapshot {
	s := a.snap
	s.Policies = slices.Clone(a.snap.Policies)
	s.Rejected = slices.Clone(a.snap.Rejected)
	if len(a.rejections) > 0 {
		s.Rejections = maps.Clone(a.rejections)
	}
	s.Actors = make([]protocol.ActorSnapshot, 0, len(a.actors))
	for path, l := range a.actors {
		s.Actors = append(s.Actors, protocol.ActorSnapshot{
			Path: path, Status: l.status, Failures: l.failures, Restarts: l.restarts, LastError: l.lastError, LastTime: l.lastTime,
		})
	}
	// Start order: Options.Actors first, others (seen only through their
	// events) after, by path.
	order := func(path string) int {
		if i := slices.Index(a.opts.Actors, path); i >= 0 {
			return i
		}
		return len(a.opts.Actors)
	}
	slices.SortFunc(s.Actors, func(x, y protocol.ActorSnapshot) int {
		return cmp.Or(cmp.Compare(order(x.Path), order(y.Path)), strings.Compare(x.Path, y.Path))
	})
	s.Observers = make([]protocol.ObserverSnapshot, 0, len(a.observers))
	for from, o := range a.observers {
		s.Observers = append(s.Observers, protocol.ObserverSnapshot{
			Path:                from.Path(),
			Policy:              o.policy,
			Revision:            o.revision,
			Kind:                o.kind,
			State:               stateName(o.state),
			Status:              o.status,
			Failures:            o.failures,
			Restarts:            o.restarts,
			LastError:           o.lastError,
			LastResult:          kinds.ResultName(o.last),
			LastTime:            o.lastTime,
			ConsecutiveFailures: o.failedInARow,
			Observations:        o.observations,
			LastLatency:         o.latency.Seconds(),
		})
	}
	slices.SortFunc(s.Observers, func(x, y protocol.ObserverSnapshot) int { return strings.Compare(x.Path, y.Path) })
	for name, b := range a.budgets {
		if b.total > 0 {
			if s.Throttled == nil {
				s.Throttled = map[string]uint64{}
			}
			s.Throttled[name] = b.total
		}
	}
	return &s
}

func stateName(s messages.ObserverState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "OBSERVER_STATE_"))
}
