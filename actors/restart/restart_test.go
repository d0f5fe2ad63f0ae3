package restart_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/restart"
	"github.com/polar/observerd/test/actortest"
)

func TestBackoff(t *testing.T) {
	p := restart.Policy{MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	tests := []struct {
		name string
		n    int
		want time.Duration // nominal delay d; Backoff is in [d/2, d]
	}{
		{"first failure is MinBackoff", 1, 100 * time.Millisecond},
		{"second failure doubles", 2, 200 * time.Millisecond},
		{"third failure doubles again", 3, 400 * time.Millisecond},
		{"fourth failure doubles again", 4, 800 * time.Millisecond},
		{"fifth failure is capped", 5, time.Second},
		{"far beyond the cap stays capped", 60, time.Second},
		{"n below 1 counts as the first", 0, 100 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var lower, upper bool
			for range 1000 {
				got := p.Backoff(tc.n)
				require.GreaterOrEqual(t, got, tc.want/2, "Backoff(%d)", tc.n)
				require.LessOrEqual(t, got, tc.want, "Backoff(%d)", tc.n)
				if got < tc.want*3/4 {
					lower = true
				} else {
					upper = true
				}
			}
			// Jitter: over 1000 draws both halves of [d/2, d] are hit.
			assert.True(t, lower, "Backoff(%d) never in the lower half of its range", tc.n)
			assert.True(t, upper, "Backoff(%d) never in the upper half of its range", tc.n)
		})
	}
}

func TestBackoffEdgeCases(t *testing.T) {
	tests := []struct {
		name string
		p    restart.Policy
		n    int
		want time.Duration
	}{
		{"zero policy gives no delay", restart.Policy{}, 3, 0},
		{"one nanosecond is not jittered", restart.Policy{MinBackoff: 1, MaxBackoff: 1}, 1, 1},
		{"MaxBackoff below MinBackoff caps", restart.Policy{MinBackoff: time.Second, MaxBackoff: 2}, 1, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.p.Backoff(tc.n)
			assert.GreaterOrEqual(t, got, tc.want/2)
			assert.LessOrEqual(t, got, tc.want)
		})
	}
}

func TestDefaults(t *testing.T) {
	// The values docs/architecture.md promises: 100 ms to 30 s; observers quarantined
	// at their 5th failure within 60 s; managers escalate beyond 5 in 30 s.
	assert.Equal(t, restart.Policy{MinBackoff: 100 * time.Millisecond, MaxBackoff: 30 * time.Second, GiveUpAt: 5, Window: time.Minute}, restart.Observers)
	assert.Equal(t, restart.Policy{MinBackoff: 100 * time.Millisecond, MaxBackoff: 30 * time.Second, GiveUpAt: 6, Window: 30 * time.Second}, restart.Managers)
}

func TestAsError(t *testing.T) {
	sentinel := errors.New("sentinel")
	tests := []struct {
		name   string
		reason any
		want   string
		is     error
	}{
		{"error kept as is", sentinel, "sentinel", sentinel},
		{"string wrapped", "boom", "panic: boom", nil},
		{"nil", nil, "unknown failure", nil},
		{"other value", 42, "panic: 42", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := restart.AsError(tc.reason)
			require.Error(t, err)
			assert.Equal(t, tc.want, err.Error())
			if tc.is != nil {
				assert.ErrorIs(t, err, tc.is)
			}
		})
	}
}

func TestRecover(t *testing.T) {
	got := make(chan error, 1)
	func() {
		defer restart.Recover(func(err error) { got <- err })
		panic("off the mailbox")
	}()
	select {
	case err := <-got:
		assert.Contains(t, err.Error(), "panic: off the mailbox")
		assert.Contains(t, err.Error(), "goroutine", "the stack is attached")
	default:
		t.Fatal("Recover did not report the panic")
	}

	called := false
	func() {
		defer restart.Recover(func(error) { called = true })
	}()
	assert.False(t, called, "Recover reports only panics")
}

func TestPermanent(t *testing.T) {
	inner := errors.New("bad spec")
	p := &restart.Permanent{Err: inner}
	assert.Equal(t, "permanent: bad spec", p.Error())
	assert.ErrorIs(t, p, inner)
	var perm *restart.Permanent
	assert.True(t, errors.As(fmt.Errorf("wrapped: %w", p), &perm))
}

// --- the strategy with a real parent and a child that panics on demand ---

type boom struct{ reason any }

// ping is forwarded by the child to the pings recorder, with the
// incarnation (the count of its starts) that handled it.
type ping struct{ n, incarnation int }

