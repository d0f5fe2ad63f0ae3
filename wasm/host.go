package wasm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/polar/observerd/policy"
)

// ABIVersion is the plugin ABI the host speaks: polar_abi_version must
// return it.
const ABIVersion = 1

// Defaults and caps of the sandbox. MemoryLimit and Timeout are per plugin
// observer (PluginSpec); the others are per call and fixed by ABI v1.
const (
	DefaultMemoryLimit = 32 << 20        // bytes of linear memory
	DefaultTimeout     = time.Second     // deadline of one call
	MaxMemoryLimit     = 1 << 32         // what 32-bit wasm can address
	MaxEmits           = 64              // emit calls per call
	MaxEmitBytes       = 1 << 20         // bytes passed to emit per call
	MaxRequests        = 8               // http_request calls per call
	MaxRequestBytes    = 1 << 20         // an encoded HttpRequest
	MaxBodyBytes       = 1 << 20         // a response body; the rest is cut
	MaxRedirects       = 5               // redirects followed per request
	MaxStateBytes      = 64 << 10        // what set_state keeps
	MaxLogBytes        = 64 << 10        // log, stdout and stderr together per call
	pageSize           = 64 << 10        // a wasm memory page
	compileTimeout     = 5 * time.Minute // compiling a large module cold
)

// HostOptions configure a Host.
type HostOptions struct {
	// CacheDir keeps compiled modules across restarts (the daemon uses
	// state_dir/wasm-cache). It is created with mode 0700: what it holds
	// is executed. Empty keeps them in memory only.
	CacheDir string
	// Log receives the host's own messages.
	Log zerolog.Logger
	// Metrics registers the plugin call metrics (nil: none).
	Metrics prometheus.Registerer
}

// Host runs plugins: one wazero runtime (the compiler where wazero has
// one, with close-on-context-done) with WASI and the "polar" host module,
// and the modules compiled in it, each once per content and shared by the
// plugins that run it. A Host is safe for concurrent use.
type Host struct {
	log     zerolog.Logger
	metrics *metrics
	cache   wazero.CompilationCache // nil without CacheDir
	runtime wazero.Runtime
	// offers lists the functions a module may import, with the same
	// signature: by module, the WASI functions wazero implements and the
	// polar host functions.
	offers map[string]map[string]api.FunctionDefinition

	mu      sync.Mutex
	modules map[string]*module // by sha256
	pools   map[poolKey]*pool
	// checked holds what check found of the modules it instantiated, so
	// that a policy of a thousand observers of one module instantiates
	// it once, not a thousand times.
	checked map[checkKey]ModuleInfo
	// sums holds the sha256 of the module files read, by what identifies
	// a file's content (fileID): a thousand observers of one module read
	// and hash it once, not a thousand times.
	sums map[fileID]string
	// unpinned holds the installed modules run without a pinned sha256
	// that were warned about, by path and sum (see warnUnpinned).
	unpinned map[string]bool
}

// module is a compiled module, shared by the plugins that run it.
type module struct {
	sum      string        // hex sha256, its key in Host.modules
	ready    chan struct{} // closed once compiled and validated
	compiled wazero.CompiledModule
	info     ModuleInfo
	err      error
	refs     int // guarded by Host.mu
}

// ModuleInfo is what Check found in a module.
type ModuleInfo struct {
	Path   string
	SHA256 string // hex
	Size   int    // bytes
	// ABIVersion is what polar_abi_version returned (Check only).
	ABIVersion int32
	// Initialize reports whether the module exports _initialize (a WASI
	// reactor), which the host calls once per instance.
	Initialize bool
	// Stateless is what polar_stateless returned (Check only): the
	// module's instances may be shared by the observers of a policy.
	Stateless bool
	// Imports and Exports are the module's functions, "module.name" and
	// "name", sorted.
	Imports []string
	Exports []string
	// MemoryMin is the initial size of the memory; MemoryMax its declared
	// maximum, 0 when it declares none (the plugin's limit applies).
	MemoryMin uint64
	MemoryMax uint64
}

// NewHost starts a host. Close it when done.
func NewHost(ctx context.Context, opts HostOptions) (*Host, error) {
	return newHost(ctx, opts, true)
}

