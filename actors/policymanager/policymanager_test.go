package policymanager

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/fsnotify/fsnotify"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/actors/restart"
	"github.com/polar/observerd/actors/task"
	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/test/actortest"
)

// named is a valid policy: name, target port and health interval vary.
func named(name string, port int, interval string) string {
	return fmt.Sprintf(`apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: %s}
spec:
  target: {name: %s-target, url: "http://127.0.0.1:%d"}
  observers:
    - {name: health, kind: http, interval: %s, http: {path: /healthz}}
    - {name: status, kind: http, interval: 10s, http: {path: /status}}
`, name, name, port, interval)
}

var good = named("web", 8080, "5s")

// bad has one problem, on line 7: a negative interval.
const bad = `apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: broken}
spec:
  target: {name: web-target, url: "http://127.0.0.1:8080"}
  observers:
    - {name: health, kind: http, interval: -5s, http: {}}
`

// badTwice has two problems, on lines 9 and 5 (reported in line order).
const badTwice = `apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: twice}
spec:
  target: {name: web-target, url: "http://10.1.2.3:8080"}
  observers:
    - name: health
      kind: http
      interval: 0s
      http: {}
`

type fixture struct {
	sys   *actor.ActorSystem
	dir   string
	state *actortest.Recorder
	task  *tap
	pid   *actor.PID
	env   policy.Env
	opts  Options
}

// tap records what the policy-manager sends the task-manager, and hands
// it to a real one: what runs and the policy events are the
// task-manager's.
type tap struct {
	PID *actor.PID

	mu       sync.Mutex
	messages []any
}

func (tp *tap) Messages() []any {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return slices.Clone(tp.messages)
}

// setup writes files into a fresh directory and starts a policy-manager on
// it, with short timers, and a task-manager behind a tap; opts adjusts the
// policy-manager's options (its Env.Limits are the task-manager's too).
// The task-manager's observers start, but skip their turns.
func setup(t *testing.T, files map[string]string, opts ...func(*Options)) *fixture {
	t.Helper()
	sys, log := actortest.SystemAndLogger(t)
	allowed, err := targets.Parse([]string{"127.0.0.0/8"})
	require.NoError(t, err)
	f := &fixture{
		sys:   sys,
		dir:   t.TempDir(),
		state: actortest.NewRecorder(t, sys, "state-manager"),
		task:  &tap{},
		env:   policy.Env{Allowed: allowed, Limits: actortest.Limits()},
	}
	// The files were there before the daemon started: one that fails is
	// rejected at once (see Actor.settles).
	for name, text := range files {
		f.write(t, name, text)
		f.age(t, name)
	}
	o := Options{Dir: f.dir, Env: f.env, Log: log, Debounce: 20 * time.Millisecond, MaxDelay: 200 * time.Millisecond}
	for _, opt := range opts {
		opt(&o)
	}
	closed := &protocol.Gate{}
	closed.Close(true)
	tm, err := sys.Root.SpawnNamed(task.Props(task.Options{State: f.state.PID, Allowed: allowed, Limits: o.Env.Limits, Gate: closed, Log: log}), "task-manager")
	require.NoError(t, err)
	t.Cleanup(func() { _ = sys.Root.StopFuture(tm).Wait() })
	f.task.PID, err = sys.Root.SpawnNamed(actor.PropsFromFunc(func(ctx actor.Context) {
		switch msg := ctx.Message().(type) {
		case actor.SystemMessage, actor.AutoReceiveMessage:
		default:
			f.task.mu.Lock()
			f.task.messages = append(f.task.messages, msg)
			f.task.mu.Unlock()
			ctx.Send(tm, msg)
		}
	}), "tap")
	require.NoError(t, err)
	o.Task = f.task.PID
	f.opts = o
	f.pid = sys.Root.Spawn(Props(o))
	t.Cleanup(func() { _ = sys.Root.StopFuture(f.pid).Wait() })
	return f
}

func (f *fixture) write(t *testing.T, name, text string) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(f.dir, name), []byte(text), 0o600))
}

// age makes file name look changed an hour ago.
func (f *fixture) age(t *testing.T, name string) {
	t.Helper()
	old := time.Now().Add(-time.Hour)
	require.NoError(t, os.Chtimes(filepath.Join(f.dir, name), old, old))
}

// replace writes file name as a writer long done with it would have: a
// temporary file, aged, renamed over it (one change, read once).
func (f *fixture) replace(t *testing.T, name, text string) {
	t.Helper()
	f.write(t, ".tmp", text)
	f.age(t, ".tmp")
	require.NoError(t, os.Rename(filepath.Join(f.dir, ".tmp"), filepath.Join(f.dir, name)))
}

// loads returns how many PoliciesLoaded arrived: one per round.
func (f *fixture) loads() int {
	n := 0
	for _, m := range f.state.Messages() {
		if _, ok := m.(*protocol.PoliciesLoaded); ok {
			n++
		}
	}
	return n
}

