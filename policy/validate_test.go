package policy_test

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/policy"
)

// TestHugeModuleIsNotHashed: a module over MaxModuleBytes is refused
// before it is read. A sparse file of any size costs nothing to make;
// hashed, 1 TiB would take hours of CPU at every parse.
func TestHugeModuleIsNotHashed(t *testing.T) {
	plugins := t.TempDir()
	for name, size := range map[string]int64{"at-the-cap.wasm": policy.MaxModuleBytes, "backlog.wasm": 1 << 40} {
		f, err := os.Create(filepath.Join(plugins, name))
		require.NoError(t, err)
		require.NoError(t, f.Truncate(size))
		require.NoError(t, f.Close())
	}
	_, err := policy.Parse("p.yaml", []byte(base), policy.Env{PluginDir: plugins})
	assert.Equal(t, []string{"p.yaml:9:62: spec.observers[2].wasm.module: cannot read plugin backlog.wasm: larger than 64MiB"},
		problemLines(err, plugins))

	// A module of MaxModuleBytes is hashed: pinned by its sum, it is found
	// and matches.
	sum := sha256.Sum256(make([]byte, policy.MaxModuleBytes))
	atTheCap := strings.Replace(base, "module: backlog.wasm,", fmt.Sprintf("module: at-the-cap.wasm, sha256: %x,", sum), 1)
	_, err = policy.Parse("p.yaml", []byte(atTheCap), policy.Env{PluginDir: plugins})
	require.NoError(t, err, "a module of MaxModuleBytes is hashed")
}
