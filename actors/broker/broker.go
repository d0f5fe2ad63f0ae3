// Package broker is the broker actor: the only owner of the AMQP connection.
// It accepts events into the durable outbox (Outbox, in state_dir), assigns
// their sequence, publishes them to the topic exchange over TLS with
// publisher confirms, and deletes them only once RabbitMQ confirmed them.
//
// Notification contract: the actor sends to Options.State a
// *messages.BrokerStatus whenever the connection opens, fails, is lost, or
// is blocked or unblocked by a resource alarm. Events that drop_oldest
// drops are reported by outbox.overflow events that the broker appends
// itself (at most one per contiguous range per second, and the rest at
// stop), naming first and last sequence exactly.
//
// The mailbox never waits on the network or the disk: commits, dialing,
// publishing and confirms run in the pipeline's goroutines (pipeline.go)
// and report back as messages.
package broker

import (
	"context"
	"errors"
	"path/filepath"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/polar/observerd/messages"
)

// Actor is the broker actor.
type Actor struct {
	opts   Options
	outbox *Outbox
	pipe   *pipeline
	// limit is the outbox's bound, shared by the actor's incarnations so
	// that a SetLimit outlives a restart.
	limit *Limit
	// metrics are shared by the incarnations too: registered once, they
	// keep counting across restarts.
	metrics *metrics
}

// GetStats asks the broker for its OutboxStats.
type GetStats struct{}

// SetLimit changes the outbox's bound (outbox.max_bytes, when_full) while
// the broker runs.
type SetLimit struct{ Limit Limit }

// New returns the broker actor.
func New(opts Options) *Actor {
	return &Actor{opts: opts, limit: &opts.Limit, metrics: newMetrics(opts.Metrics, opts.Log)}
}

// Props for the broker. Its children are goroutines, not actors: it
// supervises nothing, and is supervised by the supervisor (restart with
// backoff; a broker that cannot open its outbox keeps failing and
// escalates). Every incarnation is a copy of one Actor made here, so that
// they share its limit and its metrics, registered once.
func Props(opts Options) *actor.Props {
	shared := New(opts)
	return actor.PropsFromProducer(func() actor.Actor {
		a := *shared
		return &a
	})
}

// Receive handles the actor's messages.
func (a *Actor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.start(ctx)
	case *actor.Stopping:
		a.stop(a.opts.DrainTimeout)
	case *actor.Restarting:
		// What was committed stays in the outbox for the next incarnation.
		a.stop(0)
	case *messages.Publish:
		a.pipe.Accept(msg.Event)
	case *GetStats:
		ctx.Respond(a.outbox.Stats())
	case *SetLimit:
		*a.limit = msg.Limit
		a.outbox.SetLimit(msg.Limit)
		a.pipe.gate()
		a.opts.Log.Info().Int64("max_bytes", msg.Limit.MaxBytes).Bool("drop_oldest", msg.Limit.DropOldest).Msg("outbox limit changed")
	}
}

func (a *Actor) start(ctx actor.Context) {
	ob, err := OpenOutbox(filepath.Join(a.opts.StateDir, "outbox"), *a.limit)
	switch {
	case errors.Is(err, ErrMovedAside):
		a.opts.Log.Error().Err(err).Msg("outbox unreadable: its events are lost; starting a new one")
	case err != nil:
		// Supervised: restarted with backoff, escalated if it persists.
		panic(err)
	}
	a.outbox = ob
	a.metrics.outbox.Store(ob)
	root, state := ctx.ActorSystem().Root, a.opts.State
	a.pipe = startPipeline(&a.opts, ob, a.metrics, func(s messages.BrokerStatus) {
		if state != nil {
			root.Send(state, &s)
		}
	})
	st := ob.Stats()
	a.opts.Log.Info().Int("outbox_events", st.Events).Uint64("last_sequence", st.LastSequence).Msg("broker started")
}

func (a *Actor) stop(drain time.Duration) {
	if a.pipe == nil {
		return
	}
	dctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	a.pipe.Close(dctx)
	st := a.outbox.Stats()
	if err := a.outbox.Close(); err != nil {
		a.opts.Log.Error().Err(err).Msg("broker stop")
	}
	a.opts.Log.Info().Int("outbox_events", st.Events).Msg("broker stopped")
	a.pipe = nil
}