// round waits for the next round after change, and returns its
// PoliciesLoaded.
func (f *fixture) round(t *testing.T, change func()) *protocol.PoliciesLoaded {
	t.Helper()
	before := f.loads()
	change()
	var last *protocol.PoliciesLoaded
	require.Eventually(t, func() bool {
		n := 0
		for _, m := range f.state.Messages() {
			if l, ok := m.(*protocol.PoliciesLoaded); ok {
				n++
				last = l
			}
		}
		return n > before
	}, actortest.Wait, 5*time.Millisecond, "no round after the change")
	return last
}

// changes returns the ApplyPolicy and RemovePolicy messages the
// task-manager got.
func (f *fixture) changes() []any {
	var out []any
	for _, m := range f.task.Messages() {
		switch m.(type) {
		case *protocol.ApplyPolicy, *protocol.RemovePolicy:
			out = append(out, m)
		}
	}
	return out
}

func (f *fixture) waitChanges(t *testing.T, n int) []any {
	t.Helper()
	require.Eventually(t, func() bool { return len(f.changes()) >= n }, actortest.Wait, 5*time.Millisecond,
		"the task-manager got %d changes, want %d", len(f.changes()), n)
	return f.changes()
}

// policyEvents returns the policy events received, by type.
func (f *fixture) policyEvents(typ string) []*messages.PolicyOutcome {
	var out []*messages.PolicyOutcome
	for _, ev := range f.state.EventsOf(typ) {
		out = append(out, ev.GetPolicyOutcome())
	}
	return out
}

// countPolicyEvents counts the policy events received, of every type.
func (f *fixture) countPolicyEvents() int {
	return len(f.state.EventsOf(messages.TypePolicyApplied)) + len(f.state.EventsOf(messages.TypePolicyRemoved)) +
		len(f.state.EventsOf(messages.TypePolicyRejected))
}

// waitApplied waits for the policy.applied of revision.
func (f *fixture) waitApplied(t *testing.T, revision string) *messages.Event {
	t.Helper()
	return f.state.WaitEvent(t, messages.TypePolicyApplied, func(ev *messages.Event) bool { return ev.GetPolicy().GetRevision() == revision })
}

func revisionOf(t *testing.T, name, text string) string {
	t.Helper()
	allowed, err := targets.Parse([]string{"127.0.0.0/8"})
	require.NoError(t, err)
	p, err := policy.Parse(name, []byte(text), policy.Env{Allowed: allowed})
	require.NoError(t, err)
	return p.Revision
}

func TestLoadsGoodAndRejectsBad(t *testing.T) {
	f := setup(t, map[string]string{"web.yaml": good, "broken.yaml": bad, "notes.txt": "not a policy", ".hidden.yaml": bad})
	done := actortest.WaitMessage[*protocol.PoliciesLoaded](t, f.state, nil)

	// ApplyPolicy, then policy.applied and the observers it started,
	// correlated with it.
	applied := f.state.WaitEvent(t, messages.TypePolicyApplied, nil)
	out := applied.GetPolicyOutcome()
	require.NotNil(t, out)
	assert.Equal(t, "web", out.Name)
	assert.Equal(t, revisionOf(t, "web.yaml", good), out.Revision)
	assert.Empty(t, out.PreviousRevision)
	assert.Equal(t, filepath.Join(f.dir, "web.yaml"), out.File)
	assert.Equal(t, []string{"health", "status"}, out.Added)
	assert.Equal(t, "web-target", applied.Subject)
	assert.Equal(t, &messages.PolicyRef{Name: "web", Revision: out.Revision}, applied.Policy)
	e := actortest.WaitMessage(t, f.state, func(e *protocol.Emit) bool { return e.Event.Id == applied.Id })
	assert.Equal(t, protocol.ActorEmitter(protocol.PolicyManager), e.From)

	changes := f.waitChanges(t, 1)
	require.Len(t, changes, 1, "only the good policy is applied")
	apply := changes[0].(*protocol.ApplyPolicy)
	assert.Equal(t, "web", apply.Policy.Metadata.Name)
	assert.Equal(t, out.Revision, apply.Policy.Revision)
	for _, name := range []string{"health", "status"} {
		f.state.WaitEvent(t, messages.TypeObserverStarted, func(ev *messages.Event) bool {
			return ev.GetObserver().GetObserver() == name && ev.CorrelationId == applied.Id
		})
	}

	rejected := f.state.WaitEvent(t, messages.TypePolicyRejected, nil)
	ro := rejected.GetPolicyOutcome()
	require.NotNil(t, ro)
	assert.Equal(t, filepath.Join(f.dir, "broken.yaml"), ro.File)
	assert.Equal(t, int32(7), ro.Line)
	assert.Positive(t, ro.Column)
	assert.Contains(t, ro.Reason, "interval")
	assert.Contains(t, ro.Reason, "must be at least 1ms (limits.min_interval of the daemon config), got -5s")
	assert.Empty(t, ro.PreviousRevision, "no good version of the file ever ran")
	assert.Equal(t, messages.Severity_SEVERITY_MEDIUM, rejected.Severity)
	assert.Len(t, f.state.EventsOf(messages.TypePolicyRejected), 1, "dot-files and other extensions are skipped")

	assert.Equal(t, []string{"web"}, done.Applied)
	assert.Equal(t, []string{filepath.Join(f.dir, "broken.yaml")}, done.Rejected)

	// PoliciesLoaded comes after the events it sums up.
	var last any
	for _, m := range f.state.Messages() {
		if e, ok := m.(*protocol.Emit); (ok && strings.HasPrefix(e.Event.Type, "policy.")) || m == any(done) {
			last = m
		}
	}
	assert.Same(t, done, last, "PoliciesLoaded comes after the policy events")
}

