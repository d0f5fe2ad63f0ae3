package docblock

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestAfter(t *testing.T) {
	doc := []byte("# Page\n\n```go\nnot this\n```\n\n## Heading\n\ntext\n\n```yaml\nnot this either\n```\n\n```go\npackage main\n```\n\n```go\nnor this\n```\n")
	block, ok := After(doc, "## Heading", "go")
	assert.True(t, ok)
	assert.Equal(t, "package main\n", block, "the first go block after the heading")

	for name, c := range map[string]struct{ heading, lang string }{
		"no such heading":            {"## Other", "go"},
		"a heading only as a prefix": {"## Head", "go"},
		"no block of that language":  {"## Heading", "python"},
	} {
		t.Run(name, func(t *testing.T) {
			_, ok := After(doc, c.heading, c.lang)
			assert.False(t, ok)
		})
	}
	_, ok = After([]byte("## Heading\n```go\nunclosed\n"), "## Heading", "go")
	assert.False(t, ok, "a block that never closes")
}
