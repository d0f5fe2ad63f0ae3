package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/policy"
)

// TestPolicySchema: the schema printed is the policy's, whole, as JSON
// that names every kind linked into observerctl.
func TestPolicySchema(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"prints", []string{"policy", "schema"}, exitOK},
		{"no arguments", []string{"policy", "schema", "web.yaml"}, exitUsage},
		{"unknown flag", []string{"policy", "schema", "--bogus"}, exitUsage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			require.Equal(t, tc.code, run(context.Background(), tc.args, &stdout, &stderr), stderr.String())
			if tc.code != exitOK {
				assert.Empty(t, stdout.String())
				return
			}
			var got map[string]any
			require.NoError(t, json.Unmarshal(stdout.Bytes(), &got))
			assert.Equal(t, policy.SchemaID, got["$id"])
			kinds := got["properties"].(map[string]any)["spec"].(map[string]any)["properties"].(map[string]any)["observers"].(map[string]any)["items"].(map[string]any)["properties"].(map[string]any)["kind"].(map[string]any)["enum"]
			assert.ElementsMatch(t, []any{"http", "prometheus", "tcp", "process", "wasm"}, kinds)
		})
	}
}
