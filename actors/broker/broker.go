// Package broker is the broker actor: the only owner of the AMQP connection.
// It accepts events into the durable outbox (Outbox, in state_dir), assigns
// their sequence, publishes them to the topic exchange over TLS with
// publisher confirms, and deletes them only once RabbitMQ confirmed them.
//
// Notification contract: the actor sends to Options.State a
// *messages.BrokerStatus whenever the connection opens, fails, is lost, or
// is blocked or unblocked by a resource alarm, and when the outbox stops or
// starts again taking commits (OutboxError). Events that drop_oldest
// drops are reported by outbox.overflow events that the broker appends
// itself (at most one per contiguous range per second, and the rest at
// stop), naming first and last sequence exactly; events dropped from
// memory while the outbox cannot be written, by one with policy disk_full
// once it can, or while its commits do not keep up, by one with policy
// memory_full; a damaged outbox file, and damaged records of a healthy
// one (the latter exactly, as drop_oldest's), by ones with policy corrupt.
//
// Accepts (actors/protocol): Publish, from the state-manager (no reply;
// its Accepted, when set, is called once the event is committed);
// SetOutboxLimit (no reply); GetOutboxStats, replies an OutboxSnapshot.
// Sends: a BrokerStatus to the state-manager at every change of its
// connection; closes and opens the observers' Gate; with Options.Control,
// a ControlDelivery to Options.ControlActor for each message of the
// node's control queue, which it consumes on a second channel of its
// connection (control.go).
//
// The mailbox never waits on the network or the disk: it only hands events
// in. The pipeline (pipeline.go) does the rest in two goroutines that each
// own their state: the committer (committer.go), the outbox's one writer,
// and the publisher (publisher.go), the connection's owner, which talks to
// amqp091-go through one narrow seam (link, connection.go).
package broker

import (
	"context"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/polar/observerd/actors/protocol"
)

// Actor is the broker actor.
type Actor struct {
	opts Options
	// dial opens the connections: dialAMQP's, or a test's fake.
	dial dialer
	pipe *pipeline
	// metrics are shared by the incarnations too: registered once, they
	// keep counting across restarts.
	metrics *metrics
}

// New returns the broker actor.
func New(opts Options) *Actor {
	a := &Actor{opts: opts, metrics: newMetrics(opts.Metrics, opts.Log)}
	a.dial = dialAMQP(&a.opts)
	return a
}

// Props for the broker. Its children are goroutines, not actors: it
// supervises nothing, and is supervised by the supervisor (restart with
// backoff). Every incarnation is a copy of one Actor made here, so that
// they share its metrics, registered once, and Options.Outbox, which
// outlives them: opened before the tree (a state_dir that cannot be used
// stops the daemon before it starts) and closed after it.
func Props(opts Options) *actor.Props {
	return props(New(opts))
}

func props(shared *Actor) *actor.Props {
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
	case *protocol.Publish:
		a.pipe.Accept(msg.Event, msg.Accepted)
	case *protocol.GetOutboxStats:
		st := a.opts.Outbox.Stats()
		ctx.Respond(&protocol.OutboxSnapshot{Events: st.Events, Bytes: st.Bytes, LastSequence: st.LastSequence})
	case *protocol.SetOutboxLimit:
		a.opts.Outbox.SetLimit(Limit{MaxBytes: msg.MaxBytes, DropOldest: msg.DropOldest})
		a.pipe.LimitChanged()
		a.opts.Log.Info().Int64("max_bytes", msg.MaxBytes).Bool("drop_oldest", msg.DropOldest).Msg("outbox limit changed")
	}
}

func (a *Actor) start(ctx actor.Context) {
	ob := a.opts.Outbox
	a.metrics.outbox.Store(ob)
	root, state := ctx.ActorSystem().Root, a.opts.State
	a.pipe = newPipeline(&a.opts, ob, a.metrics, func(s protocol.BrokerStatus) {
		if state != nil {
			root.Send(state, &s)
		}
	}, a.dial)
	if ctl := a.opts.ControlActor; ctl != nil {
		a.pipe.publisher.deliver = func(d *protocol.ControlDelivery) { root.Send(ctl, d) }
	}
	a.pipe.start()
	st := ob.Stats()
	a.opts.Log.Info().Int("outbox_events", st.Events).Uint64("last_sequence", st.LastSequence).Msg("broker started")
}

// stop drains the pipeline; what was committed stays in the outbox, which
// its owner closes.
func (a *Actor) stop(drain time.Duration) {
	if a.pipe == nil {
		return
	}
	dctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	a.pipe.Close(dctx)
	a.opts.Log.Info().Int("outbox_events", a.opts.Outbox.Stats().Events).Msg("broker stopped")
	a.pipe = nil
}
