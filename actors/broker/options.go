package broker

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/configs"
)

// Options configure the broker actor.
type Options struct {
	Node    string
	Version string // for the provenance of the broker's own events
	// Outbox is the opened outbox; it outlives the actor's incarnations,
	// and its opener closes it after the actor stopped.
	Outbox *Outbox
	// URLs are the cluster's nodes. A dial tries each once, starting
	// after the last one connected to (nodes.go).
	URLs []string
	// URLOrder is "listed" to go round URLs in their order; otherwise each
	// daemon goes round them in an order derived from Node.
	URLOrder string
	// Credentials are called at every dial, so that a rotated CA,
	// certificate, key or password is used at the next reconnect.
	Credentials   func() (Credentials, error)
	External      bool // SASL EXTERNAL with the client certificate
	Exchange      string
	JSON          bool // protojson bodies instead of protobuf
	ConfirmWindow int
	Heartbeat     time.Duration
	Queues        []configs.Queue
	// Control is the control channel's; nil declares and consumes
	// nothing of it.
	Control *ControlOptions
	// ControlActor receives the control channel's deliveries; without
	// it, Control is not consumed.
	ControlActor *actor.PID
	// Gate is closed while a when_full: block outbox is full or cannot be
	// written.
	Gate *protocol.Gate
	// DrainTimeout bounds how long a stop waits for outstanding confirms.
	DrainTimeout time.Duration
	// State receives a *messages.BrokerStatus on every connection change.
	State *actor.PID
	// Metrics registers the broker's metrics (nil: counted, not exported).
	// Props registers them once, for all of the actor's incarnations.
	Metrics prometheus.Registerer
	Log     zerolog.Logger
}

// Credentials are what a dial authenticates with.
type Credentials struct {
	TLS      *tls.Config
	Password string // for PLAIN; the user comes from the URL
}

// StaticCredentials are credentials that never change.
func StaticCredentials(tlsCfg *tls.Config, password string) func() (Credentials, error) {
	return func() (Credentials, error) { return Credentials{TLS: tlsCfg, Password: password}, nil }
}

// CredentialsOf re-reads the broker's TLS files and password file at every
// call; envPassword is OBSERVERD_AMQP_PASSWORD as the daemon took it out of
// its environment at start (configs.TakePasswordEnv), used when there is
// no password_file.
func CredentialsOf(b *configs.Broker, envPassword string) func() (Credentials, error) {
	return func() (Credentials, error) {
		tlsCfg, err := b.ClientTLS()
		if err != nil {
			return Credentials{}, err
		}
		pw, err := b.Password(envPassword)
		if err != nil {
			return Credentials{}, err
		}
		return Credentials{TLS: tlsCfg, Password: pw}, nil
	}
}

// OptionsFrom builds Options from a validated daemon config. It reads the
// password and the TLS files once, so that a daemon that could never log
// in does not start; the broker reads them again at every dial.
func OptionsFrom(cfg *configs.Config, version, envPassword string, outbox *Outbox, state *actor.PID, gate *protocol.Gate, log zerolog.Logger) (Options, error) {
	creds := CredentialsOf(&cfg.Broker, envPassword)
	if _, err := creds(); err != nil {
		return Options{}, fmt.Errorf("broker options: %w", err)
	}
	return Options{
		Node:          cfg.Node,
		Version:       version,
		Outbox:        outbox,
		URLs:          cfg.Broker.URLs,
		URLOrder:      cfg.Broker.URLOrder,
		Credentials:   creds,
		External:      cfg.Broker.Auth == "external",
		Exchange:      cfg.Broker.Exchange,
		JSON:          cfg.Broker.Encoding == "json",
		ConfirmWindow: cfg.Broker.ConfirmWindow,
		Heartbeat:     time.Duration(cfg.Broker.Heartbeat),
		Queues:        cfg.Broker.Queues,
		Control:       controlOf(cfg),
		Gate:          gate,
		DrainTimeout:  8 * time.Second,
		State:         state,
		Log:           log,
	}, nil
}

// controlOf is the control channel of a daemon config; nil when
// control.enabled is false.
func controlOf(cfg *configs.Config) *ControlOptions {
	if !cfg.Control.Enabled {
		return nil
	}
	return &ControlOptions{Exchange: ControlExchange, Queue: configs.ControlQueue(cfg.Node), Keys: cfg.ControlKeys(), Prefetch: DefaultPrefetch}
}

// LimitOf is the outbox bound of the daemon config's outbox section.
func LimitOf(o configs.Outbox) Limit {
	return Limit{MaxBytes: int64(o.MaxBytes), DropOldest: o.WhenFull != "block"}
}
