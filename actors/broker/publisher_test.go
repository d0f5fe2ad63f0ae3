package broker

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/actortest"
	"github.com/polar/observerd/test/boltdamage"
)

// The tests in this file play, against the fake broker (fake_test.go),
// the interleavings that the fault tests against a real RabbitMQ and the
// real daemon found bugs in (test/e2e/fault_test.go, hostile_*_test.go,
// broker_test.go), each named after the commit that fixed it.

// testOutbox opens an outbox in a fresh directory, closed when the test
// ends (after the pipeline, which its test starts later).
func testOutbox(t *testing.T, limit Limit) *Outbox {
	t.Helper()
	ob, err := OpenOutbox(t.TempDir(), OutboxOptions{Limit: limit, Node: "test.node", Log: actortest.Logger(t)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ob.Close()) })
	return ob
}

// faked starts a pipeline on ob whose connections the fake broker makes.
// setup runs before it starts (its options are p.publisher.o); returned
// and nacked events go again after 20 ms. It is stopped when the test
// ends, without waiting for confirms.
func faked(t *testing.T, ob *Outbox, setup func(*pipeline, *fakeBroker)) (*pipeline, *fakeBroker, *statusLog) {
	t.Helper()
	opts := &Options{Node: "test.node", Version: "test", Outbox: ob, Exchange: "observerd", ConfirmWindow: 16,
		Gate: &protocol.Gate{}, Log: actortest.Logger(t)}
	fake := newFakeBroker(t, 0)
	status := &statusLog{}
	p := newPipeline(opts, ob, newMetrics(nil, opts.Log), status.report, fake.dial)
	p.publisher.retryDelay = 20 * time.Millisecond
	p.committer.reportDelay = 20 * time.Millisecond
	if setup != nil {
		setup(p, fake)
	}
	fake.window = opts.ConfirmWindow
	p.start()
	t.Cleanup(func() { stopNow(p) })
	return p, fake, status
}

// stopNow stops p without waiting for confirms, unless it was stopped.
func stopNow(p *pipeline) {
	if p.intake.isClosed() {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p.Close(ctx)
}

// accept hands n new events to p and returns them.
func accept(p *pipeline, n int) []*messages.Event {
	evs := events(n)
	for _, ev := range evs {
		p.Accept(ev, nil)
	}
	return evs
}

// storedSeqs are the sequences in ob.
func storedSeqs(t *testing.T, ob *Outbox) []uint64 {
	t.Helper()
	rs, err := ob.After(0, ob.Stats().Events+1)
	require.NoError(t, err)
	return sequencesOf(rs)
}

// eventually waits for cond, which says what it waits for.
func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	require.Eventually(t, cond, within, 2*time.Millisecond, what)
}

// ackUntilEmpty acks everything l publishes until ob, holding sequence
// last at least, is empty, and returns what was published, in order.
func ackUntilEmpty(t *testing.T, l *fakeLink, ob *Outbox, last uint64) []uint64 {
	t.Helper()
	return seqsOf(ackUntilEmptyEvents(t, l, ob, last))
}

// perEvent is the stored size of one of events' events.
func perEvent(t *testing.T) int64 {
	t.Helper()
	ob, err := OpenOutbox(t.TempDir(), OutboxOptions{})
	require.NoError(t, err)
	defer ob.Close()
	_, err = ob.Append(events(10))
	require.NoError(t, err)
	return ob.Stats().Bytes / 10
}

// all returns the statuses reported so far.
func (l *statusLog) statuses() []protocol.BrokerStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.all)
}

// last is the latest status (zero before any).
func (l *statusLog) last() protocol.BrokerStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.all) == 0 {
		return protocol.BrokerStatus{}
	}
	return l.all[len(l.all)-1]
}

// waitFor waits until the latest status matches.
func (l *statusLog) waitFor(t *testing.T, match func(protocol.BrokerStatus) bool, what string) {
	t.Helper()
	eventually(t, func() bool { return match(l.last()) }, what)
}

// waitSeen waits until a status that matches was reported, and returns
// the first: a later one may have followed it already.
func (l *statusLog) waitSeen(t *testing.T, match func(protocol.BrokerStatus) bool, what string) protocol.BrokerStatus {
	t.Helper()
	var found protocol.BrokerStatus
	eventually(t, func() bool {
		for _, s := range l.statuses() {
			if match(s) {
				found = s
				return true
			}
		}
		return false
	}, what)
	return found
}

