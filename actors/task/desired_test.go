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
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/test/actortest"
)

// policyEvent waits for the policy event id and returns its outcome.
func (f *fixture) policyEvent(t *testing.T, id string) (*messages.Event, *messages.PolicyOutcome) {
	t.Helper()
	e := actortest.WaitMessage(t, f.state, func(e *protocol.Emit) bool { return e.Event.Id == id })
	assert.Equal(t, protocol.ActorEmitter(protocol.PolicyManager), e.From, "policy events keep the policy-manager's source")
	return e.Event, e.Event.GetPolicyOutcome()
}

// stoppedBy returns the observer.stopped events caused by the event id,
// by observer path.
func (f *fixture) stoppedBy(t *testing.T, id string, n int) map[string]*messages.Event {
	t.Helper()
	out := map[string]*messages.Event{}
	require.Eventually(t, func() bool {
		for _, ev := range f.state.EventsOf(messages.TypeObserverStopped) {
			if ev.CausationId == id {
				out[ev.GetObserver().GetActor()] = ev
			}
		}
		return len(out) == n
	}, actortest.Wait, 5*time.Millisecond, "want %d observer.stopped caused by %s", n, id)
	return out
}

func TestPolicyEventsSayWhatItDid(t *testing.T) {
	f := setup(t)
	v1 := parseIn(t, "/p/web.yaml", "web", f.url, twoObservers)
	id1 := f.apply(t, v1)
	ev, out := f.policyEvent(t, id1)
	assert.Equal(t, "web-target", ev.Subject)
	assert.Equal(t, &messages.PolicyRef{Name: "web", Revision: v1.Revision}, ev.Policy)
	assert.Equal(t, &messages.PolicyOutcome{Origin: messages.PolicyOrigin_POLICY_ORIGIN_LOCAL, Name: "web", Revision: v1.Revision, File: "/p/web.yaml", Added: []string{"a", "b"}}, out)

	// a changes, b goes, c comes: the event says so, and is the cause of
	// the stops and the correlation of the starts.
	v2 := parseIn(t, "/p/web.yaml", "web", f.url, `    - {name: a, kind: http, interval: 30ms, http: {path: /a}}
    - {name: c, kind: http, interval: 20ms, http: {path: /c}}
`)
	id2 := f.apply(t, v2)
	_, out = f.policyEvent(t, id2)
	assert.Equal(t, &messages.PolicyOutcome{Origin: messages.PolicyOrigin_POLICY_ORIGIN_LOCAL, Name: "web", Revision: v2.Revision, File: "/p/web.yaml",
		Added: []string{"c"}, Updated: []string{"a"}, Removed: []string{"b"}, PreviousRevision: v1.Revision}, out)
	stopped := f.stoppedBy(t, id2, 2)
	assert.Equal(t, "replaced by a new version", stopped["observer/web/a"].GetObserver().GetReason())
	assert.Equal(t, "removed from its policy", stopped["observer/web/b"].GetObserver().GetReason())
	for _, path := range []string{"observer/web/a", "observer/web/c"} {
		f.state.WaitEvent(t, messages.TypeObserverStarted, func(ev *messages.Event) bool {
			return ev.GetObserver().GetActor() == path && ev.CorrelationId == id2 && ev.GetPolicy().GetRevision() == v2.Revision
		})
	}

	// The same revision from another file (a moved file): nothing.
	moved := parseIn(t, "/p/www.yaml", "web", f.url, `    - {name: a, kind: http, interval: 30ms, http: {path: /a}}
    - {name: c, kind: http, interval: 20ms, http: {path: /c}}
`)
	require.Equal(t, v2.Revision, moved.Revision)
	f.send(&protocol.ApplyPolicy{Policy: moved})

	// Its file rejected: the event names the revision in force from it,
	// once however often the same rejection comes.
	problem := &yamldoc.Problem{File: "/p/www.yaml", Line: 7, Column: 5, Path: "spec.observers[0].interval", Message: "invalid duration"}
	for range 2 {
		f.send(&protocol.RejectFile{File: "/p/www.yaml", Problems: []*yamldoc.Problem{problem}, Key: "k1"})
	}
	rejected := f.state.WaitEvent(t, messages.TypePolicyRejected, nil)
	_, out = f.policyEvent(t, rejected.Id)
	assert.Equal(t, &messages.PolicyOutcome{Origin: messages.PolicyOrigin_POLICY_ORIGIN_LOCAL, Name: "web", File: "/p/www.yaml", Line: 7, Column: 5,
		Reason: "/p/www.yaml:7:5: spec.observers[0].interval: invalid duration", PreviousRevision: v2.Revision}, out)
	assert.Equal(t, &messages.PolicyRef{Name: "web", Revision: v2.Revision}, rejected.Policy)
	assert.Equal(t, "web-target", rejected.Subject)
	assert.Equal(t, messages.Severity_SEVERITY_MEDIUM, rejected.Severity)

	// Good again with the revision that runs: reported, nothing restarts.
	before := len(f.state.EventsOf(messages.TypePolicyApplied))
	f.send(&protocol.ApplyPolicy{Policy: moved})
	again := f.newEvent(t, messages.TypePolicyApplied, before, v2.Revision)
	_, out = f.policyEvent(t, again.Id)
	assert.Equal(t, &messages.PolicyOutcome{Origin: messages.PolicyOrigin_POLICY_ORIGIN_LOCAL, Name: "web", Revision: v2.Revision, File: "/p/www.yaml", PreviousRevision: v2.Revision}, out)
	f.sync(t)
	assert.Len(t, f.state.EventsOf(messages.TypePolicyRejected), 1, "the same rejection is reported once")
	assert.Len(t, f.state.EventsOf(messages.TypeObserverStopped), 2, "nothing restarted since v2")

	rm := f.remove(t, "web")
	_, out = f.policyEvent(t, rm)
	assert.Equal(t, &messages.PolicyOutcome{Origin: messages.PolicyOrigin_POLICY_ORIGIN_LOCAL, Name: "web", Revision: v2.Revision, File: "/p/www.yaml", Removed: []string{"a", "c"}}, out)
	stopped = f.stoppedBy(t, rm, 2)
	assert.Equal(t, "policy removed", stopped["observer/web/c"].GetObserver().GetReason())
}