func TestRejectedFileListsEveryProblemFirstLineFirst(t *testing.T) {
	f := setup(t, map[string]string{"twice.yaml": badTwice})
	done := actortest.WaitMessage[*protocol.PoliciesLoaded](t, f.state, nil)
	assert.Empty(t, done.Applied)
	assert.Equal(t, []string{filepath.Join(f.dir, "twice.yaml")}, done.Rejected)
	assert.Empty(t, f.changes())

	rejected := f.state.WaitEvent(t, messages.TypePolicyRejected, nil)
	ro := rejected.GetPolicyOutcome()
	assert.Equal(t, int32(5), ro.Line, "the first problem's line")
	assert.Contains(t, ro.Reason, "allowed_targets")
	assert.Contains(t, ro.Reason, "interval")
	assert.Less(t, strings.Index(ro.Reason, ":5:"), strings.Index(ro.Reason, ":9:"))
}

func TestDuplicateNameBelongsToTheFirstFileUntilFreed(t *testing.T) {
	f := setup(t, map[string]string{"a-web.yaml": good, "b-db.yml": named("db", 5432, "5s"), "c-dup.yaml": named("web", 9090, "5s")})
	done := actortest.WaitMessage[*protocol.PoliciesLoaded](t, f.state, nil)
	assert.Equal(t, []string{"db", "web"}, done.Applied)
	assert.Equal(t, []string{filepath.Join(f.dir, "c-dup.yaml")}, done.Rejected, "a duplicate policy name is rejected")

	applied := f.state.EventsOf(messages.TypePolicyApplied)
	require.Len(t, applied, 2)
	changes := f.waitChanges(t, 2)
	for i, m := range changes {
		apply := m.(*protocol.ApplyPolicy)
		assert.Equal(t, applied[i].GetPolicyOutcome().GetName(), apply.Policy.Metadata.Name, "in file name order")
	}
	rejected := f.state.WaitEvent(t, messages.TypePolicyRejected, nil)
	assert.Contains(t, rejected.GetPolicyOutcome().GetReason(), `the policy name is already used by `+filepath.Join(f.dir, "a-web.yaml")+":3")
	assert.Equal(t, int32(3), rejected.GetPolicyOutcome().GetLine())

	// Deleting a-web.yaml frees the name: c-dup.yaml takes it over, as an
	// update of the running policy (its target changed).
	f.round(t, func() { require.NoError(t, os.Remove(filepath.Join(f.dir, "a-web.yaml"))) })
	changes = f.waitChanges(t, 3)
	apply := changes[2].(*protocol.ApplyPolicy)
	assert.Equal(t, filepath.Join(f.dir, "c-dup.yaml"), apply.Policy.File)
	out := f.waitApplied(t, apply.Policy.Revision).GetPolicyOutcome()
	assert.Equal(t, []string{"health", "status"}, out.Updated, "its target changed: every observer is updated")
	assert.Equal(t, applied[0].GetPolicyOutcome().Revision, out.PreviousRevision)
	assert.Empty(t, f.state.EventsOf(messages.TypePolicyRemoved), "the name never stopped running")
}

