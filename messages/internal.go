package messages

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/polar/observerd/policy"
)

// Event types of the contract (docs/consumers.md).
const (
	TypeObservationHTTP       = "observation.http"
	TypeObservationPrometheus = "observation.prometheus"
	TypeObservationTCP        = "observation.tcp"
	TypeObservationProcess    = "observation.process"
	TypeObservationPlugin     = "observation.plugin"
	TypeStateChanged          = "state.changed"
	TypePolicyApplied         = "policy.applied"
	TypePolicyRejected        = "policy.rejected"
	TypePolicyRemoved         = "policy.removed"
	TypePolicyThrottled       = "policy.throttled"
	TypeObserverStarted       = "observer.started"
	TypeObserverStopped       = "observer.stopped"
	TypeObserverFailed        = "observer.failed"
	TypeObserverRestarted     = "observer.restarted"
	TypeObserverQuarantined   = "observer.quarantined"
	TypeOutboxOverflow        = "outbox.overflow"
	TypeDaemonStarted         = "daemon.started"
	TypeDaemonStopping        = "daemon.stopping"
	TypeCommandResult         = "command.result"
)

// NewEvent returns an event of the given type with a fresh UUIDv7 id, the
// current time, and the category and severity that the type implies. The
// state-manager stamps node, source and provenance; the broker's outbox
// assigns the sequence when it accepts the event.
func NewEvent(typ string) *Event {
	return &Event{
		Id:       uuid.Must(uuid.NewV7()).String(),
		Type:     typ,
		Time:     timestamppb.Now(),
		Category: CategoryOf(typ),
		Severity: Severity_SEVERITY_INFO,
	}
}

// CategoryOf maps an event type to its category.
func CategoryOf(typ string) Category {
	switch {
	case strings.HasPrefix(typ, "observation."):
		return Category_CATEGORY_OBSERVATION
	case strings.HasPrefix(typ, "state."):
		return Category_CATEGORY_STATE
	case strings.HasPrefix(typ, "command."):
		return Category_CATEGORY_ACTION
	default:
		return Category_CATEGORY_SYSTEM
	}
}

// RoutingKey is the AMQP routing key of an event: `<type>.<node>` with the
// dots of the node name replaced by `_`, so that topic bindings such as
// `observation.#` or `*.*.web-1` stay unambiguous.
func RoutingKey(typ, node string) string {
	return typ + "." + strings.ReplaceAll(node, ".", "_")
}

// Source is the CloudEvents source of an event emitted by the actor at path
// (e.g. "observer/web/health") on node.
func Source(node, path string) string {
	return fmt.Sprintf("observerd://%s/%s", node, path)
}

// Stamp completes the envelope of ev emitted at path on node: node, source,
// a subject when none (the node), a time when none, and a provenance hop.
func Stamp(ev *Event, node, version, path string) {
	now := timestamppb.Now()
	ev.Node = node
	ev.Source = Source(node, path)
	if ev.Subject == "" {
		ev.Subject = node
	}
	if ev.Time == nil {
		ev.Time = now
	}
	ev.Provenance = append(ev.Provenance, &Hop{Service: "observerd", Version: version, Node: node, Time: now})
}

// Emit asks the state-manager to publish Event. Path is the emitting actor's
// path relative to the daemon ("observer/web/health", "policy-manager"); the
// state-manager turns it into the event's source and stamps the node and
// provenance. Observations also update the observer's state.
type Emit struct {
	Path  string
	Event *Event
	// Observer is the spec behind an observation: its thresholds and
	// interval drive the observer's state. Nil means the defaults.
	Observer *policy.Observer
}

// Publish hands a complete event to the broker, which accepts it into the
// outbox (assigning its sequence) and delivers it at least once.
type Publish struct {
	Event *Event
}

// BrokerStatus is what the broker tells the state-manager whenever its
// connection changes.
type BrokerStatus struct {
	Connected bool `json:"connected"`
	Blocked   bool `json:"blocked"`
	// URL is the redacted URL of the current or last attempted connection.
	URL   string    `json:"url"`
	Since time.Time `json:"since"`
	// LastError is why the last connection attempt failed or the connection
	// was lost, or the alarm that blocks it; empty otherwise.
	LastError string `json:"last_error,omitempty"`
	// Unroutable is set while events that RabbitMQ returned (no queue
	// bound to their routing key) wait in the outbox for a retry.
	Unroutable bool `json:"unroutable,omitempty"`
	// OutboxError is why the outbox cannot be written (a full or failing
	// disk), while that lasts; events wait in a bounded memory buffer.
	OutboxError string `json:"outbox_error,omitempty"`
}

// PoliciesLoaded tells the state-manager which policies run and which files
// are rejected, after the policy-manager's first load of policy_dir (a
// readiness condition) and after every reload.
type PoliciesLoaded struct {
	Applied  []string
	Rejected []string
}