// calls records what the strategy told the supervising actor, in the
// order its mailbox handed it over.
type calls struct {
	mu        sync.Mutex
	order     []string
	failed    []restart.Failure
	restarted []restart.Failure
	gaveUp    []restart.Failure
}

// record is called by the supervising actor's Receive.
func (c *calls) record(msg any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch m := msg.(type) {
	case *restart.Failed:
		c.failed = append(c.failed, m.Failure)
		c.order = append(c.order, "failed")
	case *restart.Restarted:
		c.restarted = append(c.restarted, m.Failure)
		c.order = append(c.order, "restarted")
	case *restart.GaveUp:
		c.gaveUp = append(c.gaveUp, m.Failure)
		c.order = append(c.order, "gave up")
	}
}

func (c *calls) sequence() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.order)
}

func (c *calls) counts() (failed, restarted, gaveUp int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.failed), len(c.restarted), len(c.gaveUp)
}

func (c *calls) snapshot() (failed, restarted, gaveUp []restart.Failure) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]restart.Failure(nil), c.failed...),
		append([]restart.Failure(nil), c.restarted...),
		append([]restart.Failure(nil), c.gaveUp...)
}

type fixture struct {
	sys      *actor.ActorSystem
	strategy *restart.Strategy
	calls    *calls
	child    *actor.PID
	pings    *actortest.Recorder
	starts   *actortest.Recorder
}

type childStarted struct{}

// setup spawns a parent supervising with a Strategy of policy p, which
// records in f.calls what the strategy sends it, and one child that
// panics with boom.reason, forwards pings to a recorder and reports each
// start to another.
func setup(t *testing.T, p restart.Policy) *fixture {
	t.Helper()
	sys, _ := actortest.SystemAndLogger(t)
	f := &fixture{sys: sys, calls: &calls{}}
	f.strategy = restart.New(p)
	f.pings = actortest.NewRecorder(t, sys, "pings")
	f.starts = actortest.NewRecorder(t, sys, "starts")
	pings, starts := f.pings.PID, f.starts.PID

	// The function outlives the child's restarts: incarnation counts them.
	var incarnation atomic.Int32
	childProps := actor.PropsFromFunc(func(ctx actor.Context) {
		switch msg := ctx.Message().(type) {
		case *actor.Started:
			incarnation.Add(1)
			ctx.Send(starts, &childStarted{})
		case *boom:
			panic(msg.reason)
		case *ping:
			ctx.Send(pings, &ping{n: msg.n, incarnation: int(incarnation.Load())})
		}
	})
	spawned := make(chan *actor.PID, 1)
	parentProps := actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*actor.Started); ok {
			pid, err := ctx.SpawnNamed(childProps, "child")
			if err != nil {
				panic(err)
			}
			spawned <- pid
		}
		f.calls.record(ctx.Message())
	}, actor.WithSupervisor(f.strategy))
	parent := sys.Root.Spawn(parentProps)
	t.Cleanup(func() {
		f.strategy.Stop()
		_ = sys.Root.StopFuture(parent).Wait()
	})
	select {
	case f.child = <-spawned:
	case <-time.After(actortest.Wait):
		t.Fatal("the parent did not spawn its child")
	}
	f.waitStarts(t, 1)
	return f
}

func (f *fixture) waitStarts(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return len(f.starts.Messages()) >= n },
		actortest.Wait, 5*time.Millisecond, "want %d starts of the child, got %d", n, len(f.starts.Messages()))
}

func (f *fixture) waitCounts(t *testing.T, failed, restarted, gaveUp int) {
	t.Helper()
	require.Eventually(t, func() bool {
		a, b, c := f.calls.counts()
		return a == failed && b == restarted && c == gaveUp
	}, actortest.Wait, 5*time.Millisecond, "want failed/restarted/gaveUp %d/%d/%d", failed, restarted, gaveUp)
}

// fail makes the child panic and waits until it is restarted.
func (f *fixture) failAndRestart(t *testing.T, n int) {
	t.Helper()
	f.sys.Root.Send(f.child, &boom{reason: fmt.Sprintf("failure %d", n)})
	f.waitCounts(t, n, n, 0)
	f.waitStarts(t, n+1)
}

func (f *fixture) alive() bool {
	_, ok := f.sys.ProcessRegistry.GetLocal(f.child.Id)
	return ok
}

