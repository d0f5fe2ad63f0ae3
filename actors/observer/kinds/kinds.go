// Package kinds is what an observer kind is, the daemon's register of
// them, and what their checks share.
//
// A kind is one folder under kinds/ (kinds/http, kinds/tcp, ...) holding
// everything of it: its policy section (the type decoded from the key
// named by the kind, with its defaults and validation against policy.Env),
// its check (what an observer of the kind runs each turn), the one-line
// summary of its observations for observerctl tail, and the latency they
// measured for the daemon's metrics. Its folder declares it once, with
// Define; kinds/all registers the daemon's kinds. Its payload message is
// in proto/, the wire contract. docs/architecture.md says how to add one.
//
// A check reaches the policy's target through the policy's TargetAccess,
// which all of the policy's observers share (its rate and concurrency
// limits, the daemon's MemoryBudget for answers, one HTTP client over a
// dialer that checks every connect against allowed_targets).
//
// Nothing here is an actor: observerctl reads observations through the
// kinds without linking the daemon's actors, and the observer actor
// (actors/observer) runs their checks.
package kinds

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"strings"

	"github.com/rs/zerolog"

	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/wasm"
)

// Check is what an observer runs each turn, made once per observer and
// shared by the actor's incarnations, so that what it keeps (a plugin's
// state, a process's identity) outlives a restart; one that is an
// io.Closer is closed when its observer stops.
//
// Observe makes one turn's observations: events with their type and
// payload set (the observer fills in the envelope). An error fails the
// observer (observer.failed, a restart with backoff, and quarantine when
// it keeps failing; at once when it wraps a *Permanent), unless it is a
// *Warning: a check fails when it cannot observe at all, never because
// the target is down, which is an observation.
type Check interface {
	Observe(ctx context.Context) ([]*messages.Event, error)
}

// OneObservation is a check that makes one observation per turn and
// never fails: what it sees of the target, failures included, is the
// observation. The built-in kinds but wasm are such checks.
type OneObservation func(ctx context.Context) *messages.Event

// Observe makes the turn's observation.
func (f OneObservation) Observe(ctx context.Context) ([]*messages.Event, error) {
	return []*messages.Event{f(ctx)}, nil
}

// Warning is a check's problem that does not fail its observer (yet):
// the turn's observations stand, the observer goes on, and the daemon
// shows Err as the observer's last error (/v1/state, observerctl status).
// The wasm kind returns one for a plugin's invalid emit until it
// persists. Its Error is its Err's.
type Warning struct{ Err error }

func (e *Warning) Error() string { return e.Err.Error() }
func (e *Warning) Unwrap() error { return e.Err }

// Permanent marks a check's failure that no restart can mend (a plugin
// module missing, or not the one pinned): the observer gives up at once
// instead of being restarted. Its Error is its Err's.
type Permanent struct{ Err error }

func (e *Permanent) Error() string { return e.Err.Error() }
func (e *Permanent) Unwrap() error { return e.Err }

// Setup is what a kind's check is made from: one observer of a policy,
// how the policy reaches its target, and what the daemon config lets
// checks read.
type Setup struct {
	Policy *policy.Policy
	// Observer is the observer; its Section is of its kind's type.
	Observer *policy.Observer
	// Path is the observer's path, its event source:
	// observer/<policy>/<name>.
	Path string
	// Access is how the policy's observers reach its target, together.
	Access *TargetAccess
	// MaxResponse is the daemon's limits.max_response_bytes: what one
	// observation reads of an answer at most.
	MaxResponse int64
	// PIDDirs are the daemon's allowed_pid_dirs: the process kind opens a
	// pid file only where it resolves inside one of them.
	PIDDirs []string
	// Plugins runs the wasm kind's modules, found in PluginDir; nil
	// refuses that kind.
	Plugins   *wasm.Host
	PluginDir string
	Log       zerolog.Logger
}

// Failure classifies the error that ended an observation without an
// answer: a timeout when the run's deadline passed or the network gave up
// waiting (the target may be alive but slow), an error otherwise
// (refused, reset, DNS, TLS, limits). Every kind that talks to the target
// reports its failures this way, so that consumers read a result the same
// way whatever the kind.
func Failure(ctx context.Context, err error) (messages.Result, string) {
	// The dialer's deadline is the run's, and it may fire a moment before
	// the context's own timer: the error says so before ctx.Err() does.
	var ne net.Error
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return messages.Result_RESULT_TIMEOUT, err.Error()
	}
	return messages.Result_RESULT_ERROR, err.Error()
}

// ResultName is a result as summaries and metrics write it: ok, failed,
// timeout, error.
func ResultName(r messages.Result) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "RESULT_"))
}

// Pathless is err without the path that a *fs.PathError names: the
// problems and observations that report it name their file already, and
// some paths (/proc/<pid>, a file relative to an os.Root) tell nothing or
// too much.
func Pathless(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}
