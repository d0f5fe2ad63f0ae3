package main

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/test/docblock"
)

// TestDocShowsTheConsumers: docs/consumers.md shows, each under its
// heading, the consumers that make test runs, as they are, and the output
// that Example holds them to.
func TestDocShowsTheConsumers(t *testing.T) {
	doc, err := os.ReadFile("../../docs/consumers.md")
	require.NoError(t, err)
	for file, heading := range map[string]struct{ text, lang string }{
		"main.go":     {"## The Go consumer — `test/consumer/main.go`", "go"},
		"consumer.py": {"## The Python consumer — `test/consumer/consumer.py`", "python"},
	} {
		t.Run(file, func(t *testing.T) {
			code, err := os.ReadFile(file)
			require.NoError(t, err)
			shown, ok := docblock.After(doc, heading.text, heading.lang)
			require.True(t, ok, "docs/consumers.md has no section %q followed by a %s block", heading.text, heading.lang)
			assert.Equal(t, string(code), shown, "docs/consumers.md shows another %s: copy the file into the page", file)
		})
	}

	example, err := os.ReadFile("example_test.go")
	require.NoError(t, err)
	_, output, ok := strings.Cut(string(example), "\t// Output:\n")
	require.True(t, ok, "Example has no output")
	output = strings.ReplaceAll(strings.TrimSuffix(output, "}\n"), "\t// ", "")
	shown, ok := docblock.After(doc, "## Two consumers", "")
	require.True(t, ok, "docs/consumers.md shows no output under \"## Two consumers\"")
	assert.Equal(t, output, shown, "docs/consumers.md shows another output than Example's")
}
