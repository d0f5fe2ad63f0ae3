package wasm

import "fmt"

// Failure is why a plugin call failed. The supervisor reports it in
// observer.failed, and can tell a plugin that is slow (FailureTimeout)
// from one that is broken (FailureTrap) or abusive (the limits).
type Failure int

const (
	// FailureGuest: polar_observe returned non-zero. The instance is
	// healthy and kept warm.
	FailureGuest Failure = iota + 1
	// FailureTrap: the guest trapped (unreachable, out-of-bounds access,
	// a Go panic) or exited (proc_exit) during the call.
	FailureTrap
	// FailureTimeout: the call ran past its deadline and was stopped.
	FailureTimeout
	// FailureCanceled: the caller's context was canceled during the call
	// (the observer is stopping); the plugin is not at fault.
	FailureCanceled
	// FailureMemory: the guest asked for more memory than its limit.
	FailureMemory
	// FailureEmitLimit: the guest emitted more records or bytes in one
	// call than the host accepts.
	FailureEmitLimit
	// FailureHTTPLimit: the guest made more http_request calls in one call
	// than the host accepts.
	FailureHTTPLimit
	// FailureStateLimit: the guest passed set_state more than the state
	// cap.
	FailureStateLimit
	// FailureABI: the guest broke the ABI at run time: polar_alloc failed
	// or returned a buffer outside its memory, or it passed a host function
	// a pointer outside its memory.
	FailureABI
	// FailureInvalidEmit: the guest passed emit a record that is not a
	// valid PluginObservation, and otherwise returned 0. The instance is
	// healthy and kept warm.
	FailureInvalidEmit
	// FailureBusy: the instances that the plugin's calls share (a
	// stateless module, see pool.go) were all busy until the call's
	// deadline, and the guest never ran: the daemon is congested, the
	// plugin is not at fault.
	FailureBusy
)

var failureNames = map[Failure]string{
	FailureGuest:       "guest error",
	FailureTrap:        "trap",
	FailureTimeout:     "timeout",
	FailureCanceled:    "canceled",
	FailureMemory:      "memory limit",
	FailureEmitLimit:   "emit limit",
	FailureHTTPLimit:   "http limit",
	FailureStateLimit:  "state limit",
	FailureABI:         "abi violation",
	FailureInvalidEmit: "invalid emit",
	FailureBusy:        "busy",
}

func (f Failure) String() string {
	if s, ok := failureNames[f]; ok {
		return s
	}
	return fmt.Sprintf("failure(%d)", int(f))
}

// keepsInstance reports whether a call that failed so leaves its instance
// healthy: the guest ran to its end and returned.
func (f Failure) keepsInstance() bool { return f == FailureGuest || f == FailureInvalidEmit }

// CallError is a failed plugin call. Every failure but FailureGuest and
// FailureInvalidEmit discarded the instance: the next call gets a fresh
// one.
type CallError struct {
	Plugin  string  // the module's file name
	Failure Failure // why
	Detail  string  // what happened, one line
	// Host is the last thing a host function refused the guest in the
	// call, and why (a record emit rejected, a request refused), and
	// GuestLog the last line the guest logged at level error: what the
	// guest was told, and what it said of it. Either may be empty; both
	// are one line, their guest-chosen text clipped and escaped.
	Host     string
	GuestLog string
	Err      error // the underlying error (e.g. wazero's, with the wasm stack trace), may be nil
}

// Error is the failure on one line, bounded: the reason of its
// observer.failed event.
func (e *CallError) Error() string {
	s := fmt.Sprintf("plugin %s: %s: %s", e.Plugin, e.Failure, e.Detail)
	if e.Host != "" {
		s += "; host: " + e.Host
	}
	if e.GuestLog != "" {
		s += `; guest log: "` + e.GuestLog + `"`
	}
	return s
}

func (e *CallError) Unwrap() error { return e.Err }

// ModuleError is a module that cannot run at all: unreadable, not the
// pinned sha256, not valid WebAssembly, or not ABI v1 (an export missing
// or of the wrong type, an import the host does not offer, another ABI
// version, more initial memory than its limit). It is permanent: the
// policy referencing the module should be rejected, not retried.
type ModuleError struct {
	Plugin string // the module's file name
	Err    error
}

func (e *ModuleError) Error() string { return fmt.Sprintf("plugin %s: %v", e.Plugin, e.Err) }

func (e *ModuleError) Unwrap() error { return e.Err }

// abiViolation is what a host function panics with when the guest passes
// it memory outside its own: wazero turns the panic into a trap of the
// call, which Observe reports as FailureABI.
type abiViolation struct{ msg string }

func (v *abiViolation) Error() string { return v.msg }
