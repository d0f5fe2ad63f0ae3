package protocol

import (
	"time"

	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
)

// The state-manager accepts:
//   - Emit, from every actor: an event to complete and publish;
//   - ObserverWarning, from observers;
//   - BrokerStatus, from the broker;
//   - PoliciesLoaded, from the task-manager;
//   - GetState, from the admin, answered with a *Snapshot.
//
// It sends the broker a Publish per event.

// Emit asks the state-manager to publish Event. From names the emitter:
// the state-manager turns it into the event's source and completes the
// envelope (messages.Stamp). Observations also update the observer's
// state.
type Emit struct {
	From  Emitter
	Event *messages.Event
	// Observer is the spec behind an observation: its thresholds and
	// interval drive the observer's state. Nil means the defaults.
	Observer *policy.Observer
	// Accepted, when set, goes with the event to the broker (Publish).
	Accepted func(*messages.Event)
}

// ObserverWarning tells the state-manager of an observer's problem that
// did not fail it (a plugin's invalid emit): shown as its last error,
// with no event.
type ObserverWarning struct {
	From   Emitter
	Reason string // one line
}

// PoliciesLoaded tells the state-manager which policies run and which files
// are rejected (invalid, or waiting for room under the totals), after the
// first load of policy_dir (a readiness condition) and after every reload.
type PoliciesLoaded struct {
	Applied  []string
	Rejected []string
}

// GetState asks the state-manager for a Snapshot.
type GetState struct{}

// Snapshot is the state-manager's view of the daemon, served as /v1/state
// (its JSON is part of the admin API) and used by /readyz.
type Snapshot struct {
	Node           string       `json:"node"`
	Version        string       `json:"version"`
	Started        time.Time    `json:"started"`
	Broker         BrokerStatus `json:"broker"`
	PoliciesLoaded bool         `json:"policies_loaded"`
	Policies       []string     `json:"policies"`
	Rejected       []string     `json:"rejected,omitempty"`
	// Rejections says why the files of Rejected are: the first line of
	// each one's last policy.rejected reason (file:line:col: key:
	// message). A rejection the state-manager did not see (it restarted
	// since) has none.
	Rejections map[string]string `json:"rejections,omitempty"`
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

// Reasons of observer.stopped events that the state-manager tells apart:
// a pause (listed as paused until it resumes), and a replacement by a new
// version of its policy (whose observer.started follows: what the
// observer went through stays counted).
const (
	StopReasonPaused   = "paused"
	StopReasonReplaced = "replaced by a new version"
)

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
	// failures are crashes, not failed observations); LastError is also
	// its last warning (a plugin's invalid emit), which fails it only when
	// it persists.
	Status              string    `json:"status"`
	Failures            int       `json:"failures"`
	Restarts            int       `json:"restarts"`
	LastError           string    `json:"last_error,omitempty"`
	LastResult          string    `json:"last_result"`
	LastTime            time.Time `json:"last_time"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	Observations        uint64    `json:"observations"`
	// LastLatency is how long the target took to answer the last
	// observation that measured it (request, scrape or connect), in
	// seconds as Prometheus writes durations; 0 when none did.
	LastLatency float64 `json:"last_latency_seconds,omitempty"`
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
	if s.Broker.Nacked {
		why = append(why, "events nacked by RabbitMQ at "+s.Broker.URL+" (a queue refused them or lost its leader): kept in the outbox and retried")
	}
	if s.Broker.Connected && s.Broker.Unconfirmed {
		why = append(why, "RabbitMQ at "+s.Broker.URL+" has not confirmed publications for 5s or more (a quorum queue without a majority?): events kept in the outbox")
	}
	if !s.PoliciesLoaded {
		why = append(why, "policies not loaded yet")
	}
	return len(why) == 0, why
}
