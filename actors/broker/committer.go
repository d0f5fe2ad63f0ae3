package broker

import (
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/actors/restart"
	"github.com/polar/observerd/messages"
)

// confirmed is the publisher's one message to the committer: the events
// RabbitMQ acked and routed (seqs), which the committer deletes in its next
// transaction, with the new events (one fsync for both). repair asks for
// that transaction even with nothing to delete: a read found the outbox
// file, or records of it, damaged, and a commit (of nothing, if need be)
// replaces the file, or deletes and reports the records.
type confirmed struct {
	seqs   []uint64
	repair bool
}

// committer is the outbox's one writer. Each turn it commits in one
// transaction what the intake holds (while one fsync runs, the next group
// gathers), assigning each event its sequence, and deletes what the
// publisher confirmed. It reports every loss (drop_oldest, damaged
// records, events dropped from memory) by an outbox.overflow event of its
// own, and it decides the outbox's part of readiness and the observers'
// gate. Its goroutine alone holds its state.
//
// A failed commit puts its group back in front of the intake (it was not
// accepted) and goes again after a backoff; meanwhile readiness says why,
// and the intake stays within its bound.
type committer struct {
	outbox    *Outbox
	intake    *intake
	confirmed <-chan confirmed // from the publisher, closed when it ended
	status    *statusBoard
	gate      *protocol.Gate
	metrics   *metrics
	log       zerolog.Logger
	// node and version stamp its reports.
	node, version string
	// reportDelay gathers drops into few reports (overflowReportDelay).
	reportDelay time.Duration
	// linger and deleteLinger are how long a commit of few events, or of
	// deletes alone, waits for more to share its fsync (commitLinger,
	// deleteLinger).
	linger, deleteLinger time.Duration
	// failed, when set (by tests), is called after each failed commit,
	// once its group is back in the intake.
	failed func()

	work     chan struct{} // cap 1: the intake has events, a report waits, or the limit changed
	stopping chan struct{} // closed when the pipeline stops
	flushed  chan struct{} // closed once what waited at the stop is committed and every loss reported
	done     chan struct{} // closed when the committer ended, after the publisher

	// The goroutine's own:
	reports  []*messages.Event // loss reports for the next commit, never dropped
	deletes  []uint64          // confirmed, for the next commit
	drops    []Dropped         // dropped from the outbox, not reported yet
	failures int               // commits failed in a row
	logged   time.Time         // when a failure was last logged
}

// commitLinger is the longest a commit of fewer than lingerEnough events
// waits for more. Why: at a low steady rate every event came alone and paid
// a transaction and an fsync of its own (make bench: about 170 µs of CPU
// each, against under 20 µs per event in groups of 20); events that come
// within a few milliseconds of each other now share one. Nothing is
// acknowledged before its commit, so waiting loses nothing; it delays an
// event's publication by at most this, and never once lingerEnough wait.
const commitLinger = 5 * time.Millisecond

// deleteLinger is the longest the confirmed events' deletes wait, alone,
// for events to commit with: at a low rate the next event then takes them
// into its transaction instead of their taking one of their own. Nothing
// waits for a delete but the space it frees; a crash meanwhile sends them
// again, fewer than lingerEnough: within the duplicates' bound.
const deleteLinger = 20 * time.Millisecond

// lingerEnough events (and deletes) waiting are a group worth its fsync:
// they are committed at once.
const lingerEnough = 64

// overflowReportDelay gathers drops into few outbox.overflow events: each
// report is an event too, and takes outbox space while it is full.
const overflowReportDelay = time.Second

// commitRetry paces the retries of a failing commit (a full or failing
// disk): no hot loop, and a disk with room again is used within 5 s.
var commitRetry = restart.Policy{MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second}

// commitLogEvery rate-limits the log of a failing commit.
const commitLogEvery = 30 * time.Second

