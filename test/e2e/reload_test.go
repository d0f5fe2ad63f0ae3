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

	_ "github.com/polar/observerd/actors/observer/kinds/all" // to compute the revisions the daemon publishes
	"github.com/polar/observerd/configs"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
)

// waitWhere waits until an event of type typ satisfying match arrived.
func (c *consumer) waitWhere(t *testing.T, typ string, match func(*messages.Event) bool) *messages.Event {
	t.Helper()
	var found *messages.Event
	require.Eventually(t, func() bool {
		for _, ev := range c.ofType(typ) {
			if match(ev) {
				found = ev
				return true
			}
		}
		return false
	}, wait, tick, "no matching %s event arrived", typ)
	return found
}

// reloadPolicy is the web policy against target with a health observer
// every interval, and extra observers (YAML list items).
func reloadPolicy(target, interval, extra string) string {
	return fmt.Sprintf(`apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: web, url: %q}
  limits: {max_requests_per_second: 200, max_concurrent_requests: 4}
  observers:
    - {name: health, kind: http, interval: %s, timeout: 150ms, http: {path: /healthz}}
%s`, target, interval, extra)
}

func revision(t *testing.T, text string) string {
	t.Helper()
	p, err := policy.Parse("web.yaml", []byte(text), policy.Env{Allowed: configs.Default().Targets(), Limits: &policy.Bounds{MinInterval: yamldoc.Duration(time.Millisecond), MaxRequestsPerSecond: 10000, MaxConcurrentRequests: 64, MaxEventsPerSecond: 100000, MaxObservers: 1000, MaxResponseBytes: 16 * yamldoc.MiB}})
	require.NoError(t, err)
	return p.Revision
}

