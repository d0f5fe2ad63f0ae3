package broker

import (
	"encoding/json"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/messages"
)

// withMessage decodes the lines whose message is msg.
func (l *logLines) withMessage(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, raw := range l.matching(`"message":` + strconv.Quote(msg)) {
		var line map[string]any
		require.NoError(t, json.Unmarshal([]byte(raw), &line))
		out = append(out, line)
	}
	return out
}

// sumOf sums the field key of lines.
func sumOf(lines []map[string]any, key string) int {
	n := 0
	for _, l := range lines {
		v, _ := l[key].(float64)
		n += int(v)
	}
	return n
}

func TestFakeSustainedNacksGiveUpTheConnectionForTheNextNode(t *testing.T) {
	// A quorum queue whose leader died nacks every publication on the
	// connection that knew it, while a new one is acked at once: the
	// publisher gives the connection up after nackLimit, publishes no new
	// events on it meanwhile, and says so, each nack counted once.
	ob := testOutbox(t, Limit{})
	buf := &logLines{}
	p, fake, status := faked(t, ob, func(p *pipeline, _ *fakeBroker) {
		p.publisher.nackLimit = 100 * time.Millisecond
		p.publisher.log = zerolog.New(buf)
	})
	l1 := fake.next(t)
	accept(p, 3)
	nacks := 0
	for _, pub := range l1.nextN(t, 3) {
		pub.nack()
		nacks++
	}
	status.waitSeen(t, func(s protocol.BrokerStatus) bool { return s.Connected && s.Nacked && !s.Unroutable }, "nacked, not unroutable")
	accept(p, 2)

	deadline := time.Now().Add(within)
	for !l1.isGone() {
		require.True(t, time.Now().Before(deadline), "the nacking connection is never given up")
		select {
		case pub := <-l1.published:
			assert.LessOrEqual(t, pub.seq, uint64(3), "a connection that nacks gets no new events")
			pub.nack()
			nacks++
		case <-time.After(10 * time.Millisecond):
		}
	}
	l2 := fake.next(t)
	assert.Equal(t, []uint64{1, 2, 3, 4, 5}, ackUntilEmpty(t, l2, ob, 5), "everything goes on the next connection")
	status.waitFor(t, func(s protocol.BrokerStatus) bool { return s.Connected && !s.Nacked }, "acked on the next connection")

	given := buf.withMessage(t, "broker connection given up for the next node")
	require.Len(t, given, 1)
	assert.Contains(t, given[0]["error"], "every publication nacked for 100ms on amqps://fake/")
	assert.Contains(t, given[0]["retry_in"], "ms", "a duration says its unit")
	nacked := buf.withMessage(t, "events nacked by RabbitMQ, kept in the outbox and retried")
	assert.Equal(t, nacks, sumOf(nacked, "nacked"), "every nack counted once")
	assert.Less(t, len(nacked), nacks, "nacks are logged together, not one line each")
	assert.Equal(t, "amqps://fake/", nacked[0]["url"], "the line names the node")
}

func TestFakeAnAckEndsTheNacks(t *testing.T) {
	// A nack among acks (a queue that refused one message) is retried on
	// the same connection, which is kept.
	ob := testOutbox(t, Limit{})
	p, fake, status := faked(t, ob, func(p *pipeline, _ *fakeBroker) { p.publisher.nackLimit = 50 * time.Millisecond })
	l := fake.next(t)
	accept(p, 2)
	pubs := l.nextN(t, 2)
	pubs[0].nack()
	pubs[1].ack()
	status.waitSeen(t, func(s protocol.BrokerStatus) bool { return s.Nacked }, "nacked")
	retried := l.next(t)
	assert.Equal(t, uint64(1), retried.seq)
	retried.ack()
	eventually(t, func() bool { return ob.Stats().Events == 0 }, "delivered")
	status.waitFor(t, func(s protocol.BrokerStatus) bool { return s.Connected && !s.Nacked }, "no longer nacked")
	accept(p, 1)
	assert.Equal(t, []uint64{3}, ackUntilEmpty(t, l, ob, 3), "the connection is kept")
	fake.noMoreLinks(t)
}

