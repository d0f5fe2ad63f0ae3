package policymanager

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/test/actortest"
)

// parses counts the parses of each file, by name.
type parses struct {
	mu sync.Mutex
	n  map[string]int
}

// counting makes the policy-manager count its parses in p.
func counting(p *parses) func(*Options) {
	p.n = map[string]int{}
	return func(o *Options) {
		o.parse = func(file string, data []byte, env policy.Env) (*policy.Policy, error) {
			p.mu.Lock()
			p.n[filepath.Base(file)]++
			p.mu.Unlock()
			return policy.Parse(file, data, env)
		}
	}
}

func (p *parses) of(name string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n[name]
}

// sized is a valid policy with n observers: http ones, or wasm ones of
// 32MiB each.
func sized(name string, n int, wasm bool) string {
	var obs strings.Builder
	for i := range n {
		if wasm {
			fmt.Fprintf(&obs, "    - {name: p%d, kind: wasm, interval: 5s, wasm: {module: x.wasm, memory_limit: 32MiB}}\n", i)
		} else {
			fmt.Fprintf(&obs, "    - {name: h%d, kind: http, interval: 5s, http: {path: /h%d}}\n", i, i)
		}
	}
	return fmt.Sprintf(`apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: %s}
spec:
  target: {name: %s-target, url: "http://127.0.0.1:8080"}
  observers:
%s`, name, name, obs.String())
}

// withLimits gives the policy-manager the default limits, changed by set.
func withLimits(set func(*policy.Bounds)) func(*Options) {
	return func(o *Options) {
		l := policy.DefaultBounds()
		set(&l)
		o.Env.Limits = &l
	}
}

func TestTotalsRejectWhatWouldExceedTheLimits(t *testing.T) {
	// Each case allows 3 units: observers, or 32MiB wasm observers.
	tests := []struct {
		name   string
		key    string
		wasm   bool
		limits func(*policy.Bounds)
	}{
		{"max_observers", "limits.max_observers", false, func(l *policy.Bounds) { l.MaxObservers = 3 }},
		{"max_plugin_memory", "limits.max_plugin_memory", true, func(l *policy.Bounds) { l.MaxPluginMemory = 96 * yamldoc.MiB }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p parses
			f := setup(t, map[string]string{"a.yaml": sized("a", 2, tc.wasm), "b.yaml": sized("b", 1, tc.wasm)},
				withLimits(tc.limits), counting(&p))
			done := actortest.WaitMessage[*protocol.PoliciesLoaded](t, f.state, nil)
			assert.Equal(t, []string{"a", "b"}, done.Applied, "3 units fit")
			f.waitChanges(t, 2)
			revB := revisionOf(t, "b.yaml", sized("b", 1, tc.wasm))

			// b grows past the limit: rejected, its last good version runs on.
			done = f.round(t, func() { f.write(t, "b.yaml", sized("b", 2, tc.wasm)) })
			assert.Equal(t, []string{"a", "b"}, done.Applied)
			assert.Equal(t, []string{filepath.Join(f.dir, "b.yaml")}, done.Rejected)
			rejected := f.state.WaitEvent(t, messages.TypePolicyRejected, nil)
			out := rejected.GetPolicyOutcome()
			assert.Contains(t, out.Reason, tc.key)
			assert.Equal(t, filepath.Join(f.dir, "b.yaml"), out.File)
			assert.Equal(t, "b", out.Name)
			assert.Equal(t, revB, out.PreviousRevision, "the revision still in force")
			assert.Len(t, f.state.EventsOf(messages.TypePolicyApplied), 2, "nothing changed in what runs")
			parsed := p.of("b.yaml")

			// a shrinks: the room it frees lets b in, b's file untouched.
			f.write(t, "a.yaml", sized("a", 1, tc.wasm))
			require.Eventually(t, func() bool { return len(f.state.EventsOf(messages.TypePolicyApplied)) == 4 }, actortest.Wait, 5*time.Millisecond)
			applied := f.policyEvents(messages.TypePolicyApplied)
			assert.Equal(t, "a", applied[2].Name)
			assert.Equal(t, "b", applied[3].Name)
			assert.Equal(t, revisionOf(t, "b.yaml", sized("b", 2, tc.wasm)), applied[3].Revision)
			assert.Equal(t, parsed, p.of("b.yaml"), "not read again: the task-manager kept the version waiting for room")

			// A new policy with no room left is rejected, and runs once
			// another policy goes.
			done = f.round(t, func() { f.write(t, "c.yaml", sized("c", 1, tc.wasm)) })
			assert.Equal(t, []string{"a", "b"}, done.Applied)
			assert.Equal(t, []string{filepath.Join(f.dir, "c.yaml")}, done.Rejected)
			rejected = f.state.WaitEvent(t, messages.TypePolicyRejected, func(ev *messages.Event) bool {
				return ev.GetPolicyOutcome().GetFile() == filepath.Join(f.dir, "c.yaml")
			})
			assert.Contains(t, rejected.GetPolicyOutcome().Reason, tc.key)
			assert.Empty(t, rejected.GetPolicyOutcome().PreviousRevision)
			require.NoError(t, os.Remove(filepath.Join(f.dir, "a.yaml")))
			require.Eventually(t, func() bool { return len(f.state.EventsOf(messages.TypePolicyApplied)) == 5 }, actortest.Wait, 5*time.Millisecond)
			assert.Equal(t, "a", f.policyEvents(messages.TypePolicyRemoved)[0].Name)
			assert.Equal(t, "c", f.policyEvents(messages.TypePolicyApplied)[4].Name)
		})
	}
}

