package broker

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/actors/restart"
	"github.com/polar/observerd/messages"
)

// pipeline moves events from Accept to RabbitMQ off the actor's mailbox:
//
//	Accept -> pending (memory, bounded) -> committer: Commit, one fsync per group
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
	status func(protocol.BrokerStatus)
	// last is the status last reported; guarded by mu.
	last protocol.BrokerStatus

	mu sync.Mutex
	// reports are outbox.overflow events waiting for a commit: never
	// dropped, since they report a loss (few: at most one per second per
	// range, and one per recovery of the disk).
	reports []*messages.Event
	// pending are the other events waiting for a commit, oldest first,
	// within pendingLimit bytes.
	pending      []pendingEvent
	pendingBytes int64
	deletes      []uint64 // confirmed, for the committer's next transaction
	closed       bool
	// lost counts the events dropped from memory (never accepted) because
	// pending was full, by policy, for outbox.overflow events: disk_full
	// when commits failed, memory_full when they succeeded but did not
	// keep up. unsettled are those dropped while no commit had failed yet:
	// the outcome of the commit running then decides.
	lost      []Dropped
	unsettled Dropped
	// outboxErr is why commits fail, "" while they succeed: reported in
	// BrokerStatus.OutboxError (readiness).
	outboxErr string
	retries   map[uint64]time.Time // returned or nacked: sequence -> not before
	inflight  map[uint64]bool      // published, not yet confirmed: never dropped
	drops     []Dropped            // dropped, not reported yet
	reporter  *time.Timer          // pending report of drops

	commitWake  chan struct{} // cap 1: pending has events
	stop        chan struct{} // closed by Close: ends the committer's wait before a retry
	publishWake chan struct{} // cap 1: the outbox has new events
	committed   chan struct{} // closed when the committer has drained and stopped
	// failed, when set (by tests), is called after each failed commit,
	// once its group is back in pending; nothing is held.
	failed func()

	cancel    context.CancelFunc
	published chan struct{} // closed when the publisher has stopped

	connMu sync.Mutex
	conn   *connection
}

func startPipeline(o *Options, outbox *Outbox, m *metrics, report func(protocol.BrokerStatus)) *pipeline {
	p := newPipeline(o, outbox, m, report)
	p.start()
	return p
}

// newPipeline returns a pipeline that start starts (tests set hooks in
// between).
func newPipeline(o *Options, outbox *Outbox, m *metrics, report func(protocol.BrokerStatus)) *pipeline {
	return &pipeline{
		o:           o,
		outbox:      outbox,
		metrics:     m,
		log:         o.Log,
		status:      report,
		retries:     map[uint64]time.Time{},
		inflight:    map[uint64]bool{},
		commitWake:  make(chan struct{}, 1),
		stop:        make(chan struct{}),
		publishWake: make(chan struct{}, 1),
		committed:   make(chan struct{}),
		published:   make(chan struct{}),
	}
}

func (p *pipeline) start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go p.commitLoop()
	go p.publishLoop(ctx)
}

// pendingEvent is an event waiting for a commit with its encoded size.
type pendingEvent struct {
	ev   *messages.Event
	size int64
}

// The bound of pending: what arrives during one fsync, normally; while the
// outbox cannot be written (a full disk), everything. A quarter of
// outbox.max_bytes, within minPending..maxPending (encoded bytes; in memory
// the events take a few times more).
const (
	minPending = 1 << 20
	maxPending = 16 << 20
)

func pendingLimit(l Limit) int64 {
	if l.MaxBytes <= 0 {
		return maxPending
	}
	return min(max(l.MaxBytes/4, minPending), maxPending)
}

// Accept queues ev for the outbox; it never blocks. Beyond pendingLimit,
// when_full applies to memory as to the outbox (trim); what is dropped is
// counted for an outbox.overflow (lose).
func (p *pipeline) Accept(ev *messages.Event) {
	size := int64(proto.Size(ev))
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		p.log.Error().Str("event", ev.Id).Str("type", ev.Type).Msg("event after broker stop, not accepted")
		return
	}
	p.pending = append(p.pending, pendingEvent{ev: ev, size: size})
	p.pendingBytes += size
	p.trim()
	wake(p.commitWake) // under mu: Close closes the channel under mu
}