func TestRestartedTaskManagerRunsWhatWasDesired(t *testing.T) {
	// No policy-manager here: the task-manager alone knows what to run
	// again after its restart.
	sys, log := actortest.SystemAndLogger(t)
	state := actortest.NewRecorder(t, sys, "state-manager")
	url := setup(t).url
	pid := spawnCrashable(t, sys, task.Options{State: state.PID, Allowed: allowList(t), Log: log})
	web := parse(t, "web", url, twoObservers)
	other := parse(t, "other", url, "    - {name: x, kind: http, interval: 20ms, http: {}}\n")
	sys.Root.Send(pid, &protocol.ApplyPolicy{Policy: web})
	sys.Root.Send(pid, &protocol.ApplyPolicy{Policy: other})
	correlation := map[string]string{}
	for _, p := range []*policy.Policy{web, other} {
		correlation[p.Metadata.Name] = state.WaitEvent(t, messages.TypePolicyApplied, func(ev *messages.Event) bool {
			return ev.GetPolicy().GetRevision() == p.Revision
		}).Id
	}
	started := func() []*messages.Event { return state.EventsOf(messages.TypeObserverStarted) }
	require.Eventually(t, func() bool { return len(started()) == 3 }, actortest.Wait, 5*time.Millisecond)
	res, err := sys.Root.RequestFuture(pid, &protocol.Pause{Policy: "web", Observer: "a"}, actortest.Wait).Result()
	require.NoError(t, err)
	require.NoError(t, res.(*protocol.CommandDone).Err)

	sys.Root.Send(pid, "crash")
	require.Eventually(t, func() bool { return len(started()) == 5 }, actortest.Wait, 5*time.Millisecond, "b and x did not start again")
	var again []string
	for _, ev := range started()[3:] {
		path := ev.GetObserver().GetActor()
		again = append(again, path)
		pol := ev.GetPolicy().GetName()
		assert.Equal(t, correlation[pol], ev.CorrelationId, "%s keeps the policy.applied that started it", path)
		assert.Equal(t, map[string]string{"web": web.Revision, "other": other.Revision}[pol], ev.GetPolicy().GetRevision())
	}
	assert.ElementsMatch(t, []string{"observer/web/b", "observer/other/x"}, again, "a stays paused")
	assert.Len(t, state.EventsOf(messages.TypePolicyApplied), 2, "a restart changes nothing that is desired: no policy event")
	assert.Empty(t, state.EventsOf(messages.TypePolicyRemoved))

	// The next change is diffed against what ran before the restart.
	web2 := parse(t, "web", url, strings.Replace(twoObservers, "interval: 20ms, http: {path: /b}", "interval: 30ms, http: {path: /b}", 1))
	sys.Root.Send(pid, &protocol.ApplyPolicy{Policy: web2})
	out := state.WaitEvent(t, messages.TypePolicyApplied, func(ev *messages.Event) bool {
		return ev.GetPolicy().GetRevision() == web2.Revision
	}).GetPolicyOutcome()
	assert.Equal(t, web.Revision, out.PreviousRevision)
	assert.Equal(t, []string{"b"}, out.Updated)
	assert.Empty(t, out.Added)
	sys.Root.Send(pid, &protocol.FilesRead{})
	loaded := actortest.WaitMessage[*protocol.PoliciesLoaded](t, state, nil)
	assert.Equal(t, []string{"other", "web"}, loaded.Applied)
	require.Eventually(t, func() bool { return len(started()) == 6 }, actortest.Wait, 5*time.Millisecond, "the updated b did not start")
	for _, ev := range started()[3:] {
		assert.NotEqual(t, "observer/web/a", ev.GetObserver().GetActor(), "a was paused before the restart")
	}
}

