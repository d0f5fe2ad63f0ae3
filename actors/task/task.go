// Package task is the task-manager actor: it alone decides what runs. The
// policy-manager tells it what the files of policy_dir ask for (the
// desired set: protocol.ApplyPolicy, RemovePolicy, RejectFile, FilesRead);
// the task-manager diffs each policy against the version it runs, admits
// it under the daemon's totals, starts, replaces and stops the observers
// (one child per policy observer, named observer/<policy>/<name>#<n>), and
// emits policy.applied, policy.removed and policy.rejected from what it
// did. An unchanged observer keeps running (and keeps its schedule), a
// changed one is replaced, a removed one stops.
//
// Why here? The event says what changed, and the change is what this actor
// does: deciding it where it is done keeps the event and the action the
// same, with nothing to reconcile between two copies of what runs. The
// policy events keep the source the contract gives them
// (observerd://<node>/policy-manager, docs/policies.md): consumers follow
// the daemon's policy handling, not the actor that emits.
//
// Totals: a version that would take the daemon past limits.max_observers
// or limits.max_plugin_memory, beside the other policies that run, is
// refused (policy.rejected naming its file); the version that ran keeps
// running, and the refused one waits. At the end of every round
// (protocol.FilesRead) the waiting versions are admitted, in file name
// order, as far as there is room. A refused version that took the name
// over from another file (which no longer declares it) stops the old
// version, which has no file any more.
//
// What is desired and what runs (with the pauses and the rejections
// reported) is shared by the actor's incarnations (see Props): a restarted
// task-manager starts everything again by itself, with the correlation of
// the policy.applied that last changed each policy, and nobody resends
// anything.
//
// The observer commands (protocol.Pause, Resume, ObserveNow) act on one
// observer; sent as requests they are answered with a
// protocol.CommandDone.
//
// It supervises its observers with actors/restart's Observers policy:
// a failed observer restarts after a capped exponential backoff and is
// quarantined at its 5th failure within 60 s, until its policy changes or a
// protocol.Resume arrives. Every failure, restart and quarantine is an
// event.
package task

