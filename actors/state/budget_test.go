package state_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/state"
	"github.com/polar/observerd/configs"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/actortest"
	"github.com/polar/observerd/wasm"
)

// window is the report window of these tests: far longer than it takes
// to send and handle a few hundred messages, short enough to wait for.
const window = time.Second

// setupBudget starts a state-manager with a budget of perSecond
// observations a second per policy, report windows of w and its metrics
// in reg.
func setupBudget(t *testing.T, perSecond float64, w time.Duration, reg *prometheus.Registry) *fixture {
	t.Helper()
	sys, log := actortest.SystemAndLogger(t)
	f := &fixture{sys: sys, broker: actortest.NewRecorder(t, sys, "broker")}
	f.pid = sys.Root.Spawn(state.Props(state.Options{Node: node, Version: version, Broker: f.broker.PID, Log: log,
		EventsPerSecond: perSecond, ThrottleWindow: w, Metrics: reg}))
	t.Cleanup(func() { _ = sys.Root.StopFuture(f.pid).Wait() })
	return f
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

func TestBurstIsOneSecondButAtLeastOnePluginCall(t *testing.T) {
	assert.Equal(t, wasm.MaxEmits, state.MinBurst, "a plugin call's observations fit in the burst")
	assert.Equal(t, configs.DefaultLimits().MaxEventsPerSecond, float64(state.DefaultEventsPerSecond))
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
			f := setupBudget(t, tc.perSecond, time.Minute, prometheus.NewRegistry())
			sent := 2 * int(tc.burst)
			for range sent {
				f.emit("observer/flood/h", observationOf("flood", messages.Result_RESULT_OK))
			}
			f.sync(t)
			published := f.publishedOf("flood")
			// Stopping reports the open window.
			require.NoError(t, f.sys.Root.StopFuture(f.pid).Wait())
			require.Eventually(t, func() bool { return len(throttledOf(f, "flood")) == 1 }, actortest.Wait, 10*time.Millisecond)
			r := throttledOf(f, "flood")[0]
			assert.Equal(t, tc.perSecond, r.EventsPerSecond)
			assert.Equal(t, tc.burst, r.Burst)
			assert.GreaterOrEqual(t, published, int(tc.burst), "the whole burst passes")
			assert.Equal(t, uint64(sent-published), r.DroppedEvents)
		})
	}
}

func TestFloodingPolicyIsThrottledAndOthersAreNot(t *testing.T) {
	// 0.01 a second: no token comes back while the test runs, so exactly
	// the burst passes.
	reg := prometheus.NewRegistry()
	f := setupBudget(t, 0.01, window, reg)
	const flood, quiet = 300, 50
	start := time.Now()
	for i := range flood {
		f.emit("observer/flood/h", observationOf("flood", messages.Result_RESULT_OK))
		if i%(flood/quiet) == 0 {
			f.emit("observer/quiet/h", observationOf("quiet", messages.Result_RESULT_OK))
		}
	}
	f.sync(t)
	require.Less(t, time.Since(start), window, "the flood must fit in one window for this test")
	assert.Equal(t, state.MinBurst, f.publishedOf("flood"), "the burst, then nothing")
	assert.Equal(t, quiet, f.publishedOf("quiet"), "the other policy's observations all pass")
	assert.Empty(t, throttledOf(f, "flood"), "reported at the end of the window, not before")

	// One report when the window ends, with the exact count.
	ev := f.broker.WaitEvent(t, messages.TypePolicyThrottled, nil)
	r := ev.GetPolicyThrottled()
	require.NotNil(t, r)
	assert.Equal(t, "flood", r.Name)
	assert.Equal(t, uint64(flood-state.MinBurst), r.DroppedEvents)
	assert.Equal(t, window, r.Window.AsDuration())
	assert.Equal(t, 0.01, r.EventsPerSecond)
	assert.Equal(t, uint32(state.MinBurst), r.Burst)
	assert.Equal(t, &messages.PolicyRef{Name: "flood", Revision: "rev-flood"}, ev.Policy)
	assert.Equal(t, messages.Severity_SEVERITY_MEDIUM, ev.Severity)
	assert.Equal(t, messages.Category_CATEGORY_SYSTEM, ev.Category)
	assert.Equal(t, messages.Source(node, state.Path), ev.Source)
	assert.Zero(t, ev.Sequence, "the broker assigns the sequence")

	// A window without drops reports nothing.
	assert.Never(t, func() bool { return len(f.broker.EventsOf(messages.TypePolicyThrottled)) > 1 }, window+window/2, 50*time.Millisecond)
	assert.Empty(t, throttledOf(f, "quiet"))

	// More drops open a new window, with its own count.
	for range 7 {
		f.emit("observer/flood/h", observationOf("flood", messages.Result_RESULT_OK))
	}
	require.Eventually(t, func() bool { return len(throttledOf(f, "flood")) == 2 }, actortest.Wait, 10*time.Millisecond)
	assert.Equal(t, uint64(7), throttledOf(f, "flood")[1].DroppedEvents)

	dropped, ok := counter(t, reg, "observerd_policy_throttled_events_total", "policy", "flood")
	assert.True(t, ok)
	assert.Equal(t, float64(flood-state.MinBurst+7), dropped)
	_, ok = counter(t, reg, "observerd_policy_throttled_events_total", "policy", "quiet")
	assert.False(t, ok, "no series for a policy that dropped nothing")
	made, _ := counter(t, reg, "observerd_observations_total", "observer", "observer/flood/h")
	assert.Equal(t, float64(flood+7), made, "every observation made is counted, published or not")
	s := f.snapshot(t)
	assert.Equal(t, map[string]uint64{"flood": flood - state.MinBurst + 7}, s.Throttled)
	assert.Equal(t, uint64(flood+7), s.Observers[0].Observations)
	const sentinels, changes, reports = 1, 2, 2
	assert.Equal(t, uint64(state.MinBurst+quiet+sentinels+changes+reports), s.EventsEmitted, "dropped observations are not emitted")
}

