package protocol

import "time"

// An observer accepts:
//   - RunNow, from the task-manager (an ObserveNow command);
//   - GetObserverStats, answered with an *ObserverStats.
//
// It sends the state-manager an Emit per observation and lifecycle event.

// RunNow asks an observer for an observation at once. It is skipped (and
// counted) while an observation is in flight or the gate is closed;
// otherwise the scheduled turns keep their places.
type RunNow struct{}

// GetObserverStats asks an observer how its turns went.
type GetObserverStats struct{}

// ObserverStats is how an observer's turns went.
type ObserverStats struct {
	Observations uint64
	// Skipped counts turns not run: the gate was closed, or an
	// observation was still in flight.
	Skipped uint64
	// Late counts turns that started late: the daemon is too busy to
	// keep the schedule.
	Late uint64
	// Failures is the number of consecutive non-OK results.
	Failures int
	// Delay is the delay between turns, stretched by backoff.
	Delay time.Duration
	// Next is when the next turn is due; zero while an observation runs
	// (its end schedules the next turn).
	Next time.Time
}
