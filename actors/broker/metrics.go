package broker

import (
	"errors"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/messages"
)

// metrics are the broker's Prometheus metrics (docs/operations.md,
// "Metrics"). One set lives as long as the Props that made it, shared by
// the actor's incarnations: counters keep counting across a restart, and a
// restart never registers twice.
//
// Without a Registerer they are counted all the same, unregistered: a few
// atomic adds per event cost less than a branch on every hook would be
// worth, and make bench then measures what production pays.
type metrics struct {
	accepted   *prometheus.CounterVec
	published  prometheus.Counter
	confirmed  prometheus.Counter
	nacked     prometheus.Counter
	returned   prometheus.Counter
	dropped    prometheus.Counter
	damaged    prometheus.Counter
	lost       prometheus.Counter
	latency    prometheus.Histogram
	connected  prometheus.Gauge
	node       *prometheus.GaugeVec
	blocked    prometheus.Gauge
	reconnects prometheus.Counter

	// everConnected tells a reconnect from the first connection.
	everConnected atomic.Bool
	// outbox is the broker's, read at scrape time; nil until the first
	// incarnation started.
	outbox atomic.Pointer[Outbox]

	outboxEvents, outboxBytes, outboxOldestAge *prometheus.Desc
}

// confirmBuckets span a confirm on an idle loopback broker (about a
// millisecond) to one held up by a busy disk or a flow-controlled node.
var confirmBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// newMetrics returns the broker's metrics, registered with reg unless it
// is nil. When reg already holds them (a second Props with the same
// Options), those are returned and shared; any other registration error
// is logged and the metrics are counted unregistered: metrics never stop
// the broker.
func newMetrics(reg prometheus.Registerer, log zerolog.Logger) *metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	m := &metrics{
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "observerd_events_accepted_total", Help: "Events committed into the outbox, by event type.",
		}, []string{"type"}),
		published: counter("observerd_events_published_total", "Events published to RabbitMQ, republications included."),
		confirmed: counter("observerd_events_confirmed_total", "Events confirmed (acked and routed) by RabbitMQ and so deleted from the outbox."),
		nacked:    counter("observerd_events_nacked_total", "Publications nacked by RabbitMQ or left unconfirmed by a lost connection; the event goes again."),
		returned:  counter("observerd_events_returned_total", "Publications returned unroutable (no queue bound); the event stays in the outbox and goes again."),
		dropped:   counter("observerd_events_dropped_total", "Events dropped from a full outbox (outbox.when_full: drop_oldest), as reported in outbox.overflow events."),
		damaged: counter("observerd_events_damaged_total",
			"Events whose record in the outbox was found damaged and deleted, as reported in outbox.overflow events with policy corrupt."),
		lost: counter("observerd_events_dropped_unaccepted_total",
			"Events dropped from memory before they were accepted, while the outbox could not be written (a full disk) or its commits did not keep up, as reported in outbox.overflow events with policy disk_full or memory_full."),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "observerd_confirm_latency_seconds", Help: "Time from publishing an event to RabbitMQ's ack of it.",
			Buckets: confirmBuckets,
		}),
		connected: gauge("observerd_broker_connected", "1 while a connection to RabbitMQ is open, else 0."),
		node: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "observerd_broker_node_info", Help: "1 for the broker URL (redacted) the daemon is connected to; absent while not connected.",
		}, []string{"url"}),
		blocked:    gauge("observerd_broker_blocked", "1 while RabbitMQ blocks publishing (resource alarm), else 0."),
		reconnects: counter("observerd_broker_reconnects_total", "Connections to RabbitMQ opened after the first one."),
		outboxEvents: prometheus.NewDesc("observerd_outbox_events",
			"Events in the outbox: accepted and not yet confirmed.", nil, nil),
		outboxBytes: prometheus.NewDesc("observerd_outbox_bytes",
			"Stored bytes of the events in the outbox (what outbox.max_bytes bounds).", nil, nil),
		outboxOldestAge: prometheus.NewDesc("observerd_outbox_oldest_age_seconds",
			"Age (by its event time) of the oldest event in the outbox; 0 when empty.", nil, nil),
	}
	if reg == nil {
		return m
	}
	if err := reg.Register(m); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*metrics); ok {
				return existing
			}
		}
		log.Error().Err(err).Msg("register broker metrics: not exported")
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.accepted, m.published, m.confirmed, m.nacked, m.returned, m.dropped, m.damaged, m.lost,
		m.latency, m.connected, m.node, m.blocked, m.reconnects}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
	ch <- m.outboxEvents
	ch <- m.outboxBytes
	ch <- m.outboxOldestAge
}

// Collect implements prometheus.Collector. The outbox's gauges are read
// at scrape time: Stats never waits for a commit, and the oldest event is
// one read transaction, which bbolt runs beside the writer.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
	ob := m.outbox.Load()
	if ob == nil {
		return // not started yet: nothing to say about the outbox
	}
	st := ob.Stats()
	ch <- prometheus.MustNewConstMetric(m.outboxEvents, prometheus.GaugeValue, float64(st.Events))
	ch <- prometheus.MustNewConstMetric(m.outboxBytes, prometheus.GaugeValue, float64(st.Bytes))
	if oldest, err := ob.Oldest(); err == nil {
		// Left out while the outbox is closed, or its file replaced.
		ch <- prometheus.MustNewConstMetric(m.outboxOldestAge, prometheus.GaugeValue, ageSeconds(oldest))
	}
}

func ageSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return max(time.Since(t).Seconds(), 0)
}

// accept counts events committed into the outbox.
func (m *metrics) accept(evs []*messages.Event) {
	for _, ev := range evs {
		m.accepted.WithLabelValues(typeLabel(ev.Type)).Inc()
	}
}

// typeLabel is the type label of an event: the types of the contract as
// they are, a plugin's observation.plugin.<suffix> as observation.plugin,
// because a plugin chooses its suffixes and each label value is a series
// kept for the daemon's life.
func typeLabel(typ string) string {
	if strings.HasPrefix(typ, messages.TypeObservationPlugin+".") {
		return messages.TypeObservationPlugin
	}
	return typ
}

// drop counts events dropped by drop_oldest, or found damaged.
func (m *metrics) drop(ds []Dropped) {
	for _, d := range ds {
		if d.Policy == policyCorrupt {
			m.damaged.Add(float64(d.Events))
		} else {
			m.dropped.Add(float64(d.Events))
		}
	}
}

// settle counts how RabbitMQ answered one publication made after
// publishing; the latency is an ack's, returned or not.
func (m *metrics) settle(acked, returned bool, publishing time.Duration) {
	if acked {
		m.latency.Observe(publishing.Seconds())
	}
	switch {
	case returned:
		m.returned.Inc()
	case acked:
		m.confirmed.Inc()
	default:
		m.nacked.Inc()
	}
}

// opened counts a new connection.
func (m *metrics) opened() {
	if m.everConnected.Swap(true) {
		m.reconnects.Inc()
	}
}

// status follows the connection's state.
func (m *metrics) status(s protocol.BrokerStatus) {
	m.connected.Set(boolGauge(s.Connected))
	// The series of a URL lives only while connected to it: the URLs are
	// the config's, so at most broker.urls of them ever exist.
	m.node.Reset()
	if s.Connected {
		m.node.WithLabelValues(s.URL).Set(1)
	}
	m.blocked.Set(boolGauge(s.Connected && s.Blocked))
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
