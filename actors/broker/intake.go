package broker

import (
	"sync"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/messages"
)

// intake is where the actor's mailbox hands events in: the events waiting
// for the committer, oldest first. Adding never blocks, and never waits for
// a commit; the waiting events are bounded in bytes (pendingLimit), beyond
// which when_full applies to memory as it does to the outbox. What it drops
// was never accepted, and is counted for the committer to report.
type intake struct {
	outbox  *Outbox // for its Limit
	metrics *metrics
	log     zerolog.Logger
	// wake tells the committer (cap 1) that events wait.
	wake chan<- struct{}

	mu     sync.Mutex
	events []pendingEvent
	bytes  int64
	closed bool
	// failing is set while commits fail: what is dropped meanwhile is the
	// disk's doing (disk_full).
	failing bool
	// lost counts the events dropped, by policy, for outbox.overflow
	// events: disk_full when commits failed, memory_full when they
	// succeeded but did not keep up. unsettled are those dropped while no
	// commit had failed yet: the outcome of the commit running then
	// decides (settle).
	lost      []Dropped
	unsettled Dropped
}

// pendingEvent is an event waiting for a commit with its encoded size,
// and who wants to know when it is accepted (protocol.Publish.Accepted).
type pendingEvent struct {
	ev       *messages.Event
	size     int64
	accepted func(*messages.Event)
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

func newIntake(outbox *Outbox, m *metrics, log zerolog.Logger, wake chan struct{}) *intake {
	return &intake{outbox: outbox, metrics: m, log: log, wake: wake}
}

// add queues ev for the committer; accepted (if not nil) is called once
// it is committed.
func (in *intake) add(ev *messages.Event, accepted func(*messages.Event)) {
	size := int64(proto.Size(ev))
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		in.log.Error().Str("event", ev.Id).Str("type", ev.Type).Msg("event after broker stop, not accepted")
		return
	}
	in.events = append(in.events, pendingEvent{ev: ev, size: size, accepted: accepted})
	in.bytes += size
	in.trim()
	wake(in.wake)
}

// take hands the committer everything waiting.
func (in *intake) take() []pendingEvent {
	in.mu.Lock()
	defer in.mu.Unlock()
	evs := in.events
	in.events, in.bytes = nil, 0
	return evs
}

// requeue puts a group that failed to commit back in front of what arrived
// meanwhile, and applies the bound to the whole (with block, the newest
// go: those that arrived during the attempt).
func (in *intake) requeue(evs []pendingEvent) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, pe := range evs {
		in.bytes += pe.size
	}
	in.events = append(evs, in.events...)
	in.trim()
}

// trim drops events until the intake fits in its bound; mu held.
// drop_oldest drops the oldest; block the newest (so an add beyond the
// bound drops its own event; the gate is closed by then if commits fail).
// Dropping from the front reslices: append reallocates, copying only what
// is left, so a full buffer costs no copy per event.
func (in *intake) trim() {
	l := in.outbox.Limit()
	limit := pendingLimit(l)
	if l.DropOldest {
		n := 0
		for n < len(in.events) && in.bytes > limit {
			in.lose(in.events[n])
			in.events[n] = pendingEvent{}
			n++
		}
		in.events = in.events[n:]
		return
	}
	n := len(in.events)
	for n > 0 && in.bytes > limit {
		n--
		in.lose(in.events[n])
		in.events[n] = pendingEvent{}
	}
	in.events = in.events[:n]
}

// lose counts an event dropped from memory; mu held. While commits fail,
// the disk is why (disk_full); otherwise the commit running now tells
// (settle).
func (in *intake) lose(pe pendingEvent) {
	in.bytes -= pe.size
	in.metrics.lost.Inc()
	d := Dropped{Events: 1, Bytes: uint64(pe.size)}
	if in.failing {
		in.addLost(policyDiskFull, d)
		return
	}
	in.unsettled.Events++
	in.unsettled.Bytes += d.Bytes
}

// settle gives the events dropped during a commit its outcome's policy: a
// failed commit means the disk (disk_full), a successful one that commits
// did not keep up (memory_full).
func (in *intake) settle(failed bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.unsettled.Events == 0 {
		return
	}
	policy := policyMemoryFull
	if failed {
		policy = policyDiskFull
	}
	in.addLost(policy, in.unsettled)
	in.unsettled = Dropped{}
}

// addLost adds d to the events lost for policy; mu held.
func (in *intake) addLost(policy string, d Dropped) {
	for i := range in.lost {
		if l := &in.lost[i]; l.Policy == policy {
			l.Events += d.Events
			l.Bytes += d.Bytes
			return
		}
	}
	d.Policy = policy
	in.lost = append(in.lost, d)
}

// takeLost returns the events lost so far, one Dropped per policy.
func (in *intake) takeLost() []Dropped {
	in.mu.Lock()
	defer in.mu.Unlock()
	lost := in.lost
	in.lost = nil
	return lost
}

// setFailing says whether commits fail.
func (in *intake) setFailing(failing bool) {
	in.mu.Lock()
	in.failing = failing
	in.mu.Unlock()
}

// counts are the events waiting and those lost so far, for the log.
func (in *intake) counts() (waiting int, lost uint64) {
	in.mu.Lock()
	defer in.mu.Unlock()
	lost = in.unsettled.Events
	for _, l := range in.lost {
		lost += l.Events
	}
	return len(in.events), lost
}

// waiting is how many events wait.
func (in *intake) waiting() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.events)
}

// pendingBytes are the bytes waiting.
func (in *intake) pendingBytes() int64 {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.bytes
}

// close refuses what comes after a stop began.
func (in *intake) close() {
	in.mu.Lock()
	in.closed = true
	in.mu.Unlock()
}

func (in *intake) isClosed() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.closed
}

// giveUp drops what waits, at a stop while the outbox cannot be written,
// and returns how many events that was: never accepted, they have no
// sequence and leave no gap.
func (in *intake) giveUp() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	n := len(in.events)
	in.events, in.bytes = nil, 0
	return n
}

func wake(c chan<- struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
