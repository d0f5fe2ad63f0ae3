package observer

import (
	"context"
	"errors"
	"net"

	"github.com/polar/observerd/messages"
)

// failure classifies the error that ended a run without an answer: a
// timeout when the run's deadline passed or the network gave up waiting
// (the target may be alive but slow), an error otherwise (refused, reset,
// DNS, TLS, limits). Every kind that talks to the target reports its
// failures this way, so that consumers read a result the same way
// whatever the kind.
func failure(ctx context.Context, err error) (messages.Result, string) {
	// The dialer's deadline is the run's, and it may fire a moment before
	// the context's own timer: the error says so before ctx.Err() does.
	var ne net.Error
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return messages.Result_RESULT_TIMEOUT, err.Error()
	}
	return messages.Result_RESULT_ERROR, err.Error()
}
