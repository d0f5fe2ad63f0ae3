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
)

var failureNames = map[Failure]string{
	FailureGuest:      "guest error",
	FailureTrap:       "trap",
	FailureTimeout:    "timeout",
	FailureCanceled:   "canceled",
	FailureMemory:     "memory limit",
	FailureEmitLimit:  "emit limit",
	FailureHTTPLimit:  "http limit",
	FailureStateLimit: "state limit",
	FailureABI:        "abi violation",
}

func (f Failure) String() string {
	if s, ok := failureNames[f]; ok {
		return s
	}
	return fmt.Sprintf("failure(%d)", int(f))
}

// CallError is a failed plugin call. Every failure but FailureGuest
// discarded the instance: the next call gets a fresh one.
type CallError struct {
	Plugin  string  // the module's file name
	Failure Failure // why
	Detail  string  // what happened, one line
	Err     error   // the underlying error (e.g. wazero's, with the wasm stack trace), may be nil
}

func (e *CallError) Error() string {
	return fmt.Sprintf("plugin %s: %s: %s", e.Plugin, e.Failure, e.Detail)
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
