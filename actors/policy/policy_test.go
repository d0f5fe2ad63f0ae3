package policy_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	policymanager "github.com/polar/observerd/actors/policy"
	"github.com/polar/observerd/configs"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/test/actortest"
)

const good = `apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: web-target, url: "http://127.0.0.1:8080"}
  observers:
    - {name: health, kind: http, interval: 5s, http: {path: /healthz}}
    - {name: status, kind: http, interval: 10s, http: {path: /status}}
`

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
	task  *actortest.Recorder
}

func setup(t *testing.T, files map[string]string) *fixture {
	t.Helper()
	sys, log := actortest.SystemAndLogger(t)
	f := &fixture{
		sys:   sys,
		dir:   t.TempDir(),
		state: actortest.NewRecorder(t, sys, "state-manager"),
		task:  actortest.NewRecorder(t, sys, "task-manager"),
	}
	for name, text := range files {
		require.NoError(t, os.WriteFile(filepath.Join(f.dir, name), []byte(text), 0o600))
	}
	allowed, err := configs.ParseAllowList([]string{"127.0.0.0/8"})
	require.NoError(t, err)
	pid := sys.Root.Spawn(policymanager.Props(policymanager.Options{
		Dir: f.dir, Env: policy.Env{Allowed: allowed}, Task: f.task.PID, State: f.state.PID, Log: log,
	}))
	t.Cleanup(func() { _ = sys.Root.StopFuture(pid).Wait() })
	return f
}

func (f *fixture) loaded(t *testing.T) *messages.PoliciesLoaded {
	t.Helper()
	return actortest.WaitMessage[*messages.PoliciesLoaded](t, f.state, nil)
}

func TestLoadsGoodAndRejectsBad(t *testing.T) {
	f := setup(t, map[string]string{"web.yaml": good, "broken.yaml": bad, "notes.txt": "not a policy", ".hidden.yaml": bad})
	done := f.loaded(t)

	// policy.applied, then ApplyPolicy correlated with it.
	applied := f.state.WaitEvent(t, messages.TypePolicyApplied, nil)
	out := applied.GetPolicyOutcome()
	require.NotNil(t, out)
	assert.Equal(t, "web", out.Name)
	assert.Len(t, out.Revision, policy.RevisionLength)
	assert.Equal(t, filepath.Join(f.dir, "web.yaml"), out.File)
	assert.Equal(t, []string{"health", "status"}, out.Added)
	assert.Equal(t, "web-target", applied.Subject)
	assert.Equal(t, &messages.PolicyRef{Name: "web", Revision: out.Revision}, applied.Policy)
	assert.Equal(t, messages.Category_CATEGORY_SYSTEM, applied.Category)
	e := actortest.WaitMessage(t, f.state, func(e *messages.Emit) bool { return e.Event.Id == applied.Id })
	assert.Equal(t, policymanager.Path, e.Path)

	apply := actortest.WaitMessage[*messages.ApplyPolicy](t, f.task, nil)
	assert.Equal(t, applied.Id, apply.EventID, "ApplyPolicy carries the policy.applied event's id")
	require.NotNil(t, apply.Policy)
	assert.Equal(t, "web", apply.Policy.Metadata.Name)
	assert.Equal(t, out.Revision, apply.Policy.Revision)
	assert.Len(t, apply.Policy.Spec.Observers, 2)
	assert.Len(t, f.task.Messages(), 1, "only the good policy is applied")

	rejected := f.state.WaitEvent(t, messages.TypePolicyRejected, nil)
	ro := rejected.GetPolicyOutcome()
	require.NotNil(t, ro)
	assert.Equal(t, filepath.Join(f.dir, "broken.yaml"), ro.File)
	assert.Equal(t, int32(7), ro.Line)
	assert.Positive(t, ro.Column)
	assert.Contains(t, ro.Reason, "interval")
	assert.Contains(t, ro.Reason, "must be greater than 0")
	assert.Equal(t, messages.Severity_SEVERITY_MEDIUM, rejected.Severity)
	assert.Len(t, f.state.EventsOf(messages.TypePolicyRejected), 1, "dot-files and other extensions are skipped")

	assert.Equal(t, []string{"web"}, done.Applied)
	assert.Equal(t, []string{filepath.Join(f.dir, "broken.yaml")}, done.Rejected)

	// PoliciesLoaded comes after the events it sums up.
	msgs := f.state.Messages()
	last, ok := msgs[len(msgs)-1].(*messages.PoliciesLoaded)
	assert.True(t, ok && last == done, "PoliciesLoaded is the last message")
}

