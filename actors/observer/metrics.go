package observer

import "github.com/prometheus/client_golang/prometheus"

// Metrics count the turns observers could not take on time, for every
// observer of the daemon (the task-manager passes one Metrics to all).
type Metrics struct {
	skipped *prometheus.CounterVec // observer, reason
	late    *prometheus.CounterVec // observer
	// lateness is how long after it was due each turn started, for all
	// observers together: one series whatever their number.
	lateness prometheus.Histogram
}

// NewMetrics registers the observers' metrics with reg (nil: counted, not
// exposed).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "observerd_observer_turns_skipped_total",
			Help: "Observation turns not taken, by observer path and reason: the outbox is full (when_full: block) or the previous observation is still running.",
		}, []string{"observer", "reason"}),
		late: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "observerd_observer_turns_late_total",
			Help: "Observation turns that started more than a tenth of the interval after they were due, by observer path.",
		}, []string{"observer"}),
		lateness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "observerd_observer_turn_lateness_seconds",
			Help:    "How long after it was due each observation turn started (the observer's mailbox took its tick), all observers together.",
			Buckets: []float64{0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}),
	}
	if reg != nil {
		reg.MustRegister(m.skipped, m.late, m.lateness)
	}
	return m
}
