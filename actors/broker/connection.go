package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/polar/observerd/configs"
)

// link is all the publisher needs of amqp091-go: one connection and the one
// channel it publishes on. It is the seam that lets the tests' fake
// (fake_test.go) play RabbitMQ: acks, nacks, returns, blocking, a
// connection lost at any point, confirms in any order.
type link interface {
	// URL is the connection's URL, redacted.
	URL() string
	// Open opens the channel in confirm mode, declares the topology and
	// subscribes to the notifications.
	Open() error
	// Publish publishes msg as mandatory, with a deferred confirm. It may
	// block while RabbitMQ stops reading (a resource alarm), beyond ctx:
	// Abort ends that.
	Publish(ctx context.Context, exchange, key string, msg amqp.Publishing) (confirm, error)
	// Returns, Blocked and Closed are the notifications, closed when the
	// connection ends. amqp091-go sends to them from its reader goroutine
	// and drops what is not taken within 5 s, so they are read at once or
	// buffered for everything that can be outstanding.
	Returns() <-chan amqp.Return
	Blocked() <-chan amqp.Blocking
	Closed() <-chan *amqp.Error
	// Consume opens the control channel, a second channel of the
	// connection (control.go), declares its topology and consumes the
	// node's queue; the deliveries end when that channel or the
	// connection closes.
	Consume(c *ControlOptions) (<-chan amqp.Delivery, error)
	// Reply sends msg to a direct reply-to address on the control channel.
	Reply(ctx context.Context, to string, msg amqp.Publishing) error
	// Close closes the connection politely, and its socket when that
	// does not finish within closeTimeout.
	Close()
	// Abort closes the socket: everything blocked on it returns.
	Abort()
}

// confirm is a publication's deferred confirmation
// (*amqp.DeferredConfirmation).
type confirm interface {
	Done() <-chan struct{}
	Acked() bool
}

// dialer opens a link: dialAMQP's to RabbitMQ, or the tests' fake.
type dialer func(ctx context.Context) (link, error)

// returnsBuffer is the capacity of the returns channel: what can be
// outstanding (the publisher publishes at most ConfirmWindow unconfirmed),
// so that amqp091-go never waits on it, nor drops a return.
func returnsBuffer(window int) int { return window }

// amqpLink is a link over amqp091-go. It keeps the raw socket under the
// connection, so that a connection stuck behind a blocked socket (a
// RabbitMQ resource alarm stops reading from publishers, and amqp091-go's
// Publish and even Close then block forever) can be torn down by closing
// the socket.
type amqpLink struct {
	*amqp.Connection
	o   *Options
	url string // redacted

	mu  sync.Mutex
	raw net.Conn

	ch      *amqp.Channel
	replies *amqp.Channel // the control channel's reply copies, opened at the first
	returns chan amqp.Return
	blocked chan amqp.Blocking
	closed  chan *amqp.Error
}

// errCredentials marks a dial that failed before connecting: the TLS files
// or the password file could not be read.
var errCredentials = errors.New("cannot read broker credentials")

const (
	dialTimeout  = 10 * time.Second
	closeTimeout = 2 * time.Second
)

// dialAMQP is the dialer of RabbitMQ at o.URLs, gone round in o's order
// (nodes.go).
func dialAMQP(o *Options) dialer {
	r := &ring{urls: o.URLs}
	if o.URLOrder != "listed" {
		r.urls = spreadOrder(o.URLs, o.Node)
	}
	return func(ctx context.Context) (link, error) {
		l, err := dial(ctx, o, r)
		if err != nil {
			return nil, err
		}
		return l, nil
	}
}

// dial reads the credentials afresh (a rotated CA, certificate, key or
// password needs no restart), then tries every URL once, from the ring's
// position, and returns the first connection that opens, or an error
// naming each URL's failure.
func dial(ctx context.Context, o *Options, r *ring) (*amqpLink, error) {
	creds, err := o.Credentials()
	if err != nil {
		// The reason names the file, never its content.
		return nil, fmt.Errorf("%w: %w", errCredentials, err)
	}
	var l *amqpLink
	errs := r.dial(ctx, func(u string) error {
		c, err := dialOne(ctx, o, creds, u)
		if err != nil {
			return fmt.Errorf("%s: %w", configs.RedactURL(u), err)
		}
		l = c
		return nil
	})
	if l == nil {
		return nil, joinLine(errs)
	}
	return l, nil
}

func dialOne(ctx context.Context, o *Options, creds Credentials, url string) (*amqpLink, error) {
	c := &amqpLink{o: o, url: configs.RedactURL(url)}
	uri, err := amqp.ParseURI(url)
	if err != nil {
		return nil, fmt.Errorf("parse url: %w", err)
	}
	cfg := amqp.Config{
		Heartbeat:  o.Heartbeat,
		Properties: amqp.NewConnectionProperties(),
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: dialTimeout}
			raw, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// Bounds the TLS and AMQP handshakes; amqp091-go clears it
			// once the connection is open and heartbeats take over.
			if err := raw.SetDeadline(time.Now().Add(dialTimeout)); err != nil {
				raw.Close()
				return nil, err
			}
			c.mu.Lock()
			c.raw = raw
			c.mu.Unlock()
			return raw, nil
		},
	}
	cfg.Properties.SetClientConnectionName("observerd " + o.Node)
	if uri.Scheme == "amqps" {
		// Cloned per dial: amqp091-go writes the URL's host into
		// ServerName when it is empty, which must not leak to the next URL.
		cfg.TLSClientConfig = creds.TLS.Clone()
	}
	if o.External {
		cfg.SASL = []amqp.Authentication{&amqp.ExternalAuth{}}
	} else {
		cfg.SASL = []amqp.Authentication{&amqp.PlainAuth{Username: uri.Username, Password: creds.Password}}
	}
	conn, err := amqp.DialConfig(url, cfg)
	if err != nil {
		return nil, err
	}
	c.Connection = conn
	return c, nil
}

func (c *amqpLink) URL() string { return c.url }

func (c *amqpLink) Open() error {
	ch, err := c.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		return fmt.Errorf("enable publisher confirms: %w", err)
	}
	if err := declare(ch, c.o); err != nil {
		return err
	}
	c.ch = ch
	c.returns = ch.NotifyReturn(make(chan amqp.Return, returnsBuffer(c.o.ConfirmWindow)))
	c.closed = c.NotifyClose(make(chan *amqp.Error, 1))
	c.blocked = c.NotifyBlocked(make(chan amqp.Blocking, 1))
	return nil
}

func (c *amqpLink) Publish(ctx context.Context, exchange, key string, msg amqp.Publishing) (confirm, error) {
	dc, err := c.ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false, msg)
	if err != nil {
		return nil, err
	}
	return dc, nil
}

func (c *amqpLink) Returns() <-chan amqp.Return   { return c.returns }
func (c *amqpLink) Blocked() <-chan amqp.Blocking { return c.blocked }
func (c *amqpLink) Closed() <-chan *amqp.Error    { return c.closed }

func (c *amqpLink) Close() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Connection.Close()
	}()
	select {
	case <-done:
	case <-time.After(closeTimeout):
		c.Abort()
		<-done
	}
}

func (c *amqpLink) Abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.raw != nil {
		_ = c.raw.Close()
	}
}

// joinLine joins errors on one line, for logs and /readyz.
func joinLine(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	msg := errs[0].Error()
	for _, e := range errs[1:] {
		msg += "; " + e.Error()
	}
	return fmt.Errorf("%s", msg)
}