// acceptReport queues an outbox.overflow event; mu held.
func (p *pipeline) acceptReport(ev *messages.Event) {
	if p.closed {
		p.log.Error().Str("event", ev.Id).Str("type", ev.Type).Msg("event after broker stop, not accepted")
		return
	}
	p.reports = append(p.reports, ev)
	wake(p.commitWake)
}

// trim drops pending events until pending fits in its bound; mu held.
// drop_oldest drops the oldest; block the newest (so an Accept beyond the
// bound drops its own event; the gate is closed by then if commits fail).
// Dropping from the front reslices: append reallocates, copying only what
// is left, so a full buffer costs no copy per event.
func (p *pipeline) trim() {
	l := p.outbox.Limit()
	limit := pendingLimit(l)
	if l.DropOldest {
		n := 0
		for n < len(p.pending) && p.pendingBytes > limit {
			p.lose(p.pending[n])
			p.pending[n] = pendingEvent{}
			n++
		}
		p.pending = p.pending[n:]
		return
	}
	n := len(p.pending)
	for n > 0 && p.pendingBytes > limit {
		n--
		p.lose(p.pending[n])
		p.pending[n] = pendingEvent{}
	}
	p.pending = p.pending[:n]
}

// lose counts a pending event dropped from memory; mu held. While commits
// fail, the disk is why (disk_full); otherwise the commit running now
// tells (settle).
func (p *pipeline) lose(pe pendingEvent) {
	p.pendingBytes -= pe.size
	p.metrics.lost.Inc()
	d := Dropped{Events: 1, Bytes: uint64(pe.size)}
	if p.outboxErr != "" {
		p.addLost(policyDiskFull, d)
		return
	}
	p.unsettled.Events++
	p.unsettled.Bytes += d.Bytes
}

// settle gives the events dropped during a commit its outcome's policy: a
// failed commit means the disk (disk_full), a successful one that commits
// did not keep up (memory_full).
func (p *pipeline) settle(failed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.unsettled.Events == 0 {
		return
	}
	policy := policyMemoryFull
	if failed {
		policy = policyDiskFull
	}
	p.addLost(policy, p.unsettled)
	p.unsettled = Dropped{}
}

