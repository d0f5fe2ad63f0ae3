package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/configs"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/messages"
)

type stringsFlag []string

func (s *stringsFlag) String() string     { return strings.Join(*s, ",") }
func (s *stringsFlag) Set(v string) error { *s = append(*s, v); return nil }

// tail consumes events and prints them one per line, with a warning line
// for every sequence gap and duplicate id it sees (on stderr with --json).
func tail(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", defaultConfig, "daemon config `file`: its broker URLs, TLS settings, password and exchange are used")
	var binds stringsFlag
	fs.Var(&binds, "bind", "routing key pattern to bind (repeatable; default #)")
	queue := fs.String("queue", "", "consume (and so remove the events from) this existing queue instead of a temporary one: only a queue of your own")
	asJSON := fs.Bool("json", false, "print each event as protojson, one object per line (warnings go to stderr)")
	stream := fs.String("stream", "", "read this existing stream (x-queue-type: stream) instead of a temporary queue")
	from := fs.String("from", "", "where --stream starts: first, last, next (default), an RFC 3339 time, or an offset")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	offset, err := streamOffset(*stream, *from, *queue, binds)
	if err != nil {
		fmt.Fprintf(stderr, "observerctl tail: %v\n", err)
		return exitUsage
	}
	cfg, err := configs.Load(*configPath)
	if err != nil {
		for _, p := range yamldoc.ProblemsOf(err) {
			fmt.Fprintln(stderr, p.Error())
		}
		return exitProblems
	}
	if len(binds) == 0 {
		binds = stringsFlag{"#"}
	}
	conn, err := dialBroker(cfg, "observerctl tail")
	if err != nil {
		fmt.Fprintf(stderr, "observerctl tail: %v\n", err)
		return exitProblems
	}
	defer conn.Close()
	var deliveries <-chan amqp.Delivery
	if offset != nil {
		deliveries, err = subscribeStream(ctx, conn, *stream, offset)
	} else {
		deliveries, err = subscribe(conn, cfg.Broker.Exchange, *queue, binds)
	}
	if err != nil {
		fmt.Fprintf(stderr, "observerctl tail: %v\n", err)
		return exitProblems
	}
	t := newTracker()
	for {
		select {
		case <-ctx.Done():
			return exitOK
		case d, ok := <-deliveries:
			if !ok {
				fmt.Fprintln(stderr, "observerctl tail: connection lost")
				return exitProblems
			}
			ev, err := decode(d)
			if err != nil {
				fmt.Fprintf(stderr, "undecodable message %s: %v\n", printable(d.MessageId), err)
				continue
			}
			show(stdout, stderr, t, ev, *asJSON)
		}
	}
}

// show prints ev, and before it the warnings it raises: one line each on
// stdout, or with asJSON the event as one JSON object per line on stdout
// and the warnings on stderr, so that stdout stays JSON lines.
func show(stdout, stderr io.Writer, t *tracker, ev *messages.Event, asJSON bool) {
	warnings := stdout
	if asJSON {
		warnings = stderr
	}
	for _, w := range t.see(ev) {
		fmt.Fprintln(warnings, printable(w))
	}
	if asJSON {
		b, _ := protojson.Marshal(ev)
		fmt.Fprintln(stdout, string(jsonSafe(b)))
		return
	}
	fmt.Fprintln(stdout, line(ev))
}

// dialBroker logs in to the broker of cfg's broker section, as the
// connection name.
func dialBroker(cfg *configs.Config, name string) (*amqp.Connection, error) {
	tlsCfg, err := cfg.Broker.ClientTLS()
	if err != nil {
		return nil, err
	}
	pw, err := cfg.Broker.Password(os.Getenv(configs.PasswordEnv))
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, u := range cfg.Broker.URLs {
		uri, err := amqp.ParseURI(u)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c := amqp.Config{TLSClientConfig: tlsCfg.Clone(), Properties: amqp.NewConnectionProperties()}
		c.Properties.SetClientConnectionName(name)
		if cfg.Broker.Auth == "external" {
			c.SASL = []amqp.Authentication{&amqp.ExternalAuth{}}
		} else {
			c.SASL = []amqp.Authentication{&amqp.PlainAuth{Username: uri.Username, Password: pw}}
		}
		conn, err := amqp.DialConfig(u, c)
		if err == nil {
			return conn, nil
		}
		errs = append(errs, fmt.Errorf("connect %s: %w", configs.RedactURL(u), err))
	}
	return nil, errors.Join(errs...)
}