// sized is policy name (from <name>.yaml) with n observers: http ones, or
// wasm ones of 32MiB each.
func sized(t *testing.T, url, name string, n int, wasm bool) *policy.Policy {
	t.Helper()
	var obs strings.Builder
	for i := range n {
		if wasm {
			fmt.Fprintf(&obs, "    - {name: p%d, kind: wasm, interval: 1h, wasm: {module: x.wasm, memory_limit: 32MiB}}\n", i)
		} else {
			fmt.Fprintf(&obs, "    - {name: h%d, kind: http, interval: 1h, http: {path: /h%d}}\n", i, i)
		}
	}
	return parse(t, name, url, obs.String())
}

// limited gives the task-manager the default limits, changed by set.
func limited(set func(*policy.Bounds)) func(*task.Options) {
	return func(o *task.Options) {
		l := policy.DefaultBounds()
		set(&l)
		o.Limits = &l
	}
}

func TestTotalsAdmitWhatFitsAndKeepTheRestWaiting(t *testing.T) {
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
			f := setup(t, limited(tc.limits))
			size := func(name string, n int) *policy.Policy { return sized(t, f.url, name, n, tc.wasm) }
			f.apply(t, size("a", 2))
			b1 := size("b", 1)
			f.apply(t, b1)

			// b grows past the limit: refused, its last good version runs on.
			b2 := size("b", 2)
			f.send(&protocol.ApplyPolicy{Policy: b2})
			out := f.state.WaitEvent(t, messages.TypePolicyRejected, nil).GetPolicyOutcome()
			assert.Contains(t, out.Reason, tc.key)
			assert.Equal(t, "b.yaml", out.File)
			assert.Equal(t, "b", out.Name)
			assert.Equal(t, b1.Revision, out.PreviousRevision, "the revision still in force")
			loaded := f.loaded(t, &protocol.FilesRead{})
			assert.Equal(t, []string{"a", "b"}, loaded.Applied)
			assert.Equal(t, []string{"b.yaml"}, loaded.Rejected, "a file waiting for room is rejected")
			assert.Len(t, f.state.EventsOf(messages.TypePolicyApplied), 2, "nothing changed in what runs")

			// a shrinks: at the end of the round, b's waiting version comes in.
			f.send(&protocol.ApplyPolicy{Policy: size("a", 1)})
			loaded = f.loaded(t, &protocol.FilesRead{})
			applied := f.state.EventsOf(messages.TypePolicyApplied)
			require.Len(t, applied, 4)
			assert.Equal(t, "a", applied[2].GetPolicyOutcome().Name)
			assert.Equal(t, b2.Revision, applied[3].GetPolicyOutcome().Revision)
			assert.Equal(t, b1.Revision, applied[3].GetPolicyOutcome().PreviousRevision)
			assert.Equal(t, []string{"a", "b"}, loaded.Applied)
			assert.Empty(t, loaded.Rejected)

			// A new policy with no room waits, and runs once another goes.
			f.send(&protocol.ApplyPolicy{Policy: size("c", 1)})
			out = f.state.WaitEvent(t, messages.TypePolicyRejected, func(ev *messages.Event) bool {
				return ev.GetPolicyOutcome().File == "c.yaml"
			}).GetPolicyOutcome()
			assert.Contains(t, out.Reason, tc.key)
			assert.Empty(t, out.Name, "no version of c runs")
			assert.Empty(t, out.PreviousRevision)
			f.send(&protocol.RemovePolicy{Name: "a"})
			loaded = f.loaded(t, &protocol.FilesRead{})
			assert.Equal(t, []string{"b", "c"}, loaded.Applied)
			assert.Equal(t, "a", f.state.EventsOf(messages.TypePolicyRemoved)[0].GetPolicyOutcome().Name)
			assert.Equal(t, "c", f.state.EventsOf(messages.TypePolicyApplied)[4].GetPolicyOutcome().Name, "c comes after a goes")
		})
	}
}