// newHost lets the benchmark measure the host without close-on-context-done,
// which the daemon never runs without (see doc.go).
func newHost(ctx context.Context, opts HostOptions, closeOnDone bool) (*Host, error) {
	cfg := wazero.NewRuntimeConfig().WithCloseOnContextDone(closeOnDone)
	h := &Host{log: opts.Log, metrics: newMetrics(opts.Metrics), modules: map[string]*module{}, pools: map[poolKey]*pool{}, checked: map[checkKey]ModuleInfo{}, sums: map[fileID]string{}, unpinned: map[string]bool{}}
	if opts.CacheDir != "" {
		if err := os.MkdirAll(opts.CacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("create wasm cache: %w", err)
		}
		// MkdirAll leaves an existing directory's mode alone.
		if err := os.Chmod(opts.CacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("restrict wasm cache: %w", err)
		}
		cache, err := wazero.NewCompilationCacheWithDir(opts.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("open wasm cache: %w", err)
		}
		h.cache = cache
		cfg = cfg.WithCompilationCache(cache)
	}
	h.runtime = wazero.NewRuntimeWithConfig(ctx, cfg)
	if err := h.instantiateImports(ctx); err != nil {
		_ = h.Close(ctx)
		return nil, err
	}
	return h, nil
}

func (h *Host) instantiateImports(ctx context.Context) error {
	wasi, err := wasi_snapshot_preview1.NewBuilder(h.runtime).Compile(ctx)
	if err != nil {
		return fmt.Errorf("compile wasi: %w", err)
	}
	if _, err := h.runtime.InstantiateModule(ctx, wasi, wazero.NewModuleConfig()); err != nil {
		return fmt.Errorf("instantiate wasi: %w", err)
	}
	b := h.runtime.NewHostModuleBuilder(hostModule)
	for _, f := range hostFuncs {
		b.NewFunctionBuilder().
			WithGoModuleFunction(f.fn, f.params, f.results).
			WithParameterNames(f.paramNames...).
			Export(f.name)
	}
	polar, err := b.Compile(ctx)
	if err != nil {
		return fmt.Errorf("compile %s: %w", hostModule, err)
	}
	if _, err := h.runtime.InstantiateModule(ctx, polar, wazero.NewModuleConfig()); err != nil {
		return fmt.Errorf("instantiate %s: %w", hostModule, err)
	}
	h.offers = map[string]map[string]api.FunctionDefinition{
		wasi_snapshot_preview1.ModuleName: wasi.ExportedFunctions(),
		hostModule:                        polar.ExportedFunctions(),
	}
	return nil
}

// Close closes the runtime and every instance in it, then the cache.
// Close the plugins first: a call still running ends with an error.
func (h *Host) Close(ctx context.Context) error {
	err := h.runtime.Close(ctx)
	if h.cache != nil {
		err = errors.Join(err, h.cache.Close(ctx))
	}
	if err != nil {
		return fmt.Errorf("close wasm host: %w", err)
	}
	return nil
}

// Check reads, compiles and validates the module at path, then
// instantiates it in the sandbox, with memoryLimit (0: the default) and
// the default deadline, to ask its ABI version.
// Any problem is a *ModuleError that names it precisely.
func (h *Host) Check(ctx context.Context, path string, memoryLimit uint64) (*ModuleInfo, error) {
	return h.check(ctx, path, memoryLimit, false)
}

// CheckFile is the daemon's check of a module in its plugin_dir, as
// policy.Env.CheckPlugin wants it: Check, and the module must be safe to
// run unattended: only root or the daemon's user may own the module and
// its directory, neither may be writable by group or others, and the
// module must not be a symbolic link (see openInstalled), so that nobody
// else can change what the daemon runs.
func (h *Host) CheckFile(path string, memoryLimit uint64) error {
	_, err := h.check(context.Background(), path, memoryLimit, true)
	return err
}

