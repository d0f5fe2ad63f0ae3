package observer

import "github.com/prometheus/client_golang/prometheus"

// Metrics count the turns observers could not take on time, for every
// observer of the daemon (the task-manager passes one Metrics to all).
type Metrics struct {
	skipped *prometheus.CounterVec // observer, reason
	late    *prometheus.CounterVec // observer
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
	}
	if reg != nil {
		reg.MustRegister(m.skipped, m.late)
	}
	return m
}
