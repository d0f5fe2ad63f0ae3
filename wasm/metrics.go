package wasm

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the host's: every plugin call's duration, by module and
// outcome ("ok", or the failure: "trap", "timeout", "memory limit"...),
// and the records emit rejected, by module.
type metrics struct {
	calls    *prometheus.HistogramVec
	rejected *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		calls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "observerd_plugin_call_duration_seconds",
			Help: "Duration of plugin calls (polar_observe, a fresh instance's start included), by module and outcome.",
			// From a warm call of a few microseconds to a timeout.
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"plugin", "result"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "observerd_plugin_emits_rejected_total",
			Help: "Records plugins passed to emit that the host rejected as invalid (not a PluginObservation, a bad type_suffix, severity or result), by module.",
		}, []string{"plugin"}),
	}
	if reg != nil {
		reg.MustRegister(m.calls, m.rejected)
	}
	return m
}

// outcome names what came of a call for the result label.
func outcome(err error) string {
	var ce *CallError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &ce):
		return ce.Failure.String()
	}
	return "module error"
}
