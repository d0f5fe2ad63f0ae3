package protocol

// The admin accepts Listen, from the daemon on SIGHUP, answered with a
// Listened when sent as a request. It asks the state-manager GetState and
// the broker GetOutboxStats, sends the task-manager the observer commands
// (Pause, Resume, ObserveNow), and the state-manager an Emit per
// command.result.

// Listen moves the admin's TCP server to Addr ("" stops serving) while the
// daemon runs. The old address keeps serving if the new one cannot be
// listened on.
type Listen struct{ Addr string }

// Listened answers Listen: Err says why the server did not move.
type Listened struct{ Err error }
