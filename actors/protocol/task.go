package protocol

import (
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/policy"
)

// The task-manager accepts:
//   - from the policy-manager, what the files of policy_dir ask for:
//     ApplyPolicy, RemovePolicy and RejectFile as it reads them, and
//     FilesRead at the end of each round;
//   - Pause, Resume and ObserveNow, from the admin (the observer
//     commands), answered with CommandDone when sent as requests.
//
// It alone decides what runs: it diffs each policy against the version it
// runs, admits it under the daemon's totals, starts and stops the
// observers, and sends the state-manager an Emit for each policy.applied,
// policy.removed and policy.rejected (from what it did), and for each
// failure, restart and quarantine of an observer, and a PoliciesLoaded
// after each FilesRead. It sends its observers RunNow.

// ApplyPolicy tells the task-manager what a policy file now declares:
// Policy, valid, read from Policy.File, which owns the policy's name. The
// task-manager diffs it against the version it runs and starts, restarts
// and stops exactly the observers that changed (policy.applied); the
// version it runs, read again, changes nothing. A version that would take
// the daemon past its totals waits (policy.rejected) until room appears.
type ApplyPolicy struct {
	Policy *policy.Policy
}

// RemovePolicy tells the task-manager that no file declares the policy
// Name any more (its file went away, or now declares another name): its
// observers stop (policy.removed).
type RemovePolicy struct {
	Name string
}

// RejectFile tells the task-manager that File (a policy file, or
// policy_dir itself) cannot be used, for Problems (first line first). What
// runs from the file keeps running; a version of it waiting for room is
// dropped, since the file no longer says it. The policy.rejected names the
// version still in force, which only the task-manager knows. Key
// identifies the content and the problems: the same rejection is reported
// once, even when a restarted policy-manager reads the file again.
type RejectFile struct {
	File     string
	Problems []*yamldoc.Problem
	Key      string
	// Central: File is a central policy's cache file, sent by Issuer.
	Central bool
	Issuer  string
}

// FilesRead ends a round of the policy-manager (its first load of
// policy_dir included). Declared maps every policy file the policy-manager
// knows (by path) to the policy name it owns, "" when it owns none (it is
// rejected, waits for a name, or is not read yet); it is nil when
// policy_dir cannot be listed. A policy that no file declares, and whose
// file is not there any more, is removed: a restarted policy-manager
// cannot know which policies the files that went while it was down
// declared. Rejected are the files (and policy_dir) the policy-manager
// rejects; the task-manager adds those waiting for room, and tells the
// state-manager what runs and what is rejected (PoliciesLoaded).
type FilesRead struct {
	Declared map[string]string
	Rejected []string
}

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
