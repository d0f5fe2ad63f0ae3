package task_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/actors/task"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/test/actortest"
)

// TestTenThousandObservers: at 10,000 observers each is still a
// supervised child: one quarantined is retried on Resume, one paused
// stops and starts again on Resume, one asked observes at once, and a
// changed policy replaces its own observers and no other.
func TestTenThousandObservers(t *testing.T) {
	limits := policy.DefaultBounds()
	limits.MaxObservers = 20_000
	f := setup(t, func(o *task.Options) { o.Limits = &limits })
	policyText := func(p, version int) string {
		var b strings.Builder
		for o := range 100 {
			fmt.Fprintf(&b, "    - {name: o%03d, kind: http, interval: 1h, http: {path: /v%d}}\n", o, version)
		}
		if p == 0 {
			b.WriteString("    - {name: port, kind: wasm, interval: 1h, wasm: {module: port.wasm}}\n")
		}
		return b.String()
	}
	for p := range 100 {
		f.send(&protocol.ApplyPolicy{Policy: parse(t, fmt.Sprintf("p%03d", p), f.url, policyText(p, 0))})
	}
	started := func() int { return len(f.state.EventsOf(messages.TypeObserverStarted)) }
	// 10,000 starts, on a machine shared with other tests: a minute.
	require.Eventually(t, func() bool { return started() >= 10_000 }, 6*actortest.Wait, 10*time.Millisecond, "not every observer started")
	f.state.WaitEvent(t, messages.TypeObserverQuarantined, nil)

	ask := func(msg any) error {
		t.Helper()
		res, err := f.sys.Root.RequestFuture(f.task, msg, actortest.Wait).Result()
		require.NoError(t, err)
		return res.(*protocol.CommandDone).Err
	}
	require.NoError(t, ask(&protocol.Resume{Policy: "p000", Observer: "port"}))
	require.Eventually(t, func() bool { return len(f.state.EventsOf(messages.TypeObserverQuarantined)) == 2 },
		actortest.Wait, 5*time.Millisecond, "Resume did not retry the quarantined observer")

	require.NoError(t, ask(&protocol.Pause{Policy: "p050", Observer: "o050"}))
	f.state.WaitEvent(t, messages.TypeObserverStopped, func(ev *messages.Event) bool {
		return ev.GetObserver().GetActor() == "observer/p050/o050" && ev.GetObserver().GetReason() == protocol.StopReasonPaused
	})
	before := started()
	require.NoError(t, ask(&protocol.Resume{Policy: "p050", Observer: "o050"}))
	require.Eventually(t, func() bool { return started() == before+1 }, actortest.Wait, 5*time.Millisecond)
	assert.Equal(t, "observer/p050/o050", f.state.EventsOf(messages.TypeObserverStarted)[before].GetObserver().GetActor())

	require.NoError(t, ask(&protocol.ObserveNow{Policy: "p099", Observer: "o099"}))
	f.waitObservation(t, "observer/p099/o099", nil)

	stopped := len(f.state.EventsOf(messages.TypeObserverStopped))
	before = started()
	changed := parse(t, "p042", f.url, policyText(42, 1))
	f.apply(t, changed)
	require.Eventually(t, func() bool { return started() == before+100 }, actortest.Wait, 5*time.Millisecond)
	for _, ev := range f.state.EventsOf(messages.TypeObserverStarted)[before:] {
		assert.Equal(t, changed.Revision, ev.GetPolicy().GetRevision(), ev.GetObserver().GetActor())
	}
	for _, ev := range f.state.EventsOf(messages.TypeObserverStopped)[stopped:] {
		assert.True(t, strings.HasPrefix(ev.GetObserver().GetActor(), "observer/p042/"), ev.GetObserver().GetActor())
	}
}
