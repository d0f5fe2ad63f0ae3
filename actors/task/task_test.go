package task_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/actors/restart"
	"github.com/polar/observerd/actors/task"
	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/test/actortest"
)

const taskName = "task-manager"

func allowList(t *testing.T) *targets.AllowList {
	t.Helper()
	a, err := targets.Parse([]string{"127.0.0.0/8"})
	require.NoError(t, err)
	return a
}

// parse builds policy name targeting url with the given observers (YAML
// list items indented by four spaces), from file <name>.yaml.
func parse(t *testing.T, name, url, observers string) *policy.Policy {
	t.Helper()
	return parseIn(t, name+".yaml", name, url, observers)
}

// parseIn is parse from file.
func parseIn(t *testing.T, file, name, url, observers string) *policy.Policy {
	t.Helper()
	doc := fmt.Sprintf(`apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: %s}
spec:
  target: {name: %s-target, url: %q}
  limits: {max_requests_per_second: 1000, max_concurrent_requests: 4}
  observers:
%s`, name, name, url, observers)
	p, err := policy.Parse(file, []byte(doc), policy.Env{Allowed: allowList(t), Limits: actortest.Limits()})
	require.NoError(t, err, "policy:\n%s", doc)
	return p
}

type fixture struct {
	sys   *actor.ActorSystem
	state *actortest.Recorder
	task  *actor.PID
	url   string
}

// setup starts a task-manager whose observers fail fast, with opts
// adjusting its options, and an HTTP server answering "ok" for them.
func setup(t *testing.T, opts ...func(*task.Options)) *fixture {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	t.Cleanup(srv.Close)
	sys, log := actortest.SystemAndLogger(t)
	f := &fixture{sys: sys, state: actortest.NewRecorder(t, sys, "state-manager"), url: srv.URL}
	fast := restart.Policy{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, GiveUpAt: 3, Window: time.Minute}
	o := task.Options{State: f.state.PID, Allowed: allowList(t), Supervision: fast, Log: log}
	for _, opt := range opts {
		opt(&o)
	}
	pid, err := sys.Root.SpawnNamed(task.Props(o), taskName)
	require.NoError(t, err)
	f.task = pid
	t.Cleanup(func() { _ = sys.Root.StopFuture(pid).Wait() })
	return f
}

// send sends the task-manager msg.
func (f *fixture) send(msg any) { f.sys.Root.Send(f.task, msg) }

// apply sends p and waits for the policy.applied it makes the
// task-manager emit, and returns its id.
func (f *fixture) apply(t *testing.T, p *policy.Policy) string {
	t.Helper()
	before := len(f.state.EventsOf(messages.TypePolicyApplied))
	f.send(&protocol.ApplyPolicy{Policy: p})
	return f.newEvent(t, messages.TypePolicyApplied, before, p.Revision).Id
}

// remove removes policy name and waits for its policy.removed, and
// returns its id.
func (f *fixture) remove(t *testing.T, name string) string {
	t.Helper()
	before := len(f.state.EventsOf(messages.TypePolicyRemoved))
	f.send(&protocol.RemovePolicy{Name: name})
	require.Eventually(t, func() bool { return len(f.state.EventsOf(messages.TypePolicyRemoved)) > before },
		actortest.Wait, 5*time.Millisecond, "no policy.removed")
	ev := f.state.EventsOf(messages.TypePolicyRemoved)[before]
	require.Equal(t, name, ev.GetPolicyOutcome().GetName())
	return ev.Id
}

// newEvent waits for the event of type typ after the first before ones,
// and checks that it is about revision.
func (f *fixture) newEvent(t *testing.T, typ string, before int, revision string) *messages.Event {
	t.Helper()
	require.Eventually(t, func() bool { return len(f.state.EventsOf(typ)) > before }, actortest.Wait, 5*time.Millisecond, "no new %s", typ)
	ev := f.state.EventsOf(typ)[before]
	require.Equal(t, revision, ev.GetPolicy().GetRevision(), typ)
	return ev
}

// appliedID waits for the policy.applied of revision and returns its id.
func (f *fixture) appliedID(t *testing.T, revision string) string {
	t.Helper()
	return f.state.WaitEvent(t, messages.TypePolicyApplied, func(ev *messages.Event) bool { return ev.GetPolicy().GetRevision() == revision }).Id
}