import (
	"fmt"
	"maps"
	"slices"
	"strings"

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
	// Node is the daemon's node name (observer.Spec.Node).
	Node string
	// State receives the events and PoliciesLoaded.
	State *actor.PID
	// Allowed is what observers may reach (redirects are re-checked).
	Allowed *targets.AllowList
	// Limits bound the totals of all policies (limits.max_observers,
	// limits.max_plugin_memory); nil means policy.DefaultBounds.
	Limits *policy.Bounds
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

// policyEvents is the source of policy.applied, policy.removed and
// policy.rejected, as the contract gives it (docs/policies.md).
var policyEvents = protocol.ActorEmitter(protocol.PolicyManager)

// Actor is the task-manager.
type Actor struct {
	opts     Options
	strategy *restart.Strategy
	// book and budget are shared by the actor's incarnations (see Props).
	book   *book
	budget *kinds.MemoryBudget
	// groups are the observers this incarnation runs, by policy name.
	groups map[string]*group
	// children is what each child was spawned for, by PID id, until it is
	// gone for good: its failures are reported with its own policy
	// revision and correlation even after a newer version replaced it.
	children map[string]*child
	// alive is the child of each observer (by path) until it has
	// terminated, and deferred the observers to start when it has: an
	// observer's next incarnation starts after the last one's
	// observer.stopped, so that consumers read its lifecycle in order.
	alive      map[string]*actor.PID
	deferred   map[string]bool
	generation uint64
	stopping   bool // Stopping or Restarting seen
}

// book is what the task-manager keeps across its restarts: what is
// desired, what it decided to run, and what it reported rejected.
type book struct {
	policies map[string]*desired // by policy name
	// rejected is, for each file whose rejection stands, the key of its
	// last policy.rejected: the same rejection is reported once, and a
	// file good again with the revision that runs is reported applied.
	rejected map[string]string
}

func newBook() *book {
	return &book{policies: map[string]*desired{}, rejected: map[string]string{}}
}

// desired is one policy a file asks for.
type desired struct {
	// policy is the version that runs (nil while none was admitted), and
	// correlation the policy.applied that last changed it.
	policy      *policy.Policy
	correlation string
	// waiting is a newer version refused for want of room under the
	// totals, admitted when room appears.
	waiting *policy.Policy
	// paused are its paused observers: a pause holds across changes of
	// the policy, and across restarts of this actor, until a Resume.
	paused map[string]bool
}

// group is the observers of one policy that this incarnation runs.
type group struct {
	access      *kinds.TargetAccess
	children    map[string]*actor.PID // observer name -> its current child
	quarantined map[string]bool
}

// child is what one observer child was spawned for.
type child struct {
	policy      *policy.Policy
	observer    string
	correlation string
	stop        *observer.StopNote
	// stopped: stopped on purpose (replaced, removed, paused), so it is
	// neither restarted nor quarantined any more.
	stopped bool
}

// gone says that a child has terminated, after the messages about it
// already in the mailbox (protoactor hands Terminated over ahead of
// them).
type gone struct{ pid *actor.PID }

// New returns the task-manager.
func New(opts Options) *Actor {
	if opts.Supervision == (restart.Policy{}) {
		opts.Supervision = restart.Observers
	}
	return &Actor{opts: opts, strategy: restart.New(opts.Supervision), book: newBook(), budget: kinds.NewMemoryBudget(opts.MaxResponseTotal),
		groups: map[string]*group{}, children: map[string]*child{}, alive: map[string]*actor.PID{}, deferred: map[string]bool{}}
}

// Props for the task-manager. The book (what is desired and what runs,
// the pauses, the rejections reported) is shared by its incarnations: a
// restarted task-manager runs again what ran, and a paused observer stays
// paused. So is the budget: answers that observers of an earlier
// incarnation still read hold on to it.
func Props(opts Options) *actor.Props {
	b := newBook()
	budget := kinds.NewMemoryBudget(opts.MaxResponseTotal)
	return actor.PropsFromProducer(func() actor.Actor {
		a := New(opts)
		a.book, a.budget = b, budget
		return a
	})
}

// HandleFailure makes the actor its children's supervisor strategy
// (protoactor uses an actor's own HandleFailure when it has one), so that
// each incarnation has a strategy of its own, which reports to this
// actor's mailbox (restart.Failed, Restarted, GaveUp).
func (a *Actor) HandleFailure(sys *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, rs *actor.RestartStatistics, reason, msg any) {
	a.strategy.HandleFailure(sys, sup, child, rs, reason, msg)
}

// Receive handles the actor's messages.
func (a *Actor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.restore(ctx)
	case *actor.Stopping, *actor.Restarting:
		// protoactor stops the children after this; their observer.stopped
		// events reach the state-manager before the supervisor stops it.
		// After a restart, the next incarnation starts them again.
		a.stopping = true
		a.strategy.Stop()
		for _, g := range a.groups {
			g.access.Close()
		}
	case *actor.Terminated:
		if !a.stopping {
			ctx.Send(ctx.Self(), &gone{pid: msg.Who})
		}
	case *gone:
		a.strategy.Forget(msg.pid)
		a.terminated(ctx, msg.pid)
	case *protocol.ApplyPolicy:
		a.apply(ctx, msg.Policy)
	case *protocol.RemovePolicy:
		a.remove(ctx, msg.Name)
	case *protocol.RejectFile:
		a.fileRejected(ctx, msg)
	case *protocol.FilesRead:
		a.filesRead(ctx, msg)
	case *protocol.Pause:
		a.done(ctx, a.pause(ctx, msg))
	case *protocol.Resume:
		a.done(ctx, a.resume(ctx, msg))
	case *protocol.ObserveNow:
		a.done(ctx, a.observeNow(ctx, msg))
	case *restart.Failed:
		if c := a.children[msg.Child.Id]; c != nil {
			a.lifecycle(ctx, messages.TypeObserverFailed, msg.Failure, c)
		}
	case *restart.Restarted:
		if c := a.children[msg.Child.Id]; c != nil && !c.stopped {
			a.lifecycle(ctx, messages.TypeObserverRestarted, msg.Failure, c)
		}
	case *restart.GaveUp:
		c := a.children[msg.Child.Id]
		if c == nil {
			return
		}
		// A child stopped on purpose since its failure (paused, or
		// replaced by a policy change) is not the current one any more:
		// only its failure is reported.
		if g := a.groups[c.policy.Metadata.Name]; g != nil && !c.stopped {
			delete(g.children, c.observer)
			g.quarantined[c.observer] = true
		}
		a.lifecycle(ctx, messages.TypeObserverQuarantined, msg.Failure, c)
	}
}

