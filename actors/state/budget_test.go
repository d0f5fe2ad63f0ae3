package state_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/actors/state"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/test/actortest"
	"github.com/polar/observerd/wasm"
)

// budgets are the state-manager's budgets in a test: per policy, all
// policies together, and the report window.
type budgets struct {
	perSecond, total float64
	window           time.Duration
}

// setupBudget starts a state-manager with budgets b, its metrics in reg,
// and a clock the test drives: no token comes back and no window ends
// unless the test advances it.
func setupBudget(t *testing.T, b budgets, reg *prometheus.Registry) (*fixture, *actortest.Clock) {
	t.Helper()
	sys, log := actortest.SystemAndLogger(t)
	clock := actortest.NewClock()
	f := &fixture{sys: sys, broker: actortest.NewRecorder(t, sys, "broker")}
	f.pid = sys.Root.Spawn(state.Props(state.Options{Node: node, Version: version, Broker: f.broker.PID, Log: log,
		EventsPerSecond: b.perSecond, EventsPerSecondTotal: b.total, ThrottleWindow: b.window, Metrics: reg,
		Now: clock.Now, AfterFunc: clock.AfterFunc}))
	t.Cleanup(func() { _ = sys.Root.StopFuture(f.pid).Wait() })
	return f, clock
}

// observationOf is an observation of observer obs of policy name.
func observationOf(name string, result messages.Result) *messages.Event {
	ev := observation(result, name, "corr-"+name)
	ev.Policy = &messages.PolicyRef{Name: name, Revision: "rev-" + name}
	return ev
}

// sync sends a sentinel and waits until it is published: everything sent
// before it has been handled.
func (f *fixture) sync(t *testing.T) {
	t.Helper()
	sentinel := messages.NewEvent(messages.TypePolicyApplied)
	f.emit("policy-manager", sentinel)
	f.broker.WaitEvent(t, messages.TypePolicyApplied, func(ev *messages.Event) bool { return ev.Id == sentinel.Id })
}

// publishedOf counts the published observations of policy name.
func (f *fixture) publishedOf(name string) int {
	n := 0
	for _, ev := range f.broker.Events() {
		if ev.Category == messages.Category_CATEGORY_OBSERVATION && ev.GetPolicy().GetName() == name {
			n++
		}
	}
	return n
}

func throttledOf(f *fixture, name string) []*messages.PolicyThrottled {
	var out []*messages.PolicyThrottled
	for _, ev := range f.broker.EventsOf(messages.TypePolicyThrottled) {
		if ev.GetPolicy().GetName() == name {
			out = append(out, ev.GetPolicyThrottled())
		}
	}
	return out
}

// counter is the value of a counter of reg (0 when it has no such series).
func counter(t *testing.T, reg prometheus.Gatherer, name, label, value string) (float64, bool) {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

// send emits n observations of each of policies in turn (round robin, as
// observers of several policies firing together arrive).
func (f *fixture) send(n int, policies ...string) {
	for range n {
		for _, name := range policies {
			f.emit("observer/"+name+"/h", observationOf(name, messages.Result_RESULT_OK))
		}
	}
}

// reports waits for n policy.throttled events and returns them by policy.
func (f *fixture) reports(t *testing.T, n int) map[string]*messages.PolicyThrottled {
	t.Helper()
	require.Eventually(t, func() bool { return len(f.broker.EventsOf(messages.TypePolicyThrottled)) >= n },
		actortest.Wait, 5*time.Millisecond, "want %d policy.throttled", n)
	out := map[string]*messages.PolicyThrottled{}
	for _, ev := range f.broker.EventsOf(messages.TypePolicyThrottled) {
		out[ev.GetPolicy().GetName()] = ev.GetPolicyThrottled()
	}
	require.Len(t, out, n, "one report per policy")
	return out
}

// policies are n policy names with a prefix.
func policies(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

func TestBurstIsOneSecondButAtLeastOnePluginCall(t *testing.T) {
	assert.Equal(t, wasm.MaxEmits, state.MinBurst, "a plugin call's observations fit in the burst")
	assert.Equal(t, policy.DefaultBounds().MaxEventsPerSecond, float64(state.DefaultEventsPerSecond))
	assert.Equal(t, policy.DefaultBounds().MaxEventsPerSecondTotal, float64(state.DefaultEventsPerSecondTotal))
	tests := []struct {
		perSecond float64
		burst     uint32
	}{
		{0.01, state.MinBurst},
		{20, state.MinBurst},
		{100, 100},
		{250.5, 251},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%g per second", tc.perSecond), func(t *testing.T) {
			f, _ := setupBudget(t, budgets{perSecond: tc.perSecond, total: 1e6}, prometheus.NewRegistry())
			sent := 2 * int(tc.burst)
			f.send(sent, "flood")
			f.sync(t)
			assert.Equal(t, int(tc.burst), f.publishedOf("flood"), "the whole burst passes, then nothing while time stands still")
			// Stopping reports the open window.
			require.NoError(t, f.sys.Root.StopFuture(f.pid).Wait())
			r := f.reports(t, 1)["flood"]
			assert.Equal(t, tc.perSecond, r.EventsPerSecond)
			assert.Equal(t, tc.burst, r.Burst)
			assert.Equal(t, uint64(sent)-uint64(tc.burst), r.DroppedEvents)
			assert.Zero(t, r.DroppedByTotal)
			assert.Equal(t, 1e6, r.EventsPerSecondTotal)
			assert.Equal(t, uint32(1e6), r.BurstTotal)
		})
	}
}

