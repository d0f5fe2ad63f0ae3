package protocol

import (
	"sync/atomic"
	"time"

	"github.com/polar/observerd/messages"
)

// The broker accepts:
//   - Publish, from the state-manager: an event to accept into the outbox;
//   - SetOutboxLimit, from the daemon on SIGHUP;
//   - GetOutboxStats, from the admin, answered with an OutboxSnapshot.
//
// It sends the state-manager a BrokerStatus at every change of its
// connection, and closes or opens the Gate it shares with the observers.

// Publish hands a complete event to the broker, which accepts it into the
// outbox (assigning its sequence) and delivers it at least once.
type Publish struct {
	Event *messages.Event
	// Accepted, when set, is called with the event once it is accepted
	// into the outbox (its sequence assigned), from the broker's
	// committer: it must not block. An event the broker drops before (a
	// full memory buffer) never calls it. The control channel acks a
	// command only then, so that its answer is never lost.
	Accepted func(*messages.Event)
}

// SetOutboxLimit changes the outbox's bound (outbox.max_bytes and
// outbox.when_full) while the broker runs.
type SetOutboxLimit struct {
	MaxBytes   int64
	DropOldest bool
}

// GetOutboxStats asks the broker for its outbox's counters, an
// OutboxSnapshot.
type GetOutboxStats struct{}

// OutboxSnapshot is the broker's outbox: the answer to GetOutboxStats, and
// part of a Snapshot.
type OutboxSnapshot struct {
	Events       int    `json:"events"`
	Bytes        int64  `json:"bytes"`
	LastSequence uint64 `json:"last_sequence"`
}

// BrokerStatus is what the broker tells the state-manager whenever its
// connection changes.
type BrokerStatus struct {
	Connected bool `json:"connected"`
	Blocked   bool `json:"blocked"`
	// URL is the redacted URL of the current or last attempted connection.
	URL   string    `json:"url"`
	Since time.Time `json:"since"`
	// LastError is why the last connection attempt failed or the connection
	// was lost, or the alarm that blocks it; empty otherwise.
	LastError string `json:"last_error,omitempty"`
	// Unroutable is set while events that RabbitMQ returned (no queue
	// bound to their routing key) wait in the outbox for a retry.
	Unroutable bool `json:"unroutable,omitempty"`
	// Nacked is set while events that RabbitMQ nacked (a queue that
	// refused them, or lost its leader) wait in the outbox for a retry.
	Nacked bool `json:"nacked,omitempty"`
	// Unconfirmed is set while a publication has waited 5 s or more for
	// RabbitMQ's confirm (a quorum queue without a majority holds them).
	Unconfirmed bool `json:"unconfirmed,omitempty"`
	// OutboxError is why the outbox cannot be written (a full or failing
	// disk), while that lasts; events wait in a bounded memory buffer.
	OutboxError string `json:"outbox_error,omitempty"`
}

// Gate is the broker's backpressure signal to the observers: closed while
// the outbox is full with outbox.when_full: block. Observers skip their
// turns while it is closed instead of producing events that would grow
// memory. A nil *Gate is always open. It is shared memory, not a message:
// an observer asks it at every turn, which must not cost a round trip.
type Gate struct{ closed atomic.Bool }

// Close closes or opens the gate.
func (g *Gate) Close(closed bool) {
	if g != nil {
		g.closed.Store(closed)
	}
}

// Closed reports whether the gate is closed.
func (g *Gate) Closed() bool { return g != nil && g.closed.Load() }