// loaded ends a round as the policy-manager does and returns the
// PoliciesLoaded it makes the task-manager send.
func (f *fixture) loaded(t *testing.T, msg *protocol.FilesRead) *protocol.PoliciesLoaded {
	t.Helper()
	before := len(loads(f.state))
	f.send(msg)
	require.Eventually(t, func() bool { return len(loads(f.state)) > before }, actortest.Wait, 5*time.Millisecond, "no PoliciesLoaded")
	return loads(f.state)[before]
}

func loads(r *actortest.Recorder) []*protocol.PoliciesLoaded {
	var out []*protocol.PoliciesLoaded
	for _, m := range r.Messages() {
		if l, ok := m.(*protocol.PoliciesLoaded); ok {
			out = append(out, l)
		}
	}
	return out
}

// process returns the running process of observer path (nil when none).
// Each incarnation of an observer is named path#<generation>: a replaced
// observer is a new process under a new name.
func (f *fixture) process(path string) actor.Process {
	if path == "" {
		p, _ := f.sys.ProcessRegistry.GetLocal(taskName)
		return p
	}
	var found actor.Process
	for gen := 1; gen <= 1000; gen++ {
		if p, ok := f.sys.ProcessRegistry.GetLocal(fmt.Sprintf("%s/%s#%d", taskName, path, gen)); ok {
			found = p
		}
	}
	return found
}

// lifecycle returns the observer.* events of type typ, by actor path.
func (f *fixture) lifecycle(typ string) []string {
	var out []string
	for _, ev := range f.state.EventsOf(typ) {
		out = append(out, ev.GetObserver().GetActor())
	}
	return out
}

func (f *fixture) waitLifecycle(t *testing.T, typ string, paths ...string) {
	t.Helper()
	require.Eventually(t, func() bool { return len(f.lifecycle(typ)) == len(paths) },
		actortest.Wait, 5*time.Millisecond, "want %s for %v, got %v", typ, paths, f.lifecycle(typ))
	assert.ElementsMatch(t, paths, f.lifecycle(typ), typ)
}

// waitObservation waits for an observation from path satisfying match.
func (f *fixture) waitObservation(t *testing.T, path string, match func(*messages.Event) bool) *messages.Event {
	t.Helper()
	e := actortest.WaitMessage(t, f.state, func(e *protocol.Emit) bool {
		return e.From.Path() == path && e.Event.Type == messages.TypeObservationHTTP && (match == nil || match(e.Event))
	})
	return e.Event
}

// sync waits until the task-manager has handled everything sent to it so
// far: it handles its mailbox in order, so once the observer of a marker
// policy sent after those messages has started, they were handled.
func (f *fixture) sync(t *testing.T) {
	t.Helper()
	marker := parse(t, "zz-marker", f.url, "    - {name: m, kind: http, interval: 1h, http: {}}\n")
	id := f.apply(t, marker)
	f.state.WaitEvent(t, messages.TypeObserverStarted, func(ev *messages.Event) bool { return ev.CorrelationId == id })
}

const twoObservers = `    - {name: a, kind: http, interval: 20ms, http: {path: /a}}
    - {name: b, kind: http, interval: 20ms, http: {path: /b}}
`

func TestApplyPolicyStartsObservers(t *testing.T) {
	f := setup(t)
	// The observations must be OK: each check may take half the test's
	// wait, and its first turn comes within a tenth of its interval.
	patient := fmt.Sprintf(`    - {name: a, kind: http, interval: %[1]s, timeout: %[2]s, http: {path: /a}}
    - {name: b, kind: http, interval: %[1]s, timeout: %[2]s, http: {path: /b}}
`, actortest.Wait, actortest.Wait/2)
	p := parse(t, "web", f.url, patient)
	evt1 := f.apply(t, p)

	f.waitLifecycle(t, messages.TypeObserverStarted, "observer/web/a", "observer/web/b")
	for _, ev := range f.state.EventsOf(messages.TypeObserverStarted) {
		assert.Equal(t, evt1, ev.CorrelationId)
		assert.Equal(t, "http", ev.GetObserver().GetKind())
		assert.Equal(t, p.Revision, ev.GetPolicy().GetRevision())
	}
	for _, path := range []string{"observer/web/a", "observer/web/b"} {
		ev := f.waitObservation(t, path, nil)
		assert.Equal(t, evt1, ev.CorrelationId, "observations are correlated with the policy.applied event")
		assert.Equal(t, "web-target", ev.Subject)
		assert.Equal(t, messages.Result_RESULT_OK, ev.GetHttp().GetResult(), ev.GetHttp().GetError())
		assert.NotNil(t, f.process(path), "%s is a child of the task-manager", path)
	}
	assert.Equal(t, f.url+"/a", f.waitObservation(t, "observer/web/a", nil).GetHttp().GetUrl())
}

