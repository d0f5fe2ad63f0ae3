package observer

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/polar/observerd/messages"
)

// tcpCheck is the `tcp` kind: one connect to an address of the target,
// closed as soon as it is established. It sees whether the service
// accepts connections, not whether it answers them.
type tcpCheck struct {
	address string
	shared  *Shared
}

func newTCPCheck(s *Spec) (*tcpCheck, error) {
	t := s.Observer.TCP
	if t == nil {
		return nil, errors.New("tcp observer without a tcp section")
	}
	return &tcpCheck{address: t.Address, shared: s.Shared}, nil
}

func (c *tcpCheck) run(ctx context.Context) *messages.Event {
	ev := messages.NewEvent(messages.TypeObservationTCP)
	obs := &messages.TcpObservation{Address: c.address}
	ev.Data = &messages.Event_Tcp{Tcp: obs}

	// A connect is load on the service (an accept, often a worker or a
	// session), so it counts against the policy's limits like a request.
	release, err := c.shared.acquire(ctx)
	if err != nil {
		obs.Result, obs.Error = failure(ctx, err)
		return ev
	}
	defer release()

	start := time.Now()
	// The policy's dialer: the address connected to is checked against
	// allowed_targets, whatever the name resolves to.
	conn, err := c.shared.dial(ctx, "tcp", c.address)
	obs.ConnectLatency = durationpb.New(time.Since(start))
	if err != nil {
		obs.Result, obs.Error = failure(ctx, err)
		return ev
	}
	// The handshake is the observation: the connection is closed at once
	// so that it holds none of the service's resources, and how the close
	// goes says nothing about the service.
	_ = conn.Close()
	obs.Result = messages.Result_RESULT_OK
	return ev
}