func TestHotReload(t *testing.T) {
	f := setup(t, map[string]string{"web.yaml": good})
	f.waitChanges(t, 1)
	first := f.state.WaitEvent(t, messages.TypePolicyApplied, nil)

	t.Run("in-place overwrite updates only the changed observer", func(t *testing.T) {
		next := named("web", 8080, "3s")
		f.round(t, func() { f.write(t, "web.yaml", next) })
		apply := f.waitChanges(t, 2)[1].(*protocol.ApplyPolicy)
		assert.Equal(t, revisionOf(t, "web.yaml", next), apply.Policy.Revision)
		out := f.waitApplied(t, apply.Policy.Revision).GetPolicyOutcome()
		assert.Equal(t, []string{"health"}, out.Updated)
		assert.Empty(t, out.Added)
		assert.Empty(t, out.Removed)
		assert.Equal(t, first.GetPolicyOutcome().Revision, out.PreviousRevision)
	})

	t.Run("a comment and reordering change nothing", func(t *testing.T) {
		before, stops := f.countPolicyEvents(), len(f.state.EventsOf(messages.TypeObserverStopped))
		reordered := strings.Replace(named("web", 8080, "3s"),
			"    - {name: health, kind: http, interval: 3s, http: {path: /healthz}}\n    - {name: status, kind: http, interval: 10s, http: {path: /status}}\n",
			"    - {name: status, kind: http, interval: 10s, http: {path: /status}}   # the slow one\n    - {name: health, kind: http, interval: 3s, http: {path: /healthz}}\n", 1)
		require.NotEqual(t, named("web", 8080, "3s"), reordered)
		f.round(t, func() { f.write(t, "web.yaml", "# edited\n"+reordered) })
		assert.Equal(t, before, f.countPolicyEvents(), "no policy event")
		assert.Len(t, f.state.EventsOf(messages.TypeObserverStopped), stops, "nothing restarted")
	})

	t.Run("a bad overwrite keeps the last good version", func(t *testing.T) {
		running := revisionOf(t, "web.yaml", named("web", 8080, "3s"))
		applied := len(f.state.EventsOf(messages.TypePolicyApplied))
		f.round(t, func() { f.write(t, "web.yaml", strings.Replace(good, "interval: 5s", "interval: soon", 1)) })
		ev := f.state.WaitEvent(t, messages.TypePolicyRejected, nil)
		out := ev.GetPolicyOutcome()
		assert.Equal(t, int32(7), out.Line)
		assert.Contains(t, out.Reason, "spec.observers[0].interval: invalid duration")
		assert.Equal(t, "web", out.Name)
		assert.Equal(t, running, out.PreviousRevision, "the revision still in force")
		assert.Equal(t, &messages.PolicyRef{Name: "web", Revision: running}, ev.Policy)
		assert.Len(t, f.state.EventsOf(messages.TypePolicyApplied), applied, "nothing stopped")
		assert.Empty(t, f.state.EventsOf(messages.TypePolicyRemoved), "nothing stopped")

		// The same bad content read again (a rescan) is not reported again.
		f.round(t, func() { f.sys.Root.Send(f.pid, &rescan{}) })
		assert.Len(t, f.state.EventsOf(messages.TypePolicyRejected), 1)
	})

	t.Run("the fixed file is applied", func(t *testing.T) {
		fixed := named("web", 8080, "4s")
		f.round(t, func() { f.write(t, "web.yaml", fixed) })
		out := f.waitApplied(t, revisionOf(t, "web.yaml", fixed)).GetPolicyOutcome()
		assert.Equal(t, []string{"health"}, out.Updated)
		assert.Empty(t, out.Added)
		assert.Empty(t, out.Removed)
	})

	t.Run("an editor's rename-save is one change", func(t *testing.T) {
		saved := named("web", 8080, "6s")
		applied := len(f.state.EventsOf(messages.TypePolicyApplied))
		f.round(t, func() {
			tmp := filepath.Join(f.dir, ".web.yaml.swp")
			require.NoError(t, os.WriteFile(tmp, []byte(saved), 0o600))
			require.NoError(t, os.Rename(filepath.Join(f.dir, "web.yaml"), filepath.Join(f.dir, "web.yaml~")))
			require.NoError(t, os.Rename(tmp, filepath.Join(f.dir, "web.yaml")))
			require.NoError(t, os.Remove(filepath.Join(f.dir, "web.yaml~")))
		})
		f.waitApplied(t, revisionOf(t, "web.yaml", saved))
		assert.Len(t, f.state.EventsOf(messages.TypePolicyApplied), applied+1)
		assert.Empty(t, f.state.EventsOf(messages.TypePolicyRemoved))
	})

	t.Run("a renamed policy is removed, then added", func(t *testing.T) {
		f.round(t, func() { f.write(t, "web.yaml", named("www", 8080, "6s")) })
		changes := f.changes()
		remove := changes[len(changes)-2].(*protocol.RemovePolicy)
		assert.Equal(t, "web", remove.Name)
		apply := changes[len(changes)-1].(*protocol.ApplyPolicy)
		assert.Equal(t, "www", apply.Policy.Metadata.Name)
		removed := f.state.WaitEvent(t, messages.TypePolicyRemoved, nil)
		assert.Equal(t, "web", removed.GetPolicyOutcome().Name)
		assert.Equal(t, []string{"health", "status"}, removed.GetPolicyOutcome().Removed)
		assert.Equal(t, []string{"health", "status"}, f.waitApplied(t, apply.Policy.Revision).GetPolicyOutcome().Added)
	})

	t.Run("a deleted file stops its policy", func(t *testing.T) {
		done := f.round(t, func() { require.NoError(t, os.Remove(filepath.Join(f.dir, "web.yaml"))) })
		changes := f.changes()
		assert.Equal(t, "www", changes[len(changes)-1].(*protocol.RemovePolicy).Name)
		assert.Equal(t, []string{"web", "www"}, []string{f.policyEvents(messages.TypePolicyRemoved)[0].Name, f.policyEvents(messages.TypePolicyRemoved)[1].Name})
		assert.Empty(t, done.Applied)
		assert.Empty(t, done.Rejected)
	})
}