func connected(s protocol.BrokerStatus) bool { return s.Connected && !s.Blocked }

func TestFakePublishesTheStoredEventsInOrderAndDeletesWhatIsAcked(t *testing.T) {
	// Broker: publish the stored bytes (8c07edc); the AMQP mapping of
	// docs/consumers.md.
	for _, json := range []bool{false, true} {
		t.Run(map[bool]string{false: "protobuf", true: "json"}[json], func(t *testing.T) {
			ob := testOutbox(t, Limit{})
			p, fake, status := faked(t, ob, func(p *pipeline, _ *fakeBroker) { p.publisher.o.JSON = json })
			l := fake.next(t)
			status.waitFor(t, connected, "connected")

			sent := accept(p, 5)
			pubs := l.nextN(t, 5)
			stored, err := ob.After(0, 10)
			require.NoError(t, err)
			for i, pub := range pubs {
				assert.Equal(t, uint64(i+1), pub.seq)
				assert.Equal(t, "observerd", pub.exchange)
				assert.Equal(t, messages.RoutingKey(sent[i].Type, sent[i].Node), pub.key)
				assert.Equal(t, sent[i].Id, pub.msg.MessageId)
				assert.Equal(t, amqp.Persistent, pub.msg.DeliveryMode)
				if json {
					assert.Equal(t, "application/json", pub.msg.ContentType)
					ev := &messages.Event{}
					require.NoError(t, protojson.Unmarshal(pub.msg.Body, ev))
					assert.True(t, proto.Equal(stored[i].Event, ev))
				} else {
					assert.Equal(t, "application/protobuf", pub.msg.ContentType)
					assert.Equal(t, stored[i].Raw, pub.msg.Body, "the stored bytes, not encoded again")
				}
			}
			ackAll(pubs)
			eventually(t, func() bool { return ob.Stats().Events == 0 }, "acked events leave the outbox")
			m := p.committer.metrics
			assert.Equal(t, 5.0, counterValue(t, m.published))
			assert.Equal(t, 5.0, counterValue(t, m.confirmed))
			fake.noMoreLinks(t)
		})
	}
}

func TestFakeConfirmsAreSettledInPublishOrder(t *testing.T) {
	// RabbitMQ may confirm out of order (several queues, multiple acks);
	// a return comes before its ack. Settling in publish order keeps the
	// return of an event with the event.
	ob := testOutbox(t, Limit{})
	p, fake, status := faked(t, ob, nil)
	l := fake.next(t)
	accept(p, 4)
	pubs := l.nextN(t, 4)

	confirmedCount := func() float64 { return counterValue(t, p.committer.metrics.confirmed) }
	pubs[3].ack()
	pubs[2].ack()
	pubs[0].ack()
	eventually(t, func() bool { return confirmedCount() == 1 }, "the first is settled")
	assert.Equal(t, 1.0, confirmedCount(), "later acks wait for the second's confirm")

	pubs[1].ret()
	eventually(t, func() bool { return ob.Stats().Events == 1 }, "the acks after the return are settled, and deleted")
	assert.Equal(t, []uint64{2}, storedSeqs(t, ob), "the returned event stays")
	assert.Equal(t, 3.0, confirmedCount())
	status.waitFor(t, func(s protocol.BrokerStatus) bool { return s.Unroutable }, "unroutable")

	again := l.next(t)
	assert.Equal(t, uint64(2), again.seq, "retried")
	again.ack()
	eventually(t, func() bool { return ob.Stats().Events == 0 }, "delivered on retry")
	status.waitFor(t, func(s protocol.BrokerStatus) bool { return !s.Unroutable }, "routable again")
	m := p.committer.metrics
	assert.Equal(t, 1.0, counterValue(t, m.returned))
	assert.Equal(t, 4.0, counterValue(t, m.confirmed))
}

