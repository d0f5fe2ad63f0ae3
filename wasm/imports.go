package wasm

import (
	"bytes"
	"context"
	"fmt"
	"regexp"

	"github.com/tetratelabs/wazero/api"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/messages"
)

// hostModule is the module name of the host functions.
const hostModule = "polar"

// hostFunc is one function of the "polar" host module.
type hostFunc struct {
	name            string
	fn              api.GoModuleFunc
	params, results []api.ValueType
	paramNames      []string
}

var hostFuncs = []hostFunc{
	{"emit", emit, []api.ValueType{i32, i32}, []api.ValueType{i32}, []string{"ptr", "len"}},
	{"log", logFn, []api.ValueType{i32, i32, i32}, nil, []string{"level", "ptr", "len"}},
	{"set_state", setState, []api.ValueType{i32, i32}, []api.ValueType{i32}, []string{"ptr", "len"}},
	{"http_request", httpRequest, []api.ValueType{i32, i32}, []api.ValueType{i32}, []string{"ptr", "len"}},
	{"http_response", httpResponse, []api.ValueType{i32, i32}, []api.ValueType{i32}, []string{"ptr", "len"}},
}

// Results of the host functions (ABI v1).
const (
	resultOK = 0
	// emit
	emitInvalid  = -1
	emitCount    = -2
	emitTooLarge = -3
	// set_state
	stateTooLarge = -1
	// http_request
	requestInvalid    = -1
	requestNotAllowed = -2
	requestCount      = -3
	requestFailed     = -4
	requestTimeout    = -5
	// http_response
	responseNone  = -1
	responseShort = -2
)

// typeSuffix is what a type_suffix may be: it ends the event type and the
// AMQP routing key, where anything else would be a wildcard, a separator
// or noise.
var typeSuffix = regexp.MustCompile(`^[a-z0-9_]{1,32}(\.[a-z0-9_]{1,32}){0,3}$`)

// emit is the WebAssembly function import "polar"."emit", which passes one
// observation of the current call to the host.
//
// # Parameters
//
//   - ptr: offset in the guest's memory of an encoded PluginObservation
//   - len: its length in bytes
//
// The host copies the record before returning; the guest may reuse the
// buffer at once.
//
// Result (i32)
//
// 0 when the record was accepted, or:
//   - -1: not a valid PluginObservation (not protobuf, a type_suffix other
//     than lower-case dotted words, a severity or result out of range);
//     dropped
//   - -2: the call already made MaxEmits (64) emit calls; dropped
//   - -3: the call's records would exceed MaxEmitBytes (1 MiB); dropped
//
// -2 and -3 fail the call (FailureEmitLimit) when it returns; -1 ends it
// as FailureInvalidEmit (the instance kept) unless it fails otherwise,
// with the reason in CallError.Host: an invalid record is a bug of the
// plugin's, which its author and operator must see. A buffer outside the
// guest's memory traps the call (FailureABI).
//
// For example, a 12-byte record at offset 1024:
//
//	           ptr=1024       len=12
//	              |<------------------->|
//	[]byte{ ..., 0x0a, 0x04, 'd', 'i', 's', 'k', 0x10, 0x02, ... }
//	              type_suffix "disk"     severity LOW
func emit(ctx context.Context, mod api.Module, stack []uint64) {
	c := callOf(ctx)
	ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	stack[0] = api.EncodeI32(c.emit(mod, ptr, n))
}

func (c *call) emit(mod api.Module, ptr, n uint32) int32 {
	if c.emits >= MaxEmits {
		c.hit(FailureEmitLimit, fmt.Sprintf("more than %d emit calls", MaxEmits))
		return emitCount
	}
	if uint64(c.emitBytes)+uint64(n) > MaxEmitBytes {
		c.hit(FailureEmitLimit, fmt.Sprintf("more than %d KiB emitted", MaxEmitBytes>>10))
		return emitTooLarge
	}
	b := read(mod, "emit", ptr, n)
	c.emits++
	c.emitBytes += int(n)
	// A copy: the record outlives the guest's buffer.
	obs, err := decodeObservation(bytes.Clone(b))
	if err != nil {
		c.rejected++
		c.refuse("emit: record rejected", err.Error())
		return emitInvalid
	}
	c.obs = append(c.obs, obs)
	return resultOK
}

// decodeObservation decodes a record a guest passed to emit and checks
// what the daemon relies on: a type_suffix that may end an event type and
// a routing key, a severity and a result that exist. The rest (subject,
// schema, labels, payload, error) is the plugin's, carried as is.
func decodeObservation(b []byte) (*messages.PluginObservation, error) {
	obs := &messages.PluginObservation{}
	if err := proto.Unmarshal(b, obs); err != nil {
		return nil, fmt.Errorf("not a PluginObservation: %w", err)
	}
	if obs.TypeSuffix != "" && !typeSuffix.MatchString(obs.TypeSuffix) {
		return nil, fmt.Errorf("type_suffix %q is not lower-case dotted words", clip(obs.TypeSuffix))
	}
	if _, ok := messages.Severity_name[int32(obs.Severity)]; !ok {
		return nil, fmt.Errorf("severity %d out of range", int32(obs.Severity))
	}
	if _, ok := messages.Result_name[int32(obs.Result)]; !ok {
		return nil, fmt.Errorf("result %d out of range", int32(obs.Result))
	}
	return obs, nil
}