func TestTotalsCountThePoliciesAppliedBeforeInTheRound(t *testing.T) {
	// 3 observers allowed: a (2) fits, then b (2) does not, c (1) does.
	f := setup(t, map[string]string{"a.yaml": sized("a", 2, false), "b.yaml": sized("b", 2, false), "c.yaml": sized("c", 1, false)},
		withLimits(func(l *policy.Bounds) { l.MaxObservers = 3 }))
	done := actortest.WaitMessage[*protocol.PoliciesLoaded](t, f.state, nil)
	assert.Equal(t, []string{"a", "c"}, done.Applied)
	assert.Equal(t, []string{filepath.Join(f.dir, "b.yaml")}, done.Rejected)
	reason := f.state.WaitEvent(t, messages.TypePolicyRejected, nil).GetPolicyOutcome().Reason
	assert.Contains(t, reason, "the daemon runs at most 3 observers (limits.max_observers): this policy has 2, the other policies 2")
}

func TestTotalsRejectedTakeOverLeavesTheNameFree(t *testing.T) {
	// web's file goes and another file declares web, too large: the old
	// web stops (its file is gone), the new one is rejected.
	f := setup(t, map[string]string{"a-web.yaml": sized("web", 2, false)}, withLimits(func(l *policy.Bounds) { l.MaxObservers = 3 }))
	f.waitChanges(t, 1)
	f.write(t, ".tmp", sized("web", 4, false))
	require.NoError(t, os.Rename(filepath.Join(f.dir, ".tmp"), filepath.Join(f.dir, "c-web.yaml")))
	require.NoError(t, os.Remove(filepath.Join(f.dir, "a-web.yaml")))

	removed := f.state.WaitEvent(t, messages.TypePolicyRemoved, nil)
	assert.Equal(t, "web", removed.GetPolicyOutcome().Name, "the old web stops, the new one does not start")
	actortest.WaitMessage(t, f.state, func(l *protocol.PoliciesLoaded) bool {
		return len(l.Applied) == 0 && slices.Equal(l.Rejected, []string{filepath.Join(f.dir, "c-web.yaml")})
	})
	f.state.WaitEvent(t, messages.TypePolicyRejected, func(ev *messages.Event) bool {
		return strings.Contains(ev.GetPolicyOutcome().GetReason(), "limits.max_observers")
	})
	assert.Len(t, f.state.EventsOf(messages.TypePolicyApplied), 1)
}

