//go:build !wasip1

// The tests run on the host only: package messages, the daemon's side of
// the ABI, does not build for wasip1.

package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/messages"
)

// The hand-rolled encoding must decode with the generated type the daemon
// uses.
func TestObservationDecodesAsPluginObservation(t *testing.T) {
	var got messages.PluginObservation
	require.NoError(t, proto.Unmarshal(observation(), &got))
	assert.True(t, proto.Equal(&messages.PluginObservation{
		TypeSuffix: "raw",
		Severity:   messages.Severity_SEVERITY_INFO,
		Payload:    []byte(`{"hello":"from the raw ABI"}`),
		Schema:     "application/json",
		Labels:     map[string]string{"example": "raw-abi"},
	}, &got), "got %v", &got)
}

func TestAppendVarint(t *testing.T) {
	for _, x := range []uint64{0, 1, 127, 128, 300, 1 << 32, 1<<64 - 1} {
		assert.Equal(t, protowire.AppendVarint(nil, x), appendVarint(nil, x), x)
	}
}
