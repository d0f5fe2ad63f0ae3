package broker

import (
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/configs"
	"github.com/polar/observerd/messages"
)

// controlled starts a pipeline with a control channel whose deliveries
// go to the returned channel.
func controlled(t *testing.T, setup func(*pipeline, *fakeBroker)) (*pipeline, *fakeBroker, <-chan *protocol.ControlDelivery) {
	t.Helper()
	delivered := make(chan *protocol.ControlDelivery, 64)
	p, fake, _ := faked(t, testOutbox(t, Limit{}), func(p *pipeline, fake *fakeBroker) {
		p.publisher.o.Control = &ControlOptions{Exchange: ControlExchange, Queue: "polar.control.test.node",
			Keys: []string{"node.test.node", "all"}, Prefetch: 4}
		p.publisher.deliver = func(d *protocol.ControlDelivery) { delivered <- d }
		if setup != nil {
			setup(p, fake)
		}
	})
	return p, fake, delivered
}

func nextDelivery(t *testing.T, ch <-chan *protocol.ControlDelivery) *protocol.ControlDelivery {
	t.Helper()
	select {
	case d := <-ch:
		return d
	case <-time.After(within):
		t.Fatal("no control delivery")
		return nil
	}
}

func TestControlDeliveryIsAckedOnlyOnceSettledAndRepliedTo(t *testing.T) {
	p, fake, delivered := controlled(t, nil)
	l := fake.next(t)
	eventually(t, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.consumed != nil
	}, "the control queue consumed")
	assert.Equal(t, "polar.control.test.node", l.consumed.Queue)

	l.deliver(7, "ops", "amq.rabbitmq.reply-to.abc", []byte("body"))
	d := nextDelivery(t, delivered)
	assert.Equal(t, []byte("body"), d.Body)
	assert.Equal(t, "ops", d.UserID)
	assert.Equal(t, "amq.rabbitmq.reply-to.abc", d.ReplyTo)
	select {
	case tag := <-l.acks:
		t.Fatalf("delivery %d acked before it was settled", tag)
	case <-time.After(20 * time.Millisecond):
	}

	// The answer goes through the outbox; its acceptance settles.
	answer := messages.NewEvent(messages.TypeCommandResult)
	answer.Source = "observerd://test.node/control"
	p.Accept(answer, d.Settle)
	select {
	case tag := <-l.acks:
		assert.Equal(t, uint64(7), tag)
	case <-time.After(within):
		t.Fatal("the delivery was not acked once its answer was accepted")
	}
	select {
	case r := <-l.replies:
		assert.Equal(t, "amq.rabbitmq.reply-to.abc", r.to)
		assert.Equal(t, amqp.Transient, r.msg.DeliveryMode)
		got := &messages.Event{}
		require.NoError(t, proto.Unmarshal(r.msg.Body, got))
		assert.Equal(t, answer.Id, got.Id)
		assert.NotZero(t, got.Sequence, "the copy is the accepted event, with its sequence")
	case <-time.After(within):
		t.Fatal("no reply copy")
	}
	// The answer itself is published like any event.
	pub := l.next(t)
	assert.Equal(t, answer.Id, pub.event(t).Id)
	pub.ack()

	// Without reply_to: acked, no copy.
	l.deliver(8, "ops", "", []byte("x"))
	d = nextDelivery(t, delivered)
	d.Settle(nil)
	assert.Equal(t, uint64(8), <-l.acks)
	select {
	case r := <-l.replies:
		t.Fatalf("a reply copy to %q without reply_to", r.to)
	case <-time.After(20 * time.Millisecond):
	}
}

func TestControlReplyInJSON(t *testing.T) {
	p, fake, delivered := controlled(t, func(p *pipeline, _ *fakeBroker) { p.publisher.o.JSON = true })
	l := fake.next(t)
	l.deliver(1, "ops", "amq.rabbitmq.reply-to.x", []byte("{}"))
	d := nextDelivery(t, delivered)
	answer := messages.NewEvent(messages.TypeCommandResult)
	p.Accept(answer, d.Settle)
	r := <-l.replies
	assert.Equal(t, "application/json", r.msg.ContentType)
	got := &messages.Event{}
	require.NoError(t, protojson.Unmarshal(r.msg.Body, got))
	assert.Equal(t, answer.Id, got.Id)
}

func TestControlChannelLostReconnects(t *testing.T) {
	_, fake, delivered := controlled(t, nil)
	l := fake.next(t)
	eventually(t, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.consumed != nil
	}, "the control queue consumed")
	l.loseControl()
	// The session ends with the control channel, and the next connection
	// consumes again.
	l2 := fake.next(t)
	eventually(t, func() bool { return l.isGone() }, "the first link closed")
	l2.deliver(3, "ops", "", []byte("again"))
	d := nextDelivery(t, delivered)
	assert.Equal(t, []byte("again"), d.Body)
	// A settle of a delivery of the lost channel acks nothing there.
	d.Settle(nil)
	assert.Equal(t, uint64(3), <-l2.acks)
}

func TestControlConsumeFailureReconnects(t *testing.T) {
	_, fake, _ := controlled(t, func(_ *pipeline, fake *fakeBroker) {
		fake.consumeErr = errors.New("PRECONDITION_FAILED - inequivalent arg 'x-queue-type'")
	})
	l := fake.next(t)
	eventually(t, func() bool { return l.isGone() }, "the link closed")
	l2 := fake.next(t)
	eventually(t, func() bool {
		l2.mu.Lock()
		defer l2.mu.Unlock()
		return l2.consumed != nil
	}, "the control queue consumed on the next connection")
}

func TestSettleAfterTheLinkWentAcksNothing(t *testing.T) {
	p, fake, delivered := controlled(t, nil)
	l := fake.next(t)
	l.deliver(5, "ops", "amq.rabbitmq.reply-to.y", []byte("b"))
	d := nextDelivery(t, delivered)
	l.lose(&amqp.Error{Code: 320, Reason: "CONNECTION_FORCED"})
	l2 := fake.next(t)
	p.Accept(messages.NewEvent(messages.TypeCommandResult), d.Settle)
	select {
	case tag := <-l2.acks:
		t.Fatalf("delivery %d of the lost connection acked on the new one", tag)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestControlOfConfig(t *testing.T) {
	cfg := configs.Default()
	cfg.Node, cfg.Labels = "web-1", []string{"web"}
	assert.Nil(t, controlOf(cfg), "not enabled: nothing declared")
	cfg.Control.Enabled = true
	assert.Equal(t, &ControlOptions{Exchange: "polar.control", Queue: "polar.control.web-1",
		Keys: []string{"node.web-1", "all", "group.web"}, Prefetch: DefaultPrefetch}, controlOf(cfg))
}

func TestDeclareControl(t *testing.T) {
	var d declarations
	require.NoError(t, declareControl(&d, &ControlOptions{Exchange: "polar.control", Queue: "polar.control.n", Keys: []string{"node.n", "all"}}))
	assert.Equal(t, declarations{
		"exchange polar.control topic durable",
		"queue polar.control.n quorum durable",
		"bind polar.control.n node.n polar.control",
		"bind polar.control.n all polar.control",
	}, d)
	assert.ErrorContains(t, declareControl(&d, &ControlOptions{Exchange: "polar.control", Queue: "refused"}),
		`declare control queue "refused": Exception (406)`)
}
