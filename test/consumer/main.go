// Command consumer is the Go consumer of docs/consumers.md, run by make
// test against real daemons (consumer_test.go). It declares a durable
// quorum queue of its own, binds it to every event of the exchange, and
// reads it over TLS with the broker's certificate verified: it decodes
// both encodings, drops duplicates by id, reports gaps in each node's
// sequence less the ranges that outbox.overflow events report, and keeps
// the state of every observer from its lifecycle events.
//
//	AMQP_URL=amqps://audit:secret@broker.example.com:5671/ \
//	AMQP_CA_FILE=/etc/ssl/observerd/ca.pem go run ./test/consumer -queue audit
//
// It runs until interrupted, or with -drain until it has read what the
// queue held when it started; then it prints what it knows.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"syscall"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/messages"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	flags := flag.NewFlagSet("consumer", flag.ContinueOnError)
	exchange := flags.String("exchange", "polar.events", "the daemon's broker.exchange")
	queue := flags.String("queue", "", "the queue to declare, bind and read (required)")
	drain := flags.Bool("drain", false, "exit once the messages the queue held at the start are read")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *queue == "" {
		return errors.New("-queue is required")
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
	// As the daemon declares it, so that either may start first.
	if err := ch.ExchangeDeclare(*exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", *exchange, err)
	}
	// Durable and quorum: it keeps the events while the consumer is away.
	q, err := ch.QueueDeclare(*queue, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
	if err != nil {
		return fmt.Errorf("declare queue %s: %w", *queue, err)
	}
	// Every event: gap detection needs all of a node's sequence (# or #.<node>).
	if err := ch.QueueBind(*queue, "#", *exchange, false, nil); err != nil {
		return fmt.Errorf("bind queue %s: %w", *queue, err)
	}
	if err := ch.Qos(100, 0, false); err != nil {
		return fmt.Errorf("set prefetch: %w", err)
	}
	deliveries, err := ch.Consume(*queue, "", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", *queue, err)
	}

	t := newTracker(out)
	defer t.report()
	for read := 0; !*drain || read < q.Messages; read++ {
		var d amqp.Delivery
		var open bool
		select {
		case <-ctx.Done():
			return nil
		case d, open = <-deliveries:
			if !open {
				return fmt.Errorf("consume %s: the broker closed the channel", *queue)
			}
		}
		ev, err := decode(d)
		if err != nil {
			fmt.Fprintf(out, "undecodable message %q: %v\n", d.MessageId, err)
			if err := d.Reject(false); err != nil {
				return fmt.Errorf("reject: %w", err)
			}
			continue
		}
		t.handle(ev, d.ContentType)
		// Acknowledged once handled: at least once, end to end.
		if err := d.Ack(false); err != nil {
			return fmt.Errorf("ack: %w", err)
		}
	}
	return nil
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

// span is the sequences first to last.
type span struct{ first, last uint64 }

// node is what the consumer knows of one daemon's sequence.
type node struct {
	contentType string
	last        uint64 // the highest sequence received
	missing     []span // not received, and not reported dropped
}

type tracker struct {
	out       io.Writer
	seen      map[string]bool // ids handled; keep the last hour's in production
	nodes     map[string]*node
	observers map[string]string // observer (its source) -> its state
}

func newTracker(out io.Writer) *tracker {
	return &tracker{out: out, seen: map[string]bool{}, nodes: map[string]*node{}, observers: map[string]string{}}
}

func (t *tracker) handle(ev *messages.Event, contentType string) {
	if t.seen[ev.Id] {
		fmt.Fprintf(t.out, "duplicate %s %d\n", ev.Node, ev.Sequence)
		return
	}
	t.seen[ev.Id] = true

	n := t.nodes[ev.Node]
	if n == nil {
		n = &node{}
		t.nodes[ev.Node] = n
	}
	n.contentType = contentType
	switch {
	case n.last == 0:
		// The first event of this node: the sequence is followed from here.
	case ev.Sequence > n.last+1:
		gap := span{n.last + 1, ev.Sequence - 1}
		fmt.Fprintf(t.out, "gap %s %d..%d\n", ev.Node, gap.first, gap.last)
		n.missing = append(n.missing, gap)
	case ev.Sequence < n.last:
		// A retry overtaken by later events fills its gap.
		n.missing = subtract(n.missing, span{ev.Sequence, ev.Sequence})
	}
	n.last = max(n.last, ev.Sequence)

	// A range the daemon dropped on purpose, and says so: not a loss. A
	// report without a range (disk_full, memory_full) explains no gap.
	if o := ev.GetOutboxOverflow(); o.GetFirstSequence() > 0 {
		fmt.Fprintf(t.out, "dropped %s %d..%d (%s)\n", ev.Node, o.FirstSequence, o.LastSequence, o.Policy)
		n.missing = subtract(n.missing, span{o.FirstSequence, o.LastSequence})
	}

	if state, ok := observerState(t.observers[ev.Source], ev); ok {
		t.observers[ev.Source] = state
	}
}

// observerState folds an observer.* event into the state of its source.
func observerState(prev string, ev *messages.Event) (string, bool) {
	switch ev.Type {
	case messages.TypeObserverStarted, messages.TypeObserverRestarted:
		return "running", true
	case messages.TypeObserverFailed:
		return "failed", true
	case messages.TypeObserverQuarantined:
		return "quarantined", true
	case messages.TypeObserverStopped:
		switch {
		case prev == "quarantined":
			return prev, true // the stop that a quarantine makes
		case ev.GetObserver().GetReason() == "paused":
			return "paused", true
		}
		return "stopped", true
	}
	return "", false
}

// subtract is spans less cut.
func subtract(spans []span, cut span) []span {
	var out []span
	for _, s := range spans {
		if s.last < cut.first || s.first > cut.last {
			out = append(out, s)
			continue
		}
		if s.first < cut.first {
			out = append(out, span{s.first, cut.first - 1})
		}
		if s.last > cut.last {
			out = append(out, span{cut.last + 1, s.last})
		}
	}
	return out
}

// report prints the observers' states and each node's losses.
func (t *tracker) report() {
	for _, source := range slices.Sorted(maps.Keys(t.observers)) {
		fmt.Fprintf(t.out, "%s %s\n", source, t.observers[source])
	}
	for _, name := range slices.Sorted(maps.Keys(t.nodes)) {
		n := t.nodes[name]
		loss := "no loss"
		if len(n.missing) > 0 {
			loss = "lost"
			for _, s := range n.missing {
				loss += fmt.Sprintf(" %d..%d", s.first, s.last)
			}
		}
		fmt.Fprintf(t.out, "%s (%s): %s\n", name, n.contentType, loss)
	}
}