// addLost adds d to the events lost from memory for policy; mu held.
func (p *pipeline) addLost(policy string, d Dropped) {
	for i := range p.lost {
		if l := &p.lost[i]; l.Policy == policy {
			l.Events += d.Events
			l.Bytes += d.Bytes
			return
		}
	}
	d.Policy = policy
	p.lost = append(p.lost, d)
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// wakeCommitter makes the committer run even with nothing pending: a
// reader found the outbox file damaged, and a commit replaces it.
func (p *pipeline) wakeCommitter() {
	p.mu.Lock()
	if !p.closed {
		wake(p.commitWake)
	}
	p.mu.Unlock()
}

// commitRetry paces the retries of a failing commit (a full or failing
// disk): no hot loop, and a disk with room again is used within 5 s.
var commitRetry = restart.Policy{MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second}

// commitLogEvery rate-limits the log of a failing commit.
const commitLogEvery = 30 * time.Second

// commitLoop appends whatever is pending in one transaction per turn: while
// one fsync runs, the next group gathers. A failed commit puts the group
// back in front of pending (it was not accepted) and retries with backoff;
// meanwhile readiness says why, and pending stays within its bound.
func (p *pipeline) commitLoop() {
	defer close(p.committed)
	var failures int
	var logged time.Time
	for range p.commitWake {
		for {
			p.mu.Lock()
			reports, pending, del, closed := p.reports, p.pending, p.deletes, p.closed
			p.reports, p.pending, p.deletes, p.pendingBytes = nil, nil, nil, 0
			p.mu.Unlock()
			if len(reports)+len(pending)+len(del) == 0 && !p.outbox.NeedsRepair() {
				// Dropped with no commit to wait for (an event larger
				// than the bound alone): no failure is why.
				p.settle(false)
				if closed {
					return
				}
				break
			}
			batch := make([]*messages.Event, 0, len(reports)+len(pending))
			batch = append(batch, reports...)
			for _, pe := range pending {
				batch = append(batch, pe.ev)
			}
			dropped, err := p.outbox.Commit(batch, del, p.isInflight)
			p.settle(err != nil)
			if err != nil {
				failures++
				// Before requeue: what it drops is the disk's doing.
				p.setOutboxError(err.Error())
				p.requeue(reports, pending, del)
				if p.failed != nil {
					p.failed()
				}
				if failures == 1 || time.Since(logged) >= commitLogEvery {
					logged = time.Now()
					p.mu.Lock()
					waiting, lost := len(p.pending)+len(p.reports), p.unsettled.Events
					for _, l := range p.lost {
						lost += l.Events
					}
					p.mu.Unlock()
					p.log.Error().Err(err).Int("attempts", failures).Int("events_waiting", waiting).Uint64("events_dropped", lost).
						Msg("outbox commit failed: events wait in memory (bounded), retrying")
				}
				if closed {
					p.giveUp()
					return
				}
				select {
				case <-time.After(commitRetry.Backoff(failures)):
				case <-p.stop:
				}
				continue
			}
			if failures > 0 {
				p.log.Info().Int("attempts", failures).Msg("outbox writable again")
				failures = 0
				p.setOutboxError("")
			}
			p.metrics.accept(batch)
			p.deleted(del)
			p.dropped(dropped)
			p.reportLost()
			p.gate()
			wake(p.publishWake)
		}
	}
}

// requeue puts a group that failed to commit back in front of what arrived
// meanwhile, and applies the bound of pending to the whole (with block, the
// newest go: those that arrived during the attempt).
func (p *pipeline) requeue(reports []*messages.Event, pending []pendingEvent, del []uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reports = append(reports, p.reports...)
	for _, pe := range pending {
		p.pendingBytes += pe.size
	}
	p.pending = append(pending, p.pending...)
	// A reconnect confirms the same events again: without duplicates,
	// deletes stay within the outbox's event count.
	p.deletes = append(del, p.deletes...)
	slices.Sort(p.deletes)
	p.deletes = slices.Compact(p.deletes)
	p.trim()
}

// giveUp is the committer's end on a stop while the outbox cannot be
// written: what is pending was never accepted (it has no sequence, so it
// leaves no gap), and the log says how much.
func (p *pipeline) giveUp() {
	p.mu.Lock()
	n := len(p.pending) + len(p.reports)
	p.pending, p.reports, p.pendingBytes = nil, nil, 0
	p.mu.Unlock()
	if n > 0 {
		p.log.Error().Int("events", n).Msg("stopping while the outbox cannot be written: events never accepted are dropped")
	}
}

// setOutboxError reports a change of the outbox's writability.
func (p *pipeline) setOutboxError(reason string) {
	p.mu.Lock()
	if p.outboxErr != reason {
		p.outboxErr = reason
		s := p.last
		s.OutboxError = reason
		p.last = s
		p.status(s)
	}
	p.mu.Unlock()
	p.gate()
}

// reportLost queues the outbox.overflow events (disk_full, memory_full) of
// the events dropped from memory, once the outbox takes events again.
func (p *pipeline) reportLost() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ev := range p.takeLost() {
		p.acceptReport(ev)
	}
}

// lostMessages are the log lines of the events dropped from memory.
var lostMessages = map[string]string{
	policyDiskFull:   "outbox could not be written: events dropped from memory before they were accepted",
	policyMemoryFull: "outbox commits did not keep up: events dropped from memory before they were accepted",
}

