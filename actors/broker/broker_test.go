//go:build integration

package broker

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/configs"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/actortest"
	"github.com/polar/observerd/test/boltdamage"
	"github.com/polar/observerd/test/rabbitmq"
)

var node *rabbitmq.Node

func TestMain(m *testing.M) { rabbitmq.Main(m, &node) }

const wait = 20 * time.Second

type fixture struct {
	sys    *actor.ActorSystem
	opts   Options
	status *actortest.Recorder
	events chan *messages.Event
}

// newFixture returns broker options for the test node with a fresh
// exchange, and a consumer bound to it with bindings (none: unroutable).
func newFixture(t *testing.T, bindings ...string) *fixture {
	t.Helper()
	sys := actortest.System(t)
	f := &fixture{sys: sys, status: actortest.NewRecorder(t, sys, "status"), events: make(chan *messages.Event, 10000)}
	exchange := "broker-test." + t.Name()
	// Closed after the actor stopped: cleanups run last registered first.
	ob, err := OpenOutbox(t.TempDir(), OutboxOptions{Node: "broker.test", Log: actortest.Logger(t)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ob.Close()) })
	f.opts = Options{
		Node: "broker.test", Outbox: ob, URLs: []string{node.URL()}, Credentials: StaticCredentials(node.TLSConfig(), node.Password),
		Exchange: exchange, ConfirmWindow: 16, Heartbeat: 10 * time.Second,
		DrainTimeout: 5 * time.Second, State: f.status.PID, Log: actortest.Logger(t),
	}
	if len(bindings) > 0 {
		f.opts.Queues = []configs.Queue{{Name: "q-" + t.Name(), Type: "classic", Bindings: bindings}}
	}
	return f
}

// start spawns the broker actor, stopped (drained) when the test ends.
func (f *fixture) start(t *testing.T) *actor.PID {
	t.Helper()
	pid, err := f.sys.Root.SpawnNamed(Props(f.opts), "broker")
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.sys.Root.PoisonFuture(pid).Wait() })
	return pid
}

func (f *fixture) stats(t *testing.T, pid *actor.PID) *protocol.OutboxSnapshot {
	t.Helper()
	st, err := f.sys.Root.RequestFuture(pid, &protocol.GetOutboxStats{}, time.Second).Result()
	require.NoError(t, err)
	return st.(*protocol.OutboxSnapshot)
}

// consume declares the fixture's queue and forwards decoded events.
func (f *fixture) consume(t *testing.T) {
	t.Helper()
	conn, err := node.Dial()
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, declare(ch, &f.opts))
	dels, err := ch.Consume(f.opts.Queues[0].Name, "", true, false, false, false, nil)
	require.NoError(t, err)
	go func() {
		for d := range dels {
			ev := &messages.Event{}
			if proto.Unmarshal(d.Body, ev) == nil {
				f.events <- ev
			}
		}
	}()
}

func (f *fixture) receive(t *testing.T, n int) []*messages.Event {
	t.Helper()
	var out []*messages.Event
	deadline := time.After(wait)
	for len(out) < n {
		select {
		case ev := <-f.events:
			out = append(out, ev)
		case <-deadline:
			t.Fatalf("received %d of %d events", len(out), n)
		}
	}
	return out
}

func TestPublishesEveryEventInSequenceAndEmptiesTheOutbox(t *testing.T) {
	f := newFixture(t, "#")
	f.consume(t)
	pid := f.start(t)

	const n = 500
	sent := events(n)
	for _, ev := range sent {
		ev.Node = f.opts.Node
		f.sys.Root.Send(pid, &protocol.Publish{Event: ev})
	}
	got := f.receive(t, n)
	for i, ev := range got {
		assert.Equal(t, uint64(i+1), ev.Sequence)
		assert.Equal(t, sent[i].Id, ev.Id)
	}
	require.Eventually(t, func() bool { return f.stats(t, pid).Events == 0 }, wait, 10*time.Millisecond,
		"confirmed events leave the outbox")
	actortest.WaitMessage(t, f.status, func(s *protocol.BrokerStatus) bool { return s.Connected })
}