func TestFakeConnectionLostAtAnyPointLosesNothing(t *testing.T) {
	// Zero-loss delivery (c988285, "returns channel close fix"), the
	// fault tests' broker killed mid-stream and broker unreachable at
	// start: the connection may fail or go at any point; every event
	// still in the outbox goes again on the next one, from the oldest.
	// The window is 4, and 4 events are accepted.
	killed := &amqp.Error{Code: amqp.ConnectionForced, Reason: "CONNECTION_FORCED - broker killed"}
	for _, tc := range []struct {
		name string
		// setup runs before the pipeline starts.
		setup func(fake *fakeBroker)
		// fault accepts the events and plays the fault; it returns the
		// first link (nil when none opened).
		fault func(t *testing.T, p *pipeline, fake *fakeBroker, status *statusLog) *fakeLink
		// reason is in the status's LastError after the fault, url is
		// its URL.
		reason, url string
	}{
		{"dial refused", func(fake *fakeBroker) { fake.setDown(errRefused) },
			func(t *testing.T, p *pipeline, fake *fakeBroker, status *statusLog) *fakeLink {
				accept(p, 4)
				status.waitFor(t, func(s protocol.BrokerStatus) bool { return s.LastError != "" }, "refused")
				fake.setDown(nil)
				return nil
			}, "connection refused", ""},
		{"channel open fails", func(fake *fakeBroker) {
			fake.failOpen(errors.New(`declare exchange "observerd": Exception (403) Reason: "ACCESS_REFUSED - access refused"`))
		}, func(t *testing.T, p *pipeline, fake *fakeBroker, status *statusLog) *fakeLink {
			accept(p, 4)
			return fake.next(t)
		}, "ACCESS_REFUSED", "amqps://fake/"},
		{"before anything is published", nil, func(t *testing.T, p *pipeline, fake *fakeBroker, status *statusLog) *fakeLink {
			l := fake.next(t)
			status.waitFor(t, connected, "connected")
			l.lose(killed)
			status.waitSeen(t, func(s protocol.BrokerStatus) bool { return !s.Connected }, "lost")
			accept(p, 4)
			return l
		}, "CONNECTION_FORCED", "amqps://fake/"},
		{"with every confirm outstanding", nil, func(t *testing.T, p *pipeline, fake *fakeBroker, status *statusLog) *fakeLink {
			l := fake.next(t)
			accept(p, 4)
			l.nextN(t, 4)
			l.lose(killed)
			return l
		}, "CONNECTION_FORCED", "amqps://fake/"},
		{"after some acks", nil, func(t *testing.T, p *pipeline, fake *fakeBroker, status *statusLog) *fakeLink {
			l := fake.next(t)
			accept(p, 4)
			ackAll(l.nextN(t, 4)[:2])
			l.lose(killed)
			return l
		}, "CONNECTION_FORCED", "amqps://fake/"},
		{"with a return taken and its ack not", nil, func(t *testing.T, p *pipeline, fake *fakeBroker, status *statusLog) *fakeLink {
			l := fake.next(t)
			accept(p, 4)
			pubs := l.nextN(t, 4)
			pubs[0].ack()
			pubs[1].returnOnly()
			l.lose(killed)
			return l
		}, "CONNECTION_FORCED", "amqps://fake/"},
		{"with a return settled", nil, func(t *testing.T, p *pipeline, fake *fakeBroker, status *statusLog) *fakeLink {
			l := fake.next(t)
			accept(p, 4)
			pubs := l.nextN(t, 4)
			pubs[0].ret()
			status.waitFor(t, func(s protocol.BrokerStatus) bool { return s.Unroutable }, "returned")
			l.lose(killed)
			return l
		}, "CONNECTION_FORCED", "amqps://fake/"},
		{"with a publication stuck in a socket nobody reads", nil, func(t *testing.T, p *pipeline, fake *fakeBroker, status *statusLog) *fakeLink {
			l := fake.next(t)
			l.stall()
			accept(p, 4)
			eventually(t, func() bool { n, _ := l.stats(); return n == 1 }, "a Publish is stuck")
			l.lose(killed)
			return l
		}, "CONNECTION_FORCED", "amqps://fake/"},
		{"as a publication is made", nil, func(t *testing.T, p *pipeline, fake *fakeBroker, status *statusLog) *fakeLink {
			l := fake.next(t)
			status.waitFor(t, connected, "connected")
			l.lose(killed)
			accept(p, 4) // published on a connection already lost, or not
			return l
		}, "CONNECTION_FORCED", "amqps://fake/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ob := testOutbox(t, Limit{})
			p, fake, status := faked(t, ob, func(p *pipeline, fake *fakeBroker) {
				p.publisher.o.ConfirmWindow = 4
				p.publisher.retryDelay = time.Hour // retried on the next connection only
				if tc.setup != nil {
					tc.setup(fake)
				}
			})
			first := tc.fault(t, p, fake, status)
			got := status.waitSeen(t, func(s protocol.BrokerStatus) bool { return !s.Connected && s.LastError != "" }, "the fault is reported")
			assert.Contains(t, got.LastError, tc.reason)
			assert.Equal(t, tc.url, got.URL)

			l := fake.next(t)
			require.NotSame(t, first, l)
			status.waitFor(t, connected, "connected again")
			published := ackUntilEmpty(t, l, ob, 4)
			assert.False(t, status.last().Unroutable, "retries are moot on a new connection")
			assert.True(t, slices.IsSorted(published), "from the oldest: %v", published)
			assert.Equal(t, uint64(4), ob.Stats().LastSequence)
			assert.Zero(t, ob.Stats().Events, "every event confirmed, none dropped")
		})
	}
}

