package actortest

import (
	"slices"
	"sync"
	"time"
)

// Clock is a clock the test drives, for actors whose Options take a now
// and an AfterFunc (the state-manager's budgets and report windows, the
// admin's rate limits and snapshot cache): time stands still until
// Advance, so what a test asserts never depends on how fast the machine
// runs it.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*clockTimer
}

type clockTimer struct {
	at time.Time
	f  func()
}

// NewClock returns a Clock standing at a fixed time.
func NewClock() *Clock {
	return &Clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc calls f when Advance reaches d from now, unless the returned
// stop is called first; stop reports whether it stopped the call, as
// (*time.Timer).Stop does.
func (c *Clock) AfterFunc(d time.Duration, f func()) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &clockTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		n := len(c.timers)
		c.timers = slices.DeleteFunc(c.timers, func(x *clockTimer) bool { return x == t })
		return len(c.timers) < n
	}
}

// Advance moves the clock on by d and calls, in the order of their times
// and in this goroutine, the AfterFunc callbacks that come due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*clockTimer
	c.timers = slices.DeleteFunc(c.timers, func(t *clockTimer) bool {
		if t.at.After(c.now) {
			return false
		}
		due = append(due, t)
		return true
	})
	c.mu.Unlock()
	slices.SortStableFunc(due, func(x, y *clockTimer) int { return x.at.Compare(y.at) })
	for _, t := range due {
		t.f()
	}
}

// Pending is the number of AfterFunc callbacks not yet called nor stopped.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}