// restore starts what the book says runs: nothing at the first start;
// after a restart of this actor, every observer that ran (its pauses
// kept), with the correlation of the policy.applied that last changed its
// policy, and no policy event, since nothing changed in what is desired.
func (a *Actor) restore(ctx actor.Context) {
	for _, name := range slices.Sorted(maps.Keys(a.book.policies)) {
		d := a.book.policies[name]
		if d.policy == nil {
			continue
		}
		a.opts.Log.Info().Str("policy", name).Str("revision", d.policy.Revision).Msg("starting again what ran")
		g := a.group(name)
		g.access = kinds.NewTargetAccess(d.policy, a.opts.Allowed, a.budget)
		for _, o := range d.policy.Spec.Observers {
			a.startChild(ctx, name, o.Name)
		}
	}
}

// apply handles what a file now declares.
func (a *Actor) apply(ctx actor.Context, p *policy.Policy) {
	name := p.Metadata.Name
	d := a.book.policies[name]
	if d == nil {
		d = &desired{paused: map[string]bool{}}
		a.book.policies[name] = d
	}
	if d.policy != nil && d.policy.Revision == p.Revision {
		// The version that runs, read again (a comment changed, the file
		// moved, the policy-manager restarted): nothing restarts. Its file
		// may have been rejected meanwhile, or its newer version refused:
		// then consumers learn that this revision is what is in force.
		_, rejected := a.book.rejected[p.File]
		waited := d.waiting != nil
		d.policy, d.waiting = p, nil
		if rejected || waited {
			delete(a.book.rejected, p.File)
			a.emitApplied(ctx, p, p, policy.Change{})
		} else {
			a.opts.Log.Debug().Str("policy", name).Str("file", p.File).Msg("policy unchanged")
		}
		return
	}
	if problem := p.CheckTotals(a.usage(name), a.limits()); problem != nil {
		a.refuse(ctx, d, p, problem)
		return
	}
	a.run(ctx, d, p)
}

// refuse keeps p waiting for room, and reports it.
func (a *Actor) refuse(ctx actor.Context, d *desired, p *policy.Policy, problem *yamldoc.Problem) {
	if d.policy != nil && d.policy.File != p.File {
		// The name was taken over from a file that no longer declares
		// it: the version of that file cannot stay.
		a.remove(ctx, p.Metadata.Name)
		d = &desired{paused: map[string]bool{}}
		a.book.policies[p.Metadata.Name] = d
	}
	d.waiting = p
	// Reported once per refused version, however the room changes.
	a.reject(ctx, p.File, []*yamldoc.Problem{problem}, "room\n"+p.Revision, p.Central, p.Issuer)
}

