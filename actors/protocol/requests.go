package protocol

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/polar/observerd/messages"
)

// The requests that the admin API and the control channel both make: one
// code for both, so that a command does the same whichever way it came.

// ObserverCommands are the observer commands by the admin API's name
// (POST /v1/observers/P/O/NAME): the message for the task-manager.
var ObserverCommands = map[string]func(policy, observer string) any{
	"pause":   func(p, o string) any { return &Pause{Policy: p, Observer: o} },
	"resume":  func(p, o string) any { return &Resume{Policy: p, Observer: o} },
	"observe": func(p, o string) any { return &ObserveNow{Policy: p, Observer: o} },
}

// RunObserverCommand has the task-manager carry out the observer command
// name (a key of ObserverCommands) on pol/obs, waiting at most timeout,
// and returns its result: Command, Target, Ok and Message (the caller is
// the asker's to fill in).
func RunObserverCommand(root *actor.RootContext, task *actor.PID, name, pol, obs string, timeout time.Duration) *messages.CommandResult {
	res := &messages.CommandResult{Command: name, Target: pol + "/" + obs}
	newMsg, ok := ObserverCommands[name]
	if !ok {
		res.Message = fmt.Sprintf("unknown observer command %q", name)
		return res
	}
	answer, err := root.RequestFuture(task, newMsg(pol, obs), timeout).Result()
	done, _ := answer.(*CommandDone)
	switch {
	case err != nil:
		res.Message = fmt.Sprintf("ask task-manager: %v", err)
	case done == nil:
		res.Message = fmt.Sprintf("ask task-manager: unexpected answer %T", answer)
	case done.Err != nil:
		res.Message = done.Err.Error()
	default:
		res.Ok = true
	}
	return res
}

// AskSnapshot asks the state-manager for its Snapshot, waiting at most
// timeout.
func AskSnapshot(root *actor.RootContext, state *actor.PID, timeout time.Duration) (*Snapshot, error) {
	res, err := root.RequestFuture(state, &GetState{}, timeout).Result()
	if err != nil {
		return nil, fmt.Errorf("ask state-manager: %w", err)
	}
	s, ok := res.(*Snapshot)
	if !ok {
		return nil, fmt.Errorf("ask state-manager: unexpected answer %T", res)
	}
	return s, nil
}

// AskOutbox asks the broker for its outbox's counters; nil when there is
// no broker or it does not answer within timeout (restarting, or busy).
func AskOutbox(root *actor.RootContext, broker *actor.PID, timeout time.Duration) *OutboxSnapshot {
	if broker == nil {
		return nil
	}
	res, err := root.RequestFuture(broker, &GetOutboxStats{}, timeout).Result()
	st, ok := res.(*OutboxSnapshot)
	if err != nil || !ok {
		return nil
	}
	return st
}
