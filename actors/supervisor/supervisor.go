// Package supervisor is the top of the tree: it starts the second-level
// actors in order (broker first, so that nothing emitted at start-up is
// lost; admin last, so that it never reports on actors that do not exist),
// stops them in reverse order with poison pills (so that every event queued
// before the stop reaches the broker, which drains its confirms last), and
// restarts a failed child with backoff. A child that fails beyond its
// intensity (restart.Managers) escalates: the supervisor stops the tree
// in order and calls Options.Exit with the error, and the daemon exits
// non-zero so that systemd restarts it.
package supervisor

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/actors/restart"
	"github.com/polar/observerd/messages"
)

// PID returns the PID the supervisor's child named child (one of
// protocol.Managers) will have: the names are fixed, so that siblings can
// refer to each other before they are spawned.
func PID(sys *actor.ActorSystem, child string) *actor.PID {
	return actor.NewPID(sys.Address(), protocol.Supervisor+"/"+child)
}

// Child is one second-level actor.
type Child struct {
	Name  string
	Props *actor.Props
}

// Options configure the supervisor.
type Options struct {
	Version string
	// Children in start order.
	Children []Child
	// Supervision of the children; zero means restart.Managers.
	Supervision restart.Policy
	// Exit is called once the supervisor has stopped: with nil after a
	// requested stop, with the cause after an escalation.
	Exit func(error)
	Log  zerolog.Logger
}

// Actor is the supervisor.
type Actor struct {
	opts     Options
	strategy *restart.Strategy
	state    *actor.PID
	children []*actor.PID
	// names are the children's names by PID id: who failed is looked
	// up, never parsed back out of an id.
	names map[string]string
	fatal error
}

// New returns the supervisor.
func New(opts Options) *Actor {
	if opts.Supervision == (restart.Policy{}) {
		opts.Supervision = restart.Managers
	}
	return &Actor{opts: opts, strategy: restart.New(opts.Supervision), names: map[string]string{}}
}

// Props for the supervisor, to be spawned from the root as Name.
func Props(opts Options) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return New(opts) })
}

// HandleFailure makes the actor its children's strategy (protoactor uses an
// actor's own HandleFailure when it has one), which reports to this
// actor's mailbox (restart.Failed, Restarted, GaveUp).
func (a *Actor) HandleFailure(sys *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, rs *actor.RestartStatistics, reason, msg any) {
	a.strategy.HandleFailure(sys, sup, child, rs, reason, msg)
}

// Receive handles the actor's messages.
func (a *Actor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.start(ctx)
	case *actor.Stopping:
		a.stopChildren(ctx)
	case *actor.Stopped:
		if a.opts.Exit != nil {
			a.opts.Exit(a.fatal)
		}
	case *restart.Failed:
		a.lifecycle(ctx, messages.TypeObserverFailed, msg.Failure)
	case *restart.Restarted:
		// Nothing else to do: a restarted child carries on by itself (the
		// task-manager starts again what ran).
		a.lifecycle(ctx, messages.TypeObserverRestarted, msg.Failure)
	case *restart.GaveUp:
		a.fatal = fmt.Errorf("%s failed %d times within %s: %w", a.names[msg.Child.Id], msg.Failures, msg.Window, msg.Reason)
		a.opts.Log.Error().Err(a.fatal).Msg("escalating: stopping the daemon")
		ctx.Stop(ctx.Self())
	}
}

func (a *Actor) start(ctx actor.Context) {
	a.state = PID(ctx.ActorSystem(), protocol.StateManager)
	for _, c := range a.opts.Children {
		started := make(chan struct{})
		pid, err := ctx.SpawnNamed(c.Props.Clone(actor.WithReceiverMiddleware(signalStarted(started))), c.Name)
		if err != nil {
			a.fatal = fmt.Errorf("start %s: %w", c.Name, err)
			ctx.Stop(ctx.Self())
			return
		}
		a.children = append(a.children, pid)
		a.names[pid.Id] = c.Name
		// The next child starts once this one has (the broker's outbox is
		// open before anything can emit); one that fails to start is
		// restarted with backoff while the others go on.
		select {
		case <-started:
		case <-time.After(startTimeout):
			a.opts.Log.Warn().Str("child", c.Name).Stringer("after", startTimeout).Msg("child slow to start, starting the next")
		}
	}
	a.daemon(ctx, messages.TypeDaemonStarted, "")
}

// stopChildren stops the children in reverse start order, each after
// everything already in its mailbox.
func (a *Actor) stopChildren(ctx actor.Context) {
	suspended := a.strategy.Stop()
	reason := "stop requested"
	if a.fatal != nil {
		reason = a.fatal.Error()
	}
	a.daemon(ctx, messages.TypeDaemonStopping, reason)
	for i := len(a.children) - 1; i >= 0; i-- {
		pid := a.children[i]
		// protoactor's futures give up after 10 s: the broker drains its
		// confirms within less (broker.Options.DrainTimeout).
		stop := ctx.PoisonFuture
		if suspended[pid.Id] {
			stop = ctx.StopFuture // awaiting a restart: it would never read a poison pill
		}
		if err := stop(pid).Wait(); err != nil && !errors.Is(err, actor.ErrDeadLetter) {
			a.opts.Log.Error().Err(err).Str("child", pid.Id).Msg("stop child")
		}
	}
}

// startTimeout bounds the wait for one child's start.
const startTimeout = 5 * time.Second

// signalStarted closes started once the actor has handled its first
// Started message, whether the handler returned or panicked.
func signalStarted(started chan struct{}) actor.ReceiverMiddleware {
	var once sync.Once
	return func(next actor.ReceiverFunc) actor.ReceiverFunc {
		return func(ctx actor.ReceiverContext, env *actor.MessageEnvelope) {
			if _, ok := env.Message.(*actor.Started); ok {
				defer once.Do(func() { close(started) })
			}
			next(ctx, env)
		}
	}
}

func (a *Actor) daemon(ctx actor.Context, typ, reason string) {
	ev := messages.NewEvent(typ)
	ev.Data = &messages.Event_Daemon{Daemon: &messages.DaemonLifecycle{Version: a.opts.Version, Pid: int32(os.Getpid()), Reason: reason}}
	ctx.Send(a.state, &protocol.Emit{From: protocol.ActorEmitter(protocol.Supervisor), Event: ev})
}

func (a *Actor) lifecycle(ctx actor.Context, typ string, f restart.Failure) {
	name := a.names[f.Child.Id]
	a.opts.Log.Warn().Str("child", name).Int("failures", f.Failures).Stringer("backoff", f.Backoff).Err(f.Reason).Msg(typ)
	ev := messages.NewEvent(typ)
	ev.Severity = messages.Severity_SEVERITY_HIGH
	ev.Data = &messages.Event_Observer{Observer: &messages.ObserverLifecycle{
		Actor: name, Reason: f.Reason.Error(), Failures: int32(f.Failures),
		Backoff: durationpb.New(f.Backoff), Window: durationpb.New(f.Window),
	}}
	ctx.Send(a.state, &protocol.Emit{From: protocol.ActorEmitter(name), Event: ev})
}
