package policymanager

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFingerprintOfPluginDir(t *testing.T) {
	dir := t.TempDir()
	module := filepath.Join(dir, "a.wasm")
	require.NoError(t, os.WriteFile(module, []byte("\x00asm"), 0o600))
	base := fingerprint(dir)
	assert.Equal(t, base, fingerprint(dir), "an unchanged directory keeps its fingerprint")
	assert.Equal(t, pluginPrint{}, fingerprint(""), "no plugin_dir")

	tests := []struct {
		name   string
		change func(t *testing.T)
	}{
		{"a module added", func(t *testing.T) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "b.wasm"), []byte("\x00asm"), 0o600))
		}},
		{"a module rewritten in place", func(t *testing.T) {
			require.NoError(t, os.WriteFile(module, []byte("\x00asm\x01"), 0o600))
		}},
		{"a module touched", func(t *testing.T) {
			later := time.Now().Add(time.Hour)
			require.NoError(t, os.Chtimes(module, later, later))
		}},
		{"a module removed", func(t *testing.T) { require.NoError(t, os.Remove(module)) }},
		{"the directory removed", func(t *testing.T) { require.NoError(t, os.RemoveAll(dir)) }},
	}
	seen := map[pluginPrint]string{base: "the start"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.change(t)
			fp := fingerprint(dir)
			_, again := seen[fp]
			assert.False(t, again, "the fingerprint of %s is that of %s", tc.name, seen[fp])
			seen[fp] = tc.name
		})
	}
}
