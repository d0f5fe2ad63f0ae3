package broker

import (
	"context"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/messages"
)

// The control channel (docs/control.md) is a second channel of the
// broker's one connection: the publisher opens it right after its own, at
// every connect, when Options.Control is set, and hands each delivery to
// the control actor (protocol.ControlDelivery). The delivery is acked, and
// its answer copied to its reply_to, only when the control actor settles
// it, which it does once the answer is accepted into the outbox: a
// delivery whose answer was never accepted comes again after a reconnect.

// ControlOptions configure the control channel; nil Options.Control
// declares and consumes nothing.
type ControlOptions struct {
	// Exchange is the topic exchange commands are published to
	// (polar.control).
	Exchange string
	// Queue is the node's durable quorum queue, bound to Keys.
	Queue string
	Keys  []string
	// Prefetch bounds the deliveries not settled yet.
	Prefetch int
}

// ControlExchange is the exchange of the control channel.
const ControlExchange = "polar.control"

// DefaultPrefetch is how many commands a daemon holds unsettled: enough
// for a burst of a fleet's operators, few enough that a stuck daemon
// holds few commands back from redelivery.
const DefaultPrefetch = 16

// errControlClosed ends a session whose control channel closed under a
// live connection (a channel error): the reconnect opens it again.
var errControlClosed = errors.New("control channel closed")

// declareControl declares the control exchange, the node's queue and its
// bindings. Idempotent, at every connect, like declare.
func declareControl(ch declarer, c *ControlOptions) error {
	if err := ch.ExchangeDeclare(c.Exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare control exchange %q: %w", c.Exchange, err)
	}
	args := amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}
	if _, err := ch.QueueDeclare(c.Queue, true, false, false, false, args); err != nil {
		return fmt.Errorf("declare control queue %q: %w", c.Queue, err)
	}
	for _, key := range c.Keys {
		if err := ch.QueueBind(c.Queue, key, c.Exchange, false, nil); err != nil {
			return fmt.Errorf("bind control queue %q to %q: %w", c.Queue, key, err)
		}
	}
	return nil
}

// Consume opens the control channel, declares its topology and consumes
// the node's queue with manual acks, at most c.Prefetch unacked.
func (c *amqpLink) Consume(ctl *ControlOptions) (<-chan amqp.Delivery, error) {
	ch, err := c.Channel()
	if err != nil {
		return nil, fmt.Errorf("open control channel: %w", err)
	}
	if err := declareControl(ch, ctl); err != nil {
		return nil, err
	}
	if err := ch.Qos(ctl.Prefetch, 0, false); err != nil {
		return nil, fmt.Errorf("control channel prefetch: %w", err)
	}
	deliveries, err := ch.Consume(ctl.Queue, "observerd", false, true, false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("consume control queue %q: %w", ctl.Queue, err)
	}
	return deliveries, nil
}

// Reply publishes msg to the default exchange with routing key to (a
// direct reply-to address): unconfirmed and not mandatory, a copy for an
// interactive client that may be gone. On a channel of its own, opened
// again after it closed: a refusal (a daemon without write on
// amq.default) closes that channel, and must not take the control
// channel's deliveries with it. Called from one goroutine (consume's).
func (c *amqpLink) Reply(ctx context.Context, to string, msg amqp.Publishing) error {
	if c.replies == nil || c.replies.IsClosed() {
		ch, err := c.Channel()
		if err != nil {
			return fmt.Errorf("open reply channel: %w", err)
		}
		c.replies = ch
	}
	return c.replies.PublishWithContext(ctx, "", to, false, false, msg)
}

// settlement is a delivery the control actor settled, with its answer.
type settlement struct {
	d      amqp.Delivery
	answer *messages.Event
}

// consume hands the session's deliveries to the control actor and settles
// them, in a goroutine of its own, until the deliveries end (the channel
// or the connection closed). It returns a channel closed when it ended.
// Settling acks and replies on the link, which may block while RabbitMQ
// blocks the connection: never on the committer's goroutine, which only
// queues the settlement (at most Prefetch can be outstanding).
func (p *publisher) consume(ctx context.Context, l link, deliveries <-chan amqp.Delivery) <-chan struct{} {
	done := make(chan struct{})
	settled := make(chan settlement, p.o.Control.Prefetch)
	go func() {
		defer close(done)
		for {
			select {
			case d, ok := <-deliveries:
				if !ok {
					return
				}
				p.deliver(&protocol.ControlDelivery{
					Body: d.Body, UserID: d.UserId, ReplyTo: d.ReplyTo, Redelivered: d.Redelivered,
					Settle: func(answer *messages.Event) {
						select {
						case settled <- settlement{d: d, answer: answer}:
						default:
							// More settlements than deliveries: a second
							// settle of one. Nothing to ack again.
						}
					},
				})
			case s := <-settled:
				p.settleControl(ctx, l, s)
			}
		}
	}()
	return done
}

// settleControl acks a delivery and copies its answer to its reply_to.
// A failure is logged: the ack of a lost channel is moot (the command
// comes again, and is answered from the control actor's window), and the
// reply copy is a courtesy; the answer itself is in the outbox.
func (p *publisher) settleControl(ctx context.Context, l link, s settlement) {
	if err := s.d.Ack(false); err != nil {
		p.log.Warn().Err(err).Msg("control: ack failed; the command will be delivered again")
		return
	}
	if s.d.ReplyTo == "" || s.answer == nil {
		return
	}
	msg, err := p.encode(s.answer)
	if err == nil {
		msg.DeliveryMode = amqp.Transient
		err = l.Reply(ctx, s.d.ReplyTo, msg)
	}
	if err != nil {
		p.log.Warn().Err(err).Str("event", s.answer.Id).Msg("control: reply copy not sent; the answer is in the outbox")
	}
}

// encode is an event's AMQP message in the configured encoding.
func (p *publisher) encode(ev *messages.Event) (amqp.Publishing, error) {
	if p.o.JSON {
		body, err := protojson.Marshal(ev)
		if err != nil {
			return amqp.Publishing{}, fmt.Errorf("encode event %s: %w", ev.Id, err)
		}
		return Publishing(ev, body, "application/json"), nil
	}
	body, err := proto.Marshal(ev)
	if err != nil {
		return amqp.Publishing{}, fmt.Errorf("encode event %s: %w", ev.Id, err)
	}
	return Publishing(ev, body, "application/protobuf"), nil
}