func TestApplyChangedPolicyRestartsOnlyWhatChanged(t *testing.T) {
	f := setup(t)
	p1 := parse(t, "web", f.url, twoObservers)
	f.apply(t, p1)
	f.waitLifecycle(t, messages.TypeObserverStarted, "observer/web/a", "observer/web/b")
	f.waitObservation(t, "observer/web/a", nil)
	f.waitObservation(t, "observer/web/b", nil)
	procA, procB := f.process("observer/web/a"), f.process("observer/web/b")
	require.NotNil(t, procA)
	require.NotNil(t, procB)

	// a's interval changes, b stays as it was.
	p2 := parse(t, "web", f.url, `    - {name: a, kind: http, interval: 25ms, http: {path: /a}}
    - {name: b, kind: http, interval: 20ms, http: {path: /b}}
`)
	require.NotEqual(t, p1.Revision, p2.Revision)
	evt2 := f.apply(t, p2)

	f.waitLifecycle(t, messages.TypeObserverStopped, "observer/web/a")
	f.state.WaitEvent(t, messages.TypeObserverStarted, func(ev *messages.Event) bool { return ev.CorrelationId == evt2 })
	f.sync(t)

	assert.ElementsMatch(t, []string{"observer/web/a", "observer/web/b", "observer/web/a", "observer/zz-marker/m"}, f.lifecycle(messages.TypeObserverStarted))
	assert.Equal(t, []string{"observer/web/a"}, f.lifecycle(messages.TypeObserverStopped), "only the changed observer stopped")
	stopped := f.state.EventsOf(messages.TypeObserverStopped)[0]
	assert.Equal(t, "replaced by a new version", stopped.GetObserver().GetReason())
	assert.Equal(t, evt2, stopped.CausationId, "caused by the change")
	assert.Equal(t, p1.Revision, stopped.GetPolicy().GetRevision(), "the version that stopped")
	restarted := f.state.EventsOf(messages.TypeObserverStarted)
	for _, ev := range restarted {
		if ev.GetObserver().GetActor() == "observer/web/a" && ev.CorrelationId == evt2 {
			assert.Equal(t, p2.Revision, ev.GetPolicy().GetRevision())
		}
	}

	assert.NotSame(t, procA, f.process("observer/web/a"), "the changed observer is a new process")
	assert.NotNil(t, f.process("observer/web/a"))
	assert.Same(t, procB, f.process("observer/web/b"), "the unchanged observer kept running")

	// The new a reports under the new policy.
	ev := f.waitObservation(t, "observer/web/a", func(ev *messages.Event) bool { return ev.CorrelationId == evt2 })
	assert.Equal(t, p2.Revision, ev.GetPolicy().GetRevision())
	// b keeps observing.
	n := len(observationsOf(f.state, "observer/web/b"))
	require.Eventually(t, func() bool { return len(observationsOf(f.state, "observer/web/b")) > n }, actortest.Wait, 5*time.Millisecond)
}

func TestApplySamePolicyAgainChangesNothing(t *testing.T) {
	f := setup(t)
	p := parse(t, "web", f.url, twoObservers)
	f.apply(t, p)
	f.waitLifecycle(t, messages.TypeObserverStarted, "observer/web/a", "observer/web/b")
	procA := f.process("observer/web/a")

	f.send(&protocol.ApplyPolicy{Policy: parse(t, "web", f.url, twoObservers)})
	f.sync(t)
	assert.Len(t, f.state.EventsOf(messages.TypePolicyApplied), 2, "web and the marker: the same revision again emits nothing")
	assert.Empty(t, f.lifecycle(messages.TypeObserverStopped))
	assert.Len(t, f.lifecycle(messages.TypeObserverStarted), 3, "a, b and the marker")
	assert.Same(t, procA, f.process("observer/web/a"))
}

func TestApplyPolicyAddsAndRemovesObservers(t *testing.T) {
	f := setup(t)
	f.apply(t, parse(t, "web", f.url, twoObservers))
	f.waitLifecycle(t, messages.TypeObserverStarted, "observer/web/a", "observer/web/b")

	f.apply(t, parse(t, "web", f.url, `    - {name: b, kind: http, interval: 20ms, http: {path: /b}}
    - {name: c, kind: http, interval: 20ms, http: {path: /c}}
`))
	f.waitLifecycle(t, messages.TypeObserverStopped, "observer/web/a")
	f.waitLifecycle(t, messages.TypeObserverStarted, "observer/web/a", "observer/web/b", "observer/web/c")
	assert.Eventually(t, func() bool { return f.process("observer/web/a") == nil }, actortest.Wait, 5*time.Millisecond)
	assert.NotNil(t, f.process("observer/web/c"))
}

