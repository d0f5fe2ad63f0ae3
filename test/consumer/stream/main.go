// Command stream is the stream consumer of docs/consumers.md, run by make
// test against real daemons (stream_test.go). It declares a RabbitMQ
// stream bound to every event of the exchange, kept for a size and an age,
// and reads it over TLS from an offset: the first event kept, a time, a
// number, or the one after the last it handled (stored in a file). So a
// consumer that starts late, or again, replays what the daemons
// published. It drops duplicates by id and reports each node's gaps and
// events out of order.
//
//	AMQP_URL=amqps://audit:secret@broker.example.com:5671/ \
//	AMQP_CA_FILE=/etc/ssl/observerd/ca.pem \
//	go run ./test/consumer/stream -stream audit.history -from first -offset-file audit.offset
//
// It runs until interrupted, or with -count until it has handled that
// many events; then it prints the sequences it read of each node.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/messages"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "stream:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	flags := flag.NewFlagSet("stream", flag.ContinueOnError)
	exchange := flags.String("exchange", "polar.events", "the daemon's broker.exchange")
	stream := flags.String("stream", "", "the stream to declare, bind and read (required)")
	maxBytes := flags.Int64("max-bytes", 20<<30, "keep at most this many bytes (x-max-length-bytes)")
	maxAge := flags.String("max-age", "7D", "keep events this long (x-max-age: a number and Y, M, D, h, m or s)")
	from := flags.String("from", "first", "where to start: first, last, next, an RFC 3339 time, or an offset")
	offsetFile := flags.String("offset-file", "", "store the offset of each event handled here, and start after it next time")
	count := flags.Int("count", 0, "exit once this many events are handled (0: run until interrupted)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *stream == "" {
		return errors.New("-stream is required")
	}
	offset, err := startAt(*from, *offsetFile)
	if err != nil {
		return err
	}

	pem, err := os.ReadFile(os.Getenv("AMQP_CA_FILE"))
	if err != nil {
		return fmt.Errorf("read the broker's CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return errors.New("AMQP_CA_FILE holds no PEM certificate")
	}
	// No ServerName: amqp091 verifies the certificate against the URL's host.
	conn, err := amqp.DialTLS(os.Getenv("AMQP_URL"), &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open a channel: %w", err)
	}
	if err := declare(ch, *exchange, *stream, *maxBytes, *maxAge); err != nil {
		return err
	}
	// A stream is read with a prefetch and manual acks: an ack only makes
	// room for the next deliveries, it removes nothing.
	if err := ch.Qos(100, 0, false); err != nil {
		return fmt.Errorf("set prefetch: %w", err)
	}
	deliveries, err := ch.Consume(*stream, "", false, false, false, false, amqp.Table{"x-stream-offset": offset})
	if err != nil {
		return fmt.Errorf("consume %s: %w", *stream, err)
	}

	t := newTracker(out)
	defer t.report()
	for handled := 0; *count == 0 || handled < *count; {
		var d amqp.Delivery
		var open bool
		select {
		case <-ctx.Done():
			return nil
		case d, open = <-deliveries:
			if !open {
				return fmt.Errorf("consume %s: the broker closed the channel", *stream)
			}
		}
		if ev, err := decode(d); err != nil {
			fmt.Fprintf(out, "undecodable message %q: %v\n", d.MessageId, err)
		} else if t.handle(ev) {
			handled++
		}
		if err := d.Ack(false); err != nil {
			return fmt.Errorf("ack: %w", err)
		}
		if *offsetFile != "" {
			if err := storeOffset(*offsetFile, d); err != nil {
				return err
			}
		}
	}
	return nil
}

// declare declares the exchange (as the daemon does, so that either may
// start first) and the stream, and binds the stream to every event. The
// retention must be the same at every declaration: a stream cannot
// change its arguments.
func declare(ch *amqp.Channel, exchange, stream string, maxBytes int64, maxAge string) error {
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", exchange, err)
	}
	_, err := ch.QueueDeclare(stream, true, false, false, false, amqp.Table{
		amqp.QueueTypeArg:         amqp.QueueTypeStream,
		amqp.StreamMaxLenBytesArg: maxBytes,
		amqp.StreamMaxAgeArg:      maxAge,
	})
	if err != nil {
		return fmt.Errorf("declare stream %s: %w", stream, err)
	}
	// Every event: gap detection needs all of a node's sequence.
	if err := ch.QueueBind(stream, "#", exchange, false, nil); err != nil {
		return fmt.Errorf("bind stream %s: %w", stream, err)
	}
	return nil
}

