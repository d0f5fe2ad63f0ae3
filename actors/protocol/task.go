package protocol

import "github.com/polar/observerd/policy"

// The task-manager accepts:
//   - ApplyPolicy and RemovePolicy, from the policy-manager;
//   - GetRunning, from a restarted policy-manager, answered with Running;
//   - Pause, Resume and ObserveNow, from the admin (the observer
//     commands), answered with CommandDone when sent as requests.
//
// It sends its observers RunNow, and the state-manager an Emit for each
// failure, restart and quarantine of an observer.

// ApplyPolicy tells the task-manager to run Policy, new or changed. Change
// is what differs from the version it runs (policy.Diff), computed by the
// policy-manager; the task-manager starts, restarts and stops exactly those
// observers. EventID is the policy.applied event: the correlation and
// causation of everything the observers it starts will emit.
type ApplyPolicy struct {
	Policy  *policy.Policy
	Change  policy.Change
	EventID string
}

// RemovePolicy tells the task-manager to stop every observer of a policy.
// EventID is the policy.removed event.
type RemovePolicy struct {
	Name    string
	EventID string
}

// GetRunning asks the task-manager for the policies it runs (a Running),
// so that a restarted policy-manager diffs against what really runs.
type GetRunning struct{}

// Running is the task-manager's answer to GetRunning.
type Running struct {
	Policies []RunningPolicy
}

// RunningPolicy is one policy the task-manager runs, with the event that
// last tasked it.
type RunningPolicy struct {
	Policy  *policy.Policy
	EventID string
}

// Resync tells the policy-manager (from the supervisor) that the
// task-manager restarted with nothing running: it sends every policy in
// force again.
type Resync struct{}

// Pause stops an observer until a Resume, whatever its policy does
// meanwhile (an updated observer stays paused; a removed one is forgotten).
type Pause struct {
	Policy   string
	Observer string
}

// Resume restarts a paused or quarantined observer.
type Resume struct {
	Policy   string
	Observer string
}

// ObserveNow makes an observer run an observation at once (if none is in
// flight), then keep its schedule.
type ObserveNow struct {
	Policy   string
	Observer string
}

// CommandDone answers Pause, Resume and ObserveNow; Err says why the
// command did nothing.
type CommandDone struct {
	Err error
}
