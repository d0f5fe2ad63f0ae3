// Package task is the task-manager actor: it turns policies into running
// observers, one child per policy observer, named observer/<policy>/<name>.
// It changes only what the policy-manager's change message names: an
// unchanged observer keeps running (and keeps its schedule), a changed one
// is replaced, a removed one stops.
//
// Configuration messages from inside the daemon (messages.Pause, Resume,
// ObserveNow) act on one observer; sent as requests they are answered with
// a messages.CommandDone.
//
// It supervises its observers with actors/restart's Observers policy:
// a failed observer restarts after a capped exponential backoff and is
// quarantined at its 5th failure within 60 s, until its policy changes or a
// messages.Resume arrives. Every failure, restart and quarantine is an
// event.
package task

import (
	"fmt"
	"slices"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/polar/observerd/actors/observer"
	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/actors/restart"
	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/wasm"
)

// Options configure the task-manager.
type Options struct {
	// State receives the observers' events.
	State *actor.PID
	// Allowed is what observers may reach (redirects are re-checked).
	Allowed *targets.AllowList
	// Gate, when closed, makes observers skip their turns (the outbox is
	// full with when_full: block).
	Gate *protocol.Gate
	// Metrics counts the observers' skipped and late turns (nil: not
	// exposed).
	Metrics *observer.Metrics
	// Plugins runs the wasm observers' modules, found in PluginDir; nil
	// makes every wasm observer fail at once (quarantined).
	Plugins   *wasm.Host
	PluginDir string
	// PIDDirs (allowed_pid_dirs) and MaxResponse
	// (limits.max_response_bytes) bound what observers read; see
	// observer.Spec.
	PIDDirs     []string
	MaxResponse yamldoc.ByteSize
	// MaxResponseTotal (limits.max_response_bytes_total) bounds the
	// answers all observers hold at once: the one kinds.MemoryBudget of
	// every policy; 0 means the default.
	MaxResponseTotal yamldoc.ByteSize
	// Supervision of the observers; zero means restart.Observers.
	Supervision restart.Policy
	Log         zerolog.Logger
}

// Actor is the task-manager.
type Actor struct {
	opts     Options
	strategy *restart.Strategy
	self     *actor.PID
	root     *actor.RootContext
	policies map[string]*running
	// children maps a child's PID id to what it was spawned for, so that
	// its failures are reported with its own policy revision and
	// correlation even after a newer version replaced it.
	children   map[string]ref
	generation uint64
	// pauses are the paused observers, by policy, and budget the memory
	// of all policies' answers (both shared by the actor's incarnations,
	// see Props).
	pauses map[string]map[string]bool
	budget *kinds.MemoryBudget
}

type ref struct {
	policy      *policy.Policy
	observer    string
	correlation string
	stop        *observer.StopNote
}

// running is one policy being observed.
type running struct {
	policy      *policy.Policy
	correlation string
	access      *kinds.TargetAccess
	children    map[string]*actor.PID // observer name -> child
	quarantined map[string]bool
	paused      map[string]bool
}

// childFailed, childRestarted and childGaveUp carry the strategy's
// callbacks back into the mailbox. Failed and GaveUp run on this actor's
// goroutine (inside HandleFailure), so they capture what the child was
// spawned for at the moment it failed, before a policy change can replace
// it.
type (
	childFailed struct {
		f   restart.Failure
		ref ref
		ok  bool
	}
	childRestarted struct{ f restart.Failure }
	childGaveUp    struct {
		f   restart.Failure
		ref ref
		ok  bool
	}
)