// takeLost returns the reports of the events lost from memory, one per
// policy; mu held.
func (p *pipeline) takeLost() []*messages.Event {
	var evs []*messages.Event
	for _, l := range p.lost {
		p.log.Error().Uint64("events", l.Events).Uint64("bytes", l.Bytes).Msg(lostMessages[l.Policy])
		evs = append(evs, overflowEvent(p.o.Node, p.o.Version, &messages.OutboxOverflow{
			DroppedEvents: l.Events, DroppedBytes: l.Bytes, Policy: l.Policy,
		}))
	}
	p.lost = nil
	return evs
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

// dropped records drops (drop_oldest, corrupt), merging contiguous ranges
// of one policy, and schedules their report; after a stop began, Close
// reports them.
func (p *pipeline) dropped(ds []Dropped) {
	if len(ds) == 0 {
		return
	}
	p.metrics.drop(ds)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range ds {
		p.drops = mergeDropped(p.drops, d)
	}
	if p.reporter == nil && !p.closed {
		p.reporter = time.AfterFunc(overflowReportDelay, p.reportDrops)
	}
}

// reportDrops turns the recorded drops into outbox.overflow events and
// accepts them like any other event. Taking and accepting them is one
// critical section, and once a stop began it leaves them to Close: a timer
// that Close could not stop (it was already running) cannot take a loss's
// report to a pipeline that no longer accepts it.
func (p *pipeline) reportDrops() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	for _, ev := range p.takeDrops() {
		p.acceptReport(ev)
	}
}

// dropMessages are the log lines of the drops, one per range.
var dropMessages = map[string]string{
	policyDropOldest: "outbox full: oldest events dropped",
	policyCorrupt:    "outbox record damaged: dropped, its event is lost",
}

// takeDrops returns the reports of the recorded drops; mu held.
func (p *pipeline) takeDrops() []*messages.Event {
	evs := make([]*messages.Event, 0, len(p.drops))
	for _, d := range p.drops {
		p.log.Error().Uint64("first_sequence", d.First).Uint64("last_sequence", d.Last).
			Uint64("events", d.Events).Uint64("bytes", d.Bytes).Msg(dropMessages[d.Policy])
		evs = append(evs, overflowEvent(p.o.Node, p.o.Version, &messages.OutboxOverflow{
			FirstSequence: d.First, LastSequence: d.Last, DroppedEvents: d.Events, DroppedBytes: d.Bytes, Policy: d.Policy,
		}))
	}
	p.drops, p.reporter = nil, nil
	return evs
}

// overflowEvent is the broker's outbox.overflow event reporting a loss.
func overflowEvent(node, version string, o *messages.OutboxOverflow) *messages.Event {
	ev := messages.NewEvent(messages.TypeOutboxOverflow)
	ev.Severity = messages.Severity_SEVERITY_HIGH
	ev.Data = &messages.Event_OutboxOverflow{OutboxOverflow: o}
	messages.Stamp(ev, node, version, "broker")
	return ev
}

// setStatus reports a connection change, keeping the unroutable count.
// Reports are made under mu, in the order their states were computed
// (report only sends a message: it never blocks).
func (p *pipeline) setStatus(s protocol.BrokerStatus) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s.Unroutable = len(p.retries) > 0
	s.OutboxError = p.outboxErr
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

// gate closes the observers' gate while a when_full: block outbox is full
// or cannot be written, and opens it otherwise (also when the limit
// changed to drop_oldest).
func (p *pipeline) gate() {
	p.mu.Lock()
	failing := p.outboxErr != ""
	p.mu.Unlock()
	p.o.Gate.Close(!p.outbox.Limit().DropOldest && (failing || p.outbox.Full()))
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
	close(p.stop)
	p.mu.Unlock()
	<-p.committed
	// Drops not reported yet are reported now, straight into the outbox
	// (the committer has stopped): a stop must not hide a loss.
	p.mu.Lock()
	evs := append(p.takeDrops(), p.takeLost()...)
	p.mu.Unlock()
	if len(evs) > 0 {
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
var reconnect = restart.Policy{MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second}

func (p *pipeline) publishLoop(ctx context.Context) {
	defer close(p.published)
	// A stop reports no status, but leaves no connection either.
	defer p.metrics.status(protocol.BrokerStatus{})
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
		p.setStatus(protocol.BrokerStatus{URL: url, Since: time.Now(), LastError: err.Error()})
		delay := reconnect.Backoff(max(attempt, 1))
		if errors.Is(err, errCredentials) {
			// An operator's mistake (a rotation half done, a mode too open),
			// not the network's: said as such, the secret never.
			p.log.Error().Err(err).Dur("retry_in", delay).Msg("broker connection failed: credentials unreadable")
		} else {
			p.log.Warn().Err(err).Dur("retry_in", delay).Msg("broker connection failed")
		}
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