func TestThrottledObservationsStillChangeTheState(t *testing.T) {
	f := setupBudget(t, 0.01, time.Minute, prometheus.NewRegistry())
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
	// Windows that do not end while the test runs: every report here is
	// a window cut short.
	f := setupBudget(t, 0.01, time.Hour, reg)
	flood := func(name string, n int) {
		for range n {
			f.emit("observer/"+name+"/h", observationOf(name, messages.Result_RESULT_OK))
		}
	}
	flood("gone", state.MinBurst+5)
	flood("kept", state.MinBurst+3)
	flood("stale", state.MinBurst+2)
	f.sync(t)
	assert.Empty(t, f.broker.EventsOf(messages.TypePolicyThrottled))

	// The removal of a policy reports its open window at once, right
	// before the removal, and forgets its budget and its series.
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
	assert.Less(t, r.Window.AsDuration(), time.Hour, "a window cut short says how long it was")
	_, ok := counter(t, reg, "observerd_policy_throttled_events_total", "policy", "gone")
	assert.False(t, ok)

	// A PoliciesLoaded that no longer lists a policy forgets it too.
	f.sys.Root.Send(f.pid, &messages.PoliciesLoaded{Applied: []string{"kept"}})
	require.Eventually(t, func() bool { return len(throttledOf(f, "stale")) == 1 }, actortest.Wait, 10*time.Millisecond)
	assert.Equal(t, uint64(2), throttledOf(f, "stale")[0].DroppedEvents)
	assert.Equal(t, map[string]uint64{"kept": 3}, f.snapshot(t).Throttled)
	kept, _ := counter(t, reg, "observerd_policy_throttled_events_total", "policy", "kept")
	assert.Equal(t, 3.0, kept)

	// A policy of the same name later starts with a full budget.
	flood("gone", state.MinBurst)
	f.sync(t)
	assert.Equal(t, 2*state.MinBurst, f.publishedOf("gone"))
	assert.Len(t, throttledOf(f, "gone"), 1)
	assert.Empty(t, throttledOf(f, "kept"), "its window is still open")

	// Stopping reports the windows still open.
	require.NoError(t, f.sys.Root.StopFuture(f.pid).Wait())
	require.Eventually(t, func() bool { return len(throttledOf(f, "kept")) == 1 }, actortest.Wait, 10*time.Millisecond)
	assert.Equal(t, uint64(3), throttledOf(f, "kept")[0].DroppedEvents, "dropped observations are reported, not lost with the actor")
}