// TestReplacementStartsAfterItsPredecessorStopped: over many versions of
// a policy, each version's observer.started comes after the
// observer.stopped of the instance it replaces, so that a consumer folding
// the lifecycle events in order always ends with the observer running;
// the stop and the start are both in the chain of the policy.applied that
// caused them.
func TestReplacementStartsAfterItsPredecessorStopped(t *testing.T) {
	f := setup(t)
	const versions = 30
	ids := []string{f.apply(t, parse(t, "web", f.url, "    - {name: a, kind: http, interval: 1h, http: {path: /a0}}\n"))}
	for v := 1; v < versions; v++ {
		ids = append(ids, f.apply(t, parse(t, "web", f.url, fmt.Sprintf("    - {name: a, kind: http, interval: 1h, http: {path: /a%d}}\n", v))))
	}
	require.Eventually(t, func() bool { return len(f.lifecycle(messages.TypeObserverStarted)) == versions },
		actortest.Wait, 5*time.Millisecond, "every version started")

	running := false
	var starts, stops []*messages.Event
	for _, m := range f.state.Messages() {
		e, ok := m.(*protocol.Emit)
		if !ok || e.From.Path() != "observer/web/a" {
			continue
		}
		switch e.Event.Type {
		case messages.TypeObserverStarted:
			require.False(t, running, "started while its predecessor had not stopped (start %d)", len(starts))
			running, starts = true, append(starts, e.Event)
		case messages.TypeObserverStopped:
			require.True(t, running, "stopped while not running")
			running, stops = false, append(stops, e.Event)
		}
	}
	assert.True(t, running, "the fold ends with the observer running")
	require.Len(t, stops, versions-1)
	for v, ev := range stops {
		assert.Equal(t, protocol.StopReasonReplaced, ev.GetObserver().GetReason())
		assert.Equal(t, ids[v+1], ev.CausationId, "stop %d: caused by the next version's policy.applied", v)
		assert.Equal(t, ids[v+1], ev.CorrelationId, "stop %d: in its cause's chain", v)
		assert.Equal(t, ids[v+1], starts[v+1].CorrelationId, "start %d: in the same chain", v+1)
	}
}

func TestRemovePolicyStopsAll(t *testing.T) {
	f := setup(t)
	f.apply(t, parse(t, "web", f.url, twoObservers))
	f.waitLifecycle(t, messages.TypeObserverStarted, "observer/web/a", "observer/web/b")

	rm := f.remove(t, "web")
	f.waitLifecycle(t, messages.TypeObserverStopped, "observer/web/a", "observer/web/b")
	for _, ev := range f.state.EventsOf(messages.TypeObserverStopped) {
		assert.Equal(t, "policy removed", ev.GetObserver().GetReason())
		assert.Equal(t, rm, ev.CausationId, "caused by the policy.removed event")
		assert.Equal(t, rm, ev.CorrelationId, "in the chain of its cause, as every event")
	}
	assert.Nil(t, f.process("observer/web/a"))
	assert.Nil(t, f.process("observer/web/b"))

	// Removing an unknown policy is harmless, and the policy can come back.
	f.send(&protocol.RemovePolicy{Name: "nope"})
	evt3 := f.apply(t, parse(t, "web", f.url, twoObservers))
	require.Eventually(t, func() bool { return len(f.lifecycle(messages.TypeObserverStarted)) == 4 }, actortest.Wait, 5*time.Millisecond)
	f.waitObservation(t, "observer/web/a", func(ev *messages.Event) bool { return ev.CorrelationId == evt3 })
	assert.Len(t, f.state.EventsOf(messages.TypePolicyRemoved), 1, "an unknown policy's removal emits nothing")
}