func TestFloodingPolicyIsThrottledAndOthersAreNot(t *testing.T) {
	const (
		perSecond = 20 // a burst of MinBurst
		window    = 10 * time.Second
	)
	reg := prometheus.NewRegistry()
	f, clock := setupBudget(t, budgets{perSecond: perSecond, window: window}, reg)
	const flood, quiet = 300, 50
	for i := range flood {
		f.emit("observer/flood/h", observationOf("flood", messages.Result_RESULT_OK))
		if i%(flood/quiet) == 0 {
			f.emit("observer/quiet/h", observationOf("quiet", messages.Result_RESULT_OK))
		}
	}
	f.sync(t)
	assert.Equal(t, state.MinBurst, f.publishedOf("flood"), "the burst, then nothing")
	assert.Equal(t, quiet, f.publishedOf("quiet"), "the other policy's observations all pass")
	assert.Equal(t, 1, clock.Pending(), "one window is open, flood's")

	// Reported when the window ends, not before.
	clock.Advance(window - time.Nanosecond)
	f.sync(t)
	assert.Empty(t, throttledOf(f, "flood"), "reported at the end of the window, not before")
	clock.Advance(time.Nanosecond)
	ev := f.broker.WaitEvent(t, messages.TypePolicyThrottled, nil)
	r := ev.GetPolicyThrottled()
	require.NotNil(t, r)
	assert.Equal(t, "flood", r.Name)
	assert.Equal(t, uint64(flood-state.MinBurst), r.DroppedEvents)
	assert.Zero(t, r.DroppedByTotal, "its own budget dropped them, not the total")
	assert.Equal(t, window, r.Window.AsDuration())
	assert.Equal(t, float64(perSecond), r.EventsPerSecond)
	assert.Equal(t, uint32(state.MinBurst), r.Burst)
	assert.Equal(t, float64(state.DefaultEventsPerSecondTotal), r.EventsPerSecondTotal)
	assert.Equal(t, uint32(state.DefaultEventsPerSecondTotal), r.BurstTotal)
	assert.Equal(t, &messages.PolicyRef{Name: "flood", Revision: "rev-flood"}, ev.Policy)
	assert.Equal(t, messages.Severity_SEVERITY_MEDIUM, ev.Severity)
	assert.Equal(t, messages.Category_CATEGORY_SYSTEM, ev.Category)
	assert.Equal(t, messages.Source(node, protocol.StateManager), ev.Source)
	assert.Zero(t, ev.Sequence, "the broker assigns the sequence")

	// A window without drops: no timer, no report.
	assert.Zero(t, clock.Pending())
	clock.Advance(window)
	f.sync(t)
	assert.Len(t, f.broker.EventsOf(messages.TypePolicyThrottled), 1)
	assert.Empty(t, throttledOf(f, "quiet"))

	// Two windows on, the bucket is full again; more drops open a new
	// window, with its own count.
	f.send(state.MinBurst+7, "flood")
	f.sync(t)
	assert.Equal(t, 2*state.MinBurst, f.publishedOf("flood"))
	clock.Advance(window)
	require.Eventually(t, func() bool { return len(throttledOf(f, "flood")) == 2 }, actortest.Wait, 5*time.Millisecond)
	assert.Equal(t, uint64(7), throttledOf(f, "flood")[1].DroppedEvents)

	dropped, ok := counter(t, reg, "observerd_policy_throttled_events_total", "policy", "flood")
	assert.True(t, ok)
	assert.Equal(t, float64(flood-state.MinBurst+7), dropped)
	_, ok = counter(t, reg, "observerd_policy_throttled_events_total", "policy", "quiet")
	assert.False(t, ok, "no series for a policy that dropped nothing")
	made, _ := counter(t, reg, "observerd_observations_total", "observer", "observer/flood/h")
	assert.Equal(t, float64(flood+state.MinBurst+7), made, "every observation made is counted, published or not")
	s := f.snapshot(t)
	assert.Equal(t, map[string]uint64{"flood": flood - state.MinBurst + 7}, s.Throttled)
	assert.Equal(t, uint64(flood+state.MinBurst+7), s.Observers[0].Observations)
	const sentinels, changes, reports = 4, 2, 2
	assert.Equal(t, uint64(2*state.MinBurst+quiet+sentinels+changes+reports), s.EventsEmitted, "dropped observations are not emitted")
}

