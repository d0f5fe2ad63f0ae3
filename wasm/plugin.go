package wasm

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/polar/observerd/messages"
)

// Target is what a plugin observes: the policy's target.
type Target struct {
	Name string
	URL  string // absolute http(s) url; empty: http_request refuses every url
}

// PluginSpec is one plugin observer.
type PluginSpec struct {
	Path   string // the module file
	SHA256 string // hex; when set, the module must match it
	// Observer is the observer's name, passed in ObserveRequest.observer.
	Observer string
	Target   Target
	// ConfigJSON is the observer's wasm.config, passed as is in
	// ObserveRequest.config_json.
	ConfigJSON []byte
	// MemoryLimit caps the instance's linear memory, in bytes (wasm grows
	// it in 64 KiB pages); 0 means DefaultMemoryLimit.
	MemoryLimit uint64
	// Timeout is the deadline of one call; 0 means DefaultTimeout. The
	// context given to Observe may end it sooner.
	Timeout time.Duration
	// HTTP performs http_request within the policy's limits; nil refuses
	// every request.
	HTTP HTTPDoer
	// MaxBodyBytes caps a response body read by http_request (the
	// daemon's limits.max_response_bytes); 0, or more than MaxBodyBytes,
	// means MaxBodyBytes.
	MaxBodyBytes int64
	// Installed marks a module of the daemon's plugin_dir, which the
	// daemon will run unattended: only root or the daemon's user may
	// change it or its directory (see Host.CheckFile), and a module the
	// spec does not pin by SHA256 is warned about once per content.
	Installed bool
	// Log receives the plugin's log, stdout and stderr, and the host's
	// messages about it.
	Log zerolog.Logger
	// Share, when set, lets the plugin share instances with the other
	// plugins of the same Share, module and memory limit, if the module
	// is stateless (polar_stateless returns 1; see pool.go). The daemon
	// sets it to the policy's name and revision, so that no instance ever
	// serves two policies. Empty: the plugin has an instance of its own.
	Share string
}

// Plugin is one plugin observer: a compiled module, at most one warm
// instance of it, and the state the plugin saved with set_state. The
// observer actor keeps its Plugin for its whole life, so that the state
// survives instance restarts (after a trap, a timeout or a limit hit);
// the state lives in memory only, and a Plugin made anew starts without.
// Calls are serialised. A Plugin is safe for concurrent use.
type Plugin struct {
	host    *Host
	mod     *module
	spec    PluginSpec
	name    string
	target  *url.URL
	limit   uint64
	timeout time.Duration
	maxBody int
	log     zerolog.Logger

	// pool is where the plugin takes and returns instances of a
	// stateless module; nil without spec.Share.
	pool *pool

	mu     sync.Mutex
	inst   *instance // nil until the next call takes or makes one
	state  []byte
	closed bool
}

// instance is one instance of a plugin's module.
type instance struct {
	mod     api.Module
	mem     *linearMemory
	alloc   api.Function
	observe api.Function
	call    *call // the call running, nil between calls
	// stateless is what polar_stateless returned: the instance may serve
	// the calls of the plugins of a pool.
	stateless bool
}