func TestUnroutableEventsStayInTheOutboxUntilRoutable(t *testing.T) {
	f := newFixture(t) // no queue: every event is returned
	pid := f.start(t)
	actortest.WaitMessage(t, f.status, func(s *protocol.BrokerStatus) bool { return s.Connected })

	sent := events(5)
	for _, ev := range sent {
		ev.Node = f.opts.Node
		f.sys.Root.Send(pid, &protocol.Publish{Event: ev})
	}
	stats := func() *protocol.OutboxSnapshot { return f.stats(t, pid) }
	require.Eventually(t, func() bool { return stats().LastSequence == 5 }, wait, 10*time.Millisecond)
	// Returned events are acked by RabbitMQ too: they must not count as
	// delivered. Binding a queue later delivers them on retry.
	f.opts.Queues = []configs.Queue{{Name: "late-" + t.Name(), Type: "classic", Bindings: []string{"#"}}}
	assert.Equal(t, 5, stats().Events, "returned events are not deleted")
	actortest.WaitMessage(t, f.status, func(s *protocol.BrokerStatus) bool { return s.Connected && s.Unroutable })
	f.consume(t)
	got := f.receive(t, 5)
	seen := map[uint64]bool{}
	for _, ev := range got {
		seen[ev.Sequence] = true
	}
	assert.Len(t, seen, 5)
	require.Eventually(t, func() bool { return stats().Events == 0 }, wait, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		var last *protocol.BrokerStatus
		for _, m := range f.status.Messages() {
			if s, ok := m.(*protocol.BrokerStatus); ok {
				last = s
			}
		}
		return last != nil && last.Connected && !last.Unroutable
	}, wait, 10*time.Millisecond, "the latest status clears unroutable once delivered")
}

func TestDialTriesURLsInOrder(t *testing.T) {
	f := newFixture(t)
	f.opts.URLs = []string{"amqps://observer@127.0.0.1:1/", node.URL()}
	conn, err := dial(t.Context(), &f.opts, &ring{urls: f.opts.URLs})
	require.NoError(t, err)
	defer conn.Close()
	assert.Equal(t, configs.RedactURL(node.URL()), conn.URL())

	f.opts.URLs = []string{"amqps://observer@127.0.0.1:1/"}
	_, err = dial(t.Context(), &f.opts, &ring{urls: f.opts.URLs})
	require.ErrorContains(t, err, "127.0.0.1:1")
	var amqpErr *amqp.Error
	assert.NotErrorAs(t, err, &amqpErr)
}

func TestUnroutableEventsAreDroppedOldestFirst(t *testing.T) {
	// Observations are returned (only outbox.overflow is bound): a return
	// proves an event was not delivered, so drop_oldest may take it. The
	// outbox stays within max_bytes by dropping the oldest, as its name
	// says, not the newest that have not been published yet.
	f := newFixture(t, "outbox.overflow.#")
	f.opts.Outbox.SetLimit(Limit{MaxBytes: 16 << 10, DropOldest: true})
	f.consume(t)
	pid := f.start(t)
	actortest.WaitMessage(t, f.status, func(s *protocol.BrokerStatus) bool { return s.Connected })

	// In groups, each returned before the next is sent.
	for i, ev := range events(600) {
		ev.Node = f.opts.Node
		f.sys.Root.Send(pid, &protocol.Publish{Event: ev})
		if i%50 == 49 {
			want := uint64(i + 1)
			require.Eventually(t, func() bool { return f.stats(t, pid).LastSequence >= want }, wait, 5*time.Millisecond)
			actortest.WaitMessage(t, f.status, func(s *protocol.BrokerStatus) bool { return s.Unroutable })
		}
	}
	overflow := f.receive(t, 1)[0]
	require.Equal(t, messages.TypeOutboxOverflow, overflow.Type)
	assert.Equal(t, uint64(1), overflow.GetOutboxOverflow().GetFirstSequence(), "the oldest events go first")
	st := f.stats(t, pid)
	t.Logf("outbox: %d events, %d bytes (bound %d)", st.Events, st.Bytes, f.opts.Outbox.Limit().MaxBytes)
	assert.LessOrEqual(t, st.Bytes, f.opts.Outbox.Limit().MaxBytes+int64(f.opts.ConfirmWindow+2)*1024,
		"within the bound, but for what is in flight")
}

