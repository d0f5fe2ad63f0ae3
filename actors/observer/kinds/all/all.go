// Package all registers the daemon's observer kinds: a program that
// parses policies or runs observers imports it (for its side effect, as
// database/sql drivers are imported), and so has every kind, in the
// order problems list them. Adding a kind adds its line here.
package all

import (
	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/actors/observer/kinds/http"
	"github.com/polar/observerd/actors/observer/kinds/process"
	"github.com/polar/observerd/actors/observer/kinds/prometheus"
	"github.com/polar/observerd/actors/observer/kinds/tcp"
	"github.com/polar/observerd/actors/observer/kinds/wasm"
)

func init() {
	if err := kinds.Register(http.Kind, prometheus.Kind, tcp.Kind, process.Kind, wasm.Kind); err != nil {
		panic(err)
	}
}