// NewPlugin compiles (or reuses) and validates the module of spec. The
// first Observe instantiates it. A module that cannot run is a
// *ModuleError.
func (h *Host) NewPlugin(ctx context.Context, spec PluginSpec) (*Plugin, error) {
	p := &Plugin{
		host:    h,
		spec:    spec,
		name:    name(spec.Path),
		limit:   cmp.Or(spec.MemoryLimit, DefaultMemoryLimit),
		timeout: cmp.Or(spec.Timeout, DefaultTimeout),
		maxBody: MaxBodyBytes,
	}
	if spec.MaxBodyBytes > 0 && spec.MaxBodyBytes < MaxBodyBytes {
		p.maxBody = int(spec.MaxBodyBytes)
	}
	p.log = spec.Log.With().Str("plugin", p.name).Logger()
	if p.limit > MaxMemoryLimit {
		return nil, fmt.Errorf("new plugin %s: memory limit %d MiB over %d MiB", p.name, p.limit>>20, MaxMemoryLimit>>20)
	}
	if spec.Target.URL != "" {
		u, err := url.Parse(spec.Target.URL)
		if err != nil || !u.IsAbs() || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("new plugin %s: %q: %w", p.name, spec.Target.URL, errNoTarget)
		}
		p.target = u
	}
	m, err := h.acquire(ctx, spec.Path, spec.SHA256, spec.Installed)
	if err != nil {
		return nil, err
	}
	if spec.Installed && spec.SHA256 == "" {
		h.warnUnpinned(spec.Path, m.sum)
	}
	info := m.info
	info.Path = spec.Path
	if err := checkMemory(&info, p.limit); err != nil {
		h.release(m)
		return nil, err
	}
	p.mod = m
	if spec.Share != "" {
		p.pool = h.joinPool(poolKey{sum: m.sum, share: spec.Share, limit: p.limit})
		h.mu.Lock()
		if h.checked[checkKey{sum: m.sum, limit: p.limit}].Stateless {
			p.pool.stateless.Store(true)
		}
		h.mu.Unlock()
	}
	return p, nil
}

// Observe runs one call of the plugin: polar_observe with an
// ObserveRequest whose time is now, in the warm instance or a fresh one.
// It returns the observations the plugin emitted. On error (a
// *CallError, or a *ModuleError when a fresh instance reports another ABI
// version) it also returns those emitted before the failure; every
// failure but FailureGuest and FailureInvalidEmit discards the instance.
func (p *Plugin) Observe(ctx context.Context, now time.Time) ([]*messages.PluginObservation, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("observe with plugin %s: closed", p.name)
	}
	if p.pool != nil && p.pool.stateless.Load() {
		// The wait for an instance has a deadline of its own, the call's
		// timeout, and the call has its whole timeout once it has one: a
		// call that waited long and then ran out of time would discard a
		// healthy instance, and the next call would spend its own time
		// instantiating one, slower still under the load that made it wait.
		wctx, wcancel := context.WithTimeout(ctx, p.timeout)
		err := p.pool.enter(wctx)
		wcancel()
		if err != nil {
			f := FailureBusy
			if errors.Is(ctx.Err(), context.Canceled) {
				f = FailureCanceled
			}
			return nil, &CallError{Plugin: p.name, Failure: f, Detail: fmt.Sprintf("all %d instances its calls share stayed busy", maxBusy), Err: err}
		}
		defer p.pool.leave()
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	c := newCall(ctx, p.name, p.log, p.spec.HTTP, p.target, &p.state, p.timeout)
	c.maxBody = p.maxBody
	start := time.Now()
	err := p.run(ctx, c, now)
	p.host.metrics.calls.WithLabelValues(p.name, outcome(err)).Observe(time.Since(start).Seconds())
	if c.rejected > 0 {
		p.host.metrics.rejected.WithLabelValues(p.name).Add(float64(c.rejected))
	}
	c.flush()
	ce, ok := errors.AsType[*CallError](err)
	if ok {
		ce.Host, ce.GuestLog = c.refusal, c.guestError
	}
	switch {
	case err != nil && (!ok || !ce.Failure.keepsInstance()):
		p.discard()
	case p.pool != nil && p.inst != nil && p.inst.stateless:
		p.pool.stateless.Store(true)
		p.pool.put(p.inst)
		p.inst = nil
	}
	return c.obs, err
}

