package wasm

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/messages"
)

// TestEmitResult: a record's result and error text reach the host as the
// plugin set them.
func TestEmitResult(t *testing.T) {
	h := newTestHost(t)
	tg := newTarget(t)
	for _, r := range []messages.Result{messages.Result_RESULT_UNSPECIFIED, messages.Result_RESULT_FAILED, messages.Result_RESULT_ERROR} {
		t.Run(r.String(), func(t *testing.T) {
			p := newPlugin(t, h, tg.spec(t, "bademit", map[string]any{"result": r}, &logBuffer{}))
			o := observeOne(t, p)
			assert.Equal(t, r, o.Result)
			assert.Equal(t, "the error text", o.Error)
		})
	}
}

// TestInvalidEmit: a record emit rejects makes the call fail as invalid
// emit (the instance kept), unless the guest failed it first; either way
// the failure says what the host rejected and what the guest logged of
// it, on one bounded line, and the metric counts the records.
func TestInvalidEmit(t *testing.T) {
	reg := prometheus.NewRegistry()
	h, err := NewHost(context.Background(), HostOptions{CacheDir: filepath.Join(testRoot, "cache"), Log: zerolog.Nop(), Metrics: reg})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, h.Close(context.Background())) })
	tg := newTarget(t)
	tests := []struct {
		name    string
		config  map[string]any
		failure Failure
		want    string // the CallError's text, or its start
	}{
		{name: "bad type_suffix", config: map[string]any{"reject": "suffix"}, failure: FailureInvalidEmit,
			want: `plugin bademit.wasm: invalid emit: 1 of 2 records rejected; host: emit: record rejected: type_suffix "Not A Type!" is not lower-case dotted words`},
		{name: "not protobuf", config: map[string]any{"reject": "garbage"}, failure: FailureInvalidEmit,
			// protobuf's own text varies on purpose (a space or a no-break space).
			want: "plugin bademit.wasm: invalid emit: 1 of 2 records rejected; host: emit: record rejected: not a PluginObservation: proto:"},
		{name: "result out of range", config: map[string]any{"reject": "result"}, failure: FailureInvalidEmit,
			want: "plugin bademit.wasm: invalid emit: 1 of 2 records rejected; host: emit: record rejected: result 9 out of range"},
		{name: "the guest fails the call", config: map[string]any{"reject": "suffix", "log": "observe: emit: rejected by the host as invalid", "return": 1},
			failure: FailureGuest,
			want: `plugin bademit.wasm: guest error: polar_observe returned 1; host: emit: record rejected: type_suffix "Not A Type!" is not lower-case dotted words; ` +
				`guest log: "observe: emit: rejected by the host as invalid"`},
		{name: "the guest's text escaped", config: map[string]any{"log": "two\nlines \x1b[31mred\u202e", "return": 2}, failure: FailureGuest,
			want: `plugin bademit.wasm: guest error: polar_observe returned 2; guest log: "two\nlines \x1b[31mred\u202e"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPlugin(t, h, tg.spec(t, "bademit", tt.config, &logBuffer{}))
			for range 2 {
				obs, err := p.Observe(context.Background(), timeNow())
				ce := requireFailure(t, err, tt.failure)
				assert.True(t, strings.HasPrefix(ce.Error(), tt.want), "%s", ce.Error())
				require.Len(t, obs, 1, "the valid record stands")
				assert.NotNil(t, p.inst, "the instance is kept warm")
			}
		})
	}
	families, err := reg.Gather()
	require.NoError(t, err)
	rejected := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "observerd_plugin_emits_rejected_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			rejected[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	assert.Equal(t, map[string]float64{"bademit.wasm": 8}, rejected, "4 cases of 2 calls rejected a record each")
}

// TestGuestTextBounded: what the host quotes of a guest is one line of
// valid UTF-8, however long or broken the guest's text.
func TestGuestTextBounded(t *testing.T) {
	for name, s := range map[string]string{
		"long":            strings.Repeat("é", 1000),
		"invalid utf-8":   "a\xff\xfeb",
		"cut in a rune":   strings.Repeat("a", maxText-1) + "é",
		"control":         "\r\n\t\x00\x7f",
		"unicode newline": "a\u2028b",
	} {
		t.Run(name, func(t *testing.T) {
			got := oneLine(s)
			assert.True(t, utf8.ValidString(got), "%q", got)
			assert.NotContains(t, got, "\n")
			assert.NotContains(t, got, "\r")
			assert.NotContains(t, got, "\u2028")
			assert.LessOrEqual(t, len(got), 6*maxText+len("…"))
		})
	}
	assert.Equal(t, `a\r\n\t\x00\x7f`, oneLine("a\r\n\t\x00\x7f"))
}
