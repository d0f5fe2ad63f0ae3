// Package actortest helps the actors' unit tests: a fresh actor system per
// test, and a Recorder actor that stands in for a sibling (the
// state-manager, the broker, the task-manager) and records what it is sent,
// so that tests assert on messages with a deadline instead of sleeping.
package actortest

import (
	"bytes"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors"
	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
)

// Wait is how long assertions wait for a message.
const Wait = 10 * time.Second

// System returns a fresh actor system, shut down when the test ends, whose
// logs go to the test log.
func System(t testing.TB) *actor.ActorSystem {
	t.Helper()
	sys := actors.NewSystem(Logger(t))
	t.Cleanup(sys.Shutdown)
	return sys
}

// Logger writes to the test log until the test ends, and drops what
// goroutines still log after that (testing panics on a late Log, and an
// actor's goroutines may outlive the test by a moment).
func Logger(t testing.TB) zerolog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return zerolog.New(w).With().Timestamp().Logger()
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Helper()
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// Recorder records every user message it receives. Respond, when set,
// answers requests.
type Recorder struct {
	PID *actor.PID

	mu       sync.Mutex
	messages []any
	respond  func(msg any) any
}

// NewRecorder spawns a recorder named name under the root (name may contain
// slashes, so that it can take the PID a sibling expects, e.g.
// "supervisor/state-manager").
func NewRecorder(t testing.TB, sys *actor.ActorSystem, name string) *Recorder {
	t.Helper()
	r := &Recorder{}
	pid, err := sys.Root.SpawnNamed(actor.PropsFromFunc(r.receive), name)
	require.NoError(t, err)
	r.PID = pid
	return r
}

// Respond sets the function answering requests (nil answers nothing).
func (r *Recorder) Respond(f func(msg any) any) {
	r.mu.Lock()
	r.respond = f
	r.mu.Unlock()
}

func (r *Recorder) receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case actor.SystemMessage, actor.AutoReceiveMessage:
		return
	default:
		r.mu.Lock()
		r.messages = append(r.messages, msg)
		respond := r.respond
		r.mu.Unlock()
		if respond != nil && ctx.Sender() != nil {
			if answer := respond(msg); answer != nil {
				ctx.Respond(answer)
			}
		}
	}
}

// Messages returns a copy of what was received so far.
func (r *Recorder) Messages() []any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.messages)
}

// Events returns the events received so far, from Emit and Publish
// messages, in order.
func (r *Recorder) Events() []*messages.Event {
	var out []*messages.Event
	for _, m := range r.Messages() {
		switch m := m.(type) {
		case *protocol.Emit:
			out = append(out, m.Event)
		case *protocol.Publish:
			out = append(out, m.Event)
		}
	}
	return out
}

// EventsOf returns the received events of type typ.
func (r *Recorder) EventsOf(typ string) []*messages.Event {
	var out []*messages.Event
	for _, ev := range r.Events() {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// WaitEvent waits until an event of type typ satisfying match (nil: any)
// arrived, and returns the first one.
func (r *Recorder) WaitEvent(t testing.TB, typ string, match func(*messages.Event) bool) *messages.Event {
	t.Helper()
	var found *messages.Event
	require.Eventually(t, func() bool {
		for _, ev := range r.EventsOf(typ) {
			if match == nil || match(ev) {
				found = ev
				return true
			}
		}
		return false
	}, Wait, 10*time.Millisecond, "no %s event arrived; got %v", typ, types(r.Events()))
	return found
}

// WaitMessage waits until a message satisfying match arrived.
func WaitMessage[T any](t testing.TB, r *Recorder, match func(T) bool) T {
	t.Helper()
	var found T
	require.Eventually(t, func() bool {
		for _, m := range r.Messages() {
			if v, ok := m.(T); ok && (match == nil || match(v)) {
				found = v
				return true
			}
		}
		return false
	}, Wait, 10*time.Millisecond, "no matching %T arrived", found)
	return found
}

func types(evs []*messages.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.Type
	}
	return out
}

// SystemAndLogger returns System(t) and Logger(t): a fresh actor system and
// a logger for the actors' Options.Log.
func SystemAndLogger(t testing.TB) (*actor.ActorSystem, zerolog.Logger) {
	t.Helper()
	return System(t), Logger(t)
}

// Limits are daemon limits for tests whose observers run every few
// milliseconds, so that a test waits for milliseconds, not seconds: the
// defaults' 1s floor and rates lifted, the rest as configured by default.
func Limits() *policy.Bounds {
	l := policy.DefaultBounds()
	l.MinInterval = yamldoc.Duration(time.Millisecond)
	l.MaxRequestsPerSecond = 100_000
	l.MaxConcurrentRequests = 1000
	l.MaxEventsPerSecond = 100_000
	return &l
}

// SyncBuffer is a bytes.Buffer safe to read while others write to it: a
// child process's output, or a logger's.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String is what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