// New returns the task-manager.
func New(opts Options) *Actor {
	if opts.Supervision == (restart.Policy{}) {
		opts.Supervision = restart.Observers
	}
	a := &Actor{opts: opts, policies: map[string]*running{}, children: map[string]ref{}, pauses: map[string]map[string]bool{},
		budget: kinds.NewMemoryBudget(opts.MaxResponseTotal)}
	a.strategy = restart.New(opts.Supervision, restart.Callbacks{
		Failed: func(f restart.Failure) {
			r, ok := a.children[f.Child.Id]
			a.root.Send(a.self, &childFailed{f, r, ok})
		},
		Restarted: func(f restart.Failure) { a.root.Send(a.self, &childRestarted{f}) },
		GaveUp: func(f restart.Failure) {
			r, ok := a.children[f.Child.Id]
			a.root.Send(a.self, &childGaveUp{f, r, ok})
		},
	})
	return a
}

// Props for the task-manager. The pauses are shared by its incarnations:
// a restarted task-manager starts again what the policy-manager resends,
// and a paused observer must stay paused. So is the budget: answers that
// observers of an earlier incarnation still read hold on to it.
func Props(opts Options) *actor.Props {
	pauses := map[string]map[string]bool{}
	budget := kinds.NewMemoryBudget(opts.MaxResponseTotal)
	return actor.PropsFromProducer(func() actor.Actor {
		a := New(opts)
		a.pauses, a.budget = pauses, budget
		return a
	})
}

// paused is the set of paused observers of policy pol.
func (a *Actor) paused(pol string) map[string]bool {
	if a.pauses[pol] == nil {
		a.pauses[pol] = map[string]bool{}
	}
	return a.pauses[pol]
}

// HandleFailure makes the actor its children's supervisor strategy
// (protoactor uses an actor's own HandleFailure when it has one), so that
// the strategy's callbacks can reach this actor's mailbox.
func (a *Actor) HandleFailure(sys *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, rs *actor.RestartStatistics, reason, msg any) {
	a.strategy.HandleFailure(sys, sup, child, rs, reason, msg)
}

// Receive handles the actor's messages.
func (a *Actor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.self, a.root = ctx.Self(), ctx.ActorSystem().Root
	case *actor.Stopping, *actor.Restarting:
		// protoactor stops the children after this; their observer.stopped
		// events reach the state-manager before the supervisor stops it.
		// A restart stops them too: the policy-manager resends what runs.
		a.strategy.Stop()
		for _, r := range a.policies {
			r.access.Close()
		}
	case *protocol.ApplyPolicy:
		a.apply(ctx, msg)
	case *protocol.RemovePolicy:
		if r, ok := a.policies[msg.Name]; ok {
			for name := range r.children {
				a.stopChild(ctx, r, name, "policy removed", msg.EventID)
			}
			r.access.Close()
			delete(a.policies, msg.Name)
			delete(a.pauses, msg.Name) // a policy added again starts unpaused
		}
	case *protocol.GetRunning:
		var out protocol.Running
		for _, r := range a.policies {
			out.Policies = append(out.Policies, protocol.RunningPolicy{Policy: r.policy, EventID: r.correlation})
		}
		ctx.Respond(&out)
	case *protocol.Pause:
		a.done(ctx, a.pause(ctx, msg))
	case *protocol.Resume:
		a.done(ctx, a.resume(ctx, msg))
	case *protocol.ObserveNow:
		a.done(ctx, a.observeNow(ctx, msg))
	case *childFailed:
		if msg.ok {
			a.lifecycle(ctx, messages.TypeObserverFailed, msg.f, msg.ref)
		}
	case *childRestarted:
		if ref, ok := a.children[msg.f.Child.Id]; ok {
			a.lifecycle(ctx, messages.TypeObserverRestarted, msg.f, ref)
		}
	case *childGaveUp:
		if !msg.ok {
			return
		}
		// The child may be gone already (paused, or removed by a policy
		// change handled between its failure and this message).
		if r := a.policies[msg.ref.policy.Metadata.Name]; r != nil && r.children[msg.ref.observer] != nil &&
			r.children[msg.ref.observer].Equal(msg.f.Child) {
			delete(r.children, msg.ref.observer)
			r.quarantined[msg.ref.observer] = true
		}
		delete(a.children, msg.f.Child.Id) // gone for good
		a.lifecycle(ctx, messages.TypeObserverQuarantined, msg.f, msg.ref)
	}
}