func TestFakeReturnedEventsWaitAndShowInReadinessUntilDelivered(t *testing.T) {
	// Unroutable events show in /readyz until delivered (c1ba6d4).
	ob := testOutbox(t, Limit{})
	p, fake, status := faked(t, ob, nil)
	l := fake.next(t)
	accept(p, 2)
	for _, pub := range l.nextN(t, 2) {
		pub.ret()
	}
	status.waitFor(t, func(s protocol.BrokerStatus) bool { return s.Connected && s.Unroutable }, "unroutable")
	assert.Equal(t, 2, ob.Stats().Events, "returned events stay")

	retried := l.nextN(t, 2)
	assert.Equal(t, []uint64{1, 2}, seqsOf(retried), "retried in order")
	assert.True(t, status.last().Unroutable, "unroutable until acked")
	retried[0].ack()
	retried[1].ret()
	again := l.next(t)
	assert.Equal(t, uint64(2), again.seq)
	assert.True(t, status.last().Unroutable)
	again.ack()
	status.waitFor(t, func(s protocol.BrokerStatus) bool { return s.Connected && !s.Unroutable }, "routable once delivered")
	eventually(t, func() bool { return ob.Stats().Events == 0 }, "delivered")

	// Retries are moot on a new connection, and so is the flag.
	accept(p, 1)
	l.next(t).ret()
	status.waitFor(t, func(s protocol.BrokerStatus) bool { return s.Unroutable }, "unroutable")
	l.lose(nil)
	l = fake.next(t)
	status.waitFor(t, func(s protocol.BrokerStatus) bool { return s.Connected && !s.Unroutable }, "a new connection clears it")
	assert.Equal(t, []uint64{3}, ackUntilEmpty(t, l, ob, 3))
}

func TestFakeReturnedEventsAreDroppedBeforeUnpublishedOnes(t *testing.T) {
	// Broker and plugin review fixes (17eec18): a returned event was
	// certainly not delivered, so drop_oldest takes it, the oldest, rather
	// than the newest, unpublished ones; a retried event dropped while it
	// waited is forgotten, not retried forever, and readiness clears.
	per := perEvent(t)
	ob := testOutbox(t, Limit{MaxBytes: 4*per + per/2, DropOldest: true})
	p, fake, status := faked(t, ob, nil)
	l := fake.next(t)
	accept(p, 4)
	pubs := l.nextN(t, 4)
	// Blocked: nothing goes again until the drop is done.
	l.block("memory alarm")
	status.waitFor(t, func(s protocol.BrokerStatus) bool { return s.Blocked }, "blocked")
	for _, pub := range pubs {
		pub.ret()
	}
	status.waitFor(t, func(s protocol.BrokerStatus) bool { return s.Unroutable }, "unroutable")
	eventually(t, func() bool { return counterValue(t, p.committer.metrics.returned) == 4 }, "returned")

	accept(p, 2)
	eventually(t, func() bool { return len(overflowsIn(t, ob)) > 0 }, "the drop is reported")
	first := overflowsIn(t, ob)[0]
	assert.Equal(t, [2]uint64{1, 2}, [2]uint64{first.GetFirstSequence(), first.GetLastSequence()},
		"the oldest, returned events are dropped, not the newest")

	l.unblock()
	got := ackUntilEmptyEvents(t, l, ob, 7)
	status.waitFor(t, func(s protocol.BrokerStatus) bool { return connected(s) && !s.Unroutable }, "routable")
	assertLostExactlyWhatIsReported(t, p, ob, got)
}