// run makes p the version that runs: it emits policy.applied with what
// changes, then stops the removed and updated observers and starts the
// added and updated ones (and retries the quarantined ones).
func (a *Actor) run(ctx actor.Context, d *desired, p *policy.Policy) {
	name := p.Metadata.Name
	change := policy.Diff(d.policy, p)
	id := a.emitApplied(ctx, p, d.policy, change)
	delete(a.book.rejected, p.File)
	g := a.group(name)
	if g.access == nil || change.TargetOrLimitsChanged {
		if g.access != nil {
			g.access.Close()
		}
		g.access = kinds.NewTargetAccess(p, a.opts.Allowed, a.budget)
	}
	for _, o := range change.Removed {
		a.stopChild(ctx, g, o, "removed from its policy", id)
		delete(d.paused, o)
	}
	for _, o := range change.Updated {
		a.stopChild(ctx, g, o, protocol.StopReasonReplaced, id)
	}
	d.policy, d.correlation, d.waiting = p, id, nil
	// A policy change also retries its quarantined observers.
	start := append(change.Added, change.Updated...)
	for o := range g.quarantined {
		start = append(start, o)
	}
	clear(g.quarantined)
	for _, o := range start {
		a.startChild(ctx, name, o)
	}
}

// remove stops a policy that no file declares any more.
func (a *Actor) remove(ctx actor.Context, name string) {
	d := a.book.policies[name]
	if d == nil {
		return
	}
	delete(a.book.policies, name) // a policy added again starts unpaused
	if d.policy == nil {
		return // it only waited for room
	}
	id := a.emitRemoved(ctx, d.policy)
	if g := a.groups[name]; g != nil {
		for o := range g.children {
			a.stopChild(ctx, g, o, "policy removed", id)
		}
		g.access.Close()
		delete(a.groups, name)
	}
}

// fileRejected reports a file the policy-manager rejects. What runs from
// it keeps running; a version of it waiting for room goes, since the file
// no longer says it.
func (a *Actor) fileRejected(ctx actor.Context, msg *protocol.RejectFile) {
	for name, d := range a.book.policies {
		if d.waiting != nil && d.waiting.File == msg.File {
			d.waiting = nil
			if d.policy == nil {
				delete(a.book.policies, name)
			}
		}
	}
	a.reject(ctx, msg.File, msg.Problems, msg.Key, msg.Central, msg.Issuer)
}

// filesRead ends a round of the policy-manager: the policies that no
// file declares go, the versions waiting for room come in as far as they
// fit, and the state-manager learns what runs and what is rejected.
func (a *Actor) filesRead(ctx actor.Context, msg *protocol.FilesRead) {
	if msg.Declared != nil {
		declared := map[string]bool{}
		for _, name := range msg.Declared {
			declared[name] = true
		}
		for _, name := range slices.Sorted(maps.Keys(a.book.policies)) {
			d := a.book.policies[name]
			if declared[name] {
				continue
			}
			if d.policy != nil {
				if owns, there := msg.Declared[d.policy.File]; there && owns == "" {
					continue // its file is there, rejected: the last good version keeps running
				}
			}
			a.remove(ctx, name)
		}
	}
	var waiting []*desired
	for _, d := range a.book.policies {
		if d.waiting != nil {
			waiting = append(waiting, d)
		}
	}
	slices.SortFunc(waiting, func(x, y *desired) int { return strings.Compare(x.waiting.File, y.waiting.File) })
	for _, d := range waiting {
		if d.waiting.CheckTotals(a.usage(d.waiting.Metadata.Name), a.limits()) == nil {
			a.run(ctx, d, d.waiting)
		}
	}

	rejected := map[string]bool{}
	for _, file := range msg.Rejected {
		rejected[file] = true
	}
	loaded := &protocol.PoliciesLoaded{}
	for _, name := range slices.Sorted(maps.Keys(a.book.policies)) {
		d := a.book.policies[name]
		if d.policy != nil {
			loaded.Applied = append(loaded.Applied, name)
		}
		if d.waiting != nil {
			rejected[d.waiting.File] = true
		}
	}
	// A rejection stands while its file is rejected; one that went (the
	// file was removed) is forgotten.
	for file := range a.book.rejected {
		if !rejected[file] {
			delete(a.book.rejected, file)
		}
	}
	loaded.Rejected = slices.Sorted(maps.Keys(rejected))
	ctx.Send(a.opts.State, loaded)
}

