package broker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/polar/observerd/actors/supervision"
	"github.com/polar/observerd/messages"
)

// pipeline moves events from Accept to RabbitMQ off the actor's mailbox:
//
//	Accept -> pending (memory) -> committer: Append, one fsync per group
//	       -> publisher: read the outbox in sequence order, publish with
//	          deferred confirms, at most ConfirmWindow outstanding
//	       -> confirmer: in order; ack -> Delete; nack or return -> retry
//
// The publisher owns the connection: it dials, declares the topology,
// publishes, and on any loss reconnects with capped exponential backoff and
// republishes everything still in the outbox.
type pipeline struct {
	o       *Options
	outbox  *Outbox
	metrics *metrics
	log     zerolog.Logger
	// status reports to the state-manager; called with mu held, so it
	// must not block (it sends a message).
	status func(messages.BrokerStatus)
	// last is the status last reported; guarded by mu.
	last messages.BrokerStatus

	mu       sync.Mutex
	pending  []*messages.Event
	deletes  []uint64 // confirmed, for the committer's next transaction
	closed   bool
	retries  map[uint64]time.Time // returned or nacked: sequence -> not before
	inflight map[uint64]bool      // published, not yet confirmed: never dropped
	drops    []Dropped            // dropped, not reported yet
	reporter *time.Timer          // pending report of drops

	commitWake  chan struct{} // cap 1: pending has events
	publishWake chan struct{} // cap 1: the outbox has new events
	committed   chan struct{} // closed when the committer has drained and stopped

	cancel    context.CancelFunc
	published chan struct{} // closed when the publisher has stopped

	connMu sync.Mutex
	conn   *connection
}

func startPipeline(o *Options, outbox *Outbox, m *metrics, report func(messages.BrokerStatus)) *pipeline {
	ctx, cancel := context.WithCancel(context.Background())
	p := &pipeline{
		o:           o,
		outbox:      outbox,
		metrics:     m,
		log:         o.Log,
		status:      report,
		retries:     map[uint64]time.Time{},
		inflight:    map[uint64]bool{},
		commitWake:  make(chan struct{}, 1),
		publishWake: make(chan struct{}, 1),
		committed:   make(chan struct{}),
		cancel:      cancel,
		published:   make(chan struct{}),
	}
	go p.commitLoop()
	go p.publishLoop(ctx)
	return p
}

// Accept queues ev for the outbox; it never blocks.
func (p *pipeline) Accept(ev *messages.Event) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.log.Error().Str("event", ev.Id).Str("type", ev.Type).Msg("event after broker stop, not accepted")
		return
	}
	p.pending = append(p.pending, ev)
	wake(p.commitWake) // under mu: Close closes the channel under mu
	p.mu.Unlock()
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// commitLoop appends whatever is pending in one transaction per turn: while
// one fsync runs, the next group gathers.
func (p *pipeline) commitLoop() {
	defer close(p.committed)
	for range p.commitWake {
		for {
			p.mu.Lock()
			batch, del, closed := p.pending, p.deletes, p.closed
			p.pending, p.deletes = nil, nil
			p.mu.Unlock()
			if len(batch) == 0 && len(del) == 0 {
				if closed {
					return
				}
				break
			}
			dropped, err := p.outbox.Commit(batch, del, p.isInflight)
			for err != nil {
				// A full or failing disk: keep the events in memory and
				// retry rather than drop them.
				p.log.Error().Err(err).Int("events", len(batch)).Msg("outbox commit failed, retrying")
				time.Sleep(time.Second)
				dropped, err = p.outbox.Commit(batch, del, p.isInflight)
			}
			p.metrics.accept(batch)
			p.deleted(del)
			p.dropped(dropped)
			p.gate()
			if len(batch) > 0 {
				wake(p.publishWake)
			}
		}
	}
}

