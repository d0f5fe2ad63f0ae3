//go:build integration

package broker

import (
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/messages"
)

// withMetrics gives the fixture's broker a registry of its own.
func (f *fixture) withMetrics() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	f.opts.Metrics = reg
	return reg
}

func (f *fixture) publish(pid *actor.PID, evs []*messages.Event) {
	for _, ev := range evs {
		ev.Node = f.opts.Node
		f.sys.Root.Send(pid, &protocol.Publish{Event: ev})
	}
}

// waitMetric waits until name's series reaches want.
func waitMetric(t *testing.T, reg prometheus.Gatherer, want float64, name string, labels ...string) {
	t.Helper()
	require.Eventually(t, func() bool { return metricValue(t, reg, name, labels...) == want }, wait, 10*time.Millisecond,
		"%s%v never reached %v (last %v)", name, labels, want, metricValue(t, reg, name, labels...))
}

func TestMetricsFollowEventsFromAcceptToConfirm(t *testing.T) {
	f := newFixture(t, "#")
	reg := f.withMetrics()
	pid := f.start(t)
	waitMetric(t, reg, 1, "observerd_broker_connected")

	const n = 300
	f.publish(pid, events(n))
	waitMetric(t, reg, n, "observerd_events_confirmed_total")
	waitMetric(t, reg, 0, "observerd_outbox_events")

	assert.Equal(t, float64(n), metricValue(t, reg, "observerd_events_accepted_total", "type", messages.TypeObservationHTTP))
	assert.Equal(t, float64(n), metricValue(t, reg, "observerd_events_published_total"))
	assert.Equal(t, float64(n), metricValue(t, reg, "observerd_confirm_latency_seconds"), "one latency per confirm")
	for _, zero := range []string{"observerd_events_nacked_total", "observerd_events_returned_total", "observerd_events_dropped_total",
		"observerd_outbox_bytes", "observerd_outbox_oldest_age_seconds", "observerd_broker_blocked", "observerd_broker_reconnects_total"} {
		assert.Zero(t, metricValue(t, reg, zero), zero)
	}
}

func TestMetricsCountReturnedEventsAndTheirAge(t *testing.T) {
	f := newFixture(t) // no queue: every event is returned
	reg := f.withMetrics()
	pid := f.start(t)

	f.publish(pid, events(3))
	require.Eventually(t, func() bool { return metricValue(t, reg, "observerd_events_returned_total") >= 3 }, wait, 10*time.Millisecond)
	assert.Zero(t, metricValue(t, reg, "observerd_events_confirmed_total"), "a returned event is not confirmed")
	assert.Equal(t, 3.0, metricValue(t, reg, "observerd_outbox_events"))
	assert.Positive(t, metricValue(t, reg, "observerd_outbox_bytes"))
	require.Eventually(t, func() bool { return metricValue(t, reg, "observerd_outbox_oldest_age_seconds") > 0 }, wait, 10*time.Millisecond)
}

func TestMetricsDropsAreCountedExactly(t *testing.T) {
	f := newFixture(t)
	f.opts.URLs = []string{"amqps://observer@127.0.0.1:1/"} // no broker: everything stays
	f.opts.Outbox.SetLimit(Limit{MaxBytes: 4096, DropOldest: true})
	reg := f.withMetrics()
	pid := f.start(t)

	f.publish(pid, events(200))
	waitMetric(t, reg, 200, "observerd_events_accepted_total", "type", messages.TypeObservationHTTP)
	// Nothing is confirmed: every accepted event, the outbox.overflow
	// reports included, is either dropped or still in the outbox.
	require.Eventually(t, func() bool {
		return metricValue(t, reg, "observerd_events_accepted_total", "type", messages.TypeOutboxOverflow) > 0 &&
			metricValue(t, reg, "observerd_events_accepted_total")-metricValue(t, reg, "observerd_events_dropped_total") ==
				metricValue(t, reg, "observerd_outbox_events")
	}, wait, 10*time.Millisecond)
	assert.Positive(t, metricValue(t, reg, "observerd_events_dropped_total"))
	assert.Zero(t, metricValue(t, reg, "observerd_broker_connected"))
}

// A restart must neither register the metrics again (a panic) nor reset
// them; a second broker actor with its own registry counts on its own.
func TestMetricsSurviveARestartAndStayPerRegistry(t *testing.T) {
	f := newFixture(t, "#")
	reg := f.withMetrics()
	pid, err := f.sys.Root.SpawnNamed(Props(f.opts).Configure(actor.WithReceiverMiddleware(failOnFailNow)), "broker")
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.sys.Root.PoisonFuture(pid).Wait() })
	other := newFixture(t, "#")
	otherReg := other.withMetrics()
	otherPID := other.start(t)

	f.publish(pid, events(10))
	other.publish(otherPID, events(5))
	waitMetric(t, reg, 10, "observerd_events_confirmed_total")
	waitMetric(t, otherReg, 5, "observerd_events_confirmed_total")

	f.sys.Root.Send(pid, failNow{})
	waitMetric(t, reg, 1, "observerd_broker_reconnects_total")
	f.publish(pid, events(10))
	waitMetric(t, reg, 20, "observerd_events_confirmed_total")
	waitMetric(t, reg, 1, "observerd_broker_connected")
	assert.Equal(t, 20.0, metricValue(t, reg, "observerd_events_accepted_total", "type", messages.TypeObservationHTTP))
	assert.Equal(t, 5.0, metricValue(t, otherReg, "observerd_events_confirmed_total"))
	assert.Zero(t, metricValue(t, otherReg, "observerd_broker_reconnects_total"))
}