func (p *Plugin) run(ctx context.Context, c *call, now time.Time) error {
	if p.inst == nil && p.pool != nil {
		p.inst = p.pool.get()
	}
	if p.inst == nil {
		inst, err := p.host.instantiate(ctx, p.mod, c, p.limit)
		if err != nil {
			return err
		}
		p.inst = inst
	}
	inst := p.inst
	req, err := proto.Marshal(&messages.ObserveRequest{
		Observer:   p.spec.Observer,
		Target:     &messages.Target{Name: p.spec.Target.Name, Url: p.spec.Target.URL},
		ConfigJson: p.spec.ConfigJSON,
		Time:       timestamppb.New(now),
		State:      p.state,
	})
	if err != nil {
		return fmt.Errorf("encode observe request: %w", err)
	}
	ptr, err := inst.invoke(ctx, c, inst.alloc, uint64(len(req)))
	if err != nil {
		return err
	}
	if ptr == 0 || !inst.mod.Memory().Write(uint32(ptr), req) {
		return &CallError{Plugin: c.plugin, Failure: FailureABI,
			Detail: fmt.Sprintf("polar_alloc(%d) returned %#x, not a buffer in its memory", len(req), uint32(ptr))}
	}
	rc, err := inst.invoke(ctx, c, inst.observe, ptr, uint64(len(req)))
	switch {
	case err != nil:
		return err
	case ctx.Err() != nil || inst.mod.IsClosed():
		// The deadline closed the module as the guest returned: the
		// call ran out of time, and the instance must not be reused.
		return &CallError{Plugin: c.plugin, Failure: FailureTimeout, Detail: "returned at its deadline", Err: ctx.Err()}
	case c.limit != nil:
		return c.limit
	case inst.mem.hitLimit():
		// The guest survived a refused grow; it is at its limit all the same.
		return &CallError{Plugin: c.plugin, Failure: FailureMemory, Detail: fmt.Sprintf("grew its memory past its limit of %d KiB", inst.mem.limit>>10)}
	case int32(rc) != 0:
		return &CallError{Plugin: c.plugin, Failure: FailureGuest, Detail: fmt.Sprintf("polar_observe returned %d", int32(rc))}
	case c.rejected > 0:
		return &CallError{Plugin: c.plugin, Failure: FailureInvalidEmit, Detail: fmt.Sprintf("%d of %d records rejected", c.rejected, c.emits)}
	}
	return nil
}

// discard closes the instance, if any: the next call gets a fresh one.
func (p *Plugin) discard() {
	if p.inst != nil {
		p.inst.close()
		p.inst = nil
	}
}

// Close closes the plugin's instance and releases its module.
func (p *Plugin) Close(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	p.discard()
	if p.pool != nil {
		p.host.leavePool(p.pool)
	}
	p.host.release(p.mod)
	return nil
}

// instantiate makes a fresh instance of m in the sandbox (no filesystem,
// args or environment; stdout and stderr to the call's log; clocks and
// random from the host; memory limited to limit bytes), calls
// _initialize, and checks its ABI version.
func (h *Host) instantiate(ctx context.Context, m *module, c *call, limit uint64) (*instance, error) {
	inst := &instance{}
	cfg := wazero.NewModuleConfig().
		WithName(""). // anonymous: a module may have many instances
		WithStartFunctions().
		WithStdout(output{inst: inst}).
		WithStderr(output{inst: inst, stderr: true}).
		WithSysWalltime().
		WithSysNanotime().
		WithNanosleep(inst.sleep).
		WithRandSource(rand.Reader)
	mod, err := instantiateModule(experimental.WithMemoryAllocator(ctx, allocator(limit, &inst.mem)), h.runtime, m.compiled, cfg)
	if err != nil && inst.mem != nil {
		// wazero does not free a memory it built for an instance that
		// failed to start: the reservation would leak.
		inst.mem.Free()
	}
	if errors.Is(err, errReserve) {
		return nil, &CallError{Plugin: c.plugin, Failure: FailureMemory, Detail: err.Error(), Err: err}
	}
	if err != nil {
		return nil, &ModuleError{Plugin: c.plugin, Err: err}
	}
	inst.mod = mod
	inst.alloc = mod.ExportedFunction(allocExport)
	inst.observe = mod.ExportedFunction(observeExport)
	if init := mod.ExportedFunction(initExport); init != nil {
		if _, err := inst.invoke(ctx, c, init); err != nil {
			inst.close()
			return nil, err
		}
	}
	v, err := inst.invoke(ctx, c, mod.ExportedFunction(versionExport))
	if err != nil {
		inst.close()
		return nil, err
	}
	if int32(v) != ABIVersion {
		inst.close()
		return nil, &ModuleError{Plugin: c.plugin, Err: fmt.Errorf("%s() returned %d, the host speaks ABI %d", versionExport, int32(v), ABIVersion)}
	}
	if f := mod.ExportedFunction(statelessExport); f != nil {
		v, err := inst.invoke(ctx, c, f)
		if err != nil {
			inst.close()
			return nil, err
		}
		inst.stateless = int32(v) == 1
	}
	return inst, nil
}