func TestFakeLateConfirmsShowInTheStatus(t *testing.T) {
	// A quorum queue without a majority holds confirms back: readiness
	// says so while they do not come.
	ob := testOutbox(t, Limit{})
	p, fake, status := faked(t, ob, func(p *pipeline, _ *fakeBroker) { p.publisher.stallAfter = 30 * time.Millisecond })
	l := fake.next(t)
	accept(p, 1)
	pub := l.next(t)
	status.waitFor(t, func(s protocol.BrokerStatus) bool { return s.Connected && s.Unconfirmed }, "unconfirmed")
	pub.ack()
	status.waitFor(t, func(s protocol.BrokerStatus) bool { return s.Connected && !s.Unconfirmed }, "confirmed")
	eventually(t, func() bool { return ob.Stats().Events == 0 }, "delivered")

	// A new connection starts with nothing awaited.
	accept(p, 1)
	l.next(t)
	status.waitFor(t, func(s protocol.BrokerStatus) bool { return s.Unconfirmed }, "unconfirmed again")
	l.lose(nil)
	fake.next(t)
	status.waitFor(t, func(s protocol.BrokerStatus) bool { return s.Connected && !s.Unconfirmed }, "cleared by the new connection")
}

func TestFakeReturnsAreLoggedTogether(t *testing.T) {
	ob := testOutbox(t, Limit{})
	buf := &logLines{}
	start := time.Now()
	p, fake, _ := faked(t, ob, func(p *pipeline, _ *fakeBroker) {
		p.publisher.retryDelay = time.Hour
		p.publisher.log = zerolog.New(buf)
	})
	l := fake.next(t)
	evs := accept(p, 50)
	for _, pub := range l.nextN(t, 16) {
		pub.ret()
	}
	for _, pub := range l.nextN(t, 16) {
		pub.ret()
	}
	for _, pub := range l.nextN(t, 16) {
		pub.ret()
	}
	for _, pub := range l.nextN(t, 2) {
		pub.ret()
	}
	eventually(t, func() bool { return counterValue(t, p.committer.metrics.returned) == 50 }, "returned")
	l.lose(nil) // the session's end logs what is left
	fake.next(t)
	msg := "events returned unroutable (no queue bound to their routing key), kept in the outbox and retried"
	var lines []map[string]any
	eventually(t, func() bool {
		lines = buf.withMessage(t, msg)
		return sumOf(lines, "returned") == 50
	}, "every return counted")
	assert.LessOrEqual(t, len(lines), 2+int(time.Since(start)/logEvery), "a line every logEvery at most, and one at the end")
	assert.Equal(t, messages.RoutingKey(evs[0].Type, evs[0].Node), lines[0]["routing_key"], "an example routing key")
}

func TestNodeInfoFollowsTheConnection(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMetrics(reg, zerolog.Nop())
	assert.Equal(t, -1.0, metricValue(t, reg, "observerd_broker_node_info"), "no series before a connection")
	m.status(protocol.BrokerStatus{Connected: true, URL: "amqps://o@n1:5671/"})
	assert.Equal(t, 1.0, metricValue(t, reg, "observerd_broker_node_info", "url", "amqps://o@n1:5671/"))
	m.status(protocol.BrokerStatus{URL: "amqps://o@n1:5671/", LastError: "lost"})
	assert.Equal(t, -1.0, metricValue(t, reg, "observerd_broker_node_info"), "none while not connected")
	m.status(protocol.BrokerStatus{Connected: true, URL: "amqps://o@n2:5671/"})
	assert.Equal(t, -1.0, metricValue(t, reg, "observerd_broker_node_info", "url", "amqps://o@n1:5671/"))
	assert.Equal(t, 1.0, metricValue(t, reg, "observerd_broker_node_info", "url", "amqps://o@n2:5671/"))
}

func TestAckedEventsAwaitingTheCommitterHoldPublishingBack(t *testing.T) {
	// An acked event stays in the outbox until the committer deletes it,
	// and goes again after a crash: with handOverEvery of them waiting for
	// the committer, nothing more is published, which bounds a failure's
	// duplicates.
	ob := testOutbox(t, Limit{})
	_, err := ob.Append(events(4))
	require.NoError(t, err)
	recs, err := ob.After(0, 4)
	require.NoError(t, err)
	fake := newFakeBroker(t, 16)
	l, err := fake.dial(t.Context())
	require.NoError(t, err)
	require.NoError(t, l.Open())
	fl := fake.next(t)
	p := &publisher{o: &Options{Exchange: "x", ConfirmWindow: 16}, outbox: ob, metrics: newMetrics(nil, zerolog.Nop())}
	for _, tc := range []struct {
		acked, published int
	}{
		{handOverEvery, 0},
		{handOverEvery - 1, 2},
		{0, 2},
	} {
		s := &session{p: p, l: l, ready: slices.Clone(recs[:2])}
		p.acked = make([]uint64, tc.acked)
		n, err := s.publish(t.Context())
		require.NoError(t, err)
		assert.Equal(t, tc.published, n, "%d acked awaiting the committer", tc.acked)
		for range n {
			fl.next(t)
		}
	}
}
