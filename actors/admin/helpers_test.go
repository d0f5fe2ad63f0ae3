package admin_test

import (
	"sync"
	"testing"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/polar/observerd/test/actortest"
)

// quietTB passes logs to the test until the test has ended, then drops
// them: protoactor logs from its own goroutines (the dead-letter throttle
// reports a second after a burst), which would otherwise panic with "Log in
// goroutine after Test... has completed" once the test binary is done.
type quietTB struct {
	testing.TB
	mu   sync.RWMutex
	done bool
}

func (q *quietTB) Log(args ...any) {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if !q.done {
		q.TB.Log(args...)
	}
}

func (q *quietTB) Logf(format string, args ...any) {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if !q.done {
		q.TB.Logf(format, args...)
	}
}

func (q *quietTB) Helper() {}

// system is actortest.System whose logs stop when the test ends, and a
// logger for the actors' Options.Log that does the same.
func system(t *testing.T) (*actor.ActorSystem, zerolog.Logger) {
	t.Helper()
	q := &quietTB{TB: t}
	// Registered first, so it runs last, after the actors were stopped.
	t.Cleanup(func() {
		q.mu.Lock()
		q.done = true
		q.mu.Unlock()
	})
	return actortest.System(q), actortest.Logger(q)
}
