package protocol

import "github.com/polar/observerd/messages"

// The control actor accepts ControlDelivery, from the broker: one message
// of the node's control queue (docs/control.md). It decides whether the
// command may run; then it sends the task-manager the observer commands
// (Pause, Resume, ObserveNow) and asks the state-manager GetState and the
// broker GetOutboxStats exactly as the admin does (RunObserverCommand,
// AskSnapshot, AskOutbox), asks the policy-manager PolicyOwner before it
// caches a central policy, and sends the state-manager an Emit of
// command.result for every delivery, refusals included, whose Accepted
// settles the delivery.

// ControlDelivery is a message of the control queue as the broker received
// it. Settle must be called exactly once, when the answer (a
// command.result) has been accepted into the outbox: it acks the delivery
// and, when ReplyTo is set, sends the answer there as well. It never
// blocks. A delivery never settled (a crash, a lost connection) is
// delivered again, and answered again from the control actor's window of
// recent ids.
type ControlDelivery struct {
	Body []byte
	// UserID is the AMQP user_id property, which RabbitMQ checked against
	// the sender's login; "" when the sender set none.
	UserID string
	// ReplyTo is the AMQP reply_to property (a direct reply-to address).
	ReplyTo     string
	Redelivered bool
	Settle      func(answer *messages.Event)
}