func TestPartialWriteIsNeverApplied(t *testing.T) {
	f := setup(t, map[string]string{"web.yaml": good})
	f.waitChanges(t, 1)

	next := named("web", 8080, "2s")
	half := len(next) * 2 / 3 // cuts the health observer's line
	var w *os.File
	f.round(t, func() {
		var err error
		w, err = os.OpenFile(filepath.Join(f.dir, "web.yaml"), os.O_WRONLY|os.O_TRUNC, 0)
		require.NoError(t, err)
		_, err = w.WriteString(next[:half])
		require.NoError(t, err)
	})
	defer w.Close()
	assert.Len(t, f.changes(), 1, "the half-written file is not applied")
	rejected := f.state.WaitEvent(t, messages.TypePolicyRejected, nil)
	assert.Equal(t, revisionOf(t, "web.yaml", good), rejected.GetPolicyOutcome().PreviousRevision)

	f.round(t, func() {
		_, err := w.WriteString(next[half:])
		require.NoError(t, err)
	})
	apply := f.waitChanges(t, 2)[1].(*protocol.ApplyPolicy)
	assert.Equal(t, revisionOf(t, "web.yaml", next), apply.Policy.Revision)
}

func TestConfigMapSymlinkSwap(t *testing.T) {
	// The layout of a Kubernetes ConfigMap volume: web.yaml ->
	// ..data/web.yaml, ..data -> ..<timestamp>, swapped atomically.
	f := setup(t, nil)
	actortest.WaitMessage[*protocol.PoliciesLoaded](t, f.state, nil)
	version := func(name, text string) {
		require.NoError(t, os.Mkdir(filepath.Join(f.dir, name), 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(f.dir, name, "web.yaml"), []byte(text), 0o600))
		require.NoError(t, os.Symlink(name, filepath.Join(f.dir, "..data_tmp")))
		require.NoError(t, os.Rename(filepath.Join(f.dir, "..data_tmp"), filepath.Join(f.dir, "..data")))
	}
	f.round(t, func() {
		version("..2026_11_23_10_00_00.1", good)
		require.NoError(t, os.Symlink("..data/web.yaml", filepath.Join(f.dir, "web.yaml")))
	})
	first := f.waitChanges(t, 1)[0].(*protocol.ApplyPolicy)
	assert.Equal(t, revisionOf(t, "web.yaml", good), first.Policy.Revision)

	next := named("web", 8080, "1s")
	f.round(t, func() {
		version("..2026_11_23_10_05_00.2", next)
		require.NoError(t, os.RemoveAll(filepath.Join(f.dir, "..2026_11_23_10_00_00.1")))
	})
	apply := f.waitChanges(t, 2)[1].(*protocol.ApplyPolicy)
	assert.Equal(t, revisionOf(t, "web.yaml", next), apply.Policy.Revision)
	assert.Equal(t, []string{"health"}, f.waitApplied(t, apply.Policy.Revision).GetPolicyOutcome().Updated)
	assert.Empty(t, f.state.EventsOf(messages.TypePolicyRejected))
}

func TestBurstIsDebounced(t *testing.T) {
	f := setup(t, map[string]string{"web.yaml": good})
	f.waitChanges(t, 1)
	const writes = 1000
	var last string
	for i := range writes {
		last = named("web", 8080, fmt.Sprintf("%dms", 1000+i))
		f.write(t, "web.yaml", last)
	}
	want := revisionOf(t, "web.yaml", last)
	require.Eventually(t, func() bool {
		changes := f.changes()
		a, ok := changes[len(changes)-1].(*protocol.ApplyPolicy)
		return ok && a.Policy.Revision == want
	}, actortest.Wait, 5*time.Millisecond, "the last write is applied")
	applied := len(f.changes()) - 1
	t.Logf("%d writes, %d applied changes", writes, applied)
	assert.Less(t, applied, writes/10, "bursts are debounced")
	for _, ev := range f.state.EventsOf(messages.TypePolicyRejected) {
		t.Errorf("a complete write was rejected: %s", ev.GetPolicyOutcome().Reason)
	}
}

func TestParserCrashRejectsThatFileOnly(t *testing.T) {
	f := setup(t, map[string]string{"web.yaml": good, "crash.yaml": named("db", 5432, "5s")}, func(o *Options) {
		o.parse = func(file string, data []byte, env policy.Env) (*policy.Policy, error) {
			if strings.HasSuffix(file, "crash.yaml") {
				panic("boom")
			}
			return policy.Parse(file, data, env)
		}
	})
	done := actortest.WaitMessage[*protocol.PoliciesLoaded](t, f.state, nil)
	assert.Equal(t, []string{"web"}, done.Applied)
	assert.Equal(t, []string{filepath.Join(f.dir, "crash.yaml")}, done.Rejected)
	rejected := f.state.WaitEvent(t, messages.TypePolicyRejected, nil)
	assert.Equal(t, "the parser crashed: boom", rejected.GetPolicyOutcome().Reason[len(filepath.Join(f.dir, "crash.yaml"))+2:])

	// The manager goes on: the next change is applied.
	f.round(t, func() { f.write(t, "web.yaml", named("web", 8080, "7s")) })
	f.waitChanges(t, 2)
}

