package supervisor_test

// The supervisor's tests run a real policy-manager and task-manager on
// policies of the daemon's kinds.
import _ "github.com/polar/observerd/actors/observer/kinds/all"
