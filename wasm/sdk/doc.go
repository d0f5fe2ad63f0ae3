// Package sdk is the Go guest SDK for observerd's plugin ABI v1
// (wasm/ABI.md): a plugin author writes one function that takes the request
// and returns observations, and the SDK provides the module's exports, its
// memory management and the protobuf encoding of everything that crosses
// the boundary.
//
// # A complete plugin
//
//	// Command backlog reports the target's backlog.
//	package main
//
//	import (
//		"strconv"
//
//		"github.com/polar/observerd/wasm/sdk"
//	)
//
//	type config struct {
//		Limit float64 `json:"limit"`
//	}
//
//	// Stateless: a call depends on its request only (see "Many observers
//	// of one plugin"); sdk.Handle if it keeps anything between calls.
//	func init() { sdk.HandleStateless(observe) }
//
//	// main is never called: the module is a reactor, and the host calls its
//	// exports after _initialize has run the init functions.
//	func main() {}
//
//	func observe(req *sdk.Request) ([]sdk.Observation, error) {
//		cfg := config{Limit: 100}
//		if err := req.Config(&cfg); err != nil {
//			return nil, err
//		}
//		// A sick target is an observation; an error would fail the plugin.
//		// The host decodes the JSON answer and returns the value at
//		// /backlog: no JSON decoder runs in the sandbox.
//		resp, err := sdk.DoOK(&sdk.HTTPRequest{URL: "/api/status", Extract: []string{"/backlog"}})
//		if err != nil {
//			return []sdk.Observation{sdk.Unobservable("backlog", err)}, nil
//		}
//		backlog, err := resp.Number("/backlog")
//		if err != nil {
//			return []sdk.Observation{sdk.Unobservable("backlog", err)}, nil
//		}
//		// The result drives the observer's state: down after
//		// thresholds.down_after results that are not ok in a row.
//		sev, result := sdk.SeverityInfo, sdk.ResultOK
//		if backlog > cfg.Limit {
//			sev, result = sdk.SeverityHigh, sdk.ResultFailed
//		}
//		sdk.Log(sdk.LevelDebug, "backlog %v, limit %v", backlog, cfg.Limit)
//		payload := strconv.AppendFloat([]byte(`{"backlog":`), backlog, 'g', -1, 64)
//		return []sdk.Observation{{
//			TypeSuffix: "backlog",
//			Severity:   sev,
//			Result:     result,
//			Payload:    append(payload, '}'),
//			Schema:     "example.backlog.v1",
//		}}, nil
//	}
//
// Build it as a WASI preview 1 reactor, with Go 1.24 or later (which has
// the wasmexport directive):
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o backlog.wasm .
//
// and reference it from a policy's observers:
//
//	observers:
//	  - {name: backlog, kind: wasm, interval: 10s,
//	     wasm: {module: backlog.wasm, config: {limit: 100}}}
//
// # What goes where
//
// What the host hands the plugin is on the [Request]: the observer's name,
// the target, the configuration ([Request.Config]), the time the host
// started the call ([Request.Time]) and the state saved by the previous
// call ([Request.State]). What the plugin tells the host is a package
// function: [Emit], [Log], [SetState], [Get], [GetOK], [Do] and [DoOK].
//
// Each observation counts for the observer's state by its
// [Observation.Result], as a built-in observer's result does: results
// other than [ResultOK] in a row take it down (thresholds.down_after),
// [ResultOK] brings it up again, and every change is a state.changed
// event. An observation without a result counts as [ResultOK], so a plugin
// that reports results sets one on every observation it emits.
//
// The observations the handler returns are emitted after it returns, in
// order; when the host refuses one (a cap reached, a record it finds
// invalid), the rest are dropped and the call fails. [Emit] sends one at
// once, which keeps it even when the handler fails afterwards. An error
// from the handler is logged at level error and makes polar_observe
// return non-zero, which the daemon reports as observer.failed, quoting
// that log line. A panic is not recovered: the runtime prints it with its
// stack on stderr (the daemon's log) and the call traps, so that the host
// discards the instance, whose globals the panic may have left half
// updated, and starts a fresh one.
//
// # Many observers of one plugin
//
// An instance of a Go plugin holds about 3.4 MiB. Registered with
// [HandleStateless] (its polar_stateless export then returns 1), a plugin
// declares that a call depends only on its [Request] and the target; the
// observers of one policy that run it then share a few instances, as many
// as run calls at once (at most 16), instead of one each. Such a plugin
// keeps nothing in its globals that must follow one observer: another
// observer's call may run next in the same instance. [SetState] is per
// observer, and a cache keyed by what it caches (the configuration's
// JSON, as status-threshold's) is fine.
//
// # What a call costs
//
// Guest code runs several times slower in the sandbox than natively: every
// loop checks the call's deadline. What costs a plugin most is what it
// could leave to the host or do once: decoding a JSON answer
// ([HTTPRequest.Extract] has the host do it), decoding its configuration
// at every call (status-threshold keeps it with the JSON it came from),
// reflection (encoding/json, fmt) in what it sends.
//
// # Memory ownership
//
// The host never frees guest memory, and the guest never reads host memory:
//
//   - Before each call the host asks polar_alloc for a buffer, writes the
//     encoded ObserveRequest into it and passes it to polar_observe. The
//     buffer then belongs to the guest. The SDK keeps it referenced, so that
//     the garbage collector leaves it alone, until that polar_observe
//     returns; after that it is ordinary garbage.
//   - [Request.ConfigJSON] and [Request.State] point into that buffer, which
//     therefore lives as long as the plugin holds them; nothing else writes
//     to it.
//   - For every host function the SDK passes pointers into its own Go
//     memory, which the host reads or writes only during that call; the
//     slices given to [Emit], [SetState] and [Do] may be reused as soon as
//     they return.
//   - An HTTP response is copied by the host into a buffer the SDK sizes to
//     the length http_request announced; [Response.Body] is the plugin's own
//     memory.
//
// # Limits
//
// The host caps what one call may do (wasm/ABI.md has the figures): the
// number of emits and their bytes, the size of the state, the number of
// HTTP requests and the size of a response body (a cut body is marked
// [Response.Truncated]), the memory of the instance and the duration of the
// call. A cap refused by a host function is an error wrapping one of the
// Err variables; running out of memory or time ends the call and the
// instance.
//
// # Results of polar_observe
//
// 0 success; 1 the handler failed; 2 the request could not be decoded; 3 the
// pointer or length was not a buffer from polar_alloc; 4 no handler was
// registered. Every non-zero result is explained by a log line at level
// error.
//
// # Why protowire, not the generated types or easyproto?
//
// The four messages of the ABI are encoded with
// google.golang.org/protobuf/encoding/protowire, the wire-level API of the
// runtime behind the daemon's generated types: wire.go spells out their
// layouts (field numbers and types), and the daemon's tests
// (wasm/sdk_test.go in its module, which this one does not require) check
// each against the generated types, through [Call]. Measured with status-threshold (its module, make bench's
// row 7, and BenchmarkWire of wire_bench_test.go in the guest):
//
//   - The generated types bring the protobuf runtime (reflection,
//     descriptors, registry) into the guest: the module grows from 3.3 MiB
//     to 6.8 MiB (plugin.proto alone) or 7.3 MiB (package messages), an
//     instance from 3.4 to 6.6 MiB and its instantiation from about 6 ms
//     to 12-21 ms; the wire code of a call takes 44 µs instead of 14, and a
//     call of row 7 about 150 µs more (615 instead of 460 µs).
//   - easyproto is as small (+10 KiB) and as fast (13 µs; row 7 cannot tell
//     them apart) but not protobuf to the letter: it refuses a negative
//     int32 as protobuf encodes it (ObserveRequest's time nanos,
//     HttpResponse's status), a bool other than 0 or 1, and an unknown field
//     of the group wire type, which protobuf skips; its strings alias the
//     buffer. The SDK would hold the wire rules again, as workarounds.
//   - protowire has none of these gaps and is maintained with the code the
//     daemon decodes with. It is all a plugin links of the
//     google.golang.org/protobuf module: the SDK requires that module and
//     nothing of the daemon.
//
// # Testing on the host
//
// The package compiles for every platform, so that a plugin's own logic can
// be tested with a plain go test. Outside GOOS=wasip1 there is no daemon:
// [Emit], [Log], [SetState], [Get] and [Do] panic, except within [Call],
// which runs the handler with a [Host] of the test's making.
//
// # Versions, and using it before it is published
//
// The SDK is a Go module of its own, github.com/polar/observerd/wasm/sdk,
// which requires google.golang.org/protobuf and nothing of the daemon. Its
// major version follows the ABI it speaks ([ABIVersion]): v1 speaks ABI v1
// (tags wasm/sdk/v1.x.y of the observerd repository); an ABI v2 would be
// the module github.com/polar/observerd/wasm/sdk/v2.
//
// Until a version is published, point your plugin's module at a checkout
// of observerd, with a replace directive:
//
//	go mod init example.com/backlog
//	go mod edit -require=github.com/polar/observerd/wasm/sdk@v0.0.0 \
//		-replace=github.com/polar/observerd/wasm/sdk=/path/to/observerd/wasm/sdk
//	go mod tidy
//
// or with a workspace beside your module (go work init; go work use .
// /path/to/observerd/wasm/sdk). observerd's make test builds an example
// plugin this way, from a directory outside the repository.
package sdk
