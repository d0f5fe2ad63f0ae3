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
//	    ├── task-manager           actors/task: what runs: diff, totals, observer children, policy events
//	    │   └── observer/<policy>/<name> ...   actors/observer: one per policy observer
//	    │                                      (http, prometheus, tcp, process, or a plugin run by package wasm)
//	    ├── policy-manager         actors/policymanager: watches policy_dir, debounces, reads, owns the names, tells task-manager
//	    │   └── parser/<file>#<n> ...  one short-lived child per changed file (a crash rejects that file)
//	    ├── control                actors/control: commands over RabbitMQ (control.enabled only): authorizes by
//	    │                          user_id, answers every delivery with a command.result, caches central policies
//	    └── admin                  actors/admin: the admin API on a unix socket (commands, peers checked)
//	                               and on loopback HTTP (/healthz /readyz /metrics /v1/state only)
//
// Every supervising actor uses actors/restart: capped exponential backoff
// with jitter between restarts, and a failure intensity beyond which it gives
// up (an observer is quarantined; a manager escalates and the daemon exits).
//
// Flow of one observation: observer -> state-manager (envelope, state) ->
// broker (outbox, publish, confirm, delete). Flow of a policy change: file
// event -> policy-manager (debounce, parser child, validate, which file
// owns which name) -> task-manager (what the files ask for: diff against
// what runs, totals, start, restart or stop exactly the observers that
// changed, and policy.applied/rejected/removed from what it did) ->
// state-manager -> broker. A restarted task-manager runs again what ran by
// itself; a restarted policy-manager reads the files again. Neither needs
// the other, nor the supervisor, to recover.
package actors
