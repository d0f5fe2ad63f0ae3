// Package restart is the restart strategy (supervision) shared by every supervising
// actor of the tree. protoactor-go's built-in strategies do not fit: its
// OneForOne stops (rather than escalates) a child past its retry limit and
// restarts at once, and its exponential backoff is linear with nanosecond
// jitter. This one restarts a failed child after a capped exponential
// backoff with full jitter, counts failures in a sliding window, and gives
// up on a child whose failures reach the limit within the window: the
// supervising actor decides what giving up means (quarantine an observer,
// escalate and exit for a manager, reject a file for a parser). It tells
// the supervising actor through messages in its mailbox (Failed,
// Restarted, GaveUp), so that every supervising actor handles its
// children's failures the same way: in Receive.
//
// Why not restart at once? A child that fails because of its environment (a
// sick target, a broker that refuses it) would fail again at once and
// hammer what made it fail; backoff gives the environment time.
package restart

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Policy says how a supervisor treats its failing children.
type Policy struct {
	// MinBackoff is the delay before the first restart; each further failure
	// within Window doubles it, up to MaxBackoff.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// GiveUpAt is the failure count within Window at which the supervisor
	// gives up on the child instead of restarting it.
	GiveUpAt int
	Window   time.Duration
}

// Observers is the default for observer children: the 5th failure within
// 60 s quarantines the observer.
var Observers = Policy{MinBackoff: 100 * time.Millisecond, MaxBackoff: 30 * time.Second, GiveUpAt: 5, Window: 60 * time.Second}

// Managers is the default for the supervisor's children: restarts beyond an
// intensity of 5 within 30 s (the 6th failure) escalate.
var Managers = Policy{MinBackoff: 100 * time.Millisecond, MaxBackoff: 30 * time.Second, GiveUpAt: 6, Window: 30 * time.Second}

// Never is for children that are not worth a restart: the first failure
// stops the child (the policy-manager's parsers, whose crash rejects their
// file).
var Never = Policy{GiveUpAt: 1}

// Backoff is the delay before restarting after the n-th failure (n >= 1):
// a uniformly random duration in [d/2, d] where d = MinBackoff * 2^(n-1)
// capped at MaxBackoff. The lower half bound keeps restarts of many children
// failing together spread out while never restarting sooner than half the
// nominal delay.
func (p Policy) Backoff(n int) time.Duration {
	d := p.MinBackoff
	for i := 1; i < n && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// Permanent marks a failure that a restart cannot cure (a bad spec, a
// missing file): the supervisor gives up on the child at once. Actors panic
// with a *Permanent (or an error wrapping one) to say so.
type Permanent struct{ Err error }

func (e *Permanent) Error() string { return "permanent: " + e.Err.Error() }
func (e *Permanent) Unwrap() error { return e.Err }

// Failure describes one failure of a child.
type Failure struct {
	Child  *actor.PID
	Reason error
	// Failures is the count within the window, this one included.
	Failures int
	// Backoff is the delay before the restart (zero when giving up).
	Backoff time.Duration
	Window  time.Duration
}

// The messages the strategy sends the supervising actor (its owner: the
// actor whose children it supervises), into the owner's mailbox, so that
// the owner handles its children's failures in Receive like any other
// message, and no callback ever touches its state from another goroutine.
// A child's PID is unique to it (each incarnation of an observer has a
// name of its own), so the owner tells by Child which incarnation failed,
// even when the message comes after a newer one replaced it.
type (
	// Failed: the child failed and will restart after Backoff.
	Failed struct{ Failure }
	// Restarted: the child is being restarted now (sent just before the
	// restart, so that a new failure of the restarted child cannot be
	// reported ahead of it).
	Restarted struct{ Failure }
	// GaveUp: the child failed Failures times within the window, or
	// permanently; it has been stopped.
	GaveUp struct{ Failure }
)

// Strategy implements actor.SupervisorStrategy.
type Strategy struct {
	policy Policy

	mu      sync.Mutex
	history map[string][]time.Time // child id -> failure times within the window
	timers  map[string]*time.Timer // pending restarts
}

var _ actor.SupervisorStrategy = (*Strategy)(nil)

// New returns a strategy applying p.
func New(p Policy) *Strategy {
	return &Strategy{policy: p, history: map[string][]time.Time{}, timers: map[string]*time.Timer{}}
}

// owner is the supervising actor: protoactor hands HandleFailure the
// owner's context as sup.
type owner interface{ Self() *actor.PID }

// HandleFailure is called by protoactor on the supervisor's goroutine when a
// child panics (or escalates). The child's mailbox stays suspended until the
// delayed restart. The owner hears of it through Failed, Restarted and
// GaveUp.
func (s *Strategy) HandleFailure(sys *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, _ *actor.RestartStatistics, reason any, _ any) {
	err := AsError(reason)
	now := time.Now()
	var to *actor.PID
	if o, ok := sup.(owner); ok {
		to = o.Self()
	}
	report := func(msg any) {
		if to != nil {
			sys.Root.Send(to, msg)
		}
	}

	s.mu.Lock()
	times := append(s.history[child.Id], now)
	cut := 0
	for cut < len(times) && now.Sub(times[cut]) > s.policy.Window {
		cut++
	}
	times = times[cut:]
	s.history[child.Id] = times
	f := Failure{Child: child, Reason: err, Failures: len(times), Window: s.policy.Window}
	var perm *Permanent
	giveUp := len(times) >= s.policy.GiveUpAt || errors.As(err, &perm)
	if giveUp {
		delete(s.history, child.Id)
	} else {
		f.Backoff = s.policy.Backoff(len(times))
	}
	s.mu.Unlock()

	if giveUp {
		sup.StopChildren(child)
		report(&GaveUp{f})
		return
	}
	report(&Failed{f})
	s.mu.Lock()
	s.timers[child.Id] = time.AfterFunc(f.Backoff, func() {
		s.mu.Lock()
		delete(s.timers, child.Id)
		s.mu.Unlock()
		report(&Restarted{f})
		sup.RestartChildren(child)
	})
	s.mu.Unlock()
}

// Forget drops what the strategy remembers of a child and cancels its
// pending restart: for a child being stopped or replaced on purpose, so a
// new child of the same name starts with a clean record.
func (s *Strategy) Forget(child *actor.PID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.history, child.Id)
	if t, ok := s.timers[child.Id]; ok {
		t.Stop()
		delete(s.timers, child.Id)
	}
}

// Stop cancels every pending restart, for a supervisor that is stopping,
// and returns the ids of the children whose restart it cancelled: their
// mailboxes stay suspended, so they only take system messages (a stop, not
// a poison pill).
func (s *Strategy) Stop() (suspended map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	suspended = map[string]bool{}
	for id, t := range s.timers {
		t.Stop()
		delete(s.timers, id)
		suspended[id] = true
	}
	return suspended
}

// AsError turns a panic value into an error, keeping errors as they are.
func AsError(reason any) error {
	switch r := reason.(type) {
	case error:
		return r
	case nil:
		return errors.New("unknown failure")
	default:
		return fmt.Errorf("panic: %v", r)
	}
}

// Recover is deferred by goroutines that an actor starts off its mailbox: a
// panic there would kill the process, so it is turned into an error handed
// to report, which should send it back to the actor (which then fails under
// supervision).
func Recover(report func(error)) {
	if r := recover(); r != nil {
		report(fmt.Errorf("%w\n%s", AsError(r), debug.Stack()))
	}
}