// usage is what the policies that run take, but policy name.
func (a *Actor) usage(except string) policy.Usage {
	var u policy.Usage
	for name, d := range a.book.policies {
		if name != except && d.policy != nil {
			u = u.Add(policy.UsageOf(d.policy))
		}
	}
	return u
}

func (a *Actor) limits() policy.Bounds {
	return policy.Env{Limits: a.opts.Limits}.LimitsOf()
}

// group is the observers of policy name, made when missing.
func (a *Actor) group(name string) *group {
	g := a.groups[name]
	if g == nil {
		g = &group{children: map[string]*actor.PID{}, quarantined: map[string]bool{}}
		a.groups[name] = g
	}
	return g
}

// lookup finds the policy of an observer, for an observer command.
func (a *Actor) lookup(pol, name string) (*desired, *group, error) {
	d := a.book.policies[pol]
	if d == nil || d.policy == nil {
		return nil, nil, fmt.Errorf("no policy %q is running", pol)
	}
	if _, ok := d.policy.ObserverByName(name); !ok {
		return nil, nil, fmt.Errorf("policy %q has no observer %q", pol, name)
	}
	return d, a.group(pol), nil
}

func (a *Actor) pause(ctx actor.Context, msg *protocol.Pause) error {
	d, g, err := a.lookup(msg.Policy, msg.Observer)
	if err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	if d.paused[msg.Observer] {
		return nil
	}
	a.stopChild(ctx, g, msg.Observer, protocol.StopReasonPaused, "")
	d.paused[msg.Observer] = true
	a.opts.Log.Info().Str("observer", protocol.ObserverEmitter(msg.Policy, msg.Observer).Path()).Msg("observer paused")
	return nil
}

func (a *Actor) resume(ctx actor.Context, msg *protocol.Resume) error {
	d, g, err := a.lookup(msg.Policy, msg.Observer)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if !d.paused[msg.Observer] && !g.quarantined[msg.Observer] {
		return fmt.Errorf("resume: observer %s is neither paused nor quarantined", protocol.ObserverEmitter(msg.Policy, msg.Observer))
	}
	delete(d.paused, msg.Observer)
	delete(g.quarantined, msg.Observer)
	a.startChild(ctx, msg.Policy, msg.Observer)
	return nil
}

func (a *Actor) observeNow(ctx actor.Context, msg *protocol.ObserveNow) error {
	_, g, err := a.lookup(msg.Policy, msg.Observer)
	if err != nil {
		return fmt.Errorf("observe now: %w", err)
	}
	pid, ok := g.children[msg.Observer]
	if !ok {
		return fmt.Errorf("observe now: observer %s is paused or quarantined", protocol.ObserverEmitter(msg.Policy, msg.Observer))
	}
	ctx.Send(pid, &protocol.RunNow{})
	return nil
}

// done answers an observer command sent as a request.
func (a *Actor) done(ctx actor.Context, err error) {
	if ctx.Sender() != nil {
		ctx.Respond(&protocol.CommandDone{Err: err})
	}
}