// ackUntilEmptyEvents is ackUntilEmpty, returning the publications.
func ackUntilEmptyEvents(t *testing.T, l *fakeLink, ob *Outbox, last uint64) []*fakePub {
	t.Helper()
	var pubs []*fakePub
	deadline := time.After(within)
	for tick := time.NewTicker(2 * time.Millisecond); ; {
		select {
		case p := <-l.published:
			pubs = append(pubs, p)
			p.ack()
		case <-tick.C:
			if st := ob.Stats(); st.Events == 0 && st.LastSequence >= last {
				tick.Stop()
				return pubs
			}
		case <-deadline:
			t.Fatalf("the outbox holds %v after publishing %v", storedSeqs(t, ob), seqsOf(pubs))
		}
	}
}

// assertLostExactlyWhatIsReported stops p, then checks that the sequences
// of ob neither published (pubs) nor still stored are exactly those that
// the drop_oldest reports, published or stored, name.
func assertLostExactlyWhatIsReported(t *testing.T, p *pipeline, ob *Outbox, pubs []*fakePub) {
	t.Helper()
	stopNow(p) // every drop is reported at the latest by the stop
	missing := map[uint64]bool{}
	for s := uint64(1); s <= ob.Stats().LastSequence; s++ {
		missing[s] = true
	}
	reports := overflowsIn(t, ob)
	for _, s := range storedSeqs(t, ob) {
		delete(missing, s)
	}
	for _, pub := range pubs {
		delete(missing, pub.seq)
		if o := pub.event(t).GetOutboxOverflow(); o != nil {
			reports = append(reports, o)
		}
	}
	require.NotEmpty(t, reports)
	for _, o := range reports {
		assert.Equal(t, "drop_oldest", o.GetPolicy())
		assert.Equal(t, o.GetLastSequence()-o.GetFirstSequence()+1, o.GetDroppedEvents())
		for s := o.GetFirstSequence(); s <= o.GetLastSequence(); s++ {
			assert.True(t, missing[s], "sequence %d is reported dropped, and was published", s)
			delete(missing, s)
		}
	}
	assert.Empty(t, missing, "every sequence not published is reported")
}

// overflowsIn are the outbox.overflow reports in ob.
func overflowsIn(t *testing.T, ob *Outbox) []*messages.OutboxOverflow {
	t.Helper()
	rs, err := ob.After(0, ob.Stats().Events+1)
	require.NoError(t, err)
	var out []*messages.OutboxOverflow
	for _, r := range rs {
		if o := r.Event.GetOutboxOverflow(); o != nil {
			out = append(out, o)
		}
	}
	return out
}

func TestFakePublishedEventsAreNotDroppedUntilConfirmed(t *testing.T) {
	// Zero-loss delivery (c988285): an event published and not confirmed
	// may have been delivered, also when a lost connection nacked it, so
	// drop_oldest never takes it: what a consumer receives is never in a
	// report of what was dropped.
	per := perEvent(t)
	ob := testOutbox(t, Limit{MaxBytes: 4*per + per/2, DropOldest: true})
	p, fake, _ := faked(t, ob, nil)
	l := fake.next(t)
	accept(p, 4)
	l.nextN(t, 4)
	fake.setDown(errRefused)
	l.lose(&amqp.Error{Code: amqp.ConnectionForced, Reason: "broker killed"})

	accept(p, 2)
	eventually(t, func() bool { return len(overflowsIn(t, ob)) == 1 }, "the drop is reported")
	report := overflowsIn(t, ob)[0]
	assert.Equal(t, [2]uint64{5, 6}, [2]uint64{report.GetFirstSequence(), report.GetLastSequence()},
		"the nacked events are kept: the newest go")

	fake.setDown(nil)
	published := ackUntilEmpty(t, fake.next(t), ob, 7)
	assert.Equal(t, []uint64{1, 2, 3, 4, 7}, published, "delivered: everything but the reported range")
}

