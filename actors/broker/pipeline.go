package broker

import (
	"context"
	"time"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/messages"
)

// pipeline moves events from the actor's mailbox to RabbitMQ, off the
// mailbox, in parts that each own their state:
//
//	Accept -> intake: events waiting in memory, bounded
//	       -> committer: the outbox's one writer; one transaction and one
//	          fsync per group, assigning sequences, deleting what was
//	          confirmed, reporting losses
//	       -> outbox: the durable queue, read in sequence order
//	       -> publisher: the connection's owner; publishes with deferred
//	          confirms, at most ConfirmWindow outstanding, and settles them
//	          in order: nack or return -> retry
//	       -> confirmed: the acked events, back to the committer
//
// The committer and the publisher share no state but the outbox (which
// locks for itself) and the status board; the publisher's one message to
// the committer is confirmed.
type pipeline struct {
	outbox    *Outbox
	intake    *intake
	committer *committer
	publisher *publisher
}

// newPipeline returns a pipeline that start starts (tests set hooks in
// between). report sends the state-manager a BrokerStatus; dial opens
// links.
func newPipeline(o *Options, outbox *Outbox, m *metrics, report func(protocol.BrokerStatus), dial dialer) *pipeline {
	status := &statusBoard{report: report, metrics: m}
	work := make(chan struct{}, 1)
	confirms := make(chan confirmed)
	in := newIntake(outbox, m, o.Log, work)
	return &pipeline{
		outbox: outbox,
		intake: in,
		committer: &committer{
			outbox: outbox, intake: in, confirmed: confirms, status: status, gate: o.Gate, metrics: m, log: o.Log,
			node: o.Node, version: o.Version, reportDelay: overflowReportDelay, linger: commitLinger, deleteLinger: deleteLinger,
			work: work, stopping: make(chan struct{}), flushed: make(chan struct{}), done: make(chan struct{}),
		},
		publisher: &publisher{
			o: o, dial: dial, outbox: outbox, status: status, metrics: m, log: o.Log,
			confirmed: confirms, retryDelay: retryDelay, nackLimit: nackLimit, stallAfter: confirmStall,
			done: make(chan struct{}),
		},
	}
}

func (p *pipeline) start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.publisher.cancel = cancel
	go p.committer.run()
	go p.publisher.run(ctx)
}

// Accept queues ev for the outbox, to call accepted (if not nil) once it
// is; it never blocks.
func (p *pipeline) Accept(ev *messages.Event, accepted func(*messages.Event)) {
	p.intake.add(ev, accepted)
}

// LimitChanged makes the committer decide the gate again, for the
// outbox's new limit.
func (p *pipeline) LimitChanged() { wake(p.committer.work) }

// Close stops accepting, commits what is pending and reports every loss,
// waits for the outbox to be confirmed empty until ctx ends (or the
// connection is gone), then stops the publisher, which closes its
// connection's socket (a blocked connection would not close), and the
// committer after it.
func (p *pipeline) Close(ctx context.Context) {
	p.intake.close()
	close(p.committer.stopping)
	<-p.committer.flushed

	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for p.outbox.Stats().Events > 0 && p.publisher.connected.Load() {
		select {
		case <-ctx.Done():
		case <-tick.C:
			continue
		}
		break
	}
	p.publisher.cancel()
	<-p.publisher.done
	<-p.committer.done
}