// TestPolicyHotReload changes policy_dir under a running daemon the ways
// operators, editors and Kubernetes do, and follows each change on the
// real broker: the policy event, the observers it (re)started, and their
// observations, linked by correlation_id.
func TestPolicyHotReload(t *testing.T) {
	target := startObservable(t)
	d := newDaemon(t, target)
	dir := filepath.Join(d.dir, "policies")
	file := filepath.Join(dir, "web.yaml")
	c := d.consume(t)
	d.start(t)

	first := c.waitWhere(t, messages.TypePolicyApplied, func(*messages.Event) bool { return true })
	current := first.Policy.GetRevision()

	// applied waits for the policy.applied of text, checks what it says
	// changed, and follows it to an observation of the observers it
	// started.
	applied := func(t *testing.T, text string, added, updated, removed []string) *messages.Event {
		t.Helper()
		want := revision(t, text)
		ev := c.waitWhere(t, messages.TypePolicyApplied, func(ev *messages.Event) bool { return ev.Policy.GetRevision() == want })
		out := ev.GetPolicyOutcome()
		assert.Equal(t, current, out.GetPreviousRevision())
		assert.Equal(t, added, out.GetAdded(), "added")
		assert.Equal(t, updated, out.GetUpdated(), "updated")
		assert.Equal(t, removed, out.GetRemoved(), "removed")
		for _, name := range append(added, updated...) {
			path := "observer/web/" + name
			c.waitWhere(t, messages.TypeObserverStarted, func(s *messages.Event) bool {
				return s.GetObserver().GetActor() == path && s.CorrelationId == ev.Id && s.Policy.GetRevision() == want
			})
			obs := c.waitWhere(t, messages.TypeObservationHTTP, func(o *messages.Event) bool {
				return o.Source == "observerd://e2e-node.example/"+path && o.CorrelationId == ev.Id
			})
			assert.Equal(t, ev.Id, obs.CausationId)
			assert.Equal(t, want, obs.Policy.GetRevision())
		}
		current = want
		return ev
	}
	// stillObserving waits for a fresh observation of health under the
	// revision in force.
	stillObserving := func(t *testing.T, after *messages.Event) {
		t.Helper()
		c.waitWhere(t, messages.TypeObservationHTTP, func(o *messages.Event) bool {
			return o.Source == "observerd://e2e-node.example/observer/web/health" && o.Sequence > after.Sequence
		})
	}
	stops := func(name string) int {
		n := 0
		for _, ev := range c.ofType(messages.TypeObserverStopped) {
			if ev.GetObserver().GetActor() == "observer/web/"+name {
				n++
			}
		}
		return n
	}
	renameInto := func(t *testing.T, text string) {
		t.Helper()
		tmp := filepath.Join(dir, ".web.yaml.tmp")
		require.NoError(t, os.WriteFile(tmp, []byte(text), 0o644))
		require.NoError(t, os.Rename(tmp, file))
	}

	t.Run("rename-save", func(t *testing.T) {
		text := reloadPolicy(target, "300ms", "")
		renameInto(t, text)
		applied(t, text, nil, []string{"health"}, nil)
	})

	t.Run("in-place overwrite adds an observer and leaves the other alone", func(t *testing.T) {
		healthStops := stops("health")
		text := reloadPolicy(target, "300ms", "    - {name: status, kind: http, interval: 300ms, timeout: 150ms, http: {path: /api/status}}\n")
		require.NoError(t, os.WriteFile(file, []byte(text), 0o644))
		applied(t, text, []string{"status"}, nil, nil)
		assert.Equal(t, healthStops, stops("health"), "the unchanged observer kept running")
	})

	t.Run("partial write in two halves", func(t *testing.T) {
		text := reloadPolicy(target, "250ms", "    - {name: status, kind: http, interval: 300ms, timeout: 150ms, http: {path: /api/status}}\n")
		w, err := os.OpenFile(file, os.O_WRONLY|os.O_TRUNC, 0)
		require.NoError(t, err)
		defer w.Close()
		half := len(text) - 30 // inside the status observer's line
		_, err = w.WriteString(text[:half])
		require.NoError(t, err)
		kept := current
		rejected := c.waitWhere(t, messages.TypePolicyRejected, func(ev *messages.Event) bool {
			return ev.GetPolicyOutcome().GetFile() == file
		})
		assert.Equal(t, kept, rejected.GetPolicyOutcome().GetPreviousRevision(), "the last good revision stays in force")
		stillObserving(t, rejected)
		_, err = w.WriteString(text[half:])
		require.NoError(t, err)
		applied(t, text, nil, []string{"health"}, nil)
	})

	t.Run("bad overwrite keeps the last good running, the fix is applied", func(t *testing.T) {
		bad := reloadPolicy(target, "-1s", "")
		require.NoError(t, os.WriteFile(file, []byte(bad), 0o644))
		rejected := c.waitWhere(t, messages.TypePolicyRejected, func(ev *messages.Event) bool {
			return strings.Contains(ev.GetPolicyOutcome().GetReason(), "spec.observers[0].interval")
		})
		out := rejected.GetPolicyOutcome()
		assert.Equal(t, file, out.GetFile())
		assert.Equal(t, int32(8), out.GetLine())
		assert.Contains(t, out.GetReason(), fmt.Sprintf("%s:8:", file))
		assert.Contains(t, out.GetReason(), "spec.observers[0].interval")
		assert.Equal(t, current, out.GetPreviousRevision())
		assert.Equal(t, current, rejected.Policy.GetRevision())
		stillObserving(t, rejected)

		fixed := reloadPolicy(target, "200ms", "")
		require.NoError(t, os.WriteFile(file, []byte(fixed), 0o644))
		applied(t, fixed, nil, []string{"health"}, []string{"status"})
	})

	t.Run("delete", func(t *testing.T) {
		require.NoError(t, os.Remove(file))
		removed := c.waitWhere(t, messages.TypePolicyRemoved, func(ev *messages.Event) bool { return ev.Policy.GetRevision() == current })
		assert.Equal(t, []string{"health"}, removed.GetPolicyOutcome().GetRemoved())
		c.waitWhere(t, messages.TypeObserverStopped, func(ev *messages.Event) bool {
			return ev.GetObserver().GetActor() == "observer/web/health" && ev.Sequence > removed.Sequence
		})
		current = ""
	})

	t.Run("ConfigMap symlink swap", func(t *testing.T) {
		version := func(name, text string) {
			require.NoError(t, os.Mkdir(filepath.Join(dir, name), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dir, name, "web.yaml"), []byte(text), 0o644))
			require.NoError(t, os.Symlink(name, filepath.Join(dir, "..data_tmp")))
			require.NoError(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
		}
		v1 := reloadPolicy(target, "220ms", "")
		version("..2026_11_23_12_00_00.1", v1)
		require.NoError(t, os.Symlink("..data/web.yaml", file))
		applied(t, v1, []string{"health"}, nil, nil)

		v2 := reloadPolicy(target, "230ms", "")
		version("..2026_11_23_12_05_00.2", v2)
		require.NoError(t, os.RemoveAll(filepath.Join(dir, "..2026_11_23_12_00_00.1")))
		applied(t, v2, nil, []string{"health"}, nil)
		require.NoError(t, os.Remove(file))
		c.waitWhere(t, messages.TypePolicyRemoved, func(ev *messages.Event) bool { return ev.Policy.GetRevision() == current })
		current = ""
	})

	t.Run("a burst of 1000 writes", func(t *testing.T) {
		before := len(c.ofType(messages.TypePolicyApplied))
		rejectedBefore := len(c.ofType(messages.TypePolicyRejected))
		var text string
		for i := range 1000 {
			text = reloadPolicy(target, fmt.Sprintf("%dms", 200+i), "")
			require.NoError(t, os.WriteFile(file, []byte(text), 0o644))
		}
		want := revision(t, text)
		final := c.waitWhere(t, messages.TypePolicyApplied, func(ev *messages.Event) bool { return ev.Policy.GetRevision() == want })
		c.waitWhere(t, messages.TypeObservationHTTP, func(o *messages.Event) bool { return o.CorrelationId == final.Id })
		n := len(c.ofType(messages.TypePolicyApplied)) - before
		t.Logf("1000 writes: %d policy.applied", n)
		assert.Less(t, n, 100, "the burst is debounced")
		assert.Len(t, c.ofType(messages.TypePolicyRejected), rejectedBefore, "no write of the burst was read half-way")
	})
}