func TestManyQuietPoliciesAreHeldToTheTotal(t *testing.T) {
	// Ten policies, each well within its own budget (30 of 100 a second),
	// make 300 observations a second against a total of 200.
	const perSecond, total, each = 100, 200, 30
	reg := prometheus.NewRegistry()
	f, clock := setupBudget(t, budgets{perSecond: perSecond, total: total, window: 10 * time.Second}, reg)
	names := policies("quiet", 10)
	publishedAll := func() int {
		n := 0
		for _, name := range names {
			n += f.publishedOf(name)
		}
		return n
	}
	f.send(each, names...)
	f.sync(t)
	assert.Equal(t, total, publishedAll(), "the total's burst, then nothing")
	for _, name := range names {
		assert.Equal(t, total/len(names), f.publishedOf(name), "%s: arriving in turn, each gets the same share", name)
	}
	// A second later, one second's worth more.
	clock.Advance(time.Second)
	f.send(each, names...)
	f.sync(t)
	assert.Equal(t, total+total, publishedAll(), "the burst and one second at the total's rate")

	// Each policy's report says the total dropped them, and each policy's
	// series counts its own.
	clock.Advance(9 * time.Second)
	got := f.reports(t, len(names))
	const dropped = 2 * (each - total/10)
	for _, name := range names {
		r := got[name]
		require.NotNil(t, r, name)
		assert.Equal(t, uint64(dropped), r.DroppedEvents, name)
		assert.Equal(t, r.DroppedEvents, r.DroppedByTotal, "%s was within its own budget", name)
		assert.Equal(t, float64(perSecond), r.EventsPerSecond)
		assert.Equal(t, float64(total), r.EventsPerSecondTotal)
		assert.Equal(t, uint32(total), r.BurstTotal)
		n, _ := counter(t, reg, "observerd_policy_throttled_events_total", "policy", name)
		assert.Equal(t, float64(dropped), n, "counted against %s", name)
	}
}

func TestAFloodingPolicyTakesNoMoreThanItsOwnBudget(t *testing.T) {
	const perSecond, total = 100, 1000
	f, clock := setupBudget(t, budgets{perSecond: perSecond, total: total, window: 10 * time.Second}, prometheus.NewRegistry())
	f.send(5*perSecond, "flood")
	f.sync(t)
	assert.Equal(t, perSecond, f.publishedOf("flood"), "held to its own budget though the total has room")

	// What its budget refused took nothing from the total: nine other
	// policies still have the rest of it, whole.
	quiet := policies("quiet", 9)
	f.send(perSecond, quiet...)
	f.send(1, "late") // the total is spent now
	f.sync(t)
	for _, name := range quiet {
		assert.Equal(t, perSecond, f.publishedOf(name), name)
	}
	assert.Zero(t, f.publishedOf("late"))

	clock.Advance(10 * time.Second)
	got := f.reports(t, 2)
	assert.Equal(t, uint64(4*perSecond), got["flood"].DroppedEvents)
	assert.Zero(t, got["flood"].DroppedByTotal, "its own budget dropped them")
	assert.Equal(t, uint64(1), got["late"].DroppedEvents)
	assert.Equal(t, uint64(1), got["late"].DroppedByTotal, "the total dropped it")
}

func TestWhatTheTotalRefusesCostsThePolicyNothing(t *testing.T) {
	const perSecond, total = 100, 1000
	f, clock := setupBudget(t, budgets{perSecond: perSecond, total: total, window: 10 * time.Second}, prometheus.NewRegistry())
	f.send(perSecond, policies("busy", total/perSecond)...) // spends the total
	f.send(perSecond, "victim")
	f.sync(t)
	assert.Zero(t, f.publishedOf("victim"), "the total is spent")

	// A tenth of a second gives the total 100 tokens and each policy 10:
	// the victim still has its whole budget, since the total's refusals
	// took none of it.
	clock.Advance(100 * time.Millisecond)
	f.send(perSecond, "victim")
	f.sync(t)
	assert.Equal(t, perSecond, f.publishedOf("victim"))

	clock.Advance(10 * time.Second)
	r := f.reports(t, 1)["victim"]
	assert.Equal(t, uint64(perSecond), r.DroppedEvents)
	assert.Equal(t, uint64(perSecond), r.DroppedByTotal)
}