func TestTotalsRefusedTakeOverStopsTheOldVersion(t *testing.T) {
	// web's file went and another file declares web, too large: the old
	// web stops (no file declares it), the new one waits.
	f := setup(t, limited(func(l *policy.Bounds) { l.MaxObservers = 3 }))
	old := parseIn(t, "a-web.yaml", "web", f.url, "    - {name: h0, kind: http, interval: 1h, http: {}}\n    - {name: h1, kind: http, interval: 1h, http: {}}\n")
	f.apply(t, old)
	var four strings.Builder
	for i := range 4 {
		fmt.Fprintf(&four, "    - {name: h%d, kind: http, interval: 1h, http: {}}\n", i)
	}
	f.send(&protocol.ApplyPolicy{Policy: parseIn(t, "c-web.yaml", "web", f.url, four.String())})
	loaded := f.loaded(t, &protocol.FilesRead{})
	assert.Empty(t, loaded.Applied)
	assert.Equal(t, []string{"c-web.yaml"}, loaded.Rejected)
	removed := f.state.EventsOf(messages.TypePolicyRemoved)
	require.Len(t, removed, 1)
	assert.Equal(t, "a-web.yaml", removed[0].GetPolicyOutcome().File)
	rejected := f.state.EventsOf(messages.TypePolicyRejected)
	require.Len(t, rejected, 1)
	assert.Equal(t, "c-web.yaml", rejected[0].GetPolicyOutcome().File)
	assert.Contains(t, rejected[0].GetPolicyOutcome().Reason, "limits.max_observers")
	assert.Len(t, f.state.EventsOf(messages.TypePolicyApplied), 1)
}

