package policy

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHugeModuleIsNotHashed: a module over MaxModuleBytes is refused
// before it is read. A sparse file of any size costs nothing to make;
// hashed, 1 TiB would take hours of CPU at every parse.
func TestHugeModuleIsNotHashed(t *testing.T) {
	plugins := t.TempDir()
	for name, size := range map[string]int64{"at-the-cap.wasm": MaxModuleBytes, "backlog.wasm": 1 << 40} {
		f, err := os.Create(filepath.Join(plugins, name))
		require.NoError(t, err)
		require.NoError(t, f.Truncate(size))
		require.NoError(t, f.Close())
	}
	start := time.Now()
	_, err := Parse("p.yaml", []byte(base), Env{PluginDir: plugins})
	assert.Less(t, time.Since(start), time.Minute, "the module was not read")
	assert.Equal(t, []string{"p.yaml:9:62: spec.observers[2].wasm.module: cannot read plugin backlog.wasm: larger than 64MiB"},
		problemLines(err, plugins))

	sum, err := fileSHA256(filepath.Join(plugins, "at-the-cap.wasm"))
	require.NoError(t, err, "a module of MaxModuleBytes is hashed")
	assert.Len(t, sum, 64)
}

// TestPIDDirOf: the one rule of allowed_pid_dirs, which validation and
// the process observer both ask: the outermost entry below which the
// path lies, lexically; never the entry itself.
func TestPIDDirOf(t *testing.T) {
	tests := []struct {
		name     string
		file     string
		dirs     []string
		dir, rel string
		ok       bool
	}{
		{"a file in the dir", "/run/web.pid", []string{"/run"}, "/run", "web.pid", true},
		{"below it", "/run/web/web.pid", []string{"/run"}, "/run", "web/web.pid", true},
		{"the dir itself", "/run", []string{"/run"}, "", "", false},
		{"the dir itself, unclean", "/run/web/..", []string{"/run/"}, "", "", false},
		{"climbing out", "/run/../etc/observerd/amqp.password", []string{"/run"}, "", "", false},
		{"a sibling sharing the prefix", "/running/web.pid", []string{"/run"}, "", "", false},
		{"nested: the outermost", "/run/web/web.pid", []string{"/run/web", "/run"}, "/run", "web/web.pid", true},
		{"nested, outermost first", "/run/web/web.pid", []string{"/run", "/run/web"}, "/run", "web/web.pid", true},
		{"the inner dir itself, in the outer", "/run/web", []string{"/run/web", "/run"}, "/run", "web", true},
		{"cleaned", "/run//web/./web.pid", []string{"/run/"}, "/run", "web/web.pid", true},
		{"no dirs", "/run/web.pid", nil, "", "", false},
		{"a relative path", "run/web.pid", []string{"/run"}, "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, rel, ok := PIDDirOf(tc.file, tc.dirs)
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.dir, dir)
			assert.Equal(t, tc.rel, rel)
		})
	}
}