func TestStrategyRestartsWithBackoff(t *testing.T) {
	p := restart.Policy{MinBackoff: 2 * time.Millisecond, MaxBackoff: 8 * time.Millisecond, GiveUpAt: 10, Window: time.Minute}
	f := setup(t, p)

	for n := 1; n <= 3; n++ {
		f.failAndRestart(t, n)
	}
	failed, restarted, gaveUp := f.calls.snapshot()
	require.Len(t, failed, 3)
	require.Len(t, restarted, 3)
	assert.Empty(t, gaveUp)
	for i, fl := range failed {
		n := i + 1
		assert.True(t, fl.Child.Equal(f.child), "failure %d names the child", n)
		assert.Equal(t, n, fl.Failures, "failures count up within the window")
		assert.Equal(t, fmt.Sprintf("panic: failure %d", n), fl.Reason.Error())
		assert.Positive(t, fl.Backoff)
		nominal := min(p.MinBackoff<<(n-1), p.MaxBackoff)
		assert.GreaterOrEqual(t, fl.Backoff, nominal/2, "failure %d", n)
		assert.LessOrEqual(t, fl.Backoff, nominal, "failure %d", n)
		assert.Equal(t, p.Window, fl.Window)
		assert.Equal(t, fl, restarted[i], "Restarted reports the same failure")
	}

	// After its restarts the child handles messages again.
	f.sys.Root.Send(f.child, &ping{n: 7})
	actortest.WaitMessage(t, f.pings, func(p *ping) bool { return p.n == 7 })
	assert.True(t, f.alive())
}

func TestStrategyRestartComesAfterTheBackoff(t *testing.T) {
	p := restart.Policy{MinBackoff: 40 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, GiveUpAt: 10, Window: time.Minute}
	f := setup(t, p)

	start := time.Now()
	f.sys.Root.Send(f.child, &boom{reason: "x"})
	f.waitCounts(t, 1, 1, 0)
	f.waitStarts(t, 2)
	failed, _, _ := f.calls.snapshot()
	assert.GreaterOrEqual(t, time.Since(start), failed[0].Backoff, "restarted before its backoff")
	assert.GreaterOrEqual(t, failed[0].Backoff, 20*time.Millisecond)
}

func TestStrategyQueuesMessagesUntilTheRestart(t *testing.T) {
	p := restart.Policy{MinBackoff: 20 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, GiveUpAt: 10, Window: time.Minute}
	f := setup(t, p)

	f.sys.Root.Send(f.child, &boom{reason: "x"})
	f.sys.Root.Send(f.child, &ping{n: 1}) // lands in the suspended mailbox
	got := actortest.WaitMessage(t, f.pings, func(p *ping) bool { return p.n == 1 })
	// Told by the child itself: Restarted is only sent to the owner before
	// the restart, and the owner may handle it after the restarted child
	// handled the ping.
	assert.Equal(t, 2, got.incarnation, "the message was handled only after the restart")
	f.waitCounts(t, 1, 1, 0)
}

func TestStrategyGivesUpAtTheLimit(t *testing.T) {
	p := restart.Policy{MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, GiveUpAt: 3, Window: time.Minute}
	f := setup(t, p)

	f.failAndRestart(t, 1)
	f.failAndRestart(t, 2)
	f.sys.Root.Send(f.child, &boom{reason: "third"})
	f.waitCounts(t, 2, 2, 1)

	_, _, gaveUp := f.calls.snapshot()
	g := gaveUp[0]
	assert.True(t, g.Child.Equal(f.child))
	assert.Equal(t, 3, g.Failures)
	assert.Zero(t, g.Backoff, "no backoff when giving up")
	assert.Equal(t, "panic: third", g.Reason.Error())
	require.Eventually(t, func() bool { return !f.alive() }, actortest.Wait, 5*time.Millisecond, "the child was not stopped")
	assert.Len(t, f.starts.Messages(), 3, "not restarted after giving up")
}

func TestStrategyGivesUpOnPermanentAtOnce(t *testing.T) {
	tests := []struct {
		name   string
		reason any
	}{
		{"a *Permanent", &restart.Permanent{Err: errors.New("missing file")}},
		{"an error wrapping a *Permanent", fmt.Errorf("start: %w", &restart.Permanent{Err: errors.New("missing file")})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t, restart.Policy{MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, GiveUpAt: 5, Window: time.Minute})
			f.sys.Root.Send(f.child, &boom{reason: tc.reason})
			f.waitCounts(t, 0, 0, 1)
			_, _, gaveUp := f.calls.snapshot()
			assert.Equal(t, 1, gaveUp[0].Failures)
			assert.Zero(t, gaveUp[0].Backoff)
			var perm *restart.Permanent
			assert.ErrorAs(t, gaveUp[0].Reason, &perm)
			require.Eventually(t, func() bool { return !f.alive() }, actortest.Wait, 5*time.Millisecond, "the child was not stopped")
		})
	}
}

