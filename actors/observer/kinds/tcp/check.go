package tcp

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/messages"
)

// check is one tcp observer's: one connect per turn. It sees whether
// the service accepts connections, not whether it answers them.
type check struct {
	address string
	access  *kinds.TargetAccess
}

func newCheck(t *Section, s kinds.Setup) (kinds.Check, error) {
	c := &check{address: t.Address, access: s.Access}
	return kinds.OneObservation(c.observe), nil
}

func (c *check) observe(ctx context.Context) *messages.Event {
	ev := messages.NewEvent(messages.TypeObservationTCP)
	obs := &messages.TcpObservation{Address: c.address}
	ev.Data = &messages.Event_Tcp{Tcp: obs}

	// A connect is load on the service (an accept, often a worker or a
	// session), so it counts against the policy's limits like a request.
	release, err := c.access.Acquire(ctx)
	if err != nil {
		obs.Result, obs.Error = kinds.Failure(ctx, err)
		return ev
	}
	defer release()

	start := time.Now()
	// The policy's dialer: the address connected to is checked against
	// allowed_targets, whatever the name resolves to.
	conn, err := c.access.Dial(ctx, "tcp", c.address)
	obs.ConnectLatency = durationpb.New(time.Since(start))
	if err != nil {
		obs.Result, obs.Error = kinds.Failure(ctx, err)
		return ev
	}
	// The handshake is the observation: the connection is closed at once
	// so that it holds none of the service's resources, and how the close
	// goes says nothing about the service.
	_ = conn.Close()
	obs.Result = messages.Result_RESULT_OK
	return ev
}
