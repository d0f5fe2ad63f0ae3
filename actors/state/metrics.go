package state

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/messages"
)

// metrics are what the state-manager counts from the events it sees. They
// are registered once per Options (Props shares them across restarts of
// the actor); a nil Registerer leaves them unregistered, still counting.
type metrics struct {
	observations *prometheus.CounterVec   // observer, result
	latency      *prometheus.HistogramVec // kind
	failures     *prometheus.CounterVec   // actor
	restarts     *prometheus.CounterVec   // actor
	quarantines  *prometheus.CounterVec   // actor
	transitions  *prometheus.CounterVec   // observer, state
	policies     *prometheus.CounterVec   // result
	throttled    *prometheus.CounterVec   // policy: running ones only
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		observations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "observerd_observations_total",
			Help: "Observations made, by observer path and result.",
		}, []string{"observer", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "observerd_observation_latency_seconds",
			Help: "Latency the observations measured (request, scrape or connect), by kind.",
			// From a loopback answer to a timeout.
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"kind"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "observerd_actor_failures_total",
			Help: "Failures of actors (observers and the daemon's own), by actor path.",
		}, []string{"actor"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "observerd_actor_restarts_total",
			Help: "Restarts of failed actors, by actor path.",
		}, []string{"actor"}),
		quarantines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "observerd_observer_quarantines_total",
			Help: "Observers quarantined after failing too often, by actor path.",
		}, []string{"actor"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "observerd_state_changes_total",
			Help: "State transitions of observers, by observer path and new state.",
		}, []string{"observer", "state"}),
		policies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "observerd_policy_reloads_total",
			Help: "Policy changes, by result: applied, rejected or removed.",
		}, []string{"result"}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "observerd_policy_throttled_events_total",
			Help: "Observations not published because their policy was over its event budget (limits.max_events_per_second) or all policies together over theirs (limits.max_events_per_second_total), by running policy.",
		}, []string{"policy"}),
	}
	if reg != nil {
		reg.MustRegister(m.observations, m.latency, m.failures, m.restarts, m.quarantines, m.transitions, m.policies, m.throttled)
	}
	return m
}

// count records what ev says.
func (m *metrics) count(path string, ev *messages.Event) {
	switch ev.Type {
	case messages.TypeObserverFailed:
		m.failures.WithLabelValues(ev.GetObserver().GetActor()).Inc()
	case messages.TypeObserverRestarted:
		m.restarts.WithLabelValues(ev.GetObserver().GetActor()).Inc()
	case messages.TypeObserverQuarantined:
		m.quarantines.WithLabelValues(ev.GetObserver().GetActor()).Inc()
	case messages.TypePolicyApplied, messages.TypePolicyRejected, messages.TypePolicyRemoved:
		m.policies.WithLabelValues(ev.Type[len("policy."):]).Inc()
	case messages.TypeStateChanged:
		m.transitions.WithLabelValues(path, stateName(ev.GetStateChange().GetNewState())).Inc()
	}
	if ev.Category != messages.Category_CATEGORY_OBSERVATION {
		return
	}
	res, _ := messages.ResultOf(ev)
	m.observations.WithLabelValues(path, kinds.ResultName(res)).Inc()
	if kind, d, ok := kinds.Latency(ev); ok {
		m.latency.WithLabelValues(kind).Observe(d.Seconds())
	}
}
