package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unsafe"
)

// Handler observes once: it is called for every polar_observe, and the
// observations it returns are emitted in order after it returns.
type Handler func(req *Request) ([]Observation, error)

// handler is the plugin's Handler; one module is one plugin. stateless
// says that it keeps nothing between calls (HandleStateless).
var (
	handler   Handler
	stateless bool
)

// Handle registers the plugin's handler. Call it from an init function:
// the host runs init functions (through _initialize) before its first call.
// Each observer running the plugin has an instance of its own, which
// keeps whatever the plugin keeps in memory from one call to the next.
func Handle(h Handler) { handler, stateless = h, false }

// HandleStateless registers the plugin's handler, as Handle does, and
// declares the plugin stateless (polar_stateless returns 1): what a call
// does depends only on its Request (its config, its state from SetState)
// and the target, never on what an earlier call left in the plugin's
// memory. The host may then run the calls of all the observers of a
// policy that run the plugin in a few shared instances, sized by how
// many calls run at once rather than by observers: a thousand observers
// cost a few instances' memory instead of a thousand. A cache keyed by
// what it caches (the config's JSON, say) is fine; a counter of calls
// is not, and belongs in SetState.
func HandleStateless(h Handler) { handler, stateless = h, true }

// Request is what the host passes to one call.
type Request struct {
	// Observer is the observer's name in its policy.
	Observer string
	// Target is the policy's target.
	Target Target
	// ConfigJSON is the observer's wasm.config from the policy, as JSON;
	// empty when the policy has none. Config decodes it.
	ConfigJSON []byte
	// Time is when the host started the call, in UTC: a warm instance
	// is called at once, a fresh one after its _initialize. It is the
	// host's wall clock, so two calls' times measure the interval between
	// them (error-ratio's window), jitter and backoff included.
	Time time.Time
	// State is what the plugin passed to SetState last, empty on the first
	// call. It survives restarts of the instance.
	State []byte
}

// Target is what a policy observes.
type Target struct {
	// Name is the target's name in the policy, the default subject.
	Name string
	// URL is the target's base URL, which relative HTTPRequest URLs
	// resolve against.
	URL string
}

// Config decodes the observer's configuration into v, a pointer, leaving v
// untouched when the policy has none, so that defaults set in v before the
// call stand. A field of the configuration that v does not have is an
// error: a misspelt setting should fail loudly, not be ignored.
func (r *Request) Config(v any) error {
	if len(r.ConfigJSON) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(r.ConfigJSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode config: %w", err)
	}
	return nil
}

// Observation is one observation; the daemon turns it into an event of type
// "observation.plugin.<TypeSuffix>".
type Observation struct {
	// TypeSuffix is appended to the event type; empty gives
	// "observation.plugin".
	TypeSuffix string
	// Severity is the event's severity; the zero value leaves it to the
	// daemon.
	Severity Severity
	// Subject is what the observation is about; empty means the policy's
	// target.
	Subject string
	// Payload is the observation's data, opaque to the daemon.
	Payload []byte
	// Schema names the format of Payload, e.g. "example.backlog.v1" or
	// "application/json".
	Schema string
	// Labels are free-form key-value pairs carried with the event.
	Labels map[string]string
	// Result is what the observation found, which drives the observer's
	// state (up, down, state.changed) as a built-in observer's result
	// does; the zero value counts as ResultOK, as it did before results
	// existed.
	Result Result
	// Error says why the result is not ResultOK, on one line.
	Error string
}

// Result is the outcome of an observation, as polar.observer.v1.Result.
type Result int32

// The results. The daemon counts consecutive results other than ResultOK
// against the observer's thresholds.down_after, and ResultOK against
// thresholds.up_after.
const (
	// ResultOK: the target answered as expected.
	ResultOK Result = iota + 1
	// ResultFailed: the target answered, not as expected (a value over
	// its threshold, a status saying it is sick).
	ResultFailed
	// ResultTimeout: the target did not answer in time.
	ResultTimeout
	// ResultError: the target could not be observed (refused, an error
	// status, an unreadable answer).
	ResultError
)

// Unobservable is the observation to return when the target could not be
// observed (unreachable, an error status, an unreadable answer): a
// high-severity observation of typeSuffix with ResultError and err's text
// as its Error, whose payload is {"error": "..."} (schema
// polar.sdk.error.v1) and label result=error. Its result counts against
// the observer's thresholds: the observer goes down when the target stays
// unobservable.
//
// Why not return the error? A non-zero polar_observe is a failure of the
// plugin: the daemon restarts it with backoff and quarantines it when it
// keeps failing. A sick target is what the plugin is there to report.
//
// A request that ran out of time (ErrTimeout) is reported as
// ResultTimeout, label result=timeout, as the built-in kinds report a
// target that did not answer in time.
func Unobservable(typeSuffix string, err error) Observation {
	payload, _ := json.Marshal(map[string]string{"error": err.Error()}) // a map of strings always encodes
	result, label := ResultError, "error"
	if errors.Is(err, ErrTimeout) {
		result, label = ResultTimeout, "timeout"
	}
	return Observation{
		TypeSuffix: typeSuffix,
		Severity:   SeverityHigh,
		Payload:    payload,
		Schema:     "polar.sdk.error.v1",
		Labels:     map[string]string{"result": label},
		Result:     result,
		Error:      err.Error(),
	}
}

// Severity is an observation's severity, as polar.observer.v1.Severity.
type Severity int32

