// Package wasm is the wasm observer kind: a plugin module of plugin_dir
// run in the plugin host's sandbox (package wasm of the repository's root,
// docs/plugins.md). Each turn is one polar_observe call; every
// observation the plugin emits becomes an observation.plugin event.
package wasm

import (
	"fmt"
	"time"

	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/messages"
)

// Kind is the wasm kind. Its observations measure no latency of the
// target: a call may make several requests, or none.
var Kind = kinds.Define(kinds.Definition[*Section, *messages.PluginPayload]{
	Name:       "wasm",
	NewSection: func() *Section { return &Section{} },
	NewCheck:   newCheck,
	Summary: func(p *messages.PluginPayload) string {
		return fmt.Sprintf("%s %s %d bytes in %s", p.Plugin, p.Schema, len(p.Payload), p.CallDuration.AsDuration().Round(time.Microsecond))
	},
})
