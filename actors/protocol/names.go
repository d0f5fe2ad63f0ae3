package protocol

import "strings"

// The actors' names. The supervisor is spawned from the root under
// Supervisor, its children under their names below it, so that every PID
// is known before it is spawned and siblings can refer to each other. An
// actor's name is also its path in event sources:
// observerd://<node>/<name>.
const (
	Supervisor    = "supervisor"
	Broker        = "broker"
	StateManager  = "state-manager"
	TaskManager   = "task-manager"
	PolicyManager = "policy-manager"
	Control       = "control"
	Admin         = "admin"
)

// Managers are the supervisor's children, in start order: the broker
// first, so that nothing emitted at start-up is lost; the admin last, so
// that it never reports on actors that do not exist. The control actor
// runs only when control.enabled is set.
var Managers = []string{Broker, StateManager, TaskManager, PolicyManager, Control, Admin}

// Emitter is who emits an event: one of the daemon's own actors (Actor,
// one of the names above), or an observer of a policy (Policy and
// Observer). It is never parsed back out of a path.
type Emitter struct {
	Actor            string
	Policy, Observer string
}

// ActorEmitter is the daemon's own actor name.
func ActorEmitter(name string) Emitter { return Emitter{Actor: name} }

// ObserverEmitter is observer name of policy pol.
func ObserverEmitter(pol, name string) Emitter { return Emitter{Policy: pol, Observer: name} }

// IsObserver reports whether the emitter is an observer.
func (e Emitter) IsObserver() bool { return e.Actor == "" }

// Path is the emitter's path in event sources and in /v1/state:
// the actor's name, or observer/<policy>/<name>.
func (e Emitter) Path() string {
	if e.IsObserver() {
		return strings.Join([]string{"observer", e.Policy, e.Observer}, "/")
	}
	return e.Actor
}

// String is the path, for logs.
func (e Emitter) String() string { return e.Path() }