func TestRejectedFileListsEveryProblemFirstLineFirst(t *testing.T) {
	f := setup(t, map[string]string{"twice.yaml": badTwice})
	done := f.loaded(t)
	assert.Empty(t, done.Applied)
	assert.Equal(t, []string{filepath.Join(f.dir, "twice.yaml")}, done.Rejected)
	assert.Empty(t, f.task.Messages())

	rejected := f.state.WaitEvent(t, messages.TypePolicyRejected, nil)
	ro := rejected.GetPolicyOutcome()
	assert.Equal(t, int32(5), ro.Line, "the first problem's line")
	assert.Contains(t, ro.Reason, "allowed_targets")
	assert.Contains(t, ro.Reason, "interval")
	assert.Contains(t, ro.Reason, ":5:")
	assert.Contains(t, ro.Reason, ":9:")
}

func TestSeveralPolicies(t *testing.T) {
	other := `apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: db}
spec:
  target: {name: db-target, url: "http://127.0.0.1:5432"}
  observers:
    - {name: port, kind: tcp, interval: 5s, tcp: {}}
`
	dup := `apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: web-target, url: "http://127.0.0.1:9090"}
  observers:
    - {name: health, kind: http, interval: 5s, http: {}}
`
	f := setup(t, map[string]string{"a-web.yaml": good, "b-db.yml": other, "c-dup.yaml": dup})
	done := f.loaded(t)
	assert.Equal(t, []string{"web", "db"}, done.Applied, "in file name order")
	assert.Equal(t, []string{filepath.Join(f.dir, "c-dup.yaml")}, done.Rejected, "a duplicate policy name is rejected")

	applied := f.state.EventsOf(messages.TypePolicyApplied)
	require.Len(t, applied, 2)
	require.Eventually(t, func() bool { return len(f.task.Messages()) == 2 }, actortest.Wait, 5*time.Millisecond)
	for i, m := range f.task.Messages() {
		apply, ok := m.(*messages.ApplyPolicy)
		require.True(t, ok, "%T", m)
		assert.Equal(t, applied[i].Id, apply.EventID)
		assert.Equal(t, applied[i].GetPolicyOutcome().GetName(), apply.Policy.Metadata.Name)
	}
	rejected := f.state.WaitEvent(t, messages.TypePolicyRejected, nil)
	assert.Contains(t, rejected.GetPolicyOutcome().GetReason(), "already used")
	assert.Equal(t, int32(3), rejected.GetPolicyOutcome().GetLine())
}

func TestEmptyDirIsLoaded(t *testing.T) {
	f := setup(t, nil)
	done := f.loaded(t)
	assert.Empty(t, done.Applied)
	assert.Empty(t, done.Rejected)
	assert.Empty(t, f.state.Events())
	assert.Empty(t, f.task.Messages())
}

func TestMissingDirIsReportedAndStillLoaded(t *testing.T) {
	// A policy_dir that cannot be read is a problem to report, and the
	// load still ends (readiness must not hang on it).
	sys, log := actortest.SystemAndLogger(t)
	state := actortest.NewRecorder(t, sys, "state-manager")
	task := actortest.NewRecorder(t, sys, "task-manager")
	dir := filepath.Join(t.TempDir(), "missing")
	pid := sys.Root.Spawn(policymanager.Props(policymanager.Options{
		Dir: dir, Task: task.PID, State: state.PID, Log: log,
	}))
	t.Cleanup(func() { _ = sys.Root.StopFuture(pid).Wait() })
	done := actortest.WaitMessage[*messages.PoliciesLoaded](t, state, nil)
	assert.Empty(t, done.Applied)
	assert.Empty(t, task.Messages())
	rejected := state.WaitEvent(t, messages.TypePolicyRejected, nil)
	assert.Contains(t, rejected.GetPolicyOutcome().GetReason(), "missing")
	// policy.rejected names what was rejected; here, the directory.
	assert.Equal(t, dir, rejected.GetPolicyOutcome().GetFile(), "policy.rejected names no file")
	assert.NotContains(t, done.Rejected, "", "PoliciesLoaded.Rejected lists an empty file name")
}