func TestOutboxDamagedWhilePublishingIsReplacedAndReported(t *testing.T) {
	f := newFixture(t, "#")
	f.consume(t)
	pid := f.start(t)
	f.publish(pid, events(5))
	f.receive(t, 5)
	require.Eventually(t, func() bool { return f.stats(t, pid).Events == 0 }, wait, 10*time.Millisecond)

	// Damaged under the running broker: the next commit panics in bbolt.
	boltdamage.Pages(t, filepath.Join(f.opts.Outbox.dir, "outbox.db"))
	later := events(5)
	f.publish(pid, later)
	got := f.receive(t, 6)
	report := got[0]
	require.Equal(t, messages.TypeOutboxOverflow, report.Type)
	assert.Equal(t, "corrupt", report.GetOutboxOverflow().GetPolicy())
	assert.Equal(t, uint64(1), report.GetOutboxOverflow().GetFirstSequence())
	assert.Equal(t, report.GetOutboxOverflow().GetLastSequence()+1, report.Sequence)
	for i, ev := range got[1:] {
		assert.Equal(t, later[i].Id, ev.Id, "the events pending at the damage are delivered")
		assert.Equal(t, report.Sequence+uint64(i+1), ev.Sequence)
	}
	for _, m := range f.status.Messages() {
		if s, ok := m.(*protocol.BrokerStatus); ok {
			assert.True(t, s.Connected, "the connection stayed up")
		}
	}
}

func TestDamagedRecordIsReportedAndDeliveryGoesOn(t *testing.T) {
	// bbolt has no checksum on its data pages: a damaged value opens and
	// reads. It is lost alone: reported, and every other event delivered.
	f := newFixture(t, "#")
	ob := f.opts.Outbox
	before := events(5)
	for _, ev := range before {
		ev.Node = f.opts.Node
	}
	_, err := ob.Append(before)
	require.NoError(t, err)
	stored, err := ob.After(0, 5)
	require.NoError(t, err)
	raw := stored[1].Raw // sequence 2
	boltdamage.Value(t, filepath.Join(ob.dir, "outbox.db"), raw, 0, garbage)

	reg := f.withMetrics()
	f.consume(t)
	pid := f.start(t)
	got := f.receive(t, 5)
	var report *messages.Event
	var seqs []uint64
	for _, ev := range got {
		if ev.Type == messages.TypeOutboxOverflow {
			report = ev
			continue
		}
		seqs = append(seqs, ev.Sequence)
	}
	assert.Equal(t, []uint64{1, 3, 4, 5}, seqs, "the events after the damaged one are delivered")
	require.NotNil(t, report)
	assert.Equal(t, uint64(6), report.Sequence)
	assert.True(t, proto.Equal(&messages.OutboxOverflow{
		FirstSequence: 2, LastSequence: 2, DroppedEvents: 1, DroppedBytes: uint64(len(raw)), Policy: "corrupt",
	}, report.GetOutboxOverflow()), "%v", report.GetOutboxOverflow())

	later := events(5)
	f.publish(pid, later)
	for i, ev := range f.receive(t, 5) {
		assert.Equal(t, later[i].Id, ev.Id)
		assert.Equal(t, uint64(7+i), ev.Sequence, "nothing else is lost")
	}
	require.Eventually(t, func() bool { return f.stats(t, pid).Events == 0 }, wait, 10*time.Millisecond,
		"the damaged record left the outbox with the rest")
	assert.False(t, ob.NeedsRepair())
	var statuses int
	for _, m := range f.status.Messages() {
		if s, ok := m.(*protocol.BrokerStatus); ok {
			statuses++
			assert.True(t, s.Connected, "the connection stayed up")
		}
	}
	assert.Positive(t, statuses)
	waitMetric(t, reg, 1, "observerd_events_damaged_total")
	assert.Zero(t, metricValue(t, reg, "observerd_events_dropped_total"))
}