func TestFakeNeverMoreOutstandingThanTheWindow(t *testing.T) {
	// Broker and plugin review fixes (17eec18): amqp091-go sends returns
	// from its reader goroutine and drops one it cannot hand over within
	// 5 s; the returns channel holds what can be outstanding, and no more
	// than a window is ever outstanding. The fake fails the test when a
	// return would not fit.
	ob := testOutbox(t, Limit{})
	p, fake, _ := faked(t, ob, func(p *pipeline, _ *fakeBroker) { p.publisher.o.ConfirmWindow = 4 })
	l := fake.next(t)
	accept(p, 20)
	for range 3 {
		for _, pub := range l.nextN(t, 4) {
			pub.returnOnly() // RabbitMQ's return, its ack still to come
		}
		l.quiet(t)
		l.ackOutstanding()
	}
	ackUntilEmpty(t, l, ob, 20)
	_, most := l.stats()
	assert.Equal(t, 4, most)
	assert.Equal(t, 12.0, counterValue(t, p.committer.metrics.returned))
}

func TestFakeStatusIsReportedInTheOrderItChanged(t *testing.T) {
	// Broker and plugin review fixes (17eec18): reports are made in the
	// order their states were computed, not from a goroutine each.
	ob := testOutbox(t, Limit{})
	p, fake, status := faked(t, ob, nil)
	l := fake.next(t)
	status.waitFor(t, connected, "connected")
	l.block("memory alarm")
	status.waitFor(t, func(s protocol.BrokerStatus) bool { return s.Blocked }, "blocked")
	l.unblock()
	status.waitFor(t, connected, "unblocked")
	accept(p, 1)
	l.next(t).ret()
	status.waitFor(t, func(s protocol.BrokerStatus) bool { return s.Unroutable }, "unroutable")
	l.next(t).ack()
	status.waitFor(t, func(s protocol.BrokerStatus) bool { return !s.Unroutable }, "routable")
	l.lose(&amqp.Error{Code: amqp.ConnectionForced, Reason: "broker killed"})
	status.waitSeen(t, func(s protocol.BrokerStatus) bool { return !s.Connected }, "lost")

	type state struct{ connected, blocked, unroutable bool }
	var got []state
	for _, s := range status.statuses() {
		got = append(got, state{s.Connected, s.Blocked, s.Unroutable})
	}
	assert.Equal(t, []state{
		{connected: true},
		{connected: true, blocked: true},
		{connected: true},
		{connected: true, unroutable: true},
		{connected: true},
		{},
	}, got[:6])
	all := status.statuses()
	assert.Equal(t, "memory alarm", all[1].LastError)
	assert.Contains(t, all[5].LastError, "broker killed")
}

func TestFakeStopWhileBlockedEndsAtTheDrainDeadline(t *testing.T) {
	// Fault test: stop while the broker blocks publishing (a078444): a
	// blocked connection stops reading, amqp091-go's Publish then waits
	// forever, beyond any context; the stop waits for the drain deadline
	// and closes the socket.
	for _, tc := range []struct {
		name  string
		block func(l *fakeLink)
	}{
		{"notified: nothing more published", func(l *fakeLink) { l.block("memory alarm") }},
		{"before the notification: a Publish stuck in the socket", (*fakeLink).stall},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ob := testOutbox(t, Limit{})
			p, fake, status := faked(t, ob, func(p *pipeline, _ *fakeBroker) { p.publisher.o.ConfirmWindow = 4 })
			l := fake.next(t)
			status.waitFor(t, connected, "connected")
			accept(p, 2)
			l.nextN(t, 2)
			tc.block(l)
			accept(p, 3)
			eventually(t, func() bool { return ob.Stats().Events == 5 }, "accepted")

			const drain = 200 * time.Millisecond
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), drain)
			defer cancel()
			closed := make(chan struct{})
			go func() { p.Close(ctx); close(closed) }()
			select {
			case <-closed:
			case <-time.After(within):
				t.Fatal("the stop hangs on a blocked connection")
			}
			assert.GreaterOrEqual(t, time.Since(start), drain, "the stop waited for the confirms until its deadline")
			assert.True(t, l.isAborted(), "the socket was closed")
			assert.Equal(t, 5, ob.Stats().Events, "what is unconfirmed stays for the next start")
		})
	}
}