func TestThrottledObservationsStillChangeTheState(t *testing.T) {
	f, _ := setupBudget(t, budgets{perSecond: 0.01}, prometheus.NewRegistry())
	var failed []*messages.Event
	for range state.MinBurst {
		f.emit(path, observationOf("web", messages.Result_RESULT_OK))
	}
	for range 3 { // down_after 3
		ev := observationOf("web", messages.Result_RESULT_FAILED)
		failed = append(failed, ev)
		f.emit(path, ev)
	}
	f.sync(t)
	changes := stateChanges(f.broker.Events())
	require.Len(t, changes, 2, "up, then down")
	down := changes[1].GetStateChange()
	assert.Equal(t, messages.ObserverState_OBSERVER_STATE_DOWN, down.NewState)
	assert.Equal(t, failed[2].Id, changes[1].CausationId, "caused by an observation that was not published")
	for _, ev := range f.broker.Events() {
		for _, fe := range failed {
			assert.NotEqual(t, fe.Id, ev.Id, "a throttled observation is not published")
		}
	}
	s := f.snapshot(t)
	require.Len(t, s.Observers, 1)
	assert.Equal(t, "down", s.Observers[0].State)
	assert.Equal(t, "failed", s.Observers[0].LastResult)
}

func TestBudgetsFollowThePolicyName(t *testing.T) {
	reg := prometheus.NewRegistry()
	// Windows that the test never lets end: every report here is a window
	// cut short.
	f, clock := setupBudget(t, budgets{perSecond: 0.01, window: time.Hour}, reg)
	f.send(state.MinBurst+5, "gone")
	f.send(state.MinBurst+3, "kept")
	f.send(state.MinBurst+2, "stale")
	f.sync(t)
	assert.Empty(t, f.broker.EventsOf(messages.TypePolicyThrottled))

	// The removal of a policy reports its open window at once, right
	// before the removal, and forgets its budget and its series.
	clock.Advance(3 * time.Second)
	removed := messages.NewEvent(messages.TypePolicyRemoved)
	removed.Policy = &messages.PolicyRef{Name: "gone", Revision: "rev-gone"}
	removed.Data = &messages.Event_PolicyOutcome{PolicyOutcome: &messages.PolicyOutcome{Name: "gone"}}
	f.emit("policy-manager", removed)
	f.broker.WaitEvent(t, messages.TypePolicyRemoved, nil)
	evs := f.broker.Events()
	last := evs[len(evs)-2:]
	assert.Equal(t, []string{messages.TypePolicyThrottled, messages.TypePolicyRemoved}, []string{last[0].Type, last[1].Type})
	require.Len(t, throttledOf(f, "gone"), 1)
	r := throttledOf(f, "gone")[0]
	assert.Equal(t, uint64(5), r.DroppedEvents)
	assert.Equal(t, 3*time.Second, r.Window.AsDuration(), "a window cut short says how long it was")
	_, ok := counter(t, reg, "observerd_policy_throttled_events_total", "policy", "gone")
	assert.False(t, ok)

	// A PoliciesLoaded that no longer lists a policy forgets it too.
	f.sys.Root.Send(f.pid, &protocol.PoliciesLoaded{Applied: []string{"kept"}})
	require.Eventually(t, func() bool { return len(throttledOf(f, "stale")) == 1 }, actortest.Wait, 5*time.Millisecond)
	assert.Equal(t, uint64(2), throttledOf(f, "stale")[0].DroppedEvents)
	assert.Equal(t, map[string]uint64{"kept": 3}, f.snapshot(t).Throttled)
	kept, _ := counter(t, reg, "observerd_policy_throttled_events_total", "policy", "kept")
	assert.Equal(t, 3.0, kept)

	// A policy of the same name later starts with a full budget.
	f.send(state.MinBurst, "gone")
	f.sync(t)
	assert.Equal(t, 2*state.MinBurst, f.publishedOf("gone"))
	assert.Len(t, throttledOf(f, "gone"), 1)
	assert.Empty(t, throttledOf(f, "kept"), "its window is still open")

	// Stopping reports the windows still open.
	require.NoError(t, f.sys.Root.StopFuture(f.pid).Wait())
	require.Eventually(t, func() bool { return len(throttledOf(f, "kept")) == 1 }, actortest.Wait, 5*time.Millisecond)
	assert.Equal(t, uint64(3), throttledOf(f, "kept")[0].DroppedEvents, "dropped observations are reported, not lost with the actor")
}