func (h *Host) check(ctx context.Context, path string, memoryLimit uint64, installed bool) (*ModuleInfo, error) {
	if memoryLimit == 0 {
		memoryLimit = DefaultMemoryLimit
	}
	checked := func(sum string) (ModuleInfo, bool) {
		h.mu.Lock()
		defer h.mu.Unlock()
		info, ok := h.checked[checkKey{sum: sum, limit: memoryLimit}]
		return info, ok
	}
	bin, sum, err := h.readModule(path, installed, func(sum string) bool {
		_, ok := checked(sum)
		return ok
	})
	if err != nil {
		return nil, &ModuleError{Plugin: name(path), Err: err}
	}
	if known, ok := checked(sum); ok {
		known.Path = path
		return &known, nil
	}
	if bin == nil { // forgotten since readModule asked: read it after all
		if bin, sum, err = h.readModule(path, installed, nil); err != nil {
			return nil, &ModuleError{Plugin: name(path), Err: err}
		}
	}
	key := checkKey{sum: sum, limit: memoryLimit}
	m, err := h.acquireBytes(ctx, name(path), bin, sum, "")
	if err != nil {
		return nil, err
	}
	defer h.release(m)
	info := m.info
	info.Path = path
	if err := checkMemory(&info, memoryLimit); err != nil {
		return nil, err
	}
	// The call's context carries the deadline: the host's sleeps end at
	// it too, not only the guest's code.
	ctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	defer cancel()
	c := newCall(ctx, name(path), h.log.With().Str("plugin", name(path)).Logger(), nil, nil, nil, DefaultTimeout)
	inst, err := h.instantiate(ctx, m, c, memoryLimit)
	c.flush()
	if err != nil {
		return nil, err
	}
	inst.close()
	info.ABIVersion = ABIVersion
	info.Stateless = inst.stateless
	h.mu.Lock()
	if len(h.checked) >= maxChecked {
		clear(h.checked)
	}
	h.checked[key] = info
	h.mu.Unlock()
	return &info, nil
}

// checkKey is a module's content and the memory limit it was checked
// with: what decides the outcome of a check, whatever the module's path.
type checkKey struct {
	sum   string // hex
	limit uint64
}

// maxChecked bounds the checks remembered: past it, the memory starts
// over, and a module is instantiated again at its next check.
const maxChecked = 1024

// acquire returns the compiled module at path, compiling and validating
// it unless a module of the same content is already compiled. want, when
// set, is the hex sha256 the module must have; installed checks the
// module and its directory (see CheckFile). Release it when done.
func (h *Host) acquire(ctx context.Context, path, want string, installed bool) (*module, error) {
	compiled := func(sum string) bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		_, ok := h.modules[sum]
		return ok
	}
	bin, sum, err := h.readModule(path, installed, compiled)
	if err != nil {
		return nil, &ModuleError{Plugin: name(path), Err: err}
	}
	m, err := h.acquireBytes(ctx, name(path), bin, sum, want)
	if errors.Is(err, errNeedBytes) { // released since readModule asked: read it after all
		if bin, sum, err = h.readModule(path, installed, nil); err != nil {
			return nil, &ModuleError{Plugin: name(path), Err: err}
		}
		m, err = h.acquireBytes(ctx, name(path), bin, sum, want)
	}
	return m, err
}

// errNeedBytes: acquireBytes has no module of the sum and was given no
// content to compile.
var errNeedBytes = errors.New("module not compiled, and not read")

// acquireBytes is acquire of the module bin, read from the file of
// plugin, whose sha256 is hexSum; bin is nil when readModule knew the
// content's sum without reading it.
func (h *Host) acquireBytes(ctx context.Context, plugin string, bin []byte, hexSum, want string) (*module, error) {
	if want != "" && !strings.EqualFold(want, hexSum) {
		return nil, &ModuleError{Plugin: plugin, Err: fmt.Errorf("sha256 is %s, the policy pins %s", hexSum, want)}
	}

	h.mu.Lock()
	m, ok := h.modules[hexSum]
	if !ok && bin == nil {
		h.mu.Unlock()
		return nil, errNeedBytes
	}
	if !ok {
		m = &module{sum: hexSum, ready: make(chan struct{})}
		h.modules[hexSum] = m
	}
	m.refs++
	h.mu.Unlock()

	if !ok {
		// Compiled off the caller's context: others may be waiting for it,
		// and an abandoned compilation would leave them an error.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), compileTimeout)
		began := time.Now()
		m.compiled, m.info, m.err = h.compile(cctx, plugin, bin)
		cancel()
		if m.err == nil {
			h.log.Debug().Str("plugin", plugin).Str("sha256", hexSum).Dur("took", time.Since(began)).Msg("plugin module compiled")
		}
		m.info.SHA256, m.info.Size = hexSum, len(bin)
		close(m.ready)
	}
	select {
	case <-m.ready:
	case <-ctx.Done():
		h.release(m)
		return nil, fmt.Errorf("wait for compilation of plugin %s: %w", plugin, ctx.Err())
	}
	if m.err != nil {
		h.release(m)
		return nil, m.err
	}
	return m, nil
}