func TestFakeDamagedRecordIsLostAloneAndDeliveryGoesOn(t *testing.T) {
	// broker: a damaged outbox record is lost alone (9589a96): skipped,
	// deleted, reported as corrupt, instead of stopping delivery; the
	// connection has nothing to do with it.
	dir := t.TempDir()
	sizes := damagedOutbox(t, dir, 5, undecodable, 2)
	ob, err := OpenOutbox(dir, OutboxOptions{Node: "test.node"})
	require.NoError(t, err)
	t.Cleanup(func() { ob.Close() })
	p, fake, status := faked(t, ob, nil)
	l := fake.next(t)
	pubs := l.nextN(t, 5)
	assert.Equal(t, []uint64{1, 3, 4, 5, 6}, seqsOf(pubs), "the others, then the report")
	report := pubs[4].event(t).GetOutboxOverflow()
	assert.True(t, proto.Equal(&messages.OutboxOverflow{
		FirstSequence: 2, LastSequence: 2, DroppedEvents: 1, DroppedBytes: uint64(sizes[2]), Policy: "corrupt",
	}, report), "%v", report)
	ackAll(pubs)

	accept(p, 2)
	assert.Equal(t, []uint64{7, 8}, ackUntilEmpty(t, l, ob, 8), "nothing else is lost")
	fake.noMoreLinks(t)
	for _, s := range status.statuses() {
		assert.True(t, s.Connected, "the connection stayed up")
	}
	assert.Equal(t, 1.0, counterValue(t, p.committer.metrics.damaged))
}

func TestFakeDamagedFileIsReplacedWhilePublishing(t *testing.T) {
	// Outbox: damaged files replaced (1d85317): found by a commit or by the
	// publisher's read, the file is replaced, its report goes first, the
	// events pending at that moment follow, and the connection stays.
	for _, tc := range []struct {
		name string
		// damage damages the file; then the pipeline finds it.
		damage func(t *testing.T, p *pipeline, l *fakeLink, path string)
	}{
		{"found by a commit", func(t *testing.T, p *pipeline, l *fakeLink, path string) {
			boltdamage.Pages(t, path)
			accept(p, 3)
		}},
		{"found by the publisher's read", func(t *testing.T, p *pipeline, l *fakeLink, path string) {
			accept(p, 1)
			pub := l.next(t)
			boltdamage.Pages(t, path)
			pub.ret() // its retry reads the damaged file
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ob := testOutbox(t, Limit{})
			p, fake, status := faked(t, ob, nil)
			l := fake.next(t)
			accept(p, 3)
			assert.Equal(t, []uint64{1, 2, 3}, ackUntilEmpty(t, l, ob, 3))

			tc.damage(t, p, l, filepath.Join(ob.dir, "outbox.db"))
			first := l.next(t)
			report := first.event(t)
			require.Equal(t, messages.TypeOutboxOverflow, report.Type)
			assert.Equal(t, "corrupt", report.GetOutboxOverflow().GetPolicy())
			assert.Equal(t, uint64(reserveBlock+1), report.Sequence, "after the reserved block")
			first.ack()
			ackUntilEmpty(t, l, ob, report.Sequence)
			fake.noMoreLinks(t)
			for _, s := range status.statuses() {
				assert.True(t, s.Connected, "the connection stayed up")
			}
		})
	}
}

