package broker

import (
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// declarer is what declare needs of an *amqp.Channel.
type declarer interface {
	ExchangeDeclare(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error
	QueueDeclare(name string, durable, autoDelete, exclusive, noWait bool, args amqp.Table) (amqp.Queue, error)
	QueueBind(name, key, exchange string, noWait bool, args amqp.Table) error
}

// declare declares the exchange, the configured queues and their bindings.
// It runs at every connect: declarations are idempotent, and a broker that
// lost its definitions (a fresh node) gets them back.
func declare(ch declarer, o *Options) error {
	if err := ch.ExchangeDeclare(o.Exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q: %w", o.Exchange, err)
	}
	for _, q := range o.Queues {
		typ := q.Type
		if typ == "" {
			typ = amqp.QueueTypeQuorum
		}
		args := amqp.Table{amqp.QueueTypeArg: typ}
		if _, err := ch.QueueDeclare(q.Name, true, false, false, false, args); err != nil {
			return fmt.Errorf("declare queue %q: %w", q.Name, err)
		}
		for _, key := range q.Bindings {
			if err := ch.QueueBind(q.Name, key, o.Exchange, false, nil); err != nil {
				return fmt.Errorf("bind queue %q to %q: %w", q.Name, key, err)
			}
		}
	}
	return nil
}