// release drops a reference to m, closing it with the last one.
func (h *Host) release(m *module) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if m.refs--; m.refs > 0 {
		return
	}
	if h.modules[m.sum] == m {
		delete(h.modules, m.sum)
	}
	if m.compiled != nil {
		_ = m.compiled.Close(context.Background())
	}
}

// readModule reads the module file at path: a regular file of at most
// policy.MaxModuleBytes, and when installed one that only root or the
// daemon's user may change (see openInstalled and checkOwner). It
// returns its content and its hex sha256; or only the sum, without
// reading the file, when the file is unchanged since a read (see
// fileID) and known(sum) says the content is not needed.
func (h *Host) readModule(path string, installed bool, known func(sum string) bool) ([]byte, string, error) {
	f, err := openModule(path, installed)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	// Checked on the file opened, which is the file read.
	st, err := f.Stat()
	if err != nil {
		return nil, "", fmt.Errorf("read module: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, "", fmt.Errorf("read module %s: not a regular file (mode %s)", path, st.Mode())
	}
	if installed {
		if err := checkOwner("module", path, st); err != nil {
			return nil, "", err
		}
	}
	tooLarge := fmt.Errorf("read module: larger than %d MiB", policy.MaxModuleBytes>>20)
	if st.Size() > policy.MaxModuleBytes {
		return nil, "", tooLarge
	}
	id, identified := identify(st)
	if identified && known != nil {
		h.mu.Lock()
		sum, ok := h.sums[id]
		h.mu.Unlock()
		if ok && known(sum) {
			return nil, sum, nil
		}
	}
	bin, err := io.ReadAll(io.LimitReader(f, policy.MaxModuleBytes+1))
	if err != nil {
		return nil, "", fmt.Errorf("read module: %w", err)
	}
	if len(bin) > policy.MaxModuleBytes {
		return nil, "", tooLarge
	}
	raw := sha256.Sum256(bin)
	sum := hex.EncodeToString(raw[:])
	if identified {
		h.mu.Lock()
		if len(h.sums) >= maxChecked {
			clear(h.sums)
		}
		h.sums[id] = sum
		h.mu.Unlock()
	}
	return bin, sum, nil
}

// moduleFlags open a module. O_NONBLOCK: opening a FIFO for reading would
// wait for a writer. A regular file ignores it.
const moduleFlags = os.O_RDONLY | syscall.O_NONBLOCK | syscall.O_NOCTTY

func openModule(path string, installed bool) (*os.File, error) {
	if installed {
		return openInstalled(path)
	}
	f, err := os.OpenFile(path, moduleFlags, 0)
	if err != nil {
		return nil, fmt.Errorf("read module: %w", err)
	}
	return f, nil
}

// openInstalled opens the module at path in its directory, plugin_dir,
// once that directory (as opened) passes checkOwner. A module that is a
// symbolic link is refused: what the daemon runs would then depend on
// the directory the link leads to, and on every directory above it, none
// of which the daemon checks; a module is installed by copying it into
// plugin_dir. (plugin_dir itself may be a link: the daemon config names
// it, and the directory it leads to is the one checked.)
func openInstalled(path string) (*os.File, error) {
	dir, base := filepath.Dir(path), filepath.Base(path)
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("read module: open plugin_dir: %w", err)
	}
	defer root.Close()
	st, err := root.Stat(".")
	if err != nil {
		return nil, fmt.Errorf("read module: check plugin_dir: %w", err)
	}
	if err := checkOwner("plugin_dir", dir, st); err != nil {
		return nil, err
	}
	link, err := root.Lstat(base)
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w", path, pathless(err))
	}
	if link.Mode()&fs.ModeSymlink != 0 {
		return nil, fmt.Errorf("module %s is a symbolic link: copy the module itself into plugin_dir", path)
	}
	f, err := root.OpenFile(base, moduleFlags, 0)
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w", path, pathless(err))
	}
	// The entry may have been replaced by a link since Lstat.
	if st, err := f.Stat(); err != nil || !os.SameFile(link, st) {
		f.Close()
		return nil, fmt.Errorf("module %s changed while it was opened", path)
	}
	return f, nil
}