func TestFakeOutageWithDropOldestLosesExactlyWhatItReports(t *testing.T) {
	// The fault test "outbox full with drop_oldest during an outage": the
	// sequences a consumer misses are exactly the reported ranges.
	per := perEvent(t)
	ob := testOutbox(t, Limit{MaxBytes: 20 * per, DropOldest: true})
	p, _, _ := faked(t, ob, func(p *pipeline, _ *fakeBroker) {
		p.committer.reportDelay = time.Millisecond
		p.publisher.dial = func(context.Context) (link, error) { return nil, errRefused }
	})
	for range 10 {
		accept(p, 10)
		eventually(t, func() bool { return p.intake.pendingBytes() == 0 }, "taken by the committer")
	}
	eventually(t, func() bool { return len(overflowsIn(t, ob)) > 0 }, "drops reported")
	stopNow(p)

	assert.Equal(t, 100.0, counterValue(t, p.committer.metrics.accepted.WithLabelValues(messages.TypeObservationHTTP)),
		"every event accepted: dropped from the outbox, not from memory")

	// The next start publishes what is left: the reports and the newest.
	p, fake, _ := faked(t, ob, nil)
	got := ackUntilEmptyEvents(t, fake.next(t), ob, 100)
	assertLostExactlyWhatIsReported(t, p, ob, got)
}

func TestFakeLoweredLimitDropsOnlyAtTheNextAppend(t *testing.T) {
	// Outbox: only an append drops for drop_oldest (53d4840): a commit of
	// deletes alone, after the limit was lowered, drops nothing, which
	// nobody would report; the next append drops, and reports.
	ob := testOutbox(t, Limit{DropOldest: true})
	p, fake, _ := faked(t, ob, func(p *pipeline, _ *fakeBroker) { p.publisher.retryDelay = time.Hour })
	l := fake.next(t)
	accept(p, 4)
	pubs := l.nextN(t, 4)
	ob.SetLimit(Limit{MaxBytes: 1, DropOldest: true})
	p.LimitChanged()
	pubs[0].ack()
	pubs[1].ret() // no longer claimed: it could be dropped
	pubs[2].ack()
	pubs[3].ack()
	eventually(t, func() bool { return ob.Stats().Events == 1 }, "the acks are deleted")
	assert.Empty(t, overflowsIn(t, ob), "nothing dropped, nothing to report")
	assert.Equal(t, []uint64{2}, storedSeqs(t, ob))

	accept(p, 1)
	eventually(t, func() bool { return len(overflowsIn(t, ob)) == 2 }, "the drops are reported")
	var ranges [][2]uint64
	for _, o := range overflowsIn(t, ob) {
		ranges = append(ranges, [2]uint64{o.GetFirstSequence(), o.GetLastSequence()})
	}
	assert.Equal(t, [][2]uint64{{2, 2}, {5, 5}}, ranges, "the append drops, the returned event first")
}

func TestFakeGateFollowsABlockOutbox(t *testing.T) {
	// when_full: block closes the observers' gate while the outbox is
	// full, and a limit changed to drop_oldest opens it.
	per := perEvent(t)
	ob := testOutbox(t, Limit{MaxBytes: per})
	p, fake, _ := faked(t, ob, nil)
	gate := p.committer.gate
	l := fake.next(t)
	accept(p, 2)
	pubs := l.nextN(t, 2)
	eventually(t, gate.Closed, "full: closed")
	ob.SetLimit(Limit{MaxBytes: per, DropOldest: true})
	p.LimitChanged()
	eventually(t, func() bool { return !gate.Closed() }, "drop_oldest: open")
	ob.SetLimit(Limit{MaxBytes: per})
	p.LimitChanged()
	eventually(t, gate.Closed, "block again: closed")
	ackAll(pubs)
	eventually(t, func() bool { return !gate.Closed() }, "confirmed: open")
}

func TestFakeStopDrainsConfirmsThenEndsTheCommitter(t *testing.T) {
	// A stop commits what is pending, waits for outstanding confirms and
	// deletes them; damaged records found meanwhile stay for the next
	// start.
	ob := testOutbox(t, Limit{})
	p, fake, _ := faked(t, ob, nil)
	l := fake.next(t)
	accept(p, 3)
	pubs := l.nextN(t, 3)
	closed := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		p.Close(ctx)
		close(closed)
	}()
	eventually(t, p.intake.isClosed, "stopping")
	accept(p, 1) // refused: after the stop began
	ackAll(pubs)
	select {
	case <-closed:
	case <-time.After(within):
		t.Fatal("the stop hangs")
	}
	assert.Equal(t, 0, ob.Stats().Events, "confirmed during the stop: deleted")
	assert.Equal(t, uint64(3), ob.Stats().LastSequence, "nothing accepted after the stop began")
}
