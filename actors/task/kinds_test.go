package task_test

// The task-manager's tests parse and run policies of the daemon's kinds.
import _ "github.com/polar/observerd/actors/observer/kinds/all"
