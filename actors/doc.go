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
//	    ├── policy-manager         actors/policy: loads policy_dir, validates, tells task-manager
//	    └── admin                  actors/admin: loopback HTTP /healthz /readyz
//
// Every supervising actor uses actors/supervision: capped exponential backoff
// with jitter between restarts, and a failure intensity beyond which it gives
// up (an observer is quarantined; a manager escalates and the daemon exits).
//
// Flow of one observation: observer -> state-manager (envelope, state) ->
// broker (outbox, publish, confirm, delete). Flow of a policy: policy-manager
// -> task-manager (spawn/stop observers) and policy.applied/policy.rejected
// via state-manager -> broker.
package actors
