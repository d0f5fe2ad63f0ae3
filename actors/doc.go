// Package actors is the root of observerd's actor tree (protoactor-go). Each
// actor lives in its own package below this one; this package only builds
// the actor system, routing protoactor's slog output into the daemon's
// zerolog logger.
//
// The tree:
//
//	observerd (cmd/observerd: signals, exit code)
//	└── supervisor                 actors/supervisor: starts children in order, stops them in reverse,
//	    │                          exits non-zero when a child fails beyond its intensity
//	    ├── broker                 actors/broker: outbox (bbolt), THE AMQP connection, publish, confirms
//	    ├── state-manager          actors/state: the state struct, event envelopes, transitions
//	    ├── task-manager           actors/task: policies -> observer children
//	    │   └── observer/<policy>/<name> ...   actors/observer: one per policy observer
//	    │                                      (http, prometheus, tcp, process, or a plugin run by package wasm)
//	    ├── policy-manager         actors/policymanager: watches policy_dir, debounces, diffs, tells task-manager
//	    │   └── parser/<file>#<n> ...  one short-lived child per changed file (a crash rejects that file)
//	    └── admin                  actors/admin: the admin API on a unix socket (commands, peers checked)
//	                               and on loopback HTTP (/healthz /readyz /metrics /v1/state only)
//
// Every supervising actor uses actors/restart: capped exponential backoff
// with jitter between restarts, and a failure intensity beyond which it gives
// up (an observer is quarantined; a manager escalates and the daemon exits).
//
// Flow of one observation: observer -> state-manager (envelope, state) ->
// broker (outbox, publish, confirm, delete). Flow of a policy change: file
// event -> policy-manager (debounce, parser child, validate, diff against
// what runs) -> task-manager (one ApplyPolicy or RemovePolicy: start,
// restart or stop exactly the observers that changed), and
// policy.applied/rejected/removed via state-manager -> broker. When the
// task-manager restarts (with no observers), the supervisor tells the
// policy-manager to task it again (messages.Resync); a restarted
// policy-manager asks the task-manager what runs before it diffs.
package actors