// pathless is err without the path that a *fs.PathError names: an
// os.Root's errors name the path inside it only.
func pathless(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

// othersWrite are the mode bits that let users other than the owner (and
// root) write a file or a directory's entries.
const othersWrite = 0o022

// checkOwner refuses a module, or plugin_dir, (what, at path, as st
// describes it) that anyone but root and the daemon's user may change:
// one that group or others may write, or whose owner is another user,
// who could write it whatever its mode. Any of them could change the code
// that the daemon runs.
func checkOwner(what, path string, st fs.FileInfo) error {
	if st.Mode().Perm()&othersWrite != 0 {
		return fmt.Errorf("%s %s has mode %04o: writable by group or others (chmod go-w it)", what, path, st.Mode().Perm())
	}
	uid, ok := owner(st)
	switch {
	case !ok:
		return fmt.Errorf("%s %s: its owner cannot be told on this system", what, path)
	case uid != 0 && int64(uid) != int64(os.Geteuid()):
		return fmt.Errorf("%s %s is owned by uid %d: only root or the daemon's user (uid %d) may own it (chown root it)",
			what, path, uid, os.Geteuid())
	}
	return nil
}

// maxUnpinned bounds the modules remembered by warnUnpinned: past it,
// the memory starts over, and a module may be warned about again.
const maxUnpinned = 1024

// warnUnpinned says, once per module path and content, that an installed
// module runs without a pinned sha256, and which sum pins it: without a
// pin, whoever can write the module changes what the daemon runs, unseen.
func (h *Host) warnUnpinned(path, sum string) {
	key := path + "\x00" + sum
	h.mu.Lock()
	seen := h.unpinned[key]
	if !seen {
		if len(h.unpinned) >= maxUnpinned {
			clear(h.unpinned)
		}
		h.unpinned[key] = true
	}
	h.mu.Unlock()
	if !seen {
		h.log.Warn().Str("module", path).Str("sha256", sum).
			Msg("plugin module not pinned: set wasm.sha256 to this sha256 in the policies that run it")
	}
}

// compile compiles bin and validates it against ABI v1.
func (h *Host) compile(ctx context.Context, plugin string, bin []byte) (wazero.CompiledModule, ModuleInfo, error) {
	var info ModuleInfo
	cm, err := h.runtime.CompileModule(ctx, bin)
	if err != nil {
		return nil, info, &ModuleError{Plugin: plugin, Err: fmt.Errorf("compile: %w", err)}
	}
	info = describe(cm)
	if problems := h.validate(cm); len(problems) > 0 {
		_ = cm.Close(ctx)
		return nil, info, &ModuleError{Plugin: plugin, Err: errors.New(strings.Join(problems, "; "))}
	}
	return cm, info, nil
}

func describe(cm wazero.CompiledModule) ModuleInfo {
	var info ModuleInfo
	for _, f := range cm.ImportedFunctions() {
		mod, n, _ := f.Import()
		info.Imports = append(info.Imports, mod+"."+n)
	}
	for n := range cm.ExportedFunctions() {
		info.Exports = append(info.Exports, n)
	}
	// A module may import a function twice (Go does fd_write).
	slices.Sort(info.Imports)
	info.Imports = slices.Compact(info.Imports)
	slices.Sort(info.Exports)
	_, info.Initialize = cm.ExportedFunctions()["_initialize"]
	if mem, ok := cm.ExportedMemories()[memoryExport]; ok {
		info.MemoryMin = uint64(mem.Min()) * pageSize
		if max, encoded := mem.Max(); encoded {
			info.MemoryMax = uint64(max) * pageSize
		}
	}
	return info
}

// The guest's exports (ABI v1) and their signatures.
const (
	memoryExport  = "memory"
	versionExport = "polar_abi_version"
	allocExport   = "polar_alloc"
	observeExport = "polar_observe"
	initExport    = "_initialize"
	// statelessExport is optional: () -> i32, 1 when any instance may
	// serve any observer of a policy (pool.go).
	statelessExport = "polar_stateless"
)

var (
	i32      = api.ValueTypeI32
	required = []struct {
		name            string
		params, results []api.ValueType
	}{
		{versionExport, nil, []api.ValueType{i32}},
		{allocExport, []api.ValueType{i32}, []api.ValueType{i32}},
		{observeExport, []api.ValueType{i32, i32}, []api.ValueType{i32}},
	}
)

// validate lists what makes cm not an ABI v1 plugin.
func (h *Host) validate(cm wazero.CompiledModule) []string {
	var problems []string
	exports := cm.ExportedFunctions()
	for _, want := range required {
		f, ok := exports[want.name]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("does not export %s %s", want.name, signature(want.params, want.results)))
		case !sameSignature(f, want.params, want.results):
			problems = append(problems, fmt.Sprintf("exports %s as %s, ABI v1 wants %s",
				want.name, signature(f.ParamTypes(), f.ResultTypes()), signature(want.params, want.results)))
		}
	}
	if f, ok := exports[statelessExport]; ok && !sameSignature(f, nil, []api.ValueType{i32}) {
		problems = append(problems, fmt.Sprintf("exports %s as %s, ABI v1 wants () -> i32", statelessExport, signature(f.ParamTypes(), f.ResultTypes())))
	}
	if f, ok := exports[initExport]; ok && !sameSignature(f, nil, nil) {
		problems = append(problems, fmt.Sprintf("exports %s as %s, WASI wants () -> ()", initExport, signature(f.ParamTypes(), f.ResultTypes())))
	}
	if _, ok := exports["_start"]; ok {
		problems = append(problems, "is a WASI command (exports _start): build it as a reactor (Go: -buildmode=c-shared)")
	}
	if _, ok := cm.ExportedMemories()[memoryExport]; !ok {
		problems = append(problems, `does not export its memory as "memory"`)
	}
	for _, m := range cm.ImportedMemories() {
		mod, n, _ := m.Import()
		problems = append(problems, fmt.Sprintf("imports memory %q.%q, the host offers none", mod, n))
	}
	for _, f := range cm.ImportedFunctions() {
		mod, n, _ := f.Import()
		offered, ok := h.offers[mod][n]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("imports %q.%q, which the host does not offer", mod, n))
		case !sameSignature(f, offered.ParamTypes(), offered.ResultTypes()):
			problems = append(problems, fmt.Sprintf("imports %q.%q as %s, the host offers %s", mod, n,
				signature(f.ParamTypes(), f.ResultTypes()), signature(offered.ParamTypes(), offered.ResultTypes())))
		}
	}
	return problems
}

func sameSignature(f api.FunctionDefinition, params, results []api.ValueType) bool {
	return slices.Equal(f.ParamTypes(), params) && slices.Equal(f.ResultTypes(), results)
}

// signature formats a function type as "(i32, i32) -> i32".
func signature(params, results []api.ValueType) string {
	names := func(ts []api.ValueType) string {
		s := make([]string, len(ts))
		for i, t := range ts {
			s[i] = api.ValueTypeName(t)
		}
		return strings.Join(s, ", ")
	}
	r := names(results)
	if len(results) != 1 {
		r = "(" + r + ")"
	}
	return "(" + names(params) + ") -> " + r
}

// checkMemory refuses a module whose initial memory is over limit, which
// could never be instantiated.
func checkMemory(info *ModuleInfo, limit uint64) error {
	if info.MemoryMin > limit {
		return &ModuleError{Plugin: name(info.Path), Err: fmt.Errorf("needs %d KiB of memory to start, over its limit of %d KiB",
			info.MemoryMin>>10, limit>>10)}
	}
	return nil
}

// name is how errors and logs name a plugin: its file name.
func name(path string) string { return filepath.Base(path) }
