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

// connection is one AMQP connection and the raw socket under it, kept so
// that a connection stuck behind a blocked socket (a RabbitMQ resource
// alarm stops reading from publishers, and amqp091-go's Publish and even
// Close then block forever) can be torn down by closing the socket.
type connection struct {
	*amqp.Connection
	url string // redacted

	mu  sync.Mutex
	raw net.Conn
}

// errCredentials marks a dial that failed before connecting: the TLS files
// or the password file could not be read.
var errCredentials = errors.New("cannot read broker credentials")

const (
	dialTimeout  = 10 * time.Second
	closeTimeout = 2 * time.Second
)

// dial reads the credentials afresh (a rotated CA, certificate, key or
// password needs no restart), then tries every URL in order and returns
// the first connection that opens, or an error naming each URL's failure.
func dial(ctx context.Context, o *Options) (*connection, error) {
	creds, err := o.Credentials()
	if err != nil {
		// The reason names the file, never its content.
		return nil, fmt.Errorf("%w: %w", errCredentials, err)
	}
	var errs []error
	for _, u := range o.URLs {
		c, err := dialOne(ctx, o, creds, u)
		if err == nil {
			return c, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", configs.RedactURL(u), err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, joinLine(errs)
}

func dialOne(ctx context.Context, o *Options, creds Credentials, url string) (*connection, error) {
	c := &connection{url: configs.RedactURL(url)}
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

// close closes the connection politely, and the socket under it when that
// does not finish within closeTimeout.
func (c *connection) close() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Connection.Close()
	}()
	select {
	case <-done:
	case <-time.After(closeTimeout):
		c.forceClose()
		<-done
	}
}

// forceClose closes the socket: every blocked read or write on it returns.
func (c *connection) forceClose() {
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
