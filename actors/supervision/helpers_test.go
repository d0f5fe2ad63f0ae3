package supervision_test

import (
	"testing"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/polar/observerd/test/actortest"
)

// system returns a fresh actor system for the test and a logger for the
// actors' Options.Log, both writing to the test log while the test runs.
func system(t *testing.T) (*actor.ActorSystem, zerolog.Logger) {
	t.Helper()
	return actortest.System(t), actortest.Logger(t)
}