func subscribe(conn *amqp.Connection, exchange, queue string, binds []string) (<-chan amqp.Delivery, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	if queue == "" {
		if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
			return nil, fmt.Errorf("declare exchange %q: %w", exchange, err)
		}
		q, err := ch.QueueDeclare("", false, true, true, false, nil)
		if err != nil {
			return nil, fmt.Errorf("declare temporary queue: %w", err)
		}
		queue = q.Name
		for _, b := range binds {
			if err := ch.QueueBind(queue, b, exchange, false, nil); err != nil {
				return nil, fmt.Errorf("bind %q: %w", b, err)
			}
		}
	}
	d, err := ch.Consume(queue, "observerctl-tail", true, queue == "", false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("consume %q: %w", queue, err)
	}
	return d, nil
}

func decode(d amqp.Delivery) (*messages.Event, error) {
	ev := &messages.Event{}
	if d.ContentType == "application/json" {
		return ev, protojson.Unmarshal(d.Body, ev)
	}
	return ev, proto.Unmarshal(d.Body, ev)
}

// tracker remembers, per node, the highest sequence seen, and the last
// maxIDs ids (a duplicate delivered later than that goes unflagged; the
// memory of a long tail stays bounded). It follows at most maxNodes
// nodes: a queue with more is not one fleet's, and what arrives on the
// broker is not trusted to stay reasonable.
type tracker struct {
	last map[string]uint64
	ids  map[string]bool
	ring []string // the remembered ids, oldest at next
	next int
	// full is set once maxNodes nodes are followed, so that the warning
	// about it is given once.
	full bool
}

const (
	maxIDs   = 1 << 16
	maxNodes = 1 << 12
)

func newTracker() *tracker { return &tracker{last: map[string]uint64{}, ids: map[string]bool{}} }

// see returns the warnings that ev raises.
func (t *tracker) see(ev *messages.Event) []string {
	var out []string
	if t.ids[ev.Id] {
		out = append(out, fmt.Sprintf("!! duplicate id %s (sequence %d)", ev.Id, ev.Sequence))
	} else {
		t.remember(ev.Id)
	}
	last, seen := t.last[ev.Node]
	if !seen && len(t.last) >= maxNodes {
		if !t.full {
			t.full = true
			out = append(out, fmt.Sprintf("!! more than %d nodes: gaps of the ones after are not reported", maxNodes))
		}
		return out
	}
	if seen && ev.Sequence > last+1 {
		out = append(out, fmt.Sprintf("!! gap on %s: sequences %d..%d missing", ev.Node, last+1, ev.Sequence-1))
	}
	if ev.Sequence > last {
		t.last[ev.Node] = ev.Sequence
	}
	return out
}

func (t *tracker) remember(id string) {
	if len(t.ring) < maxIDs {
		t.ring = append(t.ring, id)
	} else {
		delete(t.ids, t.ring[t.next])
		t.ring[t.next] = id
		t.next = (t.next + 1) % maxIDs
	}
	t.ids[id] = true
}

// line is the one-line rendering of an event, safe for a terminal: its
// time, sequence, type, severity, node, subject and a summary of its
// payload.
func line(ev *messages.Event) string {
	return printable(fmt.Sprintf("%s %6d %-22s %-8s %-10s %-12s %s",
		ev.GetTime().AsTime().Local().Format(time.TimeOnly), ev.Sequence, ev.Type,
		severity(ev.Severity), ev.Node, ev.Subject, summary(ev)))
}

// summary renders an event's payload: an observation by its kind, the
// daemon's own events here.
func summary(ev *messages.Event) string {
	if s, ok := kinds.Summary(ev); ok {
		return s
	}
	switch d := ev.Data.(type) {
	case *messages.Event_StateChange:
		s := d.StateChange
		return fmt.Sprintf("%s: %s -> %s", s.Observer, state(s.OldState), state(s.NewState))
	case *messages.Event_PolicyOutcome:
		p := d.PolicyOutcome
		if p.Reason != "" {
			return fmt.Sprintf("%s %s", p.File, strings.ReplaceAll(p.Reason, "\n", "; "))
		}
		return fmt.Sprintf("%s revision %s added=%v updated=%v removed=%v", p.Name, p.Revision, p.Added, p.Updated, p.Removed)
	case *messages.Event_PolicyThrottled:
		p := d.PolicyThrottled
		return fmt.Sprintf("%s: %d observations not published in %s (budget %g/s, burst %d)", p.Name, p.DroppedEvents,
			p.Window.AsDuration().Round(time.Millisecond), p.EventsPerSecond, p.Burst)
	case *messages.Event_Observer:
		o := d.Observer
		return strings.TrimSpace(fmt.Sprintf("%s %s", o.Actor, o.Reason))
	case *messages.Event_Daemon:
		return fmt.Sprintf("version %s pid %d %s", d.Daemon.Version, d.Daemon.Pid, d.Daemon.Reason)
	}
	return ""
}

// severity is a severity as the docs write it: info, high...
func severity(s messages.Severity) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "SEVERITY_"))
}

func state(s messages.ObserverState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "OBSERVER_STATE_"))
}