func (c *committer) run() {
	defer close(c.done)
	var retry, report <-chan time.Time
	// One timer for the lingers, not one per commit.
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	var lingerUntil time.Time // zero: not lingering
	for {
		if len(c.drops) > 0 && report == nil {
			report = time.After(c.reportDelay)
		}
		work := c.work
		if retry != nil {
			// A failing commit goes again after its backoff, however
			// many events arrive meanwhile.
			work = nil
		}
		var lingered <-chan time.Time
		if !lingerUntil.IsZero() {
			lingered = linger.C
		}
		woken := false
		select {
		case <-work:
			woken = true
		case m := <-c.confirmed:
			c.deletes = append(c.deletes, m.seqs...)
			if retry != nil {
				continue
			}
			woken = true
		case <-retry:
			retry = nil
		case <-lingered:
			lingerUntil = time.Time{}
		case <-report:
			report = nil
			c.reportDrops()
			continue
		case <-c.stopping:
			c.stop()
			return
		}
		if woken {
			if d := c.lingerFor(); d > 0 {
				// A linger never grows: it ends at the earliest deadline of
				// what waits.
				if until := time.Now().Add(d); lingerUntil.IsZero() || until.Before(lingerUntil) {
					lingerUntil = until
					linger.Reset(d)
				}
				continue
			}
		}
		if !lingerUntil.IsZero() {
			linger.Stop()
			lingerUntil = time.Time{}
		}
		// Confirms waiting go with this commit rather than the next: the
		// publisher publishes nothing more while handOverEvery wait.
		select {
		case m := <-c.confirmed:
			c.deletes = append(c.deletes, m.seqs...)
		default:
		}
		if !c.commit() {
			retry = time.After(commitRetry.Backoff(c.failures))
		}
		c.setGate()
	}
}

// lingerFor is how long the next commit may wait for more to group with:
// none when lingerEnough events and deletes wait, when loss reports wait,
// when the outbox needs a repair or commits fail, or when nothing waits (a
// changed limit: the gate is decided at once).
func (c *committer) lingerFor() time.Duration {
	if c.failures > 0 || len(c.reports) > 0 || c.outbox.NeedsRepair() {
		return 0
	}
	waiting := c.intake.waiting()
	switch {
	case waiting+len(c.deletes) >= lingerEnough:
		return 0
	case waiting > 0:
		return c.linger
	case len(c.deletes) > 0:
		return c.deleteLinger
	}
	return 0
}

// commit commits the loss reports, what the intake holds and the confirmed
// deletes in one transaction, and reports whether it succeeded (nothing to
// do is a success).
func (c *committer) commit() bool {
	pending := c.intake.take()
	if len(c.reports)+len(pending)+len(c.deletes) == 0 && !c.outbox.NeedsRepair() {
		// Dropped with no commit to wait for (an event larger than the
		// bound alone): no failure is why.
		c.intake.settle(false)
		return true
	}
	batch := make([]*messages.Event, 0, len(c.reports)+len(pending))
	batch = append(batch, c.reports...)
	for _, pe := range pending {
		batch = append(batch, pe.ev)
	}
	dropped, err := c.outbox.Commit(batch, c.deletes)
	c.intake.settle(err != nil)
	if err != nil {
		c.failures++
		// Before readiness says why: whoever reads the reason finds the
		// gate already closed.
		c.setGate()
		// Before requeue: what it drops is the disk's doing.
		c.setOutboxError(err.Error())
		c.intake.requeue(pending)
		// A reconnect confirms the same events again: without duplicates,
		// the deletes stay within the outbox's event count.
		slices.Sort(c.deletes)
		c.deletes = slices.Compact(c.deletes)
		if c.failed != nil {
			c.failed()
		}
		if c.failures == 1 || time.Since(c.logged) >= commitLogEvery {
			c.logged = time.Now()
			waiting, lost := c.intake.counts()
			c.log.Error().Err(err).Int("attempts", c.failures).Int("events_waiting", waiting+len(c.reports)).Uint64("events_dropped", lost).
				Msg("outbox commit failed: events wait in memory (bounded), retrying")
		}
		return false
	}
	if c.failures > 0 {
		c.log.Info().Int("attempts", c.failures).Msg("outbox writable again")
		c.failures = 0
		c.setOutboxError("")
	}
	c.metrics.accept(batch)
	for _, pe := range pending {
		if pe.accepted != nil {
			pe.accepted(pe.ev)
		}
	}
	c.reports, c.deletes = nil, nil
	c.dropped(dropped)
	// The events dropped from memory are reported once the outbox takes
	// events again: in the next commit.
	if c.reports = c.lostReports(); len(c.reports) > 0 {
		wake(c.work)
	}
	return true
}