func TestUnsupportedKindIsQuarantined(t *testing.T) {
	f := setup(t)
	p := parse(t, "web", f.url, `    - {name: a, kind: http, interval: 20ms, http: {path: /a}}
    - {name: port, kind: wasm, interval: 20ms, wasm: {module: port.wasm}}
`)
	evt1 := f.apply(t, p)

	q := f.state.WaitEvent(t, messages.TypeObserverQuarantined, nil)
	o := q.GetObserver()
	assert.Equal(t, "observer/web/port", o.GetActor())
	assert.Equal(t, "port", o.GetObserver())
	assert.Equal(t, "wasm", o.GetKind())
	assert.Contains(t, o.GetReason(), "observer/web/port: no plugin host")
	assert.Equal(t, int32(1), o.GetFailures(), "quarantined at once, not after GiveUpAt failures")
	assert.Equal(t, evt1, q.CorrelationId)
	assert.Equal(t, messages.Severity_SEVERITY_MEDIUM, q.Severity)
	e := actortest.WaitMessage(t, f.state, func(e *protocol.Emit) bool { return e.Event.Id == q.Id })
	assert.Equal(t, "observer/web/port", e.From.Path())
	assert.Empty(t, f.state.EventsOf(messages.TypeObserverFailed), "a permanent failure is not retried")
	assert.Empty(t, f.state.EventsOf(messages.TypeObserverRestarted))

	// The task-manager keeps working: the http observer observes, and a
	// new policy starts.
	f.waitObservation(t, "observer/web/a", nil)
	f.apply(t, parse(t, "other", f.url, "    - {name: x, kind: http, interval: 20ms, http: {}}\n"))
	f.waitObservation(t, "observer/other/x", nil)
	assert.Nil(t, f.process("observer/web/port"), "the quarantined observer is not running")
}

func TestQuarantinedObserverIsRetriedOnResumeAndPolicyChange(t *testing.T) {
	f := setup(t)
	observers := `    - {name: a, kind: http, interval: 20ms, http: {path: /a}}
    - {name: port, kind: wasm, interval: 20ms, wasm: {module: port.wasm}}
`
	f.apply(t, parse(t, "web", f.url, observers))
	f.state.WaitEvent(t, messages.TypeObserverQuarantined, nil)

	// Resume retries it (and, still without a plugin host, it is quarantined
	// again).
	f.sys.Root.Send(f.task, &protocol.Resume{Policy: "web", Observer: "port"})
	require.Eventually(t, func() bool { return len(f.state.EventsOf(messages.TypeObserverQuarantined)) == 2 },
		actortest.Wait, 5*time.Millisecond, "Resume did not retry the quarantined observer")

	// So does a change of its policy, even one that leaves it as it was.
	evt2 := f.apply(t, parse(t, "web", f.url, `    - {name: a, kind: http, interval: 30ms, http: {path: /a}}
    - {name: port, kind: wasm, interval: 20ms, wasm: {module: port.wasm}}
`))
	q := f.state.WaitEvent(t, messages.TypeObserverQuarantined, func(ev *messages.Event) bool { return ev.CorrelationId == evt2 })
	assert.Equal(t, "observer/web/port", q.GetObserver().GetActor())
}

func TestResumeOfARunningObserverIsHarmless(t *testing.T) {
	f := setup(t)
	f.apply(t, parse(t, "web", f.url, twoObservers))
	f.waitLifecycle(t, messages.TypeObserverStarted, "observer/web/a", "observer/web/b")
	procA := f.process("observer/web/a")

	f.sys.Root.Send(f.task, &protocol.Resume{Policy: "web", Observer: "a"})
	f.sys.Root.Send(f.task, &protocol.Resume{Policy: "web", Observer: "nope"})
	f.sys.Root.Send(f.task, &protocol.Resume{Policy: "nope", Observer: "a"})
	f.sync(t)

	assert.Same(t, procA, f.process("observer/web/a"), "Resume restarted a running observer")
	assert.Empty(t, f.lifecycle(messages.TypeObserverStopped))
	assert.Len(t, f.lifecycle(messages.TypeObserverStarted), 3, "a, b and the marker")
	n := len(observationsOf(f.state, "observer/web/a"))
	require.Eventually(t, func() bool { return len(observationsOf(f.state, "observer/web/a")) > n }, actortest.Wait, 5*time.Millisecond)
}

func TestStoppingTheTaskManagerStopsItsObservers(t *testing.T) {
	f := setup(t)
	f.apply(t, parse(t, "web", f.url, twoObservers))
	f.waitLifecycle(t, messages.TypeObserverStarted, "observer/web/a", "observer/web/b")
	require.NoError(t, f.sys.Root.StopFuture(f.task).Wait())
	f.waitLifecycle(t, messages.TypeObserverStopped, "observer/web/a", "observer/web/b")
}

