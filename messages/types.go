package messages

import "strings"

// Event types of the contract (docs/events.md).
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