// startAt is the x-stream-offset to read from: the one after the offset
// stored in file when there is one, else from. A time starts at the first
// chunk (a batch of events) the broker stored in that second or later.
func startAt(from, file string) (any, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err == nil {
			stored, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("read the offset stored in %s: %w", file, err)
			}
			return stored + 1, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	switch from {
	case "first", "last", "next":
		return from, nil
	}
	if t, err := time.Parse(time.RFC3339, from); err == nil {
		return t, nil
	}
	if offset, err := strconv.ParseInt(from, 10, 64); err == nil && offset >= 0 {
		return offset, nil
	}
	return nil, fmt.Errorf("-from %q: want first, last, next, an RFC 3339 time or an offset", from)
}

// storeOffset writes the offset of d, replacing the file in one step. A
// consumer that keeps what it made of the events should store the offset
// with it, in the same transaction: then a restart neither skips nor
// repeats an event.
func storeOffset(file string, d amqp.Delivery) error {
	offset, ok := d.Headers["x-stream-offset"].(int64)
	if !ok {
		return fmt.Errorf("delivery %q has no x-stream-offset", d.MessageId)
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatInt(offset, 10)+"\n"), 0o644); err != nil {
		return fmt.Errorf("store the offset: %w", err)
	}
	return os.Rename(tmp, file)
}

// decode reads a body in the encoding that its content type names.
// Fields a newer daemon added are skipped in both.
func decode(d amqp.Delivery) (*messages.Event, error) {
	ev := &messages.Event{}
	switch d.ContentType {
	case "application/protobuf":
		return ev, proto.Unmarshal(d.Body, ev)
	case "application/json":
		return ev, protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(d.Body, ev)
	}
	return nil, fmt.Errorf("content type %q", d.ContentType)
}

const (
	// maxIDs is how many ids are kept to drop duplicates: far more than a
	// daemon's confirm window, which bounds how late a duplicate comes.
	maxIDs = 1 << 16
	// maxNodes bounds the nodes followed: one per daemon of the fleet.
	maxNodes = 1 << 12
)

// node is what the consumer read of one daemon's sequence.
type node struct {
	first, last uint64
	events      int
}

type tracker struct {
	out   io.Writer
	seen  map[string]bool
	ids   []string // the ids in seen, oldest at next once full
	next  int
	nodes map[string]*node
}

func newTracker(out io.Writer) *tracker {
	return &tracker{out: out, seen: map[string]bool{}, nodes: map[string]*node{}}
}

// handle follows ev's node's sequence; it is false for a duplicate.
func (t *tracker) handle(ev *messages.Event) bool {
	if t.seen[ev.Id] {
		fmt.Fprintf(t.out, "duplicate %s %d\n", ev.Node, ev.Sequence)
		return false
	}
	if len(t.ids) < maxIDs {
		t.ids = append(t.ids, ev.Id)
	} else {
		delete(t.seen, t.ids[t.next])
		t.ids[t.next] = ev.Id
		t.next = (t.next + 1) % maxIDs
	}
	t.seen[ev.Id] = true

	n := t.nodes[ev.Node]
	switch {
	case n == nil && len(t.nodes) >= maxNodes:
		return true
	case n == nil:
		// The first event of this node: the sequence is followed from here.
		n = &node{first: ev.Sequence, last: ev.Sequence}
		t.nodes[ev.Node] = n
	case ev.Sequence > n.last+1:
		fmt.Fprintf(t.out, "gap %s %d..%d\n", ev.Node, n.last+1, ev.Sequence-1)
	case ev.Sequence <= n.last:
		fmt.Fprintf(t.out, "out of order %s %d after %d\n", ev.Node, ev.Sequence, n.last)
	}
	n.last = max(n.last, ev.Sequence)
	n.events++
	return true
}

// report prints the sequences read of each node.
func (t *tracker) report() {
	for _, name := range slices.Sorted(maps.Keys(t.nodes)) {
		n := t.nodes[name]
		fmt.Fprintf(t.out, "%s: %d events, sequences %d..%d\n", name, n.events, n.first, n.last)
	}
}