// logFn is the WebAssembly function import "polar"."log", which logs a
// message of the guest's through the daemon's log, tagged with the
// plugin and observer.
//
// # Parameters
//
//   - level: 0 debug, 1 info, 2 warn, 3 error; any other value is info
//   - ptr: offset in the guest's memory of the message, UTF-8 (invalid
//     sequences are replaced)
//   - len: its length in bytes
//
// Nothing is returned. log, stdout and stderr share MaxLogBytes (64 KiB)
// per call; what exceeds it is dropped and counted in one warning. A
// buffer outside the guest's memory traps the call (FailureABI).
func logFn(ctx context.Context, mod api.Module, stack []uint64) {
	c := callOf(ctx)
	level, ptr, n := api.DecodeI32(stack[0]), api.DecodeU32(stack[1]), api.DecodeU32(stack[2])
	c.logText(level, read(mod, "log", ptr, n))
}

// setState is the WebAssembly function import "polar"."set_state", which
// saves the plugin's state: the host passes it back as
// ObserveRequest.state on every later call, of this instance or of a
// fresh one after a failure, until the next set_state.
//
// # Parameters
//
//   - ptr: offset in the guest's memory of the state, any bytes
//   - len: its length in bytes; 0 clears the state
//
// The host copies the state before returning; it is saved at once, even
// if the call fails later.
//
// Result (i32)
//
// 0 when saved, or -1 when len exceeds MaxStateBytes (64 KiB): the state
// is unchanged and the call fails (FailureStateLimit) when it returns. A
// buffer outside the guest's memory traps the call (FailureABI).
func setState(ctx context.Context, mod api.Module, stack []uint64) {
	c := callOf(ctx)
	ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	if n > MaxStateBytes {
		c.hit(FailureStateLimit, fmt.Sprintf("set_state of %d bytes, over the cap of %d", n, MaxStateBytes))
		stack[0] = api.EncodeI32(stateTooLarge)
		return
	}
	*c.state = bytes.Clone(read(mod, "set_state", ptr, n))
	stack[0] = api.EncodeI32(resultOK)
}

// httpRequest is the WebAssembly function import "polar"."http_request",
// which makes an HTTP request to the policy's target and keeps the
// response pending for http_response.
//
// # Parameters
//
//   - ptr: offset in the guest's memory of an encoded HttpRequest. Its url
//     is a path starting with "/", relative to the target url
//     ("/api/status" on target "http://127.0.0.1:8080/app" is
//     "http://127.0.0.1:8080/app/api/status"), or an absolute url with the
//     target's scheme, host and port. method defaults to GET.
//   - len: its length in bytes, at most MaxRequestBytes (1 MiB)
//
// The request goes through the policy's rate limit, concurrency limit and
// HTTP client, within its deadline: a tenth of the call's timeout before
// the call's own (requestDeadline). Redirects are followed (at
// most MaxRedirects) only to the target and within allowed_targets, each
// checked again. The body is read up to MaxBodyBytes (1 MiB), or the
// plugin's PluginSpec.MaxBodyBytes when lower; the rest is cut and
// HttpResponse.truncated set.
//
// Result (i32)
//
// The length of the encoded HttpResponse now pending (> 0), or:
//   - -1: not a valid HttpRequest (not protobuf, too large, a bad method,
//     url or header)
//   - -2: the url is not on the target, or not in allowed_targets
//   - -3: the call already made MaxRequests (8) requests; the call fails
//     (FailureHTTPLimit) when it returns
//   - -4: the request failed: connection, TLS, a redirect refused or too
//     many (the host logs why)
//   - -5: the request's deadline passed
//
// Any response pending before is dropped. A buffer outside the guest's
// memory traps the call (FailureABI).
func httpRequest(ctx context.Context, mod api.Module, stack []uint64) {
	c := callOf(ctx)
	ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	stack[0] = api.EncodeI32(c.httpRequest(ctx, mod, ptr, n))
}

// httpResponse is the WebAssembly function import "polar"."http_response",
// which copies the pending HttpResponse into the guest's memory.
//
// # Parameters
//
//   - ptr: offset in the guest's memory of a buffer of len bytes
//   - len: its length, at least what http_request returned
//
// Result (i32)
//
// The number of bytes copied, or:
//   - -1: no response is pending
//   - -2: the buffer is shorter than the response: nothing was copied and
//     the response stays pending
//
// The response stays pending, and may be copied again, until the next
// http_request or the end of the call. A buffer outside the guest's memory
// traps the call (FailureABI).
//
// For example, after http_request returned 345:
//
//	              ptr              ptr+345        ptr+len
//	               |<--- response --->|              |
//	[]byte{ ..., 0x08, 0xc8, 0x01, ..., ?, ?, ..., ?, ... }
//	              status_code 200
func httpResponse(ctx context.Context, mod api.Module, stack []uint64) {
	c := callOf(ctx)
	ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	switch {
	case c.pending == nil:
		stack[0] = api.EncodeI32(responseNone)
	case int(n) < len(c.pending):
		stack[0] = api.EncodeI32(responseShort)
	default:
		// The whole buffer the guest names must be its own, as for every
		// other import, not only the bytes copied.
		copy(read(mod, "http_response", ptr, n), c.pending)
		stack[0] = api.EncodeI32(int32(len(c.pending)))
	}
}

// read returns the guest's memory [ptr, ptr+n), which is valid until the
// guest runs again, or traps the call when it is out of range.
func read(mod api.Module, fn string, ptr, n uint32) []byte {
	b, ok := mod.Memory().Read(ptr, n)
	if !ok {
		panic(&abiViolation{fmt.Sprintf("%s: buffer [%#x, +%d) outside the guest's memory", fn, ptr, n)})
	}
	return b
}
