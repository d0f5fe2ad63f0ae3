// Package http is the http observer kind: one request to the policy's
// target, its status checked against the expected ones, its body (up to a
// cap) matched against a regular expression and mined for values by JSON
// pointer, its latency and, for https, the expiry of the server's
// certificate reported (docs/observers/http.md).
package http

import (
	"fmt"
	"time"

	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/messages"
)

// Kind is the http kind.
var Kind = kinds.Define(kinds.Definition[*Section, *messages.HttpObservation]{
	Name:       "http",
	NewSection: func() *Section { return &Section{} },
	NewCheck:   newCheck,
	Summary: func(h *messages.HttpObservation) string {
		return fmt.Sprintf("%s %s -> %d %s in %s %s", h.Method, h.Url, h.StatusCode, kinds.ResultName(h.Result),
			h.Latency.AsDuration().Round(time.Microsecond), h.Error)
	},
	Latency: (*messages.HttpObservation).GetLatency,
})
