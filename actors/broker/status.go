package broker

import (
	"sync"

	"github.com/polar/observerd/actors/protocol"
)

// statusBoard is the broker's BrokerStatus, put together from the parts
// that two owners decide: the publisher's connection and its events
// waiting for a retry (Unroutable), the committer's outbox error. Every
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
	s.Unroutable, s.OutboxError = b.last.Unroutable, b.last.OutboxError
	b.last = s
	b.metrics.status(s)
	b.report(s)
}

// unroutable reports whether returned events wait for a retry, when that
// changes (not at every return: that would flood).
func (b *statusBoard) unroutable(waiting bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last.Unroutable != waiting {
		b.last.Unroutable = waiting
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