// deleteLater hands confirmed events to the committer, which deletes them
// in its next transaction together with the new events; after a stop began
// they are deleted at once.
func (p *pipeline) deleteLater(seqs []uint64) {
	p.mu.Lock()
	if !p.closed {
		p.deletes = append(p.deletes, seqs...)
		wake(p.commitWake) // under mu: Close closes the channel under mu
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	if err := p.outbox.Delete(seqs); err != nil {
		// The events stay and go again: a duplicate, not a loss.
		p.log.Error().Err(err).Msg("outbox delete failed")
	}
	p.deleted(seqs)
	p.gate()
}

// deleted ends the protection from drop_oldest of events now deleted, and
// their wait for a retry.
func (p *pipeline) deleted(seqs []uint64) {
	if len(seqs) == 0 {
		return
	}
	p.mu.Lock()
	before := len(p.retries)
	for _, seq := range seqs {
		delete(p.inflight, seq)
		delete(p.retries, seq)
	}
	p.unroutableChanged(before)
	p.mu.Unlock()
}

// overflowReportDelay gathers drops into few outbox.overflow events: each
// report is an event too, and takes outbox space while it is full.
const overflowReportDelay = time.Second

// dropped records drops, merging contiguous ranges, and schedules their
// report.
func (p *pipeline) dropped(ds []Dropped) {
	if len(ds) == 0 {
		return
	}
	p.metrics.drop(ds)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range ds {
		if n := len(p.drops); n > 0 && p.drops[n-1].Last+1 == d.First {
			last := &p.drops[n-1]
			last.Last, last.Events, last.Bytes = d.Last, last.Events+d.Events, last.Bytes+d.Bytes
		} else {
			p.drops = append(p.drops, d)
		}
	}
	if p.reporter == nil {
		p.reporter = time.AfterFunc(overflowReportDelay, p.reportDrops)
	}
}

// reportDrops turns the recorded drops into outbox.overflow events and
// accepts them like any other event.
func (p *pipeline) reportDrops() {
	for _, ev := range p.takeDrops() {
		p.Accept(ev)
	}
}

func (p *pipeline) takeDrops() []*messages.Event {
	p.mu.Lock()
	ds := p.drops
	p.drops, p.reporter = nil, nil
	p.mu.Unlock()
	evs := make([]*messages.Event, 0, len(ds))
	for _, d := range ds {
		p.log.Error().Uint64("first_sequence", d.First).Uint64("last_sequence", d.Last).
			Uint64("events", d.Events).Msg("outbox full: oldest events dropped")
		ev := messages.NewEvent(messages.TypeOutboxOverflow)
		ev.Severity = messages.Severity_SEVERITY_HIGH
		ev.Data = &messages.Event_OutboxOverflow{OutboxOverflow: &messages.OutboxOverflow{
			FirstSequence: d.First, LastSequence: d.Last, DroppedEvents: d.Events, DroppedBytes: d.Bytes, Policy: "drop_oldest",
		}}
		messages.Stamp(ev, p.o.Node, p.o.Version, "broker")
		evs = append(evs, ev)
	}
	return evs
}

// setStatus reports a connection change, keeping the unroutable count.
// Reports are made under mu, in the order their states were computed
// (report only sends a message: it never blocks).
func (p *pipeline) setStatus(s messages.BrokerStatus) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s.Unroutable = len(p.retries) > 0
	p.last = s
	p.metrics.status(s)
	p.status(s)
}

// unroutableChanged reports whether events wait for a retry when that
// changes (not at every return: that would flood). Called with mu held.
func (p *pipeline) unroutableChanged(before int) {
	if (before == 0) == (len(p.retries) == 0) {
		return
	}
	s := p.last
	s.Unroutable = len(p.retries) > 0
	p.last = s
	p.status(s)
}

func (p *pipeline) isInflight(seq uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inflight[seq]
}

// gate closes the observers' gate while a when_full: block outbox is full,
// and opens it otherwise (also when the limit changed to drop_oldest).
func (p *pipeline) gate() {
	p.o.Gate.Close(!p.outbox.Limit().DropOldest && p.outbox.Full())
}

// Close stops accepting, commits what is pending, waits for the outbox to
// be confirmed empty until ctx ends, then stops the publisher and closes
// the connection (forcibly if it is blocked).
func (p *pipeline) Close(ctx context.Context) {
	p.mu.Lock()
	p.closed = true
	if p.reporter != nil {
		p.reporter.Stop()
	}
	close(p.commitWake)
	p.mu.Unlock()
	<-p.committed
	// Drops not reported yet are reported now, straight into the outbox
	// (the committer has stopped): a stop must not hide a loss.
	if evs := p.takeDrops(); len(evs) > 0 {
		// Nothing may be dropped for them: that loss would go unreported.
		keepAll := func(uint64) bool { return true }
		if _, err := p.outbox.Append(evs, keepAll); err != nil {
			p.log.Error().Err(err).Msg("report dropped events")
		} else {
			p.metrics.accept(evs)
		}
	}
	wake(p.publishWake)

	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for p.outbox.Stats().Events > 0 && p.connected() {
		select {
		case <-ctx.Done():
		case <-tick.C:
			continue
		}
		break
	}
	p.cancel()
	p.connMu.Lock()
	if p.conn != nil {
		p.conn.forceClose()
	}
	p.connMu.Unlock()
	<-p.published
}

func (p *pipeline) connected() bool {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	return p.conn != nil && !p.conn.IsClosed()
}

// reconnect paces reconnection attempts: capped exponential backoff with
// jitter from 100 ms to 5 s. The cap is lower than for restarts because a
// failed dial costs the broker little, and every second of delay after the
// broker is back is a second of events waiting (make bench measured up to
// 24 s of idle delay with a 30 s cap).
var reconnect = supervision.Policy{MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second}

func (p *pipeline) publishLoop(ctx context.Context) {
	defer close(p.published)
	// A stop reports no status, but leaves no connection either.
	defer p.metrics.status(messages.BrokerStatus{})
	for attempt := 1; ctx.Err() == nil; attempt++ {
		conn, err := dial(ctx, p.o)
		if err == nil {
			attempt = 0
			p.metrics.opened()
			p.setConn(conn)
			p.log.Info().Str("url", conn.url).Msg("broker connected")
			err = p.session(ctx, conn)
			p.setConn(nil)
			conn.close()
		}
		if ctx.Err() != nil {
			return
		}
		url := ""
		if conn != nil {
			url = conn.url
		}
		p.setStatus(messages.BrokerStatus{URL: url, Since: time.Now(), LastError: err.Error()})
		delay := reconnect.Backoff(max(attempt, 1))
		p.log.Warn().Err(err).Dur("retry_in", delay).Msg("broker connection failed")
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

func (p *pipeline) setConn(c *connection) {
	p.connMu.Lock()
	p.conn = c
	p.connMu.Unlock()
}

var errConnectionClosed = errors.New("connection closed")
