// Package wasm is the plugin host: it runs plugin observers compiled to
// WebAssembly (WASI preview 1 reactors speaking ABI v1, see ABI.md) in a
// wazero sandbox, so that no plugin, however broken or hostile, can hurt
// the daemon, the other observers or the host.
//
// A Host owns the runtime and the compiled modules; Host.Check validates a
// module (for policy validation and `observerctl plugin check`); a Plugin
// is one plugin observer, whose Observe runs one call:
//
//	h, err := wasm.NewHost(ctx, wasm.HostOptions{CacheDir: stateDir + "/wasm-cache", Log: log})
//	p, err := h.NewPlugin(ctx, wasm.PluginSpec{Path: path, Observer: "backlog", Target: target, HTTP: shared})
//	obs, err := p.Observe(ctx, time.Now()) // err: *wasm.CallError says which failure
//
// The observer actor keeps its Plugin for its life: the instance stays
// warm across calls, is replaced after any trap, timeout or limit hit, and
// the plugin's state (set_state) survives the replacement.
//
// # Why one runtime, with memory limited per instance by an allocator?
//
// wazero's memory limit (RuntimeConfig.WithMemoryLimitPages) is per
// runtime, so per-policy limits would need one runtime per distinct limit
// (sharing one CompilationCache, whose engine shares the compiled code).
// But a grow refused by the runtime is invisible to the host: a Go guest
// then dies with "fatal error: out of memory" and exit code 2, which looks
// like any other trap, and the supervisor could not say "memory limit".
// Instead there is one runtime (limit 4 GiB, what wasm32 addresses) and
// each instance gets its memory from an experimental.MemoryAllocator
// (memory.go) that enforces the plugin's limit and remembers a refusal, so
// the failure is FailureMemory. The allocator reserves the whole limit
// with an anonymous mapping: growing never copies (wazero's default
// appends to a Go slice, briefly holding old and new), resident memory is
// only what the guest touched, and a discarded instance returns it to the
// OS at once rather than at the next GC. The price is an experimental API,
// pinned with the wazero version.
//
// # Why close-on-context-done, and what does it cost?
//
// It is the only way wazero stops guest code that never returns (an
// infinite loop): with it, compiled code checks whether its module was
// closed at every loop header, and the context's deadline closes it. In
// wazero v1.12.0 (pinned; the latest release) that check is a call from
// the guest into Go at every loop back-edge
// (internal/engine/wazevo/frontend/lower.go), which is the large slowdown
// reported in wazero/wazero#2466 (10-20x on loop-heavy guests, and Go
// guests are loop-heavy). The fixes proposed (#2524 and #2525 closed,
// #2533 open: an inline check of the closed flag) are not in a release, so
// the pinned version still pays it. Measured with bench_test.go on the
// development machine (AMD EPYC, 2 CPUs, Go 1.26, go test -bench . -count 3):
//
//	                                  with       without
//	empty observe (warm instance)     ~5.1 µs    ~1.7 µs   (+3.4 µs, ~3x)
//	100k-iteration guest loop         ~3.2 ms    ~0.28 ms  (~11x, ~28 ns per iteration)
//	instantiate a Go plugin           ~4 ms      ~4 ms     (no measurable difference)
//
// For an observer that runs every few seconds and spends microseconds to a
// few milliseconds per call, the cost is irrelevant next to the guarantee
// that a deadline is a deadline; a plugin doing heavy computation pays
// ~10x and should keep its loops short. Revisit when a wazero release
// includes the inline check: bench_test.go measures the difference in one
// run.
//
// # Why share the instances of a stateless module?
//
// A warm instance of a Go plugin holds about 3.4 MiB, most of it the Go
// runtime's heap and stacks, whatever the plugin does: a thousand
// observers of one plugin would hold 3.4 GiB. A module that declares
// itself stateless (polar_stateless) keeps nothing between calls but
// caches, so the observers of one policy take turns in a pool of
// instances (pool.go), as many as run calls at once. The pool is per
// policy revision, so an instance never carries one policy's data into
// another's call; the state (set_state) is the observer's, passed in
// every request; a failed call discards its instance as ever. At most 16
// calls of a pool hold an instance at once, so that a burst (the daemon's
// start, every observer's first turn within a second) makes 16 instances
// and waits for them, rather than as many as the burst; a call that
// waits past its deadline fails as FailureBusy, the daemon's congestion
// rather than the plugin's fault.
//
// # Why does the host follow redirects itself?
//
// A redirect must be checked at every hop against the target and
// allowed_targets. The host cannot rely on the caller's client to do it,
// so HTTPDoer.Do makes one round trip (it never follows redirects) and the
// host follows them (http.go), each hop a request of its own through the
// policy's rate and concurrency limits.
//
// # Why does a limit hit fail the call?
//
// The guest is told (-2, -3, -1 from set_state) so that a careful plugin
// can stop early, but a plugin that reaches a cap is misbehaving: the call
// fails with a typed CallError naming the limit, and the instance is
// discarded like after a trap, so that the supervisor's backoff and
// quarantine apply. Only output over the log cap is not a failure: it is
// cut and counted.
//
// # Why is the state saved at set_state, not at the end of the call?
//
// set_state is the plugin's own commit point: a plugin that saves and then
// traps or times out finds its state on the next call, in a fresh
// instance. Saving only on success would make a plugin that fails in a
// loop start from scratch forever.
//
// # Why a real, bounded sleep?
//
// wazero's default nanosleep returns at once, which turns a Go guest's
// time.Sleep into a busy loop; the host's sleeps for real but ends at the
// call's deadline, because close-on-context-done cannot interrupt a host
// function.
package wasm