func TestTotalsWaitingVersionGoesWithItsFile(t *testing.T) {
	f := setup(t, limited(func(l *policy.Bounds) { l.MaxObservers = 3 }))
	f.apply(t, sized(t, f.url, "a", 2, false))
	b1 := sized(t, f.url, "b", 1, false)
	f.apply(t, b1)
	f.send(&protocol.ApplyPolicy{Policy: sized(t, f.url, "b", 2, false)})
	f.state.WaitEvent(t, messages.TypePolicyRejected, nil)

	// The file says the running revision again: reported good again.
	before := len(f.state.EventsOf(messages.TypePolicyApplied))
	f.send(&protocol.ApplyPolicy{Policy: b1})
	out := f.newEvent(t, messages.TypePolicyApplied, before, b1.Revision).GetPolicyOutcome()
	assert.Equal(t, b1.Revision, out.PreviousRevision)
	assert.Empty(t, out.Added)
	assert.Empty(t, out.Updated)

	// Too large again, then invalid: the file no longer says the large
	// version, so the room a leaves does not bring it in.
	f.send(&protocol.ApplyPolicy{Policy: sized(t, f.url, "b", 2, false)})
	require.Eventually(t, func() bool { return len(f.state.EventsOf(messages.TypePolicyRejected)) == 2 }, actortest.Wait, 5*time.Millisecond)
	f.send(&protocol.RejectFile{File: "b.yaml", Problems: []*yamldoc.Problem{{File: "b.yaml", Message: "the document is empty"}}, Key: "empty"})
	out = f.state.WaitEvent(t, messages.TypePolicyRejected, func(ev *messages.Event) bool {
		return strings.Contains(ev.GetPolicyOutcome().Reason, "empty")
	}).GetPolicyOutcome()
	assert.Equal(t, b1.Revision, out.PreviousRevision, "the revision in force")
	f.send(&protocol.ApplyPolicy{Policy: sized(t, f.url, "a", 1, false)})
	loaded := f.loaded(t, &protocol.FilesRead{Rejected: []string{"b.yaml"}})
	assert.Equal(t, []string{"a", "b"}, loaded.Applied)
	assert.Equal(t, []string{"b.yaml"}, loaded.Rejected)
	for _, ev := range f.state.EventsOf(messages.TypePolicyApplied) {
		if ev.GetPolicyOutcome().Name == "b" {
			assert.Equal(t, b1.Revision, ev.GetPolicyOutcome().Revision, "b's large version never ran")
		}
	}
}

func TestFilesReadRemovesWhatNoFileDeclares(t *testing.T) {
	// What a restarted policy-manager cannot know: files that went, or
	// now declare another name, while it was down.
	f := setup(t)
	one := "    - {name: h, kind: http, interval: 1h, http: {}}\n"
	for file, name := range map[string]string{"/p/kept.yaml": "kept", "/p/bad.yaml": "bad", "/p/gone.yaml": "gone", "/p/renamed.yaml": "old"} {
		f.apply(t, parseIn(t, file, name, f.url, one))
	}

	// Not listed: nothing is removed.
	loaded := f.loaded(t, &protocol.FilesRead{})
	assert.Equal(t, []string{"bad", "gone", "kept", "old"}, loaded.Applied)

	loaded = f.loaded(t, &protocol.FilesRead{
		Declared: map[string]string{"/p/kept.yaml": "kept", "/p/bad.yaml": "", "/p/renamed.yaml": "new"},
		Rejected: []string{"/p/bad.yaml"},
	})
	assert.Equal(t, []string{"bad", "kept"}, loaded.Applied, "a rejected file's last good version keeps running")
	assert.Equal(t, []string{"/p/bad.yaml"}, loaded.Rejected)
	var removed []string
	for _, ev := range f.state.EventsOf(messages.TypePolicyRemoved) {
		removed = append(removed, ev.GetPolicyOutcome().Name)
	}
	assert.Equal(t, []string{"gone", "old"}, removed)
}

func TestCentralPolicyEventsSayWhoSentThem(t *testing.T) {
	f := setup(t)
	p := parseIn(t, "/s/central-policies/web.yaml", "web", f.url, twoObservers)
	p.Central, p.Issuer = true, "deployer"
	_, out := f.policyEvent(t, f.apply(t, p))
	assert.Equal(t, messages.PolicyOrigin_POLICY_ORIGIN_CENTRAL, out.Origin)
	assert.Equal(t, "deployer", out.Issuer)

	problem := &yamldoc.Problem{File: "/s/central-policies/web.yaml", Line: 3, Message: "bad"}
	f.send(&protocol.RejectFile{File: problem.File, Problems: []*yamldoc.Problem{problem}, Key: "k", Central: true, Issuer: "deployer"})
	_, out = f.policyEvent(t, f.state.WaitEvent(t, messages.TypePolicyRejected, nil).Id)
	assert.Equal(t, messages.PolicyOrigin_POLICY_ORIGIN_CENTRAL, out.Origin)
	assert.Equal(t, "deployer", out.Issuer)

	_, out = f.policyEvent(t, f.remove(t, "web"))
	assert.Equal(t, messages.PolicyOrigin_POLICY_ORIGIN_CENTRAL, out.Origin)
	assert.Equal(t, "deployer", out.Issuer)
}
