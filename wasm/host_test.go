package wasm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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
		{name: "polar_stateless with a parameter", path: guest(t, "badstateless"),
			wantErr: "plugin badstateless.wasm: exports polar_stateless as (i32) -> i32, ABI v1 wants () -> i32"},
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

// install copies guest name into a fresh plugin directory of mode dirMode,
// as name.wasm of mode fileMode, and returns its path.
func install(t *testing.T, name string, dirMode, fileMode os.FileMode) string {
	t.Helper()
	b, err := os.ReadFile(guest(t, name))
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "plugins")
	require.NoError(t, os.Mkdir(dir, 0o700))
	path := filepath.Join(dir, name+".wasm")
	require.NoError(t, os.WriteFile(path, b, 0o600))
	// Chmod, not the umask: the modes are the test's.
	require.NoError(t, os.Chmod(path, fileMode))
	require.NoError(t, os.Chmod(dir, dirMode))
	return path
}

// TestCheckFileRefusesWhatOthersMayWrite: a module that users other than
// root and the daemon's may write, or one in a directory they may write,
// would let them change what the daemon runs: the daemon's check refuses
// it, naming the file or the directory and its mode or owner. Modes are
// not enough: an owner may write a file whatever its mode (the tests run
// as root; uid 65534 is another user). A module that is a symbolic link
// is refused, wherever it leads. observerctl's Check of a module being
// developed does not judge where it lies.
func TestCheckFileRefusesWhatOthersMayWrite(t *testing.T) {
	const other = 65534
	h := newTestHost(t)
	tests := []struct {
		name              string
		dirMode, fileMode os.FileMode
		// prepare changes the installed module at path (nil: nothing).
		prepare func(t *testing.T, path string)
		wantErr string // {file} and {dir} stand for the module and its directory
	}{
		{name: "owner-writable", dirMode: 0o755, fileMode: 0o644},
		{name: "read-only", dirMode: 0o555, fileMode: 0o444},
		{name: "group-writable module", dirMode: 0o755, fileMode: 0o664,
			wantErr: "plugin good.wasm: module {file} has mode 0664: writable by group or others (chmod go-w it)"},
		{name: "world-writable module", dirMode: 0o755, fileMode: 0o646,
			wantErr: "plugin good.wasm: module {file} has mode 0646: writable by group or others (chmod go-w it)"},
		{name: "group-writable plugin_dir", dirMode: 0o775, fileMode: 0o644,
			wantErr: "plugin good.wasm: plugin_dir {dir} has mode 0775: writable by group or others (chmod go-w it)"},
		{name: "sticky world-writable plugin_dir", dirMode: 0o777 | os.ModeSticky, fileMode: 0o644,
			wantErr: "plugin good.wasm: plugin_dir {dir} has mode 0777: writable by group or others (chmod go-w it)"},
		{name: "module owned by another user", dirMode: 0o755, fileMode: 0o444,
			prepare: func(t *testing.T, path string) { require.NoError(t, os.Chown(path, other, other)) },
			wantErr: "plugin good.wasm: module {file} is owned by uid 65534: only root or the daemon's user (uid 0) may own it (chown root it)"},
		{name: "plugin_dir owned by another user", dirMode: 0o755, fileMode: 0o644,
			prepare: func(t *testing.T, path string) { require.NoError(t, os.Chown(filepath.Dir(path), other, other)) },
			wantErr: "plugin good.wasm: plugin_dir {dir} is owned by uid 65534: only root or the daemon's user (uid 0) may own it (chown root it)"},
		{name: "module linked to a file another user may change", dirMode: 0o755, fileMode: 0o644,
			prepare: func(t *testing.T, path string) {
				theirs := t.TempDir()
				require.NoError(t, os.Chown(theirs, other, other))
				require.NoError(t, os.Rename(path, filepath.Join(theirs, "good.wasm")))
				require.NoError(t, os.Symlink(filepath.Join(theirs, "good.wasm"), path))
			},
			wantErr: "plugin good.wasm: module {file} is a symbolic link: copy the module itself into plugin_dir"},
		{name: "module linked inside plugin_dir", dirMode: 0o755, fileMode: 0o644,
			prepare: func(t *testing.T, path string) {
				require.NoError(t, os.Rename(path, path+".real"))
				require.NoError(t, os.Symlink(filepath.Base(path)+".real", path))
			},
			wantErr: "plugin good.wasm: module {file} is a symbolic link: copy the module itself into plugin_dir"},
		{name: "plugin_dir a link to a safe directory", dirMode: 0o755, fileMode: 0o644,
			prepare: func(t *testing.T, path string) {
				dir := filepath.Dir(path)
				require.NoError(t, os.Rename(dir, dir+".real"))
				require.NoError(t, os.Symlink(dir+".real", dir))
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := install(t, "good", tt.dirMode, tt.fileMode)
			if tt.prepare != nil {
				tt.prepare(t, path)
			}
			_, err := h.Check(context.Background(), path, 0)
			require.NoError(t, err, "Check does not judge where the module lies")
			err = h.CheckFile(path, 0)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			want := strings.NewReplacer("{file}", path, "{dir}", filepath.Dir(path)).Replace(tt.wantErr)
			requireModuleError(t, err, want)
			// Loading it for an observer refuses it the same way.
			_, err = h.NewPlugin(context.Background(), PluginSpec{Path: path, Installed: true})
			requireModuleError(t, err, want)
		})
	}
}