func TestStrategyWindowForgetsOldFailures(t *testing.T) {
	// With a window shorter than any backoff, every failure is alone in it:
	// the count never reaches GiveUpAt.
	f := setup(t, restart.Policy{MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, GiveUpAt: 2, Window: time.Nanosecond})
	for n := 1; n <= 3; n++ {
		f.failAndRestart(t, n)
	}
	failed, _, gaveUp := f.calls.snapshot()
	assert.Empty(t, gaveUp)
	for _, fl := range failed {
		assert.Equal(t, 1, fl.Failures)
	}
}

func TestStrategyForgetResetsTheCount(t *testing.T) {
	f := setup(t, restart.Policy{MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, GiveUpAt: 3, Window: time.Minute})
	f.failAndRestart(t, 1)
	f.failAndRestart(t, 2)

	f.strategy.Forget(f.child)

	// Without Forget the next failure would be the 3rd and give up.
	f.failAndRestart(t, 3)
	failed, _, gaveUp := f.calls.snapshot()
	assert.Empty(t, gaveUp)
	assert.Equal(t, []int{1, 2, 1}, []int{failed[0].Failures, failed[1].Failures, failed[2].Failures})
}

func TestStrategyForgetCancelsThePendingRestart(t *testing.T) {
	// A long backoff leaves time to Forget the child before its restart.
	f := setup(t, restart.Policy{MinBackoff: 200 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, GiveUpAt: 3, Window: time.Minute})
	f.sys.Root.Send(f.child, &boom{reason: "x"})
	f.waitCounts(t, 1, 0, 0)
	f.strategy.Forget(f.child)

	// A sentinel timer well past the backoff: by then a restart would have
	// been reported.
	failed, _, _ := f.calls.snapshot()
	deadline := time.Now().Add(failed[0].Backoff + 100*time.Millisecond)
	require.Eventually(t, func() bool { return time.Now().After(deadline) }, actortest.Wait, 10*time.Millisecond)
	_, restarted, _ := f.calls.counts()
	assert.Zero(t, restarted, "Forget did not cancel the pending restart")
	assert.Len(t, f.starts.Messages(), 1)
}

func TestStrategyStopCancelsPendingRestarts(t *testing.T) {
	f := setup(t, restart.Policy{MinBackoff: 200 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, GiveUpAt: 3, Window: time.Minute})
	f.sys.Root.Send(f.child, &boom{reason: "x"})
	f.waitCounts(t, 1, 0, 0)
	f.strategy.Stop()

	failed, _, _ := f.calls.snapshot()
	deadline := time.Now().Add(failed[0].Backoff + 100*time.Millisecond)
	require.Eventually(t, func() bool { return time.Now().After(deadline) }, actortest.Wait, 10*time.Millisecond)
	_, restarted, _ := f.calls.counts()
	assert.Zero(t, restarted, "Stop did not cancel the pending restart")
}

func TestStrategyTellsItsOwnerThroughItsMailbox(t *testing.T) {
	// Failed, Restarted and GaveUp arrive in the supervising actor's
	// mailbox, in this order, each with the failure it is about.
	f := setup(t, restart.Policy{MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, GiveUpAt: 2, Window: time.Minute})
	f.failAndRestart(t, 1)
	f.sys.Root.Send(f.child, &boom{reason: "again"})
	f.waitCounts(t, 1, 1, 1)
	assert.Equal(t, []string{"failed", "restarted", "gave up"}, f.calls.sequence())
	failed, restarted, gaveUp := f.calls.snapshot()
	for _, fl := range []restart.Failure{failed[0], restarted[0], gaveUp[0]} {
		assert.True(t, fl.Child.Equal(f.child), "the failure names the child, by its PID")
	}
	assert.Equal(t, "panic: again", gaveUp[0].Reason.Error())
}

func TestNeverGivesUpAtTheFirstFailure(t *testing.T) {
	f := setup(t, restart.Never)
	f.sys.Root.Send(f.child, &boom{reason: "once"})
	f.waitCounts(t, 0, 0, 1)
	_, _, gaveUp := f.calls.snapshot()
	assert.Equal(t, 1, gaveUp[0].Failures)
	assert.Equal(t, "panic: once", gaveUp[0].Reason.Error())
	require.Eventually(t, func() bool { return !f.alive() }, actortest.Wait, 5*time.Millisecond, "the child was not stopped")
	assert.Len(t, f.starts.Messages(), 1, "never restarted")
}