func TestWatchFailureFallsBackToPolling(t *testing.T) {
	newWatcher = func() (*fsnotify.Watcher, error) { return nil, syscall.EMFILE }
	t.Cleanup(func() { newWatcher = fsnotify.NewWatcher })
	f := setup(t, nil, func(o *Options) { o.Poll = 50 * time.Millisecond })
	actortest.WaitMessage[*protocol.PoliciesLoaded](t, f.state, nil)
	f.write(t, "web.yaml", good)
	apply := f.waitChanges(t, 1)[0].(*protocol.ApplyPolicy)
	assert.Equal(t, revisionOf(t, "web.yaml", good), apply.Policy.Revision)
	assert.Contains(t, explainWatchError(syscall.EMFILE).Error(), "fs.inotify.max_user_instances")
	assert.Contains(t, explainWatchError(syscall.ENOSPC).Error(), "fs.inotify.max_user_watches")
}

func TestMissingDirIsReportedAndStillLoaded(t *testing.T) {
	// A policy_dir that cannot be read is a problem to report, and the
	// load still ends (readiness must not hang on it).
	dir := filepath.Join(t.TempDir(), "missing")
	f := setup(t, nil, func(o *Options) { o.Dir, o.Poll = dir, 20*time.Millisecond })
	done := actortest.WaitMessage[*protocol.PoliciesLoaded](t, f.state, nil)
	assert.Empty(t, done.Applied)
	assert.Equal(t, []string{dir}, done.Rejected)
	rejected := f.state.WaitEvent(t, messages.TypePolicyRejected, nil)
	assert.Contains(t, rejected.GetPolicyOutcome().GetReason(), "no such file or directory")
	assert.Equal(t, dir, rejected.GetPolicyOutcome().GetFile(), "policy.rejected names the directory")

	// Created later, it is picked up.
	require.NoError(t, os.Mkdir(dir, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "web.yaml"), []byte(good), 0o600))
	f.waitChanges(t, 1)
	assert.Len(t, f.state.EventsOf(messages.TypePolicyRejected), 1, "the directory's problem is reported once")
}

func TestRestartedManagerLeavesWhatRunsAlone(t *testing.T) {
	// A fresh policy-manager knows nothing of the files, and asks nothing:
	// it reads them again. What runs from files that did not change is
	// left alone (no event, no restart), the last good version of a
	// rejected file keeps running and its rejection is not repeated, so
	// does that of a file being written as it reads it (settling), and a
	// policy whose file went while it was down is removed.
	broken := named("broken", 8082, "5s")
	f := setup(t, map[string]string{"web.yaml": good, "old.yaml": named("old", 8081, "5s"), "broken.yaml": broken, "fresh.yaml": named("fresh", 8083, "5s")},
		func(o *Options) { o.Settle = actortest.Wait })
	f.waitChanges(t, 4)
	f.round(t, func() { f.replace(t, "broken.yaml", strings.Replace(broken, "interval: 5s", "interval: soon", 1)) })
	f.state.WaitEvent(t, messages.TypePolicyRejected, nil)
	require.Eventually(t, func() bool { return len(f.state.EventsOf(messages.TypeObserverStarted)) == 8 }, actortest.Wait, 5*time.Millisecond)
	require.NoError(t, f.sys.Root.StopFuture(f.pid).Wait())
	require.NoError(t, os.Remove(filepath.Join(f.dir, "old.yaml")))
	f.write(t, "fresh.yaml", blank)
	events, started := f.countPolicyEvents(), len(f.state.EventsOf(messages.TypeObserverStarted))

	done := f.round(t, func() {
		pid := f.sys.Root.Spawn(Props(f.opts))
		t.Cleanup(func() { _ = f.sys.Root.StopFuture(pid).Wait() })
	})
	assert.Equal(t, []string{"broken", "fresh", "web"}, done.Applied)
	assert.Equal(t, []string{filepath.Join(f.dir, "broken.yaml")}, done.Rejected)
	assert.Equal(t, events+1, f.countPolicyEvents(), "one event: old's removal")
	removed := f.state.WaitEvent(t, messages.TypePolicyRemoved, nil)
	assert.Equal(t, "old", removed.GetPolicyOutcome().Name)
	for _, ev := range f.state.EventsOf(messages.TypeObserverStopped) {
		assert.Equal(t, "old", ev.GetPolicy().GetName(), "only old's observers stopped")
	}
	assert.Len(t, f.state.EventsOf(messages.TypeObserverStarted), started, "nothing started again")
}

