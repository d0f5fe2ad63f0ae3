package main

import (
	"context"
	"fmt"
	"net/url"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/actors/broker"
	"github.com/polar/observerd/messages"
)

// dialRaw opens a connection the way the broker actor does: the same URL,
// the same TLS config, PLAIN with the same password, the same heartbeat.
func (e *env) dialRaw() (*amqp.Connection, error) {
	u, err := url.Parse(e.node.URL())
	if err != nil {
		return nil, fmt.Errorf("parse broker url: %w", err)
	}
	conn, err := amqp.DialConfig(e.node.URL(), amqp.Config{
		TLSClientConfig: e.node.TLSConfig(),
		SASL:            []amqp.Authentication{&amqp.PlainAuth{Username: u.User.Username(), Password: e.node.Password}},
		Heartbeat:       10 * time.Second,
		Dial:            amqp.DefaultDial(10 * time.Second),
	})
	if err != nil {
		return nil, fmt.Errorf("dial baseline connection: %w", err)
	}
	return conn, nil
}

// declareTopology declares what the broker actor declares for itself: a
// durable topic exchange and a durable quorum queue bound "#".
func declareTopology(ch *amqp.Channel, exchange, queue string) error {
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q: %w", exchange, err)
	}
	args := amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, args); err != nil {
		return fmt.Errorf("declare queue %q: %w", queue, err)
	}
	if err := ch.QueueBind(queue, "#", exchange, false, nil); err != nil {
		return fmt.Errorf("bind queue %q: %w", queue, err)
	}
	return nil
}

// deleteTopology deletes a run's queue (with its messages) and exchange
// over a connection of its own, so that it works after a broker restart.
func (e *env) deleteTopology(exchange, queue string) error {
	conn, err := e.dialRaw()
	if err != nil {
		return fmt.Errorf("delete %s: %w", queue, err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("delete %s: open channel: %w", queue, err)
	}
	if _, err := ch.QueueDelete(queue, false, false, false); err != nil {
		return fmt.Errorf("delete queue %s: %w", queue, err)
	}
	if err := ch.ExchangeDelete(exchange, false, false); err != nil {
		return fmt.Errorf("delete exchange %s: %w", exchange, err)
	}
	return nil
}

// publishing builds the AMQP message the broker actor sends for ev, with
// the broker's own mapping, so that the baseline moves messages of the same
// size and shape.
func publishing(ev *messages.Event) (amqp.Publishing, error) {
	body, err := proto.Marshal(ev)
	if err != nil {
		return amqp.Publishing{}, fmt.Errorf("encode event: %w", err)
	}
	return broker.Publishing(ev, body, "application/protobuf"), nil
}

// rawPublish is the baseline: a plain amqp091-go publisher with publisher
// confirms and at most window deferred confirmations outstanding, sending n
// persistent messages (prepared beforehand: encoding is the broker actor's
// cost, not the baseline's) to a fresh exchange and quorum queue, and
// timing until the last one is confirmed. The queue is deleted afterwards.
func (e *env) rawPublish(ctx context.Context, kind string, n int) (measure, error) {
	msgs := make([]amqp.Publishing, n)
	for i := range msgs {
		ev := event(i)
		ev.Sequence = uint64(i + 1)
		var err error
		if msgs[i], err = publishing(ev); err != nil {
			return measure{}, err
		}
	}
	name := e.name(kind)
	exchange, queue := name, name+".q"
	conn, err := e.dialRaw()
	if err != nil {
		return measure{}, err
	}
	defer conn.Close()
	defer func() {
		if err := e.deleteTopology(exchange, queue); err != nil {
			e.say("%v", err)
		}
	}()
	ch, err := conn.Channel()
	if err != nil {
		return measure{}, fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		return measure{}, fmt.Errorf("enable publisher confirms: %w", err)
	}
	if err := declareTopology(ch, exchange, queue); err != nil {
		return measure{}, err
	}
	key := messages.RoutingKey(messages.TypeObservationHTTP, benchNode)

	outstanding := make([]*amqp.DeferredConfirmation, 0, n)
	head, nacks := 0, 0
	await := func(dc *amqp.DeferredConfirmation) error {
		select {
		case <-dc.Done():
		case <-ctx.Done():
			return ctx.Err()
		}
		if !dc.Acked() {
			nacks++
		}
		return nil
	}
	cpu0 := processCPU()
	start := time.Now()
	for i := range msgs {
		if len(outstanding)-head == e.cfg.window {
			if err := await(outstanding[head]); err != nil {
				return measure{}, err
			}
			head++
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false, msgs[i])
		if err != nil {
			return measure{}, fmt.Errorf("publish message %d: %w", i, err)
		}
		outstanding = append(outstanding, dc)
	}
	for ; head < len(outstanding); head++ {
		if err := await(outstanding[head]); err != nil {
			return measure{}, err
		}
	}
	took, cpu := time.Since(start), processCPU()-cpu0
	if nacks > 0 {
		return measure{}, fmt.Errorf("baseline: %d of %d messages nacked", nacks, n)
	}
	return measure{events: n, took: took, cpu: cpu, bytes: len(msgs[0].Body)}, nil
}

// measure is one timed run.
type measure struct {
	events int
	took   time.Duration
	// cpu is the CPU time (user and system) this whole process used while
	// the run was timed: on a small machine that RabbitMQ shares, what one
	// side spends is taken from the broker.
	cpu     time.Duration
	bytes   int // body bytes of one message
	commits int // outbox write transactions (Append and Delete), 0 for the baseline
}

// cpuPerEvent is the process's CPU time per event, in microseconds.
func (m measure) cpuPerEvent() float64 {
	if m.events == 0 {
		return 0
	}
	return float64(m.cpu.Microseconds()) / float64(m.events)
}

// processCPU is the user and system CPU time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (m measure) rate() float64 {
	if m.took <= 0 {
		return 0
	}
	return float64(m.events) / m.took.Seconds()
}