func TestPolicyChangeRightAfterAPermanentFailure(t *testing.T) {
	// A policy change that replaces an observer whose (permanent) failure
	// the task-manager has not handled yet: the stale failure must neither
	// take the replacement's place nor bring the task-manager down.
	f := setup(t)
	p1 := parse(t, "web", f.url, `    - {name: a, kind: http, interval: 20ms, http: {path: /a}}
    - {name: port, kind: wasm, interval: 20ms, wasm: {module: port.wasm}}
`)
	p2 := parse(t, "web", f.url, `    - {name: a, kind: http, interval: 20ms, http: {path: /a}}
    - {name: port, kind: wasm, interval: 30ms, wasm: {module: port.wasm}}
`)
	f.hold(t, func() {
		f.send(&protocol.ApplyPolicy{Policy: p1})
		f.send(&protocol.ApplyPolicy{Policy: p2}) // queued before the task-manager hears of port's failure
	})
	f.waitLifecycle(t, messages.TypeObserverStarted, "observer/web/a")
	procA := f.process("observer/web/a")
	evt2 := f.appliedID(t, p2.Revision)
	f.state.WaitEvent(t, messages.TypeObserverQuarantined, nil)
	if !assert.Eventually(t, func() bool {
		for _, ev := range f.state.EventsOf(messages.TypeObserverQuarantined) {
			if ev.CorrelationId == evt2 {
				return true
			}
		}
		return false
	},
		2*time.Second, 5*time.Millisecond, "the second version of port was not quarantined (did the task-manager fail?)") {
		t.Fatalf("lifecycle events: %v", f.describe())
	}

	// The task-manager is still the same actor with the same state: a was
	// never stopped, and it still runs what it ran.
	f.sync(t)
	assert.Empty(t, f.lifecycle(messages.TypeObserverStopped), "the task-manager failed and lost its observers")
	assert.Same(t, procA, f.process("observer/web/a"))
	f.remove(t, "web")
	f.waitLifecycle(t, messages.TypeObserverStopped, "observer/web/a")
}

func TestPolicyChangeReplacingAFailedObserverKeepsTheReplacement(t *testing.T) {
	// port is broken in the first version (a wasm observer without a plugin host) and
	// fixed in the second (kind http), which arrives before the task-manager
	// hears of the first one's failure. The replacement must stay tracked:
	// removing the policy stops it.
	f := setup(t)
	p1 := parse(t, "web", f.url, `    - {name: port, kind: wasm, interval: 20ms, wasm: {module: port.wasm}}
`)
	p2 := parse(t, "web", f.url, `    - {name: port, kind: http, interval: 20ms, http: {path: /port}}
`)
	f.hold(t, func() {
		f.send(&protocol.ApplyPolicy{Policy: p1})
		f.send(&protocol.ApplyPolicy{Policy: p2}) // queued before the task-manager hears of port's failure
	})
	evt1, evt2 := f.appliedID(t, p1.Revision), f.appliedID(t, p2.Revision)
	if !assert.Eventually(t, func() bool {
		for _, ev := range observationsOf(f.state, "observer/web/port") {
			if ev.CorrelationId == evt2 {
				return true
			}
		}
		return false
	}, 2*time.Second, 5*time.Millisecond, "the fixed version of port does not observe") {
		t.Fatalf("lifecycle events: %v", f.describe())
	}
	f.sync(t)
	for _, q := range f.state.EventsOf(messages.TypeObserverQuarantined) {
		assert.Equal(t, "wasm", q.GetObserver().GetKind(), "a quarantine is reported for the broken version only")
		assert.Equal(t, evt1, q.CorrelationId, "a quarantine is reported for the broken version only")
	}

	f.remove(t, "web")
	require.Eventually(t, func() bool { return f.process("observer/web/port") == nil }, 2*time.Second, 5*time.Millisecond,
		"the replacement observer was orphaned: RemovePolicy did not stop it")
	f.waitLifecycle(t, messages.TypeObserverStopped, "observer/web/port")
}

// hold suspends the task-manager's mailbox while send runs, so that what
// send sends is queued before the task-manager handles any of it.
func (f *fixture) hold(t *testing.T, send func()) {
	t.Helper()
	proc := f.process("")
	require.NotNil(t, proc)
	proc.SendSystemMessage(f.task, &actor.SuspendMailbox{})
	send()
	proc.SendSystemMessage(f.task, &actor.ResumeMailbox{})
}