// apply starts, replaces and stops the observers that msg.Change names.
func (a *Actor) apply(ctx actor.Context, msg *protocol.ApplyPolicy) {
	p := msg.Policy
	r, ok := a.policies[p.Metadata.Name]
	if !ok {
		r = &running{children: map[string]*actor.PID{}, quarantined: map[string]bool{}, paused: a.paused(p.Metadata.Name)}
		a.policies[p.Metadata.Name] = r
	}
	// What changes is decided against what runs here: the policy-manager's
	// view can be stale (it restarted, or could not ask).
	change := policy.Diff(r.policy, p)
	if !sameChange(change, msg.Change) {
		a.opts.Log.Warn().Str("policy", p.Metadata.Name).Msg("policy-manager's change differs from what runs: applying the change against what runs")
	}
	if r.access == nil || change.TargetOrLimitsChanged {
		if r.access != nil {
			r.access.Close()
		}
		r.access = kinds.NewTargetAccess(p, a.opts.Allowed, a.budget)
	}
	for _, name := range change.Removed {
		a.stopChild(ctx, r, name, "removed from its policy", msg.EventID)
		delete(r.paused, name)
	}
	for _, name := range change.Updated {
		a.stopChild(ctx, r, name, "replaced by a new version", msg.EventID)
	}
	r.policy, r.correlation = p, msg.EventID
	// A policy change also retries its quarantined observers.
	start := append(change.Added, change.Updated...)
	for name := range r.quarantined {
		start = append(start, name)
	}
	clear(r.quarantined)
	for _, name := range start {
		a.startChild(ctx, r, name)
	}
}

func sameChange(x, y policy.Change) bool {
	return slices.Equal(x.Added, y.Added) && slices.Equal(x.Updated, y.Updated) && slices.Equal(x.Removed, y.Removed) &&
		x.TargetOrLimitsChanged == y.TargetOrLimitsChanged
}

// lookup finds the running policy of an observer, for a configuration message.
func (a *Actor) lookup(pol, name string) (*running, error) {
	r, ok := a.policies[pol]
	if !ok {
		return nil, fmt.Errorf("no policy %q is running", pol)
	}
	if _, ok := r.policy.ObserverByName(name); !ok {
		return nil, fmt.Errorf("policy %q has no observer %q", pol, name)
	}
	return r, nil
}

func (a *Actor) pause(ctx actor.Context, msg *protocol.Pause) error {
	r, err := a.lookup(msg.Policy, msg.Observer)
	if err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	if r.paused[msg.Observer] {
		return nil
	}
	a.stopChild(ctx, r, msg.Observer, protocol.StopReasonPaused, "")
	r.paused[msg.Observer] = true
	a.opts.Log.Info().Str("observer", protocol.ObserverEmitter(msg.Policy, msg.Observer).Path()).Msg("observer paused")
	return nil
}

func (a *Actor) resume(ctx actor.Context, msg *protocol.Resume) error {
	r, err := a.lookup(msg.Policy, msg.Observer)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if !r.paused[msg.Observer] && !r.quarantined[msg.Observer] {
		return fmt.Errorf("resume: observer %s is neither paused nor quarantined", protocol.ObserverEmitter(msg.Policy, msg.Observer))
	}
	delete(r.paused, msg.Observer)
	delete(r.quarantined, msg.Observer)
	a.startChild(ctx, r, msg.Observer)
	return nil
}

