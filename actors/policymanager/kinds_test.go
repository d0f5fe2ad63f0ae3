package policymanager

// The policy-manager's tests parse policies of the daemon's kinds.
import _ "github.com/polar/observerd/actors/observer/kinds/all"