// describe lists the lifecycle events received, for failure messages.
func (f *fixture) describe() []string {
	var out []string
	for _, ev := range f.state.Events() {
		if o := ev.GetObserver(); o != nil {
			out = append(out, fmt.Sprintf("%s %s kind=%s correlation=%s", ev.Type, o.GetActor(), o.GetKind(), ev.CorrelationId))
		}
	}
	return out
}

func observationsOf(r *actortest.Recorder, path string) []*messages.Event {
	var out []*messages.Event
	for _, m := range r.Messages() {
		if e, ok := m.(*protocol.Emit); ok && e.From.Path() == path && e.Event.Type == messages.TypeObservationHTTP {
			out = append(out, e.Event)
		}
	}
	return out
}

func TestConfigurationMessages(t *testing.T) {
	f := setup(t)
	observers := `    - {name: slow, kind: http, interval: 1h, http: {path: /slow}}
    - {name: a, kind: http, interval: 20ms, http: {path: /a}}
`
	f.apply(t, parse(t, "web", f.url, observers))
	f.waitLifecycle(t, messages.TypeObserverStarted, "observer/web/slow", "observer/web/a")
	ask := func(msg any) error {
		t.Helper()
		res, err := f.sys.Root.RequestFuture(f.task, msg, actortest.Wait).Result()
		require.NoError(t, err)
		return res.(*protocol.CommandDone).Err
	}

	// An hourly observer observes at once when asked.
	require.NoError(t, ask(&protocol.ObserveNow{Policy: "web", Observer: "slow"}))
	f.waitObservation(t, "observer/web/slow", nil)

	for _, tc := range []struct {
		msg  any
		want string
	}{
		{&protocol.ObserveNow{Policy: "nope", Observer: "slow"}, `observe now: no policy "nope" is running`},
		{&protocol.Pause{Policy: "web", Observer: "nope"}, `pause: policy "web" has no observer "nope"`},
		{&protocol.Resume{Policy: "web", Observer: "a"}, "resume: observer observer/web/a is neither paused nor quarantined"},
	} {
		assert.EqualError(t, ask(tc.msg), tc.want)
	}

	// A paused observer stops, and stays paused when its policy changes.
	require.NoError(t, ask(&protocol.Pause{Policy: "web", Observer: "a"}))
	f.waitLifecycle(t, messages.TypeObserverStopped, "observer/web/a")
	assert.Equal(t, protocol.StopReasonPaused, f.state.EventsOf(messages.TypeObserverStopped)[0].GetObserver().GetReason())
	assert.Nil(t, f.process("observer/web/a"))
	assert.EqualError(t, ask(&protocol.ObserveNow{Policy: "web", Observer: "a"}), "observe now: observer observer/web/a is paused or quarantined")
	updated := parse(t, "web", f.url, strings.Replace(observers, "interval: 20ms", "interval: 30ms", 1))
	evt2 := f.apply(t, updated)
	f.sync(t)
	assert.Nil(t, f.process("observer/web/a"), "a paused observer stays paused when its policy changes")
	assert.NotNil(t, f.process("observer/web/slow"), "the other observer keeps running")

	// Resume starts it with its policy's current version, under the
	// event that last changed the policy.
	require.NoError(t, ask(&protocol.Resume{Policy: "web", Observer: "a"}))
	ev := f.waitObservation(t, "observer/web/a", func(ev *messages.Event) bool { return ev.CorrelationId == evt2 })
	assert.Equal(t, updated.Revision, ev.GetPolicy().GetRevision())
}

func TestPauseOfAnObserverThatJustFailedForGood(t *testing.T) {
	// port cannot start (a wasm observer without a plugin host) and is
	// paused before the task-manager hears that its supervisor gave up:
	// the late news of a child already gone must not crash it.
	f := setup(t)
	f.apply(t, parse(t, "web", f.url, `    - {name: a, kind: http, interval: 20ms, http: {path: /a}}
    - {name: port, kind: wasm, interval: 20ms, wasm: {module: port.wasm}}
`))
	f.waitLifecycle(t, messages.TypeObserverStarted, "observer/web/a")
	procA := f.process("observer/web/a")
	require.NotNil(t, procA)
	f.sys.Root.Send(f.task, &protocol.Pause{Policy: "web", Observer: "port"})
	f.sync(t)
	assert.Same(t, procA, f.process("observer/web/a"), "the task-manager did not fail (a restart would have replaced a)")
}

