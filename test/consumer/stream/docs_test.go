package main

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/test/docblock"
)

// TestDocShowsTheStreamConsumer: docs/consumers.md shows, under its
// heading, the stream consumer that make test runs, as it is.
func TestDocShowsTheStreamConsumer(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/consumers.md")
	require.NoError(t, err)
	code, err := os.ReadFile("main.go")
	require.NoError(t, err)
	const heading = "## Replaying: the stream consumer — `test/consumer/stream/main.go`"
	shown, ok := docblock.After(doc, heading, "go")
	require.True(t, ok, "docs/consumers.md has no section %q followed by a go block", heading)
	assert.Equal(t, string(code), shown, "docs/consumers.md shows another main.go: copy the file into the page")
}
