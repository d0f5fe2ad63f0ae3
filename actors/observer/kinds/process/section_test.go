package process

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

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
