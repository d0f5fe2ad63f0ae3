// Package tcp is the tcp observer kind: one connect to an address of the
// policy's target, closed as soon as it is established
// (docs/observers/tcp.md).
package tcp

import (
	"fmt"
	"time"

	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/messages"
)

// Kind is the tcp kind.
var Kind = kinds.Define(kinds.Definition[*Section, *messages.TcpObservation]{
	Name:       "tcp",
	NewSection: func() *Section { return &Section{} },
	NewCheck:   newCheck,
	Summary: func(c *messages.TcpObservation) string {
		return fmt.Sprintf("%s %s in %s %s", c.Address, kinds.ResultName(c.Result), c.ConnectLatency.AsDuration().Round(time.Microsecond), c.Error)
	},
	Latency: (*messages.TcpObservation).GetConnectLatency,
})
