//go:build integration

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/messages"
)

// TestStateTransitionsEndToEnd: bin/observable fails, then recovers; a
// consumer sees exactly two state.changed after the first up, down then
// up, each caused by the observation that crossed the threshold.
func TestStateTransitionsEndToEnd(t *testing.T) {
	target := startObservable(t)
	d := newDaemon(t, target, withObservers(
		"    - {name: health, kind: http, interval: 100ms, timeout: 80ms, thresholds: {down_after: 3, up_after: 2}, http: {path: /healthz}}\n"))
	c := d.consume(t)
	d.start(t)

	changed := func(to messages.ObserverState) *messages.Event {
		return c.waitWhere(t, messages.TypeStateChanged, func(ev *messages.Event) bool { return ev.GetStateChange().GetNewState() == to })
	}
	// cause finds the observation a state.changed names as its cause.
	cause := func(ev *messages.Event) *messages.Event {
		return c.waitWhere(t, messages.TypeObservationHTTP, func(o *messages.Event) bool { return o.Id == ev.CausationId })
	}
	up := changed(messages.ObserverState_OBSERVER_STATE_UP)
	assert.Equal(t, messages.ObserverState_OBSERVER_STATE_UNKNOWN, up.GetStateChange().GetOldState())

	control(t, target, "mode", "fail")
	down := changed(messages.ObserverState_OBSERVER_STATE_DOWN)
	sc := down.GetStateChange()
	assert.Equal(t, messages.ObserverState_OBSERVER_STATE_UP, sc.GetOldState())
	assert.Equal(t, int32(3), sc.GetConsecutiveFailures())
	assert.Equal(t, messages.Severity_SEVERITY_HIGH, down.Severity)
	assert.Equal(t, "3 consecutive failures (down_after 3)", sc.GetReason())
	failed := cause(down)
	assert.Equal(t, messages.Result_RESULT_FAILED, failed.GetHttp().GetResult())
	assert.Equal(t, int32(503), failed.GetHttp().GetStatusCode())
	assert.Equal(t, failed.CorrelationId, down.CorrelationId)
	assert.Equal(t, "observerd://e2e-node.example/observer/web/health", down.Source)
	assert.Equal(t, "observer/web/health", sc.GetObserver())

	control(t, target, "mode", "ok")
	recovered := c.waitWhere(t, messages.TypeStateChanged, func(ev *messages.Event) bool { return ev.Sequence > down.Sequence })
	assert.Equal(t, messages.ObserverState_OBSERVER_STATE_DOWN, recovered.GetStateChange().GetOldState())
	assert.Equal(t, messages.ObserverState_OBSERVER_STATE_UP, recovered.GetStateChange().GetNewState())
	assert.Equal(t, messages.Severity_SEVERITY_INFO, recovered.Severity)
	ok := cause(recovered)
	assert.Equal(t, messages.Result_RESULT_OK, ok.GetHttp().GetResult())
	// up_after 2: the OK observation before the cause did not bring it up.
	var oks int
	for _, o := range c.ofType(messages.TypeObservationHTTP) {
		if o.Sequence > down.Sequence && o.Sequence <= ok.Sequence && o.GetHttp().GetResult() == messages.Result_RESULT_OK {
			oks++
		}
	}
	assert.Equal(t, 2, oks, "up after exactly up_after successes")

	// Five more OK observations later, still exactly those three changes.
	c.waitWhere(t, messages.TypeObservationHTTP, func(o *messages.Event) bool {
		n := 0
		for _, e := range c.ofType(messages.TypeObservationHTTP) {
			if e.Sequence > recovered.Sequence {
				n++
			}
		}
		return n >= 5
	})
	var ids []string
	for _, ev := range c.ofType(messages.TypeStateChanged) {
		ids = append(ids, ev.Id)
	}
	assert.Equal(t, []string{up.Id, down.Id, recovered.Id}, ids)
}

// TestRateLimitHoldsOnTheServiceSide: ten observers asking for 100
// requests a second in all, under a policy limit of 5 a second: the
// service receives no more than the token bucket allows (its burst of 5,
// then 5 a second), counted by the service itself.
func TestRateLimitHoldsOnTheServiceSide(t *testing.T) {
	const (
		limit     = 5.0
		burst     = 5 // the bucket's size: the limit rounded down
		observers = 10
		received  = 25 // requests to wait for
	)
	target := startObservable(t)
	var list strings.Builder
	for i := range observers {
		fmt.Fprintf(&list, "    - {name: h%d, kind: http, interval: 100ms, timeout: 90ms, http: {path: /healthz}}\n", i)
	}
	d := newDaemon(t, "")
	writePolicy(t, d, fmt.Sprintf(`apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: web, url: %q}
  limits: {max_requests_per_second: %g, max_concurrent_requests: 10}
  observers:
%s`, target, limit, list.String()))
	c := d.consume(t)
	d.start(t)
	require.Eventually(t, func() bool { return len(c.ofType(messages.TypeObserverStarted)) == observers }, wait, tick)

	resp, err := http.Post(target+"/control/reset", "", nil)
	require.NoError(t, err)
	resp.Body.Close()
	start := time.Now()
	var elapsed time.Duration
	require.Eventually(t, func() bool {
		elapsed = time.Since(start)
		return healthzCount(t, target) >= received
	}, wait, tick)
	n := healthzCount(t, target)
	// At most burst + limit*t requests in any t: the 25th cannot arrive
	// before (25-5)/5 = 4 s. The polling adds its tick to elapsed.
	floor := time.Duration(float64(received-burst) / limit * float64(time.Second))
	t.Logf("%d requests in %s: %.1f/s against a limit of %g/s (observers asking for %d/s)", n, elapsed.Round(time.Millisecond),
		float64(n)/elapsed.Seconds(), limit, observers*10)
	assert.GreaterOrEqual(t, elapsed, floor-tick, "the service received more than the limit allows")
	assert.Less(t, elapsed, 2*floor, "the observers did not use the limit (they ask for far more)")

	// The turns the limit refused are observations too (timeouts waiting
	// for a token), not silence.
	var waited int
	for _, ev := range c.ofType(messages.TypeObservationHTTP) {
		if strings.Contains(ev.GetHttp().GetError(), "rate limit") {
			waited++
		}
	}
	assert.Positive(t, waited, "refused turns are reported")
}

func healthzCount(t *testing.T, target string) int {
	t.Helper()
	resp, err := http.Get(target + "/control/counts")
	require.NoError(t, err)
	defer resp.Body.Close()
	var counts map[string]int
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&counts))
	return counts["/healthz"]
}

// writePolicy replaces the daemon's web policy.
func writePolicy(t *testing.T, d *daemon, text string) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(d.dir, "policies", "web.yaml"), []byte(text), 0o644))
}
