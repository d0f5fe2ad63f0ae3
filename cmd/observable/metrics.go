package main

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics live in the service's own registry rather than the global one, so
// that several instances in one test process never collide and /metrics
// shows exactly what this service exports.
type metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	backlog  prometheus.Gauge
	hanging  prometheus.Gauge
	mode     *prometheus.GaugeVec
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "observable_http_requests_total",
			Help: "HTTP requests answered, by route and status code (499: the client went away first).",
		}, []string{"path", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "observable_http_request_duration_seconds",
			Help:    "Time to answer HTTP requests, by route, including added latency and hangs.",
			Buckets: prometheus.DefBuckets,
		}, []string{"path"}),
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "observable_queue_backlog",
			Help: "Simulated queue backlog, set through POST /control/backlog.",
		}),
		hanging: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "observable_hanging_requests",
			Help: "Requests currently held without an answer by mode hang.",
		}),
		mode: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "observable_mode",
			Help: "1 for the current mode, 0 for the others.",
		}, []string{"mode"}),
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "observable_build_info",
		Help:        "Always 1; the version label says which build runs.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	buildInfo.Set(1)
	m.registry.MustRegister(
		m.requests, m.duration, m.backlog, m.hanging, m.mode, buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func (m *metrics) setMode(cur mode) {
	for _, md := range modes {
		v := 0.0
		if md == cur {
			v = 1
		}
		m.mode.WithLabelValues(string(md)).Set(v)
	}
}