func TestFilesThatAreNotPoliciesAreRejected(t *testing.T) {
	f := setup(t, map[string]string{"web.yaml": good}, func(o *Options) {
		dir := o.Dir
		require.NoError(t, syscall.Mkfifo(filepath.Join(dir, "pipe.yaml"), 0o600))
		require.NoError(t, os.Symlink("gone.yaml.orig", filepath.Join(dir, "dangling.yaml")))
		require.NoError(t, os.Mkdir(filepath.Join(dir, "dir.yaml"), 0o700))
	})
	done := actortest.WaitMessage[*protocol.PoliciesLoaded](t, f.state, nil)
	assert.Equal(t, []string{"web"}, done.Applied)
	var reasons []string
	for _, ev := range f.state.EventsOf(messages.TypePolicyRejected) {
		reasons = append(reasons, ev.GetPolicyOutcome().Reason)
	}
	assert.ElementsMatch(t, []string{
		filepath.Join(f.dir, "pipe.yaml") + ": not a regular file",
		filepath.Join(f.dir, "dir.yaml") + ": not a regular file",
		filepath.Join(f.dir, "dangling.yaml") + ": cannot read the file: no such file or directory",
	}, reasons, "a FIFO does not hang the parser; a dangling symlink is a mistake, not a removal")
}

func TestRejectedFileIsReadAgainWhenAPluginArrives(t *testing.T) {
	// The plugin a policy needs is installed after the policy: the
	// periodic scan sees plugin_dir change, reads the rejected file again
	// and applies it.
	plugins := t.TempDir()
	wasm := strings.Replace(good, "kind: http, interval: 10s, http: {path: /status}", "kind: wasm, interval: 10s, wasm: {module: late.wasm}", 1)
	f := setup(t, map[string]string{"web.yaml": wasm}, func(o *Options) {
		o.Env.PluginDir = plugins
		o.Rescan = 50 * time.Millisecond
	})
	rejected := f.state.WaitEvent(t, messages.TypePolicyRejected, nil)
	assert.Contains(t, rejected.GetPolicyOutcome().Reason, "plugin late.wasm not found")
	require.NoError(t, os.WriteFile(filepath.Join(plugins, "late.wasm"), []byte("\x00asm"), 0o600))
	apply := f.waitChanges(t, 1)[0].(*protocol.ApplyPolicy)
	assert.Equal(t, "web", apply.Policy.Metadata.Name)
	assert.Len(t, f.state.EventsOf(messages.TypePolicyRejected), 1, "the unchanged rejection was not repeated")
}

// blank is as long as good and fails to parse (an empty document): what a
// reader sees of a file truncated and being written again.
var blank = strings.Repeat(" ", len(good))

func TestFailureRightAfterAChangeWaitsForTheWriter(t *testing.T) {
	// A writer descheduled between its truncate and its write: the
	// rejection waits a settle time longer than this test takes, so the
	// writer always comes first.
	f := setup(t, map[string]string{"web.yaml": good}, func(o *Options) { o.Settle = actortest.Wait })
	f.waitChanges(t, 1)
	f.round(t, func() { f.write(t, "web.yaml", blank) })
	next := named("web", 8080, "7s")
	f.write(t, "web.yaml", next)
	f.waitApplied(t, revisionOf(t, "web.yaml", next))
	assert.Empty(t, f.state.EventsOf(messages.TypePolicyRejected), "the writer's moment was rejected")
}

func TestFailureThatStaysIsRejectedOnceSettled(t *testing.T) {
	const settle = 50 * time.Millisecond
	f := setup(t, map[string]string{"web.yaml": good}, func(o *Options) { o.Settle = settle })
	f.waitChanges(t, 1)
	start := time.Now()
	done := f.round(t, func() { f.write(t, "web.yaml", blank) })
	rejected := f.state.WaitEvent(t, messages.TypePolicyRejected, nil)
	assert.GreaterOrEqual(t, time.Since(start), settle, "rejected before it settled")
	assert.Empty(t, done.Rejected, "the round that read it first did not reject it")
	assert.Contains(t, rejected.GetPolicyOutcome().Reason, "the document is empty")
	assert.Equal(t, revisionOf(t, "web.yaml", good), rejected.GetPolicyOutcome().PreviousRevision)
}

