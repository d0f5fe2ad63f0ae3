package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStreamOffset(t *testing.T) {
	noon := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name, stream, from, queue string
		binds                     []string
		want                      any
		err                       string
	}{
		{name: "no stream: the temporary queue"},
		{name: "a stream from next by default", stream: "s", want: "next"},
		{name: "first", stream: "s", from: "first", want: "first"},
		{name: "last", stream: "s", from: "last", want: "last"},
		{name: "next", stream: "s", from: "next", want: "next"},
		{name: "an offset", stream: "s", from: "4096", want: int64(4096)},
		{name: "offset 0", stream: "s", from: "0", want: int64(0)},
		{name: "a time", stream: "s", from: "2026-11-23T13:00:00+01:00", want: noon},
		{name: "from without a stream", from: "first", err: "--from reads a stream: give it with --stream NAME"},
		{name: "a stream and a queue", stream: "s", queue: "q", err: "--stream and --queue: read one or the other"},
		{name: "a stream and a binding", stream: "s", binds: []string{"#"}, err: "--bind does not apply to --stream: a stream holds what it is bound to"},
		{name: "a negative offset", stream: "s", from: "-1", err: `--from "-1": want first, last, next, an RFC 3339 time or an offset`},
		{name: "a date alone", stream: "s", from: "2026-11-23", err: `--from "2026-11-23": want first, last, next, an RFC 3339 time or an offset`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := streamOffset(tt.stream, tt.from, tt.queue, tt.binds)
			if tt.err != "" {
				assert.EqualError(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			if want, ok := tt.want.(time.Time); ok {
				assert.True(t, want.Equal(got.(time.Time)), "got %v", got)
				return
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

// TestTailStreamUsage: a bad --from is a usage error (2), found before
// the config is read or the broker dialled.
func TestTailStreamUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := tail(context.Background(), []string{"--config", "/nonexistent", "--stream", "s", "--from", "yesterday"}, &stdout, &stderr)
	assert.Equal(t, exitUsage, code)
	assert.Equal(t, "observerctl tail: --from \"yesterday\": want first, last, next, an RFC 3339 time or an offset\n", stderr.String())
	assert.Empty(t, stdout.String())
}
