package wasm

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCheck(t *testing.T) {
	h := newTestHost(t)
	garbage := filepath.Join(t.TempDir(), "garbage.wasm")
	require.NoError(t, os.WriteFile(garbage, []byte("not wasm at all"), 0o600))

	tests := []struct {
		name    string
		path    string
		wantErr string
	}{
		{name: "good", path: guest(t, "good")},
		{name: "missing export", path: guest(t, "noexport"),
			wantErr: "plugin noexport.wasm: does not export polar_observe (i32, i32) -> i32"},
		{name: "wrong abi version", path: guest(t, "badversion"),
			wantErr: "plugin badversion.wasm: polar_abi_version() returned 2, the host speaks ABI 1"},
		{name: "import the host does not offer", path: guest(t, "badimport"),
			wantErr: `plugin badimport.wasm: imports "env"."socket", which the host does not offer`},
		{name: "missing file", path: filepath.Join(t.TempDir(), "absent.wasm"),
			wantErr: "plugin absent.wasm: read module: open"},
		{name: "not wasm", path: garbage, wantErr: "plugin garbage.wasm: compile:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := h.Check(context.Background(), tt.path, 0)
			if tt.wantErr != "" {
				requireModuleError(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Len(t, info.SHA256, 64)
			assert.EqualValues(t, ABIVersion, info.ABIVersion)
			assert.True(t, info.Initialize)
			assert.Contains(t, info.Imports, "polar.emit")
			assert.Contains(t, info.Exports, "polar_observe")
			assert.NotZero(t, info.MemoryMin)
		})
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	assert.Empty(t, h.modules, "checked modules are released")
}

// requireModuleError checks that err is a *ModuleError saying want.
func requireModuleError(t *testing.T, err error, want string) {
	t.Helper()
	var me *ModuleError
	require.ErrorAs(t, err, &me)
	assert.Contains(t, err.Error(), want)
}

func TestNewPluginRefusesModule(t *testing.T) {
	h := newTestHost(t)
	good := guest(t, "good")
	info, err := h.Check(context.Background(), good, 0)
	require.NoError(t, err)

	tests := []struct {
		name    string
		spec    PluginSpec
		wantErr string
	}{
		{name: "sha256 pin matches", spec: PluginSpec{Path: good, SHA256: info.SHA256}},
		{name: "sha256 pin differs", spec: PluginSpec{Path: good, SHA256: "00" + info.SHA256[2:]},
			wantErr: "plugin good.wasm: sha256 is " + info.SHA256 + ", the policy pins 00"},
		{name: "memory limit below the initial memory", spec: PluginSpec{Path: good, MemoryLimit: 64 << 10},
			wantErr: "plugin good.wasm: needs"},
		{name: "missing export", spec: PluginSpec{Path: guest(t, "noexport")}, wantErr: "does not export polar_observe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := h.NewPlugin(context.Background(), tt.spec)
			if tt.wantErr != "" {
				requireModuleError(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.NoError(t, p.Close(context.Background()))
		})
	}
}

// A wrong ABI version found when a plugin is instantiated is a
// ModuleError too: the policy is rejected, not retried.
func TestObserveWrongVersion(t *testing.T) {
	h := newTestHost(t)
	p, err := h.NewPlugin(context.Background(), PluginSpec{Path: guest(t, "badversion")})
	require.NoError(t, err)
	defer p.Close(context.Background())
	_, err = p.Observe(context.Background(), timeNow())
	var me *ModuleError
	require.ErrorAs(t, err, &me)
	assert.Contains(t, err.Error(), "returned 2")
}

func TestModuleCompiledOnceAndShared(t *testing.T) {
	h := newTestHost(t)
	path := guest(t, "empty")
	var plugins []*Plugin
	for range 3 {
		p, err := h.NewPlugin(context.Background(), PluginSpec{Path: path})
		require.NoError(t, err)
		plugins = append(plugins, p)
	}
	require.Same(t, plugins[0].mod, plugins[2].mod)
	h.mu.Lock()
	require.Len(t, h.modules, 1)
	assert.Equal(t, 3, plugins[0].mod.refs)
	h.mu.Unlock()
	for _, p := range plugins {
		_, err := p.Observe(context.Background(), timeNow())
		require.NoError(t, err)
		require.NoError(t, p.Close(context.Background()))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	assert.Empty(t, h.modules)
}

func TestCacheDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "wasm-cache")
	ctx := context.Background()
	for range 2 { // the second host finds the first one's compilation
		h, err := NewHost(ctx, HostOptions{CacheDir: dir, Log: zerolog.Nop()})
		require.NoError(t, err)
		_, err = h.Check(ctx, guest(t, "empty"), 0)
		require.NoError(t, err)
		require.NoError(t, h.Close(ctx))
	}
	st, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), st.Mode().Perm())
	var files int
	require.NoError(t, filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files++
		}
		return err
	}))
	assert.Equal(t, 1, files, "one compiled module in the cache")
}