func (a *Actor) observeNow(ctx actor.Context, msg *protocol.ObserveNow) error {
	r, err := a.lookup(msg.Policy, msg.Observer)
	if err != nil {
		return fmt.Errorf("observe now: %w", err)
	}
	pid, ok := r.children[msg.Observer]
	if !ok {
		return fmt.Errorf("observe now: observer %s is paused or quarantined", protocol.ObserverEmitter(msg.Policy, msg.Observer))
	}
	ctx.Send(pid, &protocol.RunNow{})
	return nil
}

// done answers a configuration message sent as a request.
func (a *Actor) done(ctx actor.Context, err error) {
	if ctx.Sender() != nil {
		ctx.Respond(&protocol.CommandDone{Err: err})
	}
}

func (a *Actor) startChild(ctx actor.Context, r *running, name string) {
	o, ok := r.policy.ObserverByName(name)
	if !ok || r.children[name] != nil || r.paused[name] {
		return
	}
	spec := observer.Spec{
		Policy:        r.policy,
		Observer:      o,
		CorrelationID: r.correlation,
		Access:        r.access,
		Gate:          a.opts.Gate,
		State:         a.opts.State,
		Metrics:       a.opts.Metrics,
		Plugins:       a.opts.Plugins,
		PluginDir:     a.opts.PluginDir,
		PIDDirs:       a.opts.PIDDirs,
		MaxResponse:   a.opts.MaxResponse,
		Stop:          &observer.StopNote{},
		Log:           a.opts.Log.With().Str("observer", r.policy.Metadata.Name+"/"+name).Logger(),
	}
	// Each incarnation gets its own actor name, so that a late failure of
	// a replaced observer can never be taken for its replacement's. The
	// event source is spec.Path(), not the actor name.
	a.generation++
	pid, err := ctx.SpawnNamed(observer.Props(spec), fmt.Sprintf("%s#%d", spec.Path(), a.generation))
	if err != nil {
		a.opts.Log.Error().Err(err).Str("observer", spec.Path()).Msg("start observer")
		return
	}
	r.children[name] = pid
	a.children[pid.Id] = ref{policy: r.policy, observer: name, correlation: r.correlation, stop: spec.Stop}
}

// stopChild stops an observer. reason and causation (the event that
// caused the stop, if any) go into its observer.stopped.
func (a *Actor) stopChild(ctx actor.Context, r *running, name, reason, causation string) {
	delete(r.quarantined, name)
	pid, ok := r.children[name]
	if !ok {
		return
	}
	if ref, ok := a.children[pid.Id]; ok {
		ref.stop.Set(reason, causation)
	}
	delete(r.children, name)
	delete(a.children, pid.Id)
	a.strategy.Forget(pid)
	// Not waited for: each incarnation has a name of its own, so its
	// replacement can start at once, and a child that is failing or
	// waiting out a backoff would hold this mailbox up. Its late
	// observer.stopped carries its own correlation, which the
	// state-manager tells from its replacement's.
	ctx.Stop(pid)
}

func (a *Actor) lifecycle(ctx actor.Context, typ string, f restart.Failure, ref ref) {
	p, name := ref.policy, ref.observer
	o, _ := p.ObserverByName(name)
	payload := &messages.ObserverLifecycle{
		Reason:   firstLine(f.Reason),
		Failures: int32(f.Failures),
		Window:   durationpb.New(f.Window),
	}
	if f.Backoff > 0 {
		payload.Backoff = durationpb.New(f.Backoff)
	}
	log := a.opts.Log.Warn()
	if typ == messages.TypeObserverRestarted {
		log = a.opts.Log.Info()
	}
	log.Str("observer", p.Metadata.Name+"/"+name).Int("failures", f.Failures).Dur("backoff", f.Backoff).
		Str("reason", f.Reason.Error()).Msg(typ)
	ev := observer.LifecycleEvent(typ, p, o, ref.correlation, payload)
	ctx.Send(a.opts.State, &protocol.Emit{From: protocol.ObserverEmitter(p.Metadata.Name, name), Event: ev})
}

func firstLine(err error) string {
	s := err.Error()
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	return s
}