// setOutboxError records why commits fail ("" once they succeed again):
// for readiness, and for the intake, which blames what it drops meanwhile
// on the disk.
func (c *committer) setOutboxError(reason string) {
	c.intake.setFailing(reason != "")
	c.status.outboxError(reason)
}

// setGate closes the observers' gate while a when_full: block outbox is
// full or cannot be written, and opens it otherwise (also when the limit
// changed to drop_oldest).
func (c *committer) setGate() {
	c.gate.Close(!c.outbox.Limit().DropOldest && (c.failures > 0 || c.outbox.Full()))
}

// dropped records drops (drop_oldest, corrupt), merging contiguous ranges
// of one policy; run reports them overflowReportDelay later.
func (c *committer) dropped(ds []Dropped) {
	c.metrics.drop(ds)
	for _, d := range ds {
		c.drops = mergeDropped(c.drops, d)
	}
}

// dropMessages are the log lines of the drops, one per range.
var dropMessages = map[string]string{
	policyDropOldest: "outbox full: oldest events dropped",
	policyCorrupt:    "outbox record damaged: dropped, its event is lost",
}

// reportDrops turns the recorded drops into outbox.overflow events for the
// next commit.
func (c *committer) reportDrops() {
	for _, d := range c.drops {
		c.log.Error().Uint64("first_sequence", d.First).Uint64("last_sequence", d.Last).
			Uint64("events", d.Events).Uint64("bytes", d.Bytes).Msg(dropMessages[d.Policy])
		c.reports = append(c.reports, overflowEvent(c.node, c.version, &messages.OutboxOverflow{
			FirstSequence: d.First, LastSequence: d.Last, DroppedEvents: d.Events, DroppedBytes: d.Bytes, Policy: d.Policy,
		}))
	}
	c.drops = nil
	wake(c.work)
}

// lostMessages are the log lines of the events dropped from memory.
var lostMessages = map[string]string{
	policyDiskFull:   "outbox could not be written: events dropped from memory before they were accepted",
	policyMemoryFull: "outbox commits did not keep up: events dropped from memory before they were accepted",
}

// lostReports are the reports of the events the intake dropped (disk_full,
// memory_full), one per policy.
func (c *committer) lostReports() []*messages.Event {
	var evs []*messages.Event
	for _, l := range c.intake.takeLost() {
		c.log.Error().Uint64("events", l.Events).Uint64("bytes", l.Bytes).Msg(lostMessages[l.Policy])
		evs = append(evs, overflowEvent(c.node, c.version, &messages.OutboxOverflow{
			DroppedEvents: l.Events, DroppedBytes: l.Bytes, Policy: l.Policy,
		}))
	}
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

// stop is the committer's end. It commits what waited when the stop began
// (one more try when commits fail: then what was never accepted is
// dropped, with a log line), reports every loss not reported yet, then only
// deletes what the publisher still confirms, until the publisher ended.
func (c *committer) stop() {
	for {
		if waiting, _ := c.intake.counts(); waiting+len(c.reports)+len(c.deletes) == 0 && !c.outbox.NeedsRepair() {
			c.intake.settle(false)
			break
		}
		if !c.commit() {
			if n := c.intake.giveUp(); n > 0 {
				c.log.Error().Int("events", n).Msg("stopping while the outbox cannot be written: events never accepted are dropped")
			}
			break
		}
	}
	// Straight into the outbox, with nothing dropped for them: a stop must
	// not hide a loss, and no drop made now could be reported.
	c.reportDrops()
	if reports := append(c.reports, c.lostReports()...); len(reports) > 0 {
		if err := c.outbox.AppendReports(reports); err != nil {
			c.log.Error().Err(err).Msg("report dropped events")
		} else {
			c.metrics.accept(reports)
		}
	}
	c.reports = nil
	c.setGate()
	close(c.flushed)

	// Damaged records found from now on stay in the file, reported after
	// the next start: no commit purges them, and so nobody has to report
	// them after the stop.
	del := c.deletes
	for {
		if len(del) > 0 {
			if err := c.outbox.Delete(del); err != nil {
				// The events stay and go again: a duplicate, not a loss.
				c.log.Error().Err(err).Msg("outbox delete failed")
			}
			c.setGate()
		}
		m, ok := <-c.confirmed
		if !ok {
			return
		}
		del = m.seqs
	}
}
