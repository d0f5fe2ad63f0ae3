package broker

import (
	"sync"

	"github.com/polar/observerd/actors/protocol"
)

// statusBoard is the broker's BrokerStatus, put together from the parts
// that two owners decide: the publisher's connection, its events waiting
// for a retry (Unroutable, Nacked) and its late confirms (Unconfirmed),
// the committer's outbox error. Every
// change is reported at once, under the board's lock, so reports go out in
// the order their states were made; report only sends a message, it never
// blocks.
type statusBoard struct {
	report  func(protocol.BrokerStatus)
	metrics *metrics

	mu   sync.Mutex
	last protocol.BrokerStatus
}

// connection reports a change of the connection (opened, blocked,
// unblocked, failed, lost), keeping the other parts.
func (b *statusBoard) connection(s protocol.BrokerStatus) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s.Unroutable, s.Nacked, s.OutboxError = b.last.Unroutable, b.last.Nacked, b.last.OutboxError
	b.last = s
	b.metrics.status(s)
	b.report(s)
}

// retrying reports whether returned, and nacked, events wait for a
// retry, when that changes (not at every return or nack: that would
// flood).
func (b *statusBoard) retrying(returned, nacked bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last.Unroutable != returned || b.last.Nacked != nacked {
		b.last.Unroutable, b.last.Nacked = returned, nacked
		b.report(b.last)
	}
}

// stalled reports whether a publication has waited confirmStall for its
// confirm, when that changes; a new connection clears it.
func (b *statusBoard) stalled(late bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last.Unconfirmed != late {
		b.last.Unconfirmed = late
		b.report(b.last)
	}
}

// outboxError reports why commits fail ("" once they succeed again), when
// that changes.
func (b *statusBoard) outboxError(reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last.OutboxError != reason {
		b.last.OutboxError = reason
		b.report(b.last)
	}
}
