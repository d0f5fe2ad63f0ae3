//go:build integration

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/messages"
)

// hostileState (TestHostile/state): what one policy does cannot starve the others, nor
// take the daemon past its totals.
func hostileState(t *testing.T) {
	t.Run("a flooding policy is throttled to its event budget, a quiet one is not", func(t *testing.T) {
		const (
			perSecond = 20
			burst     = 64 // max(perSecond, one plugin call's 64 events)
			window    = 10 * time.Second
		)
		target := startObservable(t)
		d := newDaemon(t, "", withLimits(fmt.Sprintf(
			"{min_interval: 10ms, max_requests_per_second: 10000, max_concurrent_requests: 64, max_events_per_second: %d}", perSecond)))
		// flood asks for 1,000 observations a second, quiet for 5.
		var flood strings.Builder
		for i := range 10 {
			fmt.Fprintf(&flood, "    - {name: h%d, kind: http, interval: 10ms, timeout: 8ms, http: {path: /healthz}}\n", i)
		}
		writePolicyFile(t, d, "flood.yaml", "flood", target, flood.String())
		writePolicyFile(t, d, "quiet.yaml", "quiet", target, "    - {name: q, kind: http, interval: 200ms, http: {path: /healthz}}\n")
		c := d.consume(t)
		started := time.Now()
		d.start(t)

		report := c.waitWhere(t, messages.TypePolicyThrottled, func(*messages.Event) bool { return true })
		r := report.GetPolicyThrottled()
		require.NotNil(t, r)
		assert.Equal(t, "flood", r.Name)
		assert.Equal(t, "flood", report.GetPolicy().GetName())
		assert.Positive(t, r.DroppedEvents)
		assert.Equal(t, window, r.Window.AsDuration())
		assert.Equal(t, float64(perSecond), r.EventsPerSecond)
		assert.Equal(t, uint32(burst), r.Burst)
		assert.Equal(t, "observerd://e2e-node.example/state-manager", report.Source)
		assert.Equal(t, messages.Severity_SEVERITY_MEDIUM, report.Severity)

		// The bucket cannot have given more than its burst and its rate
		// over its whole life, which began after started.
		published := 0
		var first, last time.Time
		perSecondSeen := map[int64]int{} // by the second of the observation's time
		for _, ev := range c.ofType(messages.TypeObservationHTTP) {
			if ev.GetPolicy().GetName() == "flood" {
				published++
				if first.IsZero() {
					first = ev.Time.AsTime()
				}
				last = ev.Time.AsTime()
				perSecondSeen[ev.Time.AsTime().Unix()]++
			}
		}
		lifetime := time.Since(started)
		t.Logf("flood: %d observations published in %s (%.1f/s after the burst; budget %d/s, burst %d); %d dropped in the first window",
			published, lifetime.Round(time.Millisecond), float64(published-burst)/last.Sub(first).Seconds(), perSecond, burst, r.DroppedEvents)
		assert.LessOrEqual(t, published, burst+int(perSecond*lifetime.Seconds()+1), "the flood was published beyond its budget")
		// In any second, at most the burst and a second's worth; the
		// bucket's clock is the state-manager's, a little after the
		// observation's time, hence a second's worth of margin.
		for sec, n := range perSecondSeen {
			assert.LessOrEqual(t, n, burst+2*perSecond, "flood observations published in the second %s", time.Unix(sec, 0).UTC())
		}

		// Every observation quiet made was published: compare what the
		// daemon counted with what the consumer got.
		families, err := d.scrape()
		require.NoError(t, err)
		made := counterOf(families, "observerd_observations_total", "observer", "observer/quiet/q")
		require.Positive(t, made)
		require.Eventually(t, func() bool {
			n := 0
			for _, ev := range c.ofType(messages.TypeObservationHTTP) {
				if ev.GetPolicy().GetName() == "quiet" {
					n++
				}
			}
			return float64(n) >= made
		}, wait, tick, "quiet's observations did not all arrive")
		assert.Positive(t, counterOf(families, "observerd_policy_throttled_events_total", "policy", "flood"))
		assert.Zero(t, counterOf(families, "observerd_policy_throttled_events_total", "policy", "quiet"))
		for _, ev := range c.ofType(messages.TypePolicyThrottled) {
			assert.Equal(t, "flood", ev.GetPolicyThrottled().GetName(), "quiet is never throttled")
		}
	})

	t.Run("many policies within their budgets are held to the total", func(t *testing.T) {
		const (
			perSecond = 50 // each policy makes 40 a second: within it
			total     = 20
			burst     = 64 // max(total, one plugin call's 64 events)
		)
		target := startObservable(t)
		d := newDaemon(t, "", withLimits(fmt.Sprintf("{min_interval: 10ms, max_requests_per_second: 10000, max_concurrent_requests: 64, "+
			"max_events_per_second: %d, max_events_per_second_total: %d}", perSecond, total)))
		names := []string{"p0", "p1", "p2", "p3"}
		for _, name := range names {
			writePolicyFile(t, d, name+".yaml", name, target,
				"    - {name: a, kind: http, interval: 50ms, http: {path: /healthz}}\n    - {name: b, kind: http, interval: 50ms, http: {path: /healthz}}\n")
		}
		c := d.consume(t)
		started := time.Now()
		d.start(t)

		// Each policy is throttled, by the total alone.
		reports := map[string]*messages.PolicyThrottled{}
		require.Eventually(t, func() bool {
			for _, ev := range c.ofType(messages.TypePolicyThrottled) {
				if r := ev.GetPolicyThrottled(); reports[r.GetName()] == nil {
					reports[r.GetName()] = r
				}
			}
			return len(reports) == len(names)
		}, wait, tick, "not every policy was throttled: %v", reports)
		for _, name := range names {
			r := reports[name]
			assert.Positive(t, r.DroppedEvents, name)
			assert.Equal(t, r.DroppedEvents, r.DroppedByTotal, "%s was within its own budget", name)
			assert.Equal(t, float64(perSecond), r.EventsPerSecond)
			assert.Equal(t, float64(total), r.EventsPerSecondTotal)
			assert.Equal(t, uint32(burst), r.BurstTotal)
		}

		// All of them together published no more than the total allows
		// over the daemon's life.
		published := len(c.ofType(messages.TypeObservationHTTP))
		lifetime := time.Since(started)
		t.Logf("%d policies: %d observations published in %s (total budget %d/s, burst %d)", len(names), published, lifetime.Round(time.Millisecond), total, burst)
		assert.LessOrEqual(t, published, burst+int(total*lifetime.Seconds()+1), "published beyond the total")
		families, err := d.scrape()
		require.NoError(t, err)
		for _, name := range names {
			assert.Positive(t, counterOf(families, "observerd_policy_throttled_events_total", "policy", name), "counted against %s", name)
		}
	})

	t.Run("a policy past limits.max_observers is rejected, the first one runs", func(t *testing.T) {
		target := startObservable(t)
		d := newDaemon(t, "", withLimits(
			"{min_interval: 10ms, max_requests_per_second: 10000, max_concurrent_requests: 64, max_events_per_second: 100000, max_observers: 3}"))
		two := "    - {name: a, kind: http, interval: 200ms, http: {path: /healthz}}\n    - {name: b, kind: http, interval: 200ms, http: {path: /healthz}}\n"
		writePolicyFile(t, d, "a.yaml", "first", target, two)
		writePolicyFile(t, d, "b.yaml", "second", target, two)
		c := d.consume(t)
		d.start(t)

		rejected := c.waitWhere(t, messages.TypePolicyRejected, func(*messages.Event) bool { return true })
		out := rejected.GetPolicyOutcome()
		assert.Equal(t, filepath.Join(d.dir, "policies", "b.yaml"), out.File)
		assert.Contains(t, out.Reason, "limits.max_observers")
		applied := c.waitWhere(t, messages.TypePolicyApplied, func(*messages.Event) bool { return true })
		assert.Equal(t, "first", applied.GetPolicyOutcome().GetName())
		c.waitWhere(t, messages.TypeObservationHTTP, func(ev *messages.Event) bool { return ev.GetPolicy().GetName() == "first" })
		for _, ev := range c.ofType(messages.TypePolicyApplied) {
			assert.NotEqual(t, "second", ev.GetPolicyOutcome().GetName(), "the second policy never runs")
		}
		for _, ev := range c.ofType(messages.TypeObserverStarted) {
			assert.Equal(t, "first", ev.GetPolicy().GetName())
		}
	})
}

// writePolicyFile writes policy name against target, with observers (YAML
// list items), as file in the daemon's policy_dir.
func writePolicyFile(t *testing.T, d *daemon, file, name, target, observers string) {
	t.Helper()
	text := fmt.Sprintf(`apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: %s}
spec:
  target: {name: %s, url: %q}
  limits: {max_requests_per_second: 2000, max_concurrent_requests: 16}
  observers:
%s`, name, name, target, observers)
	require.NoError(t, os.WriteFile(filepath.Join(d.dir, "policies", file), []byte(text), 0o644))
}
