package broker

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/configs"
	"github.com/polar/observerd/test/actortest"
)

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func TestDialNamesEveryURLAndNeverTheSecret(t *testing.T) {
	addr := closedPort(t)
	o := &Options{
		URLs:        []string{"amqp://observer:hunter2@" + addr + "/", "not a url %%", "amqps://observer@" + addr + "/"},
		Credentials: StaticCredentials(nil, "hunter2"),
	}
	_, err := dial(t.Context(), o, &ring{urls: o.URLs})
	require.Error(t, err)
	msg := err.Error()
	assert.Contains(t, msg, configs.RedactURL(o.URLs[0])+": ")
	assert.Contains(t, msg, "parse url")
	assert.Contains(t, msg, "amqps://observer@"+addr+"/: ")
	assert.Contains(t, msg, "connection refused")
	assert.NotContains(t, msg, "hunter2")
	assert.NotErrorIs(t, err, errCredentials)
}

func TestDialReadsTheCredentialsEveryTime(t *testing.T) {
	// Certificates re-read at every dial (1d85317): a rotation half done
	// fails that dial, named as such; the next dial reads the files again.
	calls := 0
	o := &Options{URLs: []string{"amqps://observer@" + closedPort(t) + "/"}, External: true,
		Credentials: func() (Credentials, error) {
			calls++
			if calls == 1 {
				return Credentials{}, errors.New("read broker.password_file: permission denied")
			}
			return Credentials{}, nil
		}}
	_, err := dial(t.Context(), o, &ring{urls: o.URLs})
	require.ErrorIs(t, err, errCredentials)
	assert.EqualError(t, err, "cannot read broker credentials: read broker.password_file: permission denied")
	_, err = dial(t.Context(), o, &ring{urls: o.URLs})
	require.ErrorContains(t, err, "connection refused", "read again, and dialed")
	assert.Equal(t, 2, calls)
}

func TestUnreadableCredentialsAreLoggedAsSuch(t *testing.T) {
	ob := testOutbox(t, Limit{})
	logs := &logLines{}
	opts := &Options{Node: "test.node", Outbox: ob, URLs: []string{"amqps://observer@" + closedPort(t) + "/"},
		Credentials:   func() (Credentials, error) { return Credentials{}, errors.New("read broker.password_file: too open") },
		ConfirmWindow: 16, Log: zerolog.New(logs)}
	status := &statusLog{}
	p := newPipeline(opts, ob, newMetrics(nil, opts.Log), status.report, dialAMQP(opts))
	p.start()
	defer stopNow(p)
	status.waitFor(t, func(s protocol.BrokerStatus) bool { return s.LastError != "" }, "the dial failed")
	assert.Contains(t, status.last().LastError, "cannot read broker credentials")
	eventually(t, func() bool { return len(logs.matching("broker connection failed: credentials unreadable")) > 0 }, "logged")
	assert.NotContains(t, logs.matching("broker connection failed")[0], `"level":"warn"`, "an operator's mistake: an error")
}

// declarations records what declare declares.
type declarations []string

func (d *declarations) ExchangeDeclare(name, kind string, durable, autoDelete, internal, noWait bool, _ amqp.Table) error {
	*d = append(*d, "exchange "+name+" "+kind+map[bool]string{true: " durable"}[durable])
	return nil
}

func (d *declarations) QueueDeclare(name string, durable, _, _, _ bool, args amqp.Table) (amqp.Queue, error) {
	*d = append(*d, "queue "+name+" "+args[amqp.QueueTypeArg].(string)+map[bool]string{true: " durable"}[durable])
	if name == "refused" {
		return amqp.Queue{}, errors.New("Exception (406) Reason: PRECONDITION_FAILED")
	}
	return amqp.Queue{Name: name}, nil
}

func (d *declarations) QueueBind(name, key, exchange string, _ bool, _ amqp.Table) error {
	*d = append(*d, "bind "+name+" "+key+" "+exchange)
	return nil
}

func TestDeclareDeclaresTheExchangeQueuesAndBindings(t *testing.T) {
	var d declarations
	o := &Options{Exchange: "observerd", Queues: []configs.Queue{
		{Name: "all", Bindings: []string{"#"}},
		{Name: "alerts", Type: "classic", Bindings: []string{"state.changed.#", "outbox.overflow.#"}},
	}}
	require.NoError(t, declare(&d, o))
	assert.Equal(t, declarations{
		"exchange observerd topic durable",
		"queue all quorum durable",
		"bind all # observerd",
		"queue alerts classic durable",
		"bind alerts state.changed.# observerd",
		"bind alerts outbox.overflow.# observerd",
	}, d)

	o.Queues = []configs.Queue{{Name: "refused"}}
	assert.ErrorContains(t, declare(&d, o), `declare queue "refused": Exception (406)`)
}

func TestOptionsFromTheDaemonConfig(t *testing.T) {
	cfg := configs.Default()
	cfg.Node = "n1"
	cfg.Broker.Auth = "external"
	cfg.Broker.Encoding = "json"
	gate := &protocol.Gate{}
	o, err := OptionsFrom(cfg, "1.2.3", "secret", nil, nil, gate, actortest.Logger(t))
	require.NoError(t, err)
	assert.Equal(t, "n1", o.Node)
	assert.Equal(t, "1.2.3", o.Version)
	assert.True(t, o.External)
	assert.True(t, o.JSON)
	assert.Equal(t, cfg.Broker.URLs, o.URLs)
	assert.Equal(t, cfg.Broker.ConfirmWindow, o.ConfirmWindow)
	assert.Equal(t, 8*time.Second, o.DrainTimeout)
	assert.Same(t, gate, o.Gate)
	creds, err := o.Credentials()
	require.NoError(t, err)
	assert.Equal(t, "secret", creds.Password, "no password_file: the environment's")

	cfg.Broker.TLS.CAFile = filepath.Join(t.TempDir(), "none.pem")
	_, err = OptionsFrom(cfg, "1.2.3", "secret", nil, nil, gate, actortest.Logger(t))
	assert.ErrorIs(t, err, os.ErrNotExist, "a daemon that could never log in does not start")
	assert.ErrorContains(t, err, "broker options")

	cfg.Outbox.WhenFull = "block"
	assert.Equal(t, Limit{MaxBytes: int64(cfg.Outbox.MaxBytes)}, LimitOf(cfg.Outbox))
	cfg.Outbox.WhenFull = "drop_oldest"
	assert.True(t, LimitOf(cfg.Outbox).DropOldest)
}
