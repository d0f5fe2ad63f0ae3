package wasm

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/polar/observerd/messages"
)

// TestSummary: tail's line of a plugin's observation shows its result,
// schema, labels, the start of its payload and its error, each bounded.
func TestSummary(t *testing.T) {
	ms := durationpb.New(1500 * time.Microsecond)
	tests := []struct {
		name string
		p    *messages.PluginPayload
		want string
	}{
		{"json payload", &messages.PluginPayload{Plugin: "status-threshold.wasm", Schema: "polar.examples.status_threshold.v1",
			Labels: map[string]string{"pointer": "/backlog"}, Payload: []byte(`{"value":150,"threshold":100,"above":true}`),
			Result: messages.Result_RESULT_FAILED, Error: "150 is above 100", CallDuration: ms},
			`status-threshold.wasm failed polar.examples.status_threshold.v1 pointer=/backlog {"value":150,"threshold":100,"above":true} (42 bytes) in 1.5ms 150 is above 100`},
		{"an old plugin's: no result, no schema", &messages.PluginPayload{Plugin: "old.wasm", CallDuration: ms},
			"old.wasm ok (0 bytes) in 1.5ms"},
		{"binary payload: its size only", &messages.PluginPayload{Plugin: "b.wasm", Result: messages.Result_RESULT_OK, Payload: []byte{0xff, 0, 1}, CallDuration: ms},
			"b.wasm ok (3 bytes) in 1.5ms"},
		{"bounded", &messages.PluginPayload{Plugin: "big.wasm", Result: messages.Result_RESULT_ERROR, Schema: strings.Repeat("s", 80),
			Labels:  map[string]string{"a": "1", "b": strings.Repeat("é", 40), "c": "3", "d": "4", "e": "5", "f": "6"},
			Payload: []byte(strings.Repeat("x", 1000)), Error: strings.Repeat("e", 200), CallDuration: ms},
			"big.wasm error " + strings.Repeat("s", 64) + "… a=1 b=" + strings.Repeat("é", 16) + "… c=3 d=4 +2 labels " +
				strings.Repeat("x", 64) + "… (1000 bytes) in 1.5ms " + strings.Repeat("e", 120) + "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, summary(tt.p))
		})
	}
}