// TestModuleOverTheCap: a module over policy.MaxModuleBytes (the cap
// that validation hashes within too) is refused by every check, from its
// size, before it is read.
func TestModuleOverTheCap(t *testing.T) {
	h := newTestHost(t)
	path := install(t, "good", 0o755, 0o644)
	require.NoError(t, os.Truncate(path, 1<<40)) // sparse: nothing to write, a TiB to read
	want := "plugin good.wasm: read module: larger than 64 MiB"
	_, err := h.Check(context.Background(), path, 0)
	requireModuleError(t, err, want)
	requireModuleError(t, h.CheckFile(path, 0), want)
	_, err = h.NewPlugin(context.Background(), PluginSpec{Path: path, Installed: true})
	requireModuleError(t, err, want)
}

// TestModuleMustBeARegularFile: a module that is not a regular file is
// refused at once, by every check: a FIFO would block the reader for
// ever, a device would never end.
func TestModuleMustBeARegularFile(t *testing.T) {
	h := newTestHost(t)
	fifo := filepath.Join(t.TempDir(), "fifo.wasm")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	require.NoError(t, os.Chmod(fifo, 0o644))
	dir := filepath.Join(t.TempDir(), "dir.wasm")
	require.NoError(t, os.Mkdir(dir, 0o700))
	tests := []struct{ path, mode string }{
		{fifo, "prw-r--r--"},
		{"/dev/zero", "Dcrw-rw-rw-"},
		{dir, "drwx------"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			want := "read module " + tt.path + ": not a regular file (mode " + tt.mode + ")"
			_, err := h.Check(context.Background(), tt.path, 0)
			requireModuleError(t, err, want)
			requireModuleError(t, h.CheckFile(tt.path, 0), want)
			_, err = h.NewPlugin(context.Background(), PluginSpec{Path: tt.path})
			requireModuleError(t, err, want)
		})
	}
}

// TestUnpinnedWarning: an installed module run without a pinned sha256 is
// warned about once per daemon run, however many observers run it, with
// the sum that would pin it; again when its content changes; never when
// pinned, nor for a module that is not installed (observerctl).
func TestUnpinnedWarning(t *testing.T) {
	logs := &logBuffer{}
	h, err := NewHost(context.Background(), HostOptions{CacheDir: filepath.Join(testRoot, "cache"), Log: logs.logger()})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, h.Close(context.Background())) })
	path := install(t, "good", 0o755, 0o644)
	info, err := h.Check(context.Background(), path, 0)
	require.NoError(t, err)

	load := func(spec PluginSpec) {
		t.Helper()
		p, err := h.NewPlugin(context.Background(), spec)
		require.NoError(t, err)
		require.NoError(t, p.Close(context.Background()))
	}
	warnings := func() (out []map[string]any) {
		for _, e := range logs.entries(t) {
			if strings.Contains(fmt.Sprint(e["message"]), "not pinned") {
				out = append(out, e)
			}
		}
		return out
	}
	load(PluginSpec{Path: path})                                       // observerctl: not installed
	load(PluginSpec{Path: path, Installed: true, SHA256: info.SHA256}) // pinned
	assert.Empty(t, warnings())

	for range 3 {
		load(PluginSpec{Path: path, Installed: true})
	}
	w := warnings()
	require.Len(t, w, 1, "once for the module, however many observers")
	assert.Equal(t, "warn", w[0]["level"])
	assert.Equal(t, path, w[0]["module"])
	assert.Equal(t, info.SHA256, w[0]["sha256"])

	// Another content at the same path is another module.
	other, err := os.ReadFile(guest(t, "empty"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, other, 0o644))
	load(PluginSpec{Path: path, Installed: true})
	load(PluginSpec{Path: path, Installed: true})
	w = warnings()
	require.Len(t, w, 2)
	assert.NotEqual(t, info.SHA256, w[1]["sha256"])
}

// TestCheckRemembered: a module's content checked once with a memory
// limit is not instantiated again for the next check (a policy of many
// observers of one module), at any path; another content, or another
// limit, is checked anew. A canceled context shows it: any instantiation
// would fail with it.
func TestCheckRemembered(t *testing.T) {
	h := newTestHost(t)
	dir := t.TempDir()
	copyTo := func(name, guestName string) string {
		b, err := os.ReadFile(guest(t, guestName))
		require.NoError(t, err)
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o600))
		return p
	}
	_, err := h.Check(context.Background(), guest(t, "good"), 0)
	require.NoError(t, err)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	info, err := h.Check(canceled, copyTo("again.wasm", "good"), 0)
	require.NoError(t, err, "the same content is not instantiated again")
	assert.Equal(t, filepath.Join(dir, "again.wasm"), info.Path)
	_, err = h.Check(canceled, copyTo("other.wasm", "shared"), 0)
	assert.Error(t, err, "another content is")
	_, err = h.Check(canceled, guest(t, "good"), 16<<20)
	assert.Error(t, err, "so is another limit")
}

// TestRewrittenModuleReadAgain: a module file is hashed once while it is
// unchanged, but a rewrite in place, even of the same size with its
// modification time set back, is read again: its change time moved.
func TestRewrittenModuleReadAgain(t *testing.T) {
	h := newTestHost(t)
	b, err := os.ReadFile(guest(t, "good"))
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "m.wasm")
	require.NoError(t, os.WriteFile(path, b, 0o600))
	st, err := os.Stat(path)
	require.NoError(t, err)
	first := newPlugin(t, h, PluginSpec{Path: path})
	again := newPlugin(t, h, PluginSpec{Path: path})
	require.Same(t, first.mod, again.mod)

	b[len(b)-1] ^= 0xff // in the last custom section: still a module
	require.NoError(t, os.WriteFile(path, b, 0o600))
	require.NoError(t, os.Chtimes(path, st.ModTime(), st.ModTime()))
	p, err := h.NewPlugin(context.Background(), PluginSpec{Path: path})
	if err == nil {
		defer p.Close(context.Background())
		assert.NotEqual(t, first.mod.sum, p.mod.sum, "the new content was read")
	}
}