// GetState asks the state-manager for a Snapshot.
type GetState struct{}

// ResultOf returns the result carried by an observation event.
func ResultOf(ev *Event) (Result, bool) {
	switch d := ev.Data.(type) {
	case *Event_Http:
		return d.Http.GetResult(), true
	case *Event_Prometheus:
		return d.Prometheus.GetResult(), true
	case *Event_Tcp:
		return d.Tcp.GetResult(), true
	case *Event_Process:
		return d.Process.GetResult(), true
	case *Event_Plugin:
		return Result_RESULT_OK, true
	}
	return Result_RESULT_UNSPECIFIED, false
}

// Snapshot is the state-manager's view of the daemon, served as /v1/state
// and used by /readyz.
type Snapshot struct {
	Node           string       `json:"node"`
	Version        string       `json:"version"`
	Started        time.Time    `json:"started"`
	Broker         BrokerStatus `json:"broker"`
	PoliciesLoaded bool         `json:"policies_loaded"`
	Policies       []string     `json:"policies"`
	Rejected       []string     `json:"rejected,omitempty"`
	// Actors are the daemon's own actors (the supervisor's children),
	// in start order.
	Actors    []ActorSnapshot    `json:"actors"`
	Observers []ObserverSnapshot `json:"observers"`
	// EventsEmitted counts the events handed to the broker since start.
	EventsEmitted uint64 `json:"events_emitted"`
	// Throttled counts, per running policy, the observations its event
	// budget (limits.max_events_per_second) kept from the broker since the
	// state-manager started; policies that dropped none are left out.
	Throttled map[string]uint64 `json:"throttled,omitempty"`
	// Outbox is filled in by the admin from the broker (nil when the
	// broker did not answer).
	Outbox *OutboxSnapshot `json:"outbox,omitempty"`
}

// Actor and observer statuses in a Snapshot.
const (
	StatusRunning     = "running"
	StatusRestarting  = "restarting" // failed, waiting out its backoff
	StatusQuarantined = "quarantined"
	StatusPaused      = "paused"
)

// StopReasonPaused is the reason of an observer.stopped for a pause.
const StopReasonPaused = "paused"

// ActorSnapshot is one of the daemon's own actors in a Snapshot.
type ActorSnapshot struct {
	Path      string    `json:"path"`
	Status    string    `json:"status"`
	Failures  int       `json:"failures"`
	Restarts  int       `json:"restarts"`
	LastError string    `json:"last_error,omitempty"`
	LastTime  time.Time `json:"last_failure,omitzero"`
}

// ObserverSnapshot is one observer in a Snapshot.
type ObserverSnapshot struct {
	Path     string `json:"path"`
	Policy   string `json:"policy"`
	Revision string `json:"revision"`
	Kind     string `json:"kind"`
	// State is the health its results give: unknown, up, degraded, down.
	State string `json:"state"`
	// Status, Failures, Restarts and LastError are the actor's (its
	// failures are crashes, not failed observations).
	Status              string    `json:"status"`
	Failures            int       `json:"failures"`
	Restarts            int       `json:"restarts"`
	LastError           string    `json:"last_error,omitempty"`
	LastResult          string    `json:"last_result"`
	LastTime            time.Time `json:"last_time"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	Observations        uint64    `json:"observations"`
}

// OutboxSnapshot is the broker's outbox in a Snapshot.
type OutboxSnapshot struct {
	Events       int    `json:"events"`
	Bytes        int64  `json:"bytes"`
	LastSequence uint64 `json:"last_sequence"`
}

// Ready reports whether the daemon is ready, and why not.
func (s *Snapshot) Ready() (bool, []string) {
	var why []string
	if !s.Broker.Connected {
		reason := "broker not connected"
		if s.Broker.LastError != "" {
			reason += ": " + s.Broker.LastError
		}
		why = append(why, reason)
	} else if s.Broker.Blocked {
		why = append(why, "broker blocked publishing: "+s.Broker.LastError)
	}
	if s.Broker.OutboxError != "" {
		why = append(why, "outbox cannot be written: "+s.Broker.OutboxError)
	}
	if s.Broker.Unroutable {
		why = append(why, "events returned unroutable (no queue bound to their routing key): kept in the outbox and retried")
	}
	if !s.PoliciesLoaded {
		why = append(why, "policies not loaded yet")
	}
	return len(why) == 0, why
}

// Gate is the broker's backpressure signal to the observers: closed while
// the outbox is full with outbox.when_full: block. Observers skip their
// turns while it is closed instead of producing events that would grow
// memory. A nil *Gate is always open.
type Gate struct{ closed atomic.Bool }

// Close closes or opens the gate.
func (g *Gate) Close(closed bool) {
	if g != nil {
		g.closed.Store(closed)
	}
}

// Closed reports whether the gate is closed.
func (g *Gate) Closed() bool { return g != nil && g.closed.Load() }