func TestSettlesComparesStatsAndContent(t *testing.T) {
	a := New(Options{Settle: time.Hour, Log: actortest.Logger(t)})
	t.Cleanup(func() {
		for name := range a.settling {
			a.forgetSettling(name)
		}
	})
	now := time.Now()
	read := func(mtime time.Time, content string) *parsed {
		return &parsed{key: fileKey{size: int64(len(content)), mtime: mtime}, hash: sha256.Sum256([]byte(content)), err: errors.New("the document is empty")}
	}
	settledLongAgo := func(name string) { a.settling[name].since = now.Add(-2 * time.Hour) }
	steps := []struct {
		name   string
		file   string
		read   *parsed
		before func()
		waits  bool
	}{
		{"a file that fails right after a change waits", "web.yaml", read(now, "     "), nil, true},
		{"read again unchanged too early, it still waits", "web.yaml", read(now, "     "), nil, true},
		// Written again within one tick of the clock, with the same
		// length: only the content differs.
		{"settled, but its content changed: it waits again", "web.yaml", read(now, "a: [b"), func() { settledLongAgo("web.yaml") }, true},
		{"settled and the same: rejected", "web.yaml", read(now, "a: [b"), func() { settledLongAgo("web.yaml") }, false},
		{"a file that changed long ago is rejected at once", "old.yaml", read(now.Add(-2*time.Hour), "a: [b"), nil, false},
	}
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		assert.Equal(t, st.waits, a.settles(st.file, st.read), st.name)
	}
	assert.Empty(t, a.settling, "nothing left settling once rejected")
}

func TestParserGivenUpRejectsItsFile(t *testing.T) {
	// A parser that crashes outside its parse (which catches its own
	// panics) is given up by the strategy at once (restart.Never), which
	// tells the policy-manager: the file is rejected with the reason, the
	// parser's late report (if any) is ignored.
	release := make(chan struct{})
	f := setup(t, map[string]string{"web.yaml": good, "stuck.yaml": named("db", 5432, "5s")}, func(o *Options) {
		o.parse = func(file string, data []byte, env policy.Env) (*policy.Policy, error) {
			if strings.HasSuffix(file, "stuck.yaml") {
				<-release
			}
			return policy.Parse(file, data, env)
		}
	})
	t.Cleanup(func() { close(release) }) // before the policy-manager stops
	// The first round's first parser (files in name order).
	parser := actor.NewPID(f.sys.Address(), f.pid.Id+"/parser/stuck.yaml#1")
	require.Eventually(t, func() bool { _, ok := f.sys.ProcessRegistry.GetLocal(parser.Id); return ok }, actortest.Wait, 5*time.Millisecond,
		"no parser for stuck.yaml")
	f.sys.Root.Send(f.pid, &restart.GaveUp{Failure: restart.Failure{Child: parser, Reason: errors.New("boom"), Failures: 1}})
	done := actortest.WaitMessage[*protocol.PoliciesLoaded](t, f.state, nil)
	assert.Equal(t, []string{"web"}, done.Applied)
	assert.Equal(t, []string{filepath.Join(f.dir, "stuck.yaml")}, done.Rejected)
	reason := f.state.WaitEvent(t, messages.TypePolicyRejected, nil).GetPolicyOutcome().Reason
	assert.Equal(t, filepath.Join(f.dir, "stuck.yaml")+": the parser crashed: boom", reason)
}

func TestAFileReadInTimeMayTakeLongerToValidate(t *testing.T) {
	// A policy whose plugins compile slowly on a loaded host was rejected
	// as "reading the file took longer than 10s": the read's deadline no
	// longer applies once the file is read; validation has its own.
	const readTimeout = 20 * time.Millisecond
	f := setup(t, map[string]string{"web.yaml": good}, func(o *Options) {
		o.ReadTimeout = readTimeout
		o.parse = func(file string, data []byte, env policy.Env) (*policy.Policy, error) {
			// Validation slower than the read's deadline, as a plugin's
			// compilation on a loaded host is.
			<-time.After(5 * readTimeout)
			return policy.Parse(file, data, env)
		}
	})
	done := actortest.WaitMessage[*protocol.PoliciesLoaded](t, f.state, nil)
	assert.Equal(t, []string{"web"}, done.Applied)
	assert.Empty(t, done.Rejected)
}

func TestAFileThatNeverValidatesIsRejected(t *testing.T) {
	block := make(chan struct{})
	f := setup(t, map[string]string{"web.yaml": good, "db.yaml": named("db", 5432, "5s")}, func(o *Options) {
		o.ReadTimeout = 20 * time.Millisecond
		o.CheckTimeout = 50 * time.Millisecond
		o.parse = func(file string, data []byte, env policy.Env) (*policy.Policy, error) {
			if strings.HasSuffix(file, "db.yaml") {
				<-block
			}
			return policy.Parse(file, data, env)
		}
	})
	// Registered after setup's: runs first, so that the stuck parser ends
	// before the actor system is shut down.
	t.Cleanup(func() { close(block) })
	done := actortest.WaitMessage[*protocol.PoliciesLoaded](t, f.state, nil)
	assert.Equal(t, []string{"web"}, done.Applied)
	assert.Equal(t, []string{filepath.Join(f.dir, "db.yaml")}, done.Rejected)
	rejected := f.state.WaitEvent(t, messages.TypePolicyRejected, nil)
	assert.Contains(t, rejected.GetPolicyOutcome().Reason, "validating the file (compiling its plugins) took longer than 50ms after it was read")
}
