package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// streamPrefetch is how many deliveries of a stream the broker sends
// ahead of the acks: a stream consumer must set a prefetch.
const streamPrefetch = 100

// streamOffset validates tail's --stream and --from and returns the
// x-stream-offset to read from: first, last or next, an RFC 3339 time
// (the broker counts whole seconds, and starts at the first chunk, a
// batch of events, stored in that second or later), or an offset, a
// non-negative integer. Without --from a stream is read from next: what
// arrives from now on, as the temporary queue gives it.
func streamOffset(stream, from, queue string, binds []string) (any, error) {
	switch {
	case stream == "" && from != "":
		return nil, errors.New("--from reads a stream: give it with --stream NAME")
	case stream == "":
		return nil, nil
	case queue != "":
		return nil, errors.New("--stream and --queue: read one or the other")
	case len(binds) > 0:
		return nil, errors.New("--bind does not apply to --stream: a stream holds what it is bound to")
	}
	switch from {
	case "":
		return "next", nil
	case "first", "last", "next":
		return from, nil
	}
	if t, err := time.Parse(time.RFC3339, from); err == nil {
		return t, nil
	}
	if offset, err := strconv.ParseInt(from, 10, 64); err == nil && offset >= 0 {
		return offset, nil
	}
	return nil, fmt.Errorf("--from %q: want first, last, next, an RFC 3339 time or an offset", from)
}

// subscribeStream consumes the existing stream from offset, until ctx
// ends. A stream is consumed with a prefetch and manual acks, which only
// make room for the next deliveries (nothing is removed): each delivery
// is acked as it is passed on, so at most streamPrefetch wait unprinted.
// The broker refuses an offset on a queue that is not a stream, so tail
// never consumes (and removes) what a classic or quorum queue holds.
func subscribeStream(ctx context.Context, conn *amqp.Connection, stream string, offset any) (<-chan amqp.Delivery, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Qos(streamPrefetch, 0, false); err != nil {
		return nil, fmt.Errorf("set prefetch: %w", err)
	}
	in, err := ch.Consume(stream, "observerctl-tail", false, false, false, false, amqp.Table{"x-stream-offset": offset})
	if err != nil {
		return nil, fmt.Errorf("consume stream %q: %w", stream, err)
	}
	out := make(chan amqp.Delivery)
	go func() {
		defer close(out)
		for d := range in {
			if d.Ack(false) != nil {
				return // the channel is gone: tail reports the lost connection
			}
			select {
			case out <- d:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
