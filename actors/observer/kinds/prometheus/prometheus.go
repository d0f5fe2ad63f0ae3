// Package prometheus is the prometheus observer kind: one scrape of a
// metrics page of the policy's target in the text exposition format, its
// families filtered by name and labels and carried as typed samples
// (docs/observers/prometheus.md).
package prometheus

import (
	"fmt"
	"time"

	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/messages"
)

// Kind is the prometheus kind.
var Kind = kinds.Define(kinds.Definition[*Section, *messages.PrometheusObservation]{
	Name:       "prometheus",
	NewSection: func() *Section { return &Section{} },
	NewCheck:   newCheck,
	Summary: func(p *messages.PrometheusObservation) string {
		return fmt.Sprintf("%s %s %d samples (%d dropped) in %s %s", p.Url, kinds.ResultName(p.Result), len(p.Samples), p.SamplesDropped,
			p.Latency.AsDuration().Round(time.Microsecond), p.Error)
	},
	Latency: (*messages.PrometheusObservation).GetLatency,
})
