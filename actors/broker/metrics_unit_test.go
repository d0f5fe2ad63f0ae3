package broker

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/actortest"
)

// metricValue sums the series of name that have the label pairs (name,
// value, ...) in reg: counters' and gauges' values, histograms' sample
// counts; -1 when there is no such series.
func metricValue(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	sum, found := 0.0, false
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			found = true
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				sum += m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				sum += m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	if !found {
		return -1
	}
	return sum
}

func hasLabels(m *dto.Metric, pairs []string) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			found = found || l.GetName() == pairs[i] && l.GetValue() == pairs[i+1]
		}
		if !found {
			return false
		}
	}
	return true
}

func TestMetricsAreRegisteredOncePerRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	log := actortest.Logger(t)
	first := newMetrics(reg, log)
	assert.Same(t, first, newMetrics(reg, log), "a second Props with the same registry shares the metrics")
	assert.NotSame(t, first, newMetrics(prometheus.NewRegistry(), log))
	assert.NotNil(t, newMetrics(nil, log), "no registry: counted, not exported")
}

func TestMetricsFollowTheFakeBrokersAnswers(t *testing.T) {
	// Every outcome the fake can play, counted once: acks, nacks, returns,
	// a lost connection, a resource alarm, drops; the outbox's gauges read
	// at scrape time.
	per := perEvent(t)
	ob := testOutbox(t, Limit{MaxBytes: 8*per + per/2, DropOldest: true})
	reg := prometheus.NewRegistry()
	p, fake, status := faked(t, ob, func(p *pipeline, _ *fakeBroker) {
		m := newMetrics(reg, p.publisher.log)
		m.outbox.Store(ob)
		p.publisher.metrics, p.committer.metrics, p.intake.metrics, p.publisher.status.metrics = m, m, m, m
		p.publisher.retryDelay = time.Hour
	})
	value := func(name string, labels ...string) float64 { return metricValue(t, reg, name, labels...) }
	l := fake.next(t)
	status.waitFor(t, connected, "connected")
	assert.Equal(t, 1.0, value("observerd_broker_connected"))
	assert.Zero(t, value("observerd_outbox_oldest_age_seconds"), "empty")

	accept(p, 4)
	pubs := l.nextN(t, 4)
	pubs[0].ack()
	pubs[1].ret()
	pubs[2].nack()
	pubs[3].ack()
	eventually(t, func() bool { return value("observerd_events_confirmed_total") == 2 }, "settled")
	assert.Equal(t, 1.0, value("observerd_events_nacked_total"))
	assert.Equal(t, 1.0, value("observerd_events_returned_total"))
	assert.Equal(t, 3.0, value("observerd_confirm_latency_seconds"), "a latency per ack, returned or not")
	assert.Equal(t, 4.0, value("observerd_events_published_total"))
	// Counted by the committer once its commit returned, which the
	// publisher does not wait for.
	eventually(t, func() bool {
		return value("observerd_events_accepted_total", "type", messages.TypeObservationHTTP) == 4
	}, "accepted")
	eventually(t, func() bool { return value("observerd_outbox_events") == 2 }, "the acks deleted")
	assert.Positive(t, value("observerd_outbox_bytes"))
	assert.Positive(t, value("observerd_outbox_oldest_age_seconds"), "events of a second ago")

	l.block("memory alarm")
	eventually(t, func() bool { return value("observerd_broker_blocked") == 1 }, "blocked")
	accept(p, 8) // beyond the bound: the oldest not claimed go, the returned one first (the nacked one is kept)
	eventually(t, func() bool { return value("observerd_events_dropped_total") > 0 }, "dropped")
	l.lose(&amqp.Error{Code: amqp.ConnectionForced, Reason: "broker killed"})
	fake.next(t)
	eventually(t, func() bool { return value("observerd_broker_reconnects_total") == 1 }, "a reconnect")
	status.waitFor(t, connected, "connected again")
	assert.Equal(t, 1.0, value("observerd_broker_connected"))
	assert.Zero(t, value("observerd_broker_blocked"), "a new connection is not blocked")
	assert.Equal(t, 1.0, value("observerd_events_nacked_total"), "nacks of a lost connection are not settled: they go again")
	stopNow(p)
	assert.Zero(t, value("observerd_broker_connected"), "a stop leaves no connection")
	dropped := value("observerd_events_dropped_total")
	var reported uint64
	for _, o := range overflowsIn(t, ob) {
		reported += o.GetDroppedEvents()
	}
	assert.Equal(t, float64(reported), dropped, "as reported")
}

func TestMetricsCollectNoOutboxBeforeTheFirstStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	newMetrics(reg, actortest.Logger(t))
	assert.Equal(t, -1.0, metricValue(t, reg, "observerd_outbox_events"))
	assert.Zero(t, metricValue(t, reg, "observerd_broker_connected"))
}

func TestMetricsStatusFollowsTheConnection(t *testing.T) {
	m := newMetrics(nil, actortest.Logger(t))
	m.status(protocol.BrokerStatus{Connected: true, Blocked: true})
	assert.Equal(t, 1.0, gaugeValue(t, m.blocked))
	m.status(protocol.BrokerStatus{Blocked: true})
	assert.Zero(t, gaugeValue(t, m.blocked), "blocked only while connected")
	assert.Zero(t, gaugeValue(t, m.connected))
}

func gaugeValue(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, g.Write(&m))
	return m.GetGauge().GetValue()
}
