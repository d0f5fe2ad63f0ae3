package protocol

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
)

func TestReasonIsOneBoundedLine(t *testing.T) {
	long := strings.Repeat("é", MaxReason) // 2 bytes a rune: the cut falls inside none
	for _, tc := range []struct {
		name, in, want string
	}{
		{"one line", "plugin x.wasm: trap", "plugin x.wasm: trap"},
		{"the first line", "policy rejected\n  spec.observers[0]: bad", "policy rejected"},
		{"empty", "", ""},
		{"cut at the bound, on a rune", long, long[:MaxReason] + "…"},
		{"cut inside a rune", "x" + long, "x" + long[:MaxReason-2] + "…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Reason(tc.in)
			assert.Equal(t, tc.want, got)
			assert.True(t, utf8.ValidString(got))
			assert.LessOrEqual(t, len(got), MaxReason+len("…"))
		})
	}
}