var errReserve = errors.New("reserve memory")

// instantiateModule instantiates, turning the panic wazero raises when
// the allocator cannot provide the initial memory (the address space
// reservation failed) into an error.
func instantiateModule(ctx context.Context, r wazero.Runtime, cm wazero.CompiledModule, cfg wazero.ModuleConfig) (mod api.Module, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("instantiate: %w: %v", errReserve, v)
		}
	}()
	mod, err = r.InstantiateModule(ctx, cm, cfg)
	if err != nil {
		err = fmt.Errorf("instantiate: %w", err)
	}
	return mod, err
}

// invoke calls fn of the instance in call c and returns its first result.
func (i *instance) invoke(ctx context.Context, c *call, fn api.Function, params ...uint64) (uint64, error) {
	i.call = c
	i.mem.enter()
	defer func() {
		i.mem.leave()
		i.call = nil
	}()
	res, err := fn.Call(context.WithValue(ctx, callKey{}, c), params...)
	if err != nil {
		return 0, i.failure(c, err)
	}
	if len(res) == 0 {
		return 0, nil
	}
	return res[0], nil
}

// failure says why a call into the instance failed.
func (i *instance) failure(c *call, err error) *CallError {
	e := &CallError{Plugin: c.plugin, Failure: FailureTrap, Err: err}
	var exit *sys.ExitError
	var abi *abiViolation
	isExit := errors.As(err, &exit)
	switch {
	case isExit && exit.ExitCode() == sys.ExitCodeDeadlineExceeded:
		e.Failure, e.Detail = FailureTimeout, fmt.Sprintf("stopped at its deadline (timeout %s)", c.timeout)
	case isExit && exit.ExitCode() == sys.ExitCodeContextCanceled:
		e.Failure, e.Detail = FailureCanceled, "the call was canceled"
	case i.mem.hitLimit():
		e.Failure, e.Detail = FailureMemory, fmt.Sprintf("grew its memory past its limit of %d KiB", i.mem.limit>>10)
	case errors.As(err, &abi):
		e.Failure, e.Detail = FailureABI, abi.msg
	case isExit:
		e.Detail = fmt.Sprintf("exited with code %d", exit.ExitCode())
	default:
		e.Detail, _, _ = strings.Cut(err.Error(), "\n")
	}
	if line := c.stderrLine(); line != "" && e.Failure == FailureTrap {
		e.Detail += " (stderr: " + line + ")"
	}
	return e
}

// sleep is the instance's WASI nanosleep: it ends early at the call's
// deadline, so that a sleeping guest cannot outlive it.
func (i *instance) sleep(ns int64) {
	t := time.NewTimer(time.Duration(ns))
	defer t.Stop()
	select {
	case <-t.C:
	case <-i.call.ctx.Done():
	}
}

func (i *instance) close() {
	_ = i.mod.Close(context.Background())
}