// The severities, from the least to the most severe.
const (
	SeverityInfo Severity = iota + 1
	SeverityLow
	SeverityMedium
	SeverityHigh
	SeverityCritical
)

// Level is the level of a log line.
type Level int32

// The log levels of the ABI.
const (
	LevelDebug Level = iota
	LevelInfo
	LevelWarn
	LevelError
)

// Errors of the host functions; the errors returned by Emit, SetState, Get
// and Do wrap them.
var (
	// ErrInvalid: the host could not decode what was sent.
	ErrInvalid = errors.New("rejected by the host as invalid")
	// ErrTooManyEmits: the call reached the host's cap on emits.
	ErrTooManyEmits = errors.New("too many emits in this call")
	// ErrTooManyBytes: the call reached the host's cap on emitted bytes.
	ErrTooManyBytes = errors.New("too many bytes emitted in this call")
	// ErrStateTooLarge: the state is larger than the host keeps.
	ErrStateTooLarge = errors.New("state too large")
	// ErrNotAllowed: the url is not on the policy's target.
	ErrNotAllowed = errors.New("url not allowed")
	// ErrTooManyRequests: the call reached the host's cap on HTTP requests.
	ErrTooManyRequests = errors.New("too many http requests in this call")
	// ErrRequestFailed: the request got no response (refused, reset, a bad
	// redirect...); the host logs the cause.
	ErrRequestFailed = errors.New("request failed")
	// ErrTimeout: the response did not come in time.
	ErrTimeout = errors.New("request timed out")
)

// Log writes a line to the daemon's log, attributed to the observer. The
// last line at LevelError of a call that fails is quoted in the
// observer.failed event.
func Log(level Level, format string, args ...any) {
	polar.Log(level, fmt.Sprintf(format, args...))
}

// Emit sends one observation at once.
func Emit(o Observation) error {
	switch rc := polar.Emit(appendObservation(nil, &o)); rc {
	case 0:
		return nil
	case -1:
		return fmt.Errorf("emit: %w", ErrInvalid)
	case -2:
		return fmt.Errorf("emit: %w", ErrTooManyEmits)
	case -3:
		return fmt.Errorf("emit: %w", ErrTooManyBytes)
	default:
		return fmt.Errorf("emit: unknown result %d", rc)
	}
}

// SetState hands state to the host, which passes it back as Request.State
// on the next call, also after a restart of the instance.
func SetState(state []byte) error {
	switch rc := polar.SetState(state); rc {
	case 0:
		return nil
	case -1:
		return fmt.Errorf("set state of %d bytes: %w", len(state), ErrStateTooLarge)
	default:
		return fmt.Errorf("set state: unknown result %d", rc)
	}
}

// Host is the ABI's "polar" import module, the host functions a plugin
// calls: under GOOS=wasip1 the daemon's imports; elsewhere what Call is
// given. Each takes and returns what wasm/ABI.md says of the function of
// its name: encoded messages and the function's result.
type Host interface {
	Emit(observation []byte) int32
	Log(level Level, msg string)
	SetState(state []byte) int32
	HTTPRequest(req []byte) int32
	HTTPResponse(buf []byte) int32
}

// ABIVersion is the plugin ABI this SDK speaks, what polar_abi_version
// returns: the SDK module's major version follows it.
const ABIVersion = 1

// Results of polar_observe (documented in doc.go).
const (
	resultOK int32 = iota
	resultFailed
	resultBadRequest
	resultBadBuffer
	resultNoHandler
)

// maxAlloc bounds polar_alloc: a request is a few KiB of configuration plus
// at most 64 KiB of state, so a larger size is a host bug, better answered
// with 0 than with an out-of-memory trap.
const maxAlloc = 16 << 20

// pinned holds the buffers polar_alloc returned, by address, until
// polar_observe has read them: the host writes into them after polar_alloc
// returned, so nothing else keeps them alive meanwhile.
var pinned = map[uintptr][]byte{}

// alloc implements polar_alloc; 0 is the ABI's failure.
func alloc(size int32) uintptr {
	if size < 0 || size > maxAlloc {
		return 0
	}
	// One byte more, so that a request of size 0 still has an address.
	buf := make([]byte, size, size+1)
	p := uintptr(unsafe.Pointer(unsafe.SliceData(buf[:1])))
	pinned[p] = buf
	return p
}

// statelessResult implements polar_stateless: 1 when the plugin was
// registered with HandleStateless.
func statelessResult() int32 {
	if stateless {
		return 1
	}
	return 0
}

// observe implements polar_observe.
func observe(ptr uintptr, size int32) int32 {
	buf, ok := pinned[ptr]
	if !ok || size < 0 || int(size) > len(buf) {
		Log(LevelError, "polar_observe: %d bytes at %#x are not a buffer from polar_alloc", size, ptr)
		return resultBadBuffer
	}
	delete(pinned, ptr)
	req, err := decodeObserveRequest(buf[:size])
	if err != nil {
		Log(LevelError, "polar_observe: %v", err)
		return resultBadRequest
	}
	if handler == nil {
		Log(LevelError, "polar_observe: no handler: call sdk.Handle from an init function")
		return resultNoHandler
	}
	obs, err := handler(req)
	if err != nil {
		Log(LevelError, "observe: %v", err)
		return resultFailed
	}
	for i := range obs {
		if err := Emit(obs[i]); err != nil {
			Log(LevelError, "observe: observation %d of %d: %v", i+1, len(obs), err)
			return resultFailed
		}
	}
	return resultOK
}
