package jsonlog

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLines(t *testing.T) {
	tests := []struct {
		name, in, err string
		want          int
	}{
		{name: "unique keys", in: `{"level":"info","plugin":"a.wasm","nested":{"plugin":"b"},"list":[{"x":1},{"x":2}]}` + "\n\n{}\n", want: 2},
		{name: "a key twice", in: `{"level":"info","plugin":"a.wasm","plugin":"a.wasm"}`, err: `log line 1: key "plugin" appears twice`},
		{name: "twice in a nested object", in: "{}\n" + `{"a":{"b":1,"b":2}}`, err: `log line 2: key "b" appears twice`},
		{name: "twice in an array's object", in: `{"a":[{"b":1,"b":2}]}`, err: `key "b" appears twice`},
		{name: "not json", in: `level=info`, err: "log line 1: read json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Lines([]byte(tt.in))
			if tt.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.err)
				return
			}
			require.NoError(t, err)
			assert.Len(t, got, tt.want)
		})
	}
}
