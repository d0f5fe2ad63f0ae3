package broker

import (
	"crypto/tls"
	"fmt"
	"os"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/polar/observerd/configs"
	"github.com/polar/observerd/messages"
)

// Options configure the broker actor.
type Options struct {
	Node     string
	Version  string // for the provenance of the broker's own events
	StateDir string
	// URLs are tried in order at every (re)connect.
	URLs          []string
	TLS           *tls.Config
	External      bool   // SASL EXTERNAL with the client certificate
	Password      string // for PLAIN; the user comes from the URL
	Exchange      string
	JSON          bool // protojson bodies instead of protobuf
	ConfirmWindow int
	Heartbeat     time.Duration
	Queues        []configs.Queue
	// Limit bounds the outbox (outbox.max_bytes, outbox.when_full).
	Limit Limit
	// Gate is closed while a when_full: block outbox is full.
	Gate *messages.Gate
	// DrainTimeout bounds how long a stop waits for outstanding confirms.
	DrainTimeout time.Duration
	// State receives a *messages.BrokerStatus on every connection change.
	State *actor.PID
	// Metrics registers the broker's metrics (nil: counted, not exported).
	// Props registers them once, for all of the actor's incarnations.
	Metrics prometheus.Registerer
	Log     zerolog.Logger
}

// OptionsFrom builds Options from a validated daemon config; it reads the
// password and the TLS files.
func OptionsFrom(cfg *configs.Config, version string, state *actor.PID, gate *messages.Gate, log zerolog.Logger) (Options, error) {
	tlsCfg, err := cfg.Broker.ClientTLS()
	if err != nil {
		return Options{}, fmt.Errorf("broker options: %w", err)
	}
	pw, err := cfg.Broker.Password(os.Getenv(configs.PasswordEnv))
	if err != nil {
		return Options{}, fmt.Errorf("broker options: %w", err)
	}
	return Options{
		Node:          cfg.Node,
		Version:       version,
		StateDir:      cfg.StateDir,
		URLs:          cfg.Broker.URLs,
		TLS:           tlsCfg,
		External:      cfg.Broker.Auth == "external",
		Password:      pw,
		Exchange:      cfg.Broker.Exchange,
		JSON:          cfg.Broker.Encoding == "json",
		ConfirmWindow: cfg.Broker.ConfirmWindow,
		Heartbeat:     time.Duration(cfg.Broker.Heartbeat),
		Queues:        cfg.Broker.Queues,
		Limit:         LimitOf(cfg.Outbox),
		Gate:          gate,
		DrainTimeout:  8 * time.Second,
		State:         state,
		Log:           log,
	}, nil
}

// LimitOf is the outbox bound of the daemon config's outbox section.
func LimitOf(o configs.Outbox) Limit {
	return Limit{MaxBytes: int64(o.MaxBytes), DropOldest: o.WhenFull != "block"}
}
