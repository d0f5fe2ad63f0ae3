// Package wasm is the wasm observer kind: a plugin module of plugin_dir
// run in the plugin host's sandbox (package wasm of the repository's root,
// docs/plugins.md). Each turn is one polar_observe call; every
// observation the plugin emits becomes an observation.plugin event.
package wasm

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/messages"
)

// Kind is the wasm kind. Its observations measure no latency of the
// target: a call may make several requests, or none.
var Kind = kinds.Define(kinds.Definition[*Section, *messages.PluginPayload]{
	Name:       "wasm",
	NewSection: func() *Section { return &Section{} },
	NewCheck:   newCheck,
	Summary:    summary,
})

// What a summary shows of a plugin's own data, at most: the payload is
// the plugin's, up to 1 MiB, and a line of tail is for reading.
const (
	maxPreview     = 64 // bytes of the payload
	maxSchemaBytes = 64
	maxLabels      = 4
	maxLabelBytes  = 32 // of a label's key or value
	maxErrorBytes  = 120
)

// summary renders a plugin's observation as `<module> <result> <schema>
// <labels> <payload preview> (<n> bytes) in <call duration> <error>`,
// each part of the plugin's bounded.
func summary(p *messages.PluginPayload) string {
	parts := []string{p.Plugin, kinds.ResultName(resultOf(p.Result))}
	if p.Schema != "" {
		parts = append(parts, clip(p.Schema, maxSchemaBytes))
	}
	keys := slices.Sorted(maps.Keys(p.Labels))
	for i, k := range keys {
		if i == maxLabels {
			parts = append(parts, fmt.Sprintf("+%d labels", len(keys)-maxLabels))
			break
		}
		parts = append(parts, clip(k, maxLabelBytes)+"="+clip(p.Labels[k], maxLabelBytes))
	}
	if len(p.Payload) > 0 && utf8.Valid(p.Payload) {
		parts = append(parts, clip(string(p.Payload), maxPreview))
	}
	parts = append(parts, fmt.Sprintf("(%d bytes) in %s", len(p.Payload), p.CallDuration.AsDuration().Round(time.Microsecond)))
	if p.Error != "" {
		parts = append(parts, clip(p.Error, maxErrorBytes))
	}
	return strings.Join(parts, " ")
}

// resultOf is a plugin's result as it counts: none (every plugin's before
// results existed) is OK.
func resultOf(r messages.Result) messages.Result {
	if r == messages.Result_RESULT_UNSPECIFIED {
		return messages.Result_RESULT_OK
	}
	return r
}

// clip cuts s to at most max bytes, on a character's boundary, marking
// the cut.
func clip(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