// startChild starts observer name of policy pol, unless it runs or is
// paused.
func (a *Actor) startChild(ctx actor.Context, pol, name string) {
	d, g := a.book.policies[pol], a.group(pol)
	o, ok := d.policy.ObserverByName(name)
	if !ok || g.children[name] != nil || d.paused[name] {
		return
	}
	path := protocol.ObserverEmitter(pol, name).Path()
	if a.alive[path] != nil {
		a.deferred[path] = true // started by terminated
		return
	}
	spec := observer.Spec{
		Node:          a.opts.Node,
		Policy:        d.policy,
		Observer:      o,
		CorrelationID: d.correlation,
		Access:        g.access,
		Gate:          a.opts.Gate,
		State:         a.opts.State,
		Metrics:       a.opts.Metrics,
		Plugins:       a.opts.Plugins,
		PluginDir:     a.opts.PluginDir,
		PIDDirs:       a.opts.PIDDirs,
		MaxResponse:   a.opts.MaxResponse,
		Stop:          &observer.StopNote{},
		Log:           a.opts.Log.With().Str("observer", pol+"/"+name).Logger(),
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
	g.children[name] = pid
	a.alive[path] = pid
	a.children[pid.Id] = &child{policy: d.policy, observer: name, correlation: d.correlation, stop: spec.Stop}
}

// terminated forgets a child that has terminated, and starts the
// observer's next incarnation if one waited for it.
func (a *Actor) terminated(ctx actor.Context, pid *actor.PID) {
	c := a.children[pid.Id]
	delete(a.children, pid.Id)
	if c == nil {
		return
	}
	pol := c.policy.Metadata.Name
	path := protocol.ObserverEmitter(pol, c.observer).Path()
	if live := a.alive[path]; live == nil || live.Id != pid.Id {
		return // a predecessor of the child that runs
	}
	delete(a.alive, path)
	if a.deferred[path] {
		delete(a.deferred, path)
		if d := a.book.policies[pol]; d != nil && d.policy != nil {
			a.startChild(ctx, pol, c.observer)
		}
	}
}

// stopChild stops an observer. reason and causation (the event that
// caused the stop, if any) go into its observer.stopped.
func (a *Actor) stopChild(ctx actor.Context, g *group, name, reason, causation string) {
	delete(g.quarantined, name)
	pid, ok := g.children[name]
	if !ok {
		return
	}
	if c := a.children[pid.Id]; c != nil {
		c.stop.Set(reason, causation)
		c.stopped = true
	}
	delete(g.children, name)
	a.strategy.Forget(pid)
	// Not waited for here, which would hold this mailbox up behind a
	// child that is failing or waiting out a backoff: its replacement, if
	// any, starts when it has terminated (see terminated).
	ctx.Stop(pid)
}

// emitApplied emits the policy.applied of p replacing old (nil: none)
// with change, and returns its id: the correlation and causation of
// everything the observers it starts emit.
func (a *Actor) emitApplied(ctx actor.Context, p, old *policy.Policy, change policy.Change) string {
	ev := messages.NewEvent(messages.TypePolicyApplied)
	ev.Subject = p.Spec.Target.Name
	ev.Policy = &messages.PolicyRef{Name: p.Metadata.Name, Revision: p.Revision}
	outcome := &messages.PolicyOutcome{
		Name: p.Metadata.Name, Revision: p.Revision, File: p.File,
		Added: change.Added, Updated: change.Updated, Removed: change.Removed,
		Origin: originOf(p.Central), Issuer: p.Issuer,
	}
	if old != nil {
		outcome.PreviousRevision = old.Revision
	}
	ev.Data = &messages.Event_PolicyOutcome{PolicyOutcome: outcome}
	ctx.Send(a.opts.State, &protocol.Emit{From: policyEvents, Event: ev})
	a.opts.Log.Info().Str("policy", p.Metadata.Name).Str("revision", p.Revision).Str("file", p.File).
		Strs("added", change.Added).Strs("updated", change.Updated).Strs("removed", change.Removed).Msg("policy applied")
	return ev.Id
}

// emitRemoved emits the policy.removed of p and returns its id: the
// causation of its observers' observer.stopped.
func (a *Actor) emitRemoved(ctx actor.Context, p *policy.Policy) string {
	ev := messages.NewEvent(messages.TypePolicyRemoved)
	ev.Subject = p.Spec.Target.Name
	ev.Policy = &messages.PolicyRef{Name: p.Metadata.Name, Revision: p.Revision}
	ev.Data = &messages.Event_PolicyOutcome{PolicyOutcome: &messages.PolicyOutcome{
		Name: p.Metadata.Name, Revision: p.Revision, File: p.File, Removed: policy.Diff(p, nil).Removed,
		Origin: originOf(p.Central), Issuer: p.Issuer,
	}}
	ctx.Send(a.opts.State, &protocol.Emit{From: policyEvents, Event: ev})
	a.opts.Log.Info().Str("policy", p.Metadata.Name).Str("revision", p.Revision).Str("file", p.File).Msg("policy removed")
	return ev.Id
}

// originOf is where a policy came from: a central policy or a file of
// policy_dir.
func originOf(central bool) messages.PolicyOrigin {
	if central {
		return messages.PolicyOrigin_POLICY_ORIGIN_CENTRAL
	}
	return messages.PolicyOrigin_POLICY_ORIGIN_LOCAL
}

// reject emits policy.rejected for file, once per key, naming the version
// that stays in force from it (if any runs); central and issuer say where
// the file came from.
func (a *Actor) reject(ctx actor.Context, file string, probs []*yamldoc.Problem, key string, central bool, issuer string) {
	if last, ok := a.book.rejected[file]; ok && last == key {
		return
	}
	a.book.rejected[file] = key
	reasons := rejectionReasons(probs)
	first := probs[0]
	outcome := &messages.PolicyOutcome{
		File: file, Line: int32(first.Line), Column: int32(first.Column), Reason: strings.Join(reasons, "\n"),
		Origin: originOf(central), Issuer: issuer,
	}
	ev := messages.NewEvent(messages.TypePolicyRejected)
	ev.Severity = messages.Severity_SEVERITY_MEDIUM
	for _, d := range a.book.policies {
		if p := d.policy; p != nil && p.File == file {
			outcome.Name, outcome.PreviousRevision = p.Metadata.Name, p.Revision
			ev.Policy = &messages.PolicyRef{Name: p.Metadata.Name, Revision: p.Revision}
			ev.Subject = p.Spec.Target.Name
		}
	}
	ev.Data = &messages.Event_PolicyOutcome{PolicyOutcome: outcome}
	ctx.Send(a.opts.State, &protocol.Emit{From: policyEvents, Event: ev})
	a.opts.Log.Error().Str("file", file).Str("kept_revision", outcome.PreviousRevision).Strs("problems", reasons).Msg("policy rejected")
}

// maxReason bounds the problems a policy.rejected carries (and its log
// line): a file may have a hundred problems with long key paths, and the
// first ones say what to fix.
const maxReason = 16 << 10

// rejectionReasons renders the problems, one per line, as many as fit in
// maxReason, and says how many more there are.
func rejectionReasons(probs []*yamldoc.Problem) []string {
	var reasons []string
	size := 0
	for i, p := range probs {
		line := p.Error()
		if size += len(line) + 1; size > maxReason && i > 0 {
			return append(reasons, fmt.Sprintf("… and %d more problems (observerctl policy validate lists them all)", len(probs)-i))
		}
		reasons = append(reasons, line)
	}
	return reasons
}

func (a *Actor) lifecycle(ctx actor.Context, typ string, f restart.Failure, c *child) {
	p, name := c.policy, c.observer
	o, _ := p.ObserverByName(name)
	payload := &messages.ObserverLifecycle{
		Reason:   protocol.Reason(f.Reason.Error()),
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
	log.Str("observer", p.Metadata.Name+"/"+name).Int("failures", f.Failures).Stringer("backoff", f.Backoff).
		Str("reason", f.Reason.Error()).Msg(typ)
	ev := observer.LifecycleEvent(typ, p, o, c.correlation, payload)
	ctx.Send(a.opts.State, &protocol.Emit{From: protocol.ObserverEmitter(p.Metadata.Name, name), Event: ev})
}