func TestPauseSurvivesARestartOfTheTaskManager(t *testing.T) {
	sys, log := actortest.SystemAndLogger(t)
	state := actortest.NewRecorder(t, sys, "state-manager")
	url := setup(t).url
	pid := spawnCrashable(t, sys, task.Options{State: state.PID, Allowed: allowList(t), Log: log})
	p := parse(t, "web", url, twoObservers)
	started := func() int { return len(state.EventsOf(messages.TypeObserverStarted)) }
	sys.Root.Send(pid, &protocol.ApplyPolicy{Policy: p})
	require.Eventually(t, func() bool { return started() == 2 }, actortest.Wait, 5*time.Millisecond)
	res, err := sys.Root.RequestFuture(pid, &protocol.Pause{Policy: "web", Observer: "a"}, actortest.Wait).Result()
	require.NoError(t, err)
	require.NoError(t, res.(*protocol.CommandDone).Err)

	// After the restart, nobody resends anything: b starts again, a
	// stays paused.
	sys.Root.Send(pid, "crash")
	require.Eventually(t, func() bool { return started() == 3 }, actortest.Wait, 5*time.Millisecond)
	sys.Root.Send(pid, &protocol.FilesRead{})
	loaded := actortest.WaitMessage[*protocol.PoliciesLoaded](t, state, nil)
	assert.Equal(t, []string{"web"}, loaded.Applied, "the policy still runs")
	var paths []string
	for _, ev := range state.EventsOf(messages.TypeObserverStarted) {
		paths = append(paths, ev.GetObserver().GetActor())
	}
	assert.Equal(t, "observer/web/b", paths[2], "only b started again")
	assert.ElementsMatch(t, []string{"observer/web/a", "observer/web/b", "observer/web/b"}, paths)
}

// spawnCrashable spawns a task-manager that fails on a string message;
// protoactor restarts it with the same Props, as the supervisor does.
func spawnCrashable(t *testing.T, sys *actor.ActorSystem, opts task.Options) *actor.PID {
	t.Helper()
	props := task.Props(opts).Clone(actor.WithReceiverMiddleware(func(next actor.ReceiverFunc) actor.ReceiverFunc {
		return func(ctx actor.ReceiverContext, env *actor.MessageEnvelope) {
			if _, ok := env.Message.(string); ok {
				panic("task-manager bug")
			}
			next(ctx, env)
		}
	}))
	pid, err := sys.Root.SpawnNamed(props, "tm")
	require.NoError(t, err)
	t.Cleanup(func() { _ = sys.Root.StopFuture(pid).Wait() })
	return pid
}

// TestOneMemoryBudgetForAllPolicies: limits.max_response_bytes_total is
// one budget of the daemon, not one per policy: while an answer of one
// policy holds all of it, another policy's observation waits for memory
// and ends at its timeout, without asking the service.
func TestOneMemoryBudgetForAllPolicies(t *testing.T) {
	sys, log := actortest.SystemAndLogger(t)
	state := actortest.NewRecorder(t, sys, "state-manager")
	var requests atomic.Int64
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		select {
		case <-release:
			_, _ = io.WriteString(w, "ok")
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // before the server closes
	pid, err := sys.Root.SpawnNamed(task.Props(task.Options{State: state.PID, Allowed: allowList(t), Log: log,
		MaxResponseTotal: 64 * yamldoc.KiB}), taskName)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sys.Root.StopFuture(pid).Wait() })
	apply := func(p *policy.Policy) {
		sys.Root.Send(pid, &protocol.ApplyPolicy{Policy: p})
	}

	apply(parse(t, "holder", srv.URL, "    - {name: h, kind: http, interval: 10s, timeout: 9s, http: {max_body_bytes: 64KiB}}\n"))
	require.Eventually(t, func() bool { return requests.Load() == 1 }, actortest.Wait, time.Millisecond, "the holder's request is in flight")
	apply(parse(t, "waiter", srv.URL, "    - {name: w, kind: http, interval: 1s, timeout: 200ms, http: {max_body_bytes: 1KiB}}\n"))
	e := actortest.WaitMessage(t, state, func(e *protocol.Emit) bool {
		return e.From.Path() == "observer/waiter/w" && e.Event.Type == messages.TypeObservationHTTP
	})
	obs := e.Event.GetHttp()
	assert.Equal(t, messages.Result_RESULT_TIMEOUT, obs.Result)
	assert.Equal(t, "wait for memory for the answer (limits.max_response_bytes_total): context deadline exceeded", obs.Error)
	assert.Equal(t, int64(1), requests.Load(), "the waiter asked the service nothing")
}
