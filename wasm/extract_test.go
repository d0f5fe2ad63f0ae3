package wasm

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestExtractJSON: RFC 6901 pointers, escapes and canonical indexes
// included, each value as JSON text.
func TestExtractJSON(t *testing.T) {
	doc := []byte(`{"backlog":150,"requests":{"/healthz":3},"a/b":{"~x":[1,2,{"n":-4.5}]},"s":"ok","nil":null}`)
	got := extractJSON(doc, []string{"/backlog", "/requests/~1healthz", "/a~1b/~0x/1", "/a~1b/~0x/2/n", "/s", "/nil",
		"/a~1b/~0x/01", "/a~1b/~0x/-1", "/a~1b/~0x/3", "/missing", "/backlog/x"})
	assert.Equal(t, map[string]string{
		"/backlog": "150", "/requests/~1healthz": "3", "/a~1b/~0x/1": "2", "/a~1b/~0x/2/n": "-4.5", "/s": `"ok"`, "/nil": "null",
	}, got)
	assert.Nil(t, extractJSON([]byte(`{"backlog":`), []string{"/backlog"}), "not JSON: no values")
	assert.Nil(t, extractJSON(doc, nil), "none asked")
	assert.Equal(t, map[string]string{"": "7"}, extractJSON([]byte(`7`), []string{""}), "the empty pointer is the whole document")
}