// polling makes the policy-manager poll its directory every 20 ms: a
// change it applies then proves that a scan ran.
func polling(t *testing.T) func(*Options) {
	newWatcher = func() (*fsnotify.Watcher, error) { return nil, syscall.EMFILE }
	t.Cleanup(func() { newWatcher = fsnotify.NewWatcher })
	return func(o *Options) { o.Poll = 20 * time.Millisecond }
}

// scans makes n changes to web.yaml and waits until each is applied.
func (f *fixture) scans(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		f.write(t, "web.yaml", named("web", 8080, fmt.Sprintf("%ds", 10+i+len(f.changes()))))
		f.waitChanges(t, len(f.changes())+1)
	}
}

func TestRejectedFileIsNotReadAgainUntilItOrPluginDirChanges(t *testing.T) {
	var p parses
	plugins := t.TempDir()
	f := setup(t, map[string]string{"web.yaml": good, "broken.yaml": bad}, polling(t), counting(&p),
		func(o *Options) { o.Env.PluginDir = plugins })
	f.state.WaitEvent(t, messages.TypePolicyRejected, nil)
	f.waitChanges(t, 1)
	f.scans(t, 5)
	assert.Equal(t, 1, p.of("broken.yaml"), "an unchanged rejected file is parsed once")

	// Changed, it is read again, and rejected again (a change long done,
	// or it would be read once more when settled).
	f.replace(t, "broken.yaml", strings.Replace(bad, "-5s", "-6s", 1))
	require.Eventually(t, func() bool { return len(f.state.EventsOf(messages.TypePolicyRejected)) == 2 }, actortest.Wait, 5*time.Millisecond)
	assert.Equal(t, 2, p.of("broken.yaml"))

	// A change in plugin_dir reads it again: the plugin it lacked may be
	// there now. The unchanged rejection is not reported again.
	require.NoError(t, os.WriteFile(filepath.Join(plugins, "late.wasm"), []byte("\x00asm"), 0o600))
	require.Eventually(t, func() bool { return p.of("broken.yaml") == 3 }, actortest.Wait, 5*time.Millisecond)
	f.scans(t, 3)
	assert.Equal(t, 3, p.of("broken.yaml"))
	assert.Len(t, f.state.EventsOf(messages.TypePolicyRejected), 2)
}

func TestCrashingFileIsNotReadAgainUntilItChanges(t *testing.T) {
	var crashes atomic.Int32
	f := setup(t, map[string]string{"web.yaml": good, "crash.yaml": named("db", 5432, "5s")}, polling(t), func(o *Options) {
		o.parse = func(file string, data []byte, env policy.Env) (*policy.Policy, error) {
			if strings.HasSuffix(file, "crash.yaml") {
				crashes.Add(1)
				panic("boom")
			}
			return policy.Parse(file, data, env)
		}
	})
	rejected := f.state.WaitEvent(t, messages.TypePolicyRejected, nil)
	assert.Contains(t, rejected.GetPolicyOutcome().GetReason(), "the parser crashed: boom")
	f.waitChanges(t, 1)
	f.scans(t, 3)
	assert.Equal(t, int32(1), crashes.Load())

	// Changed, it is read again, and rejected again. A change long done:
	// one that fails right after it changed is read at every scan until
	// it settles (see Actor.settles), so its count would only pass by 2.
	f.replace(t, "crash.yaml", named("db", 5432, "6s"))
	require.Eventually(t, func() bool { return len(f.state.EventsOf(messages.TypePolicyRejected)) == 2 }, actortest.Wait, 5*time.Millisecond)
	assert.Equal(t, int32(2), crashes.Load())
	f.scans(t, 3)
	assert.Equal(t, int32(2), crashes.Load(), "an unchanged crashing file is read once")
}
