package supervisor_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/policymanager"
	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/actors/restart"
	"github.com/polar/observerd/actors/supervisor"
	"github.com/polar/observerd/actors/task"
	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/test/actortest"
	"github.com/polar/observerd/test/jsonlog"
)

// journal is the shared, ordered record of the children's lifecycles.
type journal struct {
	mu      sync.Mutex
	entries []string
}

func (j *journal) add(s string) {
	j.mu.Lock()
	j.entries = append(j.entries, s)
	j.mu.Unlock()
}

func (j *journal) with(prefix string) []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []string
	for _, e := range j.entries {
		if len(e) > len(prefix) && e[:len(prefix)] == prefix {
			out = append(out, e[len(prefix):])
		}
	}
	return out
}

// recording is a child that records its Started and Stopping in j.
func recording(j *journal, name string) *actor.Props {
	return actor.PropsFromFunc(func(ctx actor.Context) {
		switch ctx.Message().(type) {
		case *actor.Started:
			j.add("started " + name)
		case *actor.Stopping:
			j.add("stopping " + name)
		}
	})
}

// exits records the calls of Options.Exit.
type exits struct {
	ch chan error
}

func newExits() *exits { return &exits{ch: make(chan error, 4)} }

func (e *exits) exit(err error) { e.ch <- err }

func (e *exits) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-e.ch:
		return err
	case <-time.After(actortest.Wait):
		t.Fatal("Exit was not called")
		return nil
	}
}

func spawn(t *testing.T, sys *actor.ActorSystem, opts supervisor.Options) *actor.PID {
	t.Helper()
	pid, err := sys.Root.SpawnNamed(supervisor.Props(opts), protocol.Supervisor)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sys.Root.StopFuture(pid).Wait() })
	return pid
}

func TestPID(t *testing.T) {
	sys, _ := actortest.SystemAndLogger(t)
	pid := supervisor.PID(sys, protocol.Broker)
	assert.Equal(t, "supervisor/broker", pid.Id)
	assert.Equal(t, sys.Address(), pid.Address)
}

// lifecycleChildren returns the five second-level children in start order,
// recording into j, the state-manager forwarding its events to events. The
// broker's Started takes its time (up to slow) unless another child starts
// meanwhile, so that a supervisor that does not wait for a child's start
// before the next shows it.
func lifecycleChildren(j *journal, events *actortest.Recorder, slow time.Duration) ([]string, []supervisor.Child) {
	names := []string{protocol.Broker, protocol.StateManager, protocol.TaskManager, protocol.PolicyManager, protocol.Admin}
	other := make(chan struct{})
	var once sync.Once
	var children []supervisor.Child
	for _, name := range names {
		name := name
		children = append(children, supervisor.Child{Name: name, Props: actor.PropsFromProducer(func() actor.Actor {
			j.add("spawned " + name)
			return actor.ReceiveFunc(func(ctx actor.Context) {
				switch msg := ctx.Message().(type) {
				case *actor.Started:
					if name == protocol.Broker {
						select {
						case <-other:
						case <-time.After(slow):
						}
					} else {
						once.Do(func() { close(other) })
					}
					j.add("started " + name)
				case *actor.Stopping:
					j.add("stopping " + name)
				case *protocol.Emit:
					if name == protocol.StateManager {
						ctx.Send(events.PID, msg)
					}
				}
			})
		})})
	}
	return names, children
}

func TestSpawnsChildrenInOrder(t *testing.T) {
	sys, log := actortest.SystemAndLogger(t)
	j := &journal{}
	events := actortest.NewRecorder(t, sys, "events")
	names, children := lifecycleChildren(j, events, 0)
	spawn(t, sys, supervisor.Options{Version: "1.2.3", Children: children, Log: log})

	require.Eventually(t, func() bool { return len(j.with("started ")) == len(names) }, actortest.Wait, 5*time.Millisecond)
	assert.Equal(t, names, j.with("spawned "), "children are spawned in the order of Options.Children")
	for _, name := range names {
		_, ok := sys.ProcessRegistry.GetLocal(supervisor.PID(sys, name).Id)
		assert.True(t, ok, "%s is at supervisor.PID", name)
	}
	started := events.WaitEvent(t, messages.TypeDaemonStarted, nil)
	assert.Equal(t, "1.2.3", started.GetDaemon().GetVersion())
	assert.Positive(t, started.GetDaemon().GetPid())
	assert.Equal(t, "supervisor", actortest.WaitMessage(t, events, func(e *protocol.Emit) bool { return e.Event.Type == messages.TypeDaemonStarted }).From.Path())
}

func TestStartsChildrenInOrder(t *testing.T) {
	// Each child is started (its Started handled) before the next: the
	// broker first, so that nothing emitted at start-up is lost, the admin
	// last, so that it never reports on actors that do not exist.
	sys, log := actortest.SystemAndLogger(t)
	j := &journal{}
	events := actortest.NewRecorder(t, sys, "events")
	names, children := lifecycleChildren(j, events, 200*time.Millisecond)
	spawn(t, sys, supervisor.Options{Children: children, Log: log})

	require.Eventually(t, func() bool { return len(j.with("started ")) == len(names) }, actortest.Wait, 5*time.Millisecond)
	assert.Equal(t, names, j.with("started "), "children start in the order of Options.Children")
}

func TestStopsChildrenInReverseOrder(t *testing.T) {
	sys, log := actortest.SystemAndLogger(t)
	j := &journal{}
	events := actortest.NewRecorder(t, sys, "events")
	names, children := lifecycleChildren(j, events, 0)
	ex := newExits()
	pid := spawn(t, sys, supervisor.Options{Version: "1.2.3", Children: children, Exit: ex.exit, Log: log})
	require.Eventually(t, func() bool { return len(j.with("started ")) == len(names) }, actortest.Wait, 5*time.Millisecond)

	require.NoError(t, sys.Root.StopFuture(pid).Wait())
	require.NoError(t, ex.wait(t), "a requested stop exits with nil")

	assert.Equal(t, []string{protocol.Admin, protocol.PolicyManager, protocol.TaskManager, protocol.StateManager, protocol.Broker},
		j.with("stopping "), "children stop in reverse order")
	stopping := events.WaitEvent(t, messages.TypeDaemonStopping, nil)
	assert.Equal(t, "stop requested", stopping.GetDaemon().GetReason())
	assert.Equal(t, "1.2.3", stopping.GetDaemon().GetVersion())
	for _, name := range names {
		_, ok := sys.ProcessRegistry.GetLocal(supervisor.PID(sys, name).Id)
		assert.False(t, ok, "%s still runs", name)
	}
	select {
	case err := <-ex.ch:
		t.Fatalf("Exit called twice, again with %v", err)
	default:
	}
}

func TestStopLetsChildrenDrainTheirMailboxes(t *testing.T) {
	// Children stop with poison pills: what was sent to a child before the
	// stop is handled before it stops.
	sys, log := actortest.SystemAndLogger(t)
	j := &journal{}
	type work struct{ n int }
	release := make(chan struct{})
	worker := actor.PropsFromFunc(func(ctx actor.Context) {
		switch msg := ctx.Message().(type) {
		case *work:
			if msg.n == 0 {
				<-release // hold the mailbox so that the rest queues up
			}
			j.add(fmt.Sprintf("worker %d", msg.n))
		case *actor.Stopping:
			j.add("worker stopping")
		}
	})
	ex := newExits()
	pid := spawn(t, sys, supervisor.Options{Children: []supervisor.Child{{Name: "worker", Props: worker}}, Exit: ex.exit, Log: log})
	w := supervisor.PID(sys, "worker")
	require.Eventually(t, func() bool { _, ok := sys.ProcessRegistry.GetLocal(w.Id); return ok }, actortest.Wait, 5*time.Millisecond)
	for n := range 5 {
		sys.Root.Send(w, &work{n: n})
	}
	sys.Root.Stop(pid)
	close(release)
	require.NoError(t, ex.wait(t))
	assert.Equal(t, []string{"0", "1", "2", "3", "4", "stopping"}, j.with("worker "),
		"the messages queued before the stop were handled before the child stopped")
}

func TestEscalatesAChildFailingBeyondItsIntensity(t *testing.T) {
	sys, log := actortest.SystemAndLogger(t)
	state := actortest.NewRecorder(t, sys, protocol.Supervisor+"/"+protocol.StateManager)
	j := &journal{}
	flaky := actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*actor.Started); ok {
			j.add("started flaky")
			panic(errors.New("flaky cannot start"))
		}
	})
	policy := restart.Policy{MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, GiveUpAt: 3, Window: time.Minute}
	ex := newExits()
	spawn(t, sys, supervisor.Options{
		Version:     "1.2.3",
		Children:    []supervisor.Child{{Name: "steady", Props: recording(j, "steady")}, {Name: "flaky", Props: flaky}},
		Supervision: policy,
		Exit:        ex.exit,
		Log:         log,
	})

	err := ex.wait(t)
	require.Error(t, err, "an escalation exits with an error")
	assert.Contains(t, err.Error(), "flaky failed 3 times", "the error names the child")
	assert.Contains(t, err.Error(), "3 times")
	assert.Contains(t, err.Error(), "flaky cannot start")

	stopping := state.WaitEvent(t, messages.TypeDaemonStopping, nil)
	assert.Equal(t, err.Error(), stopping.GetDaemon().GetReason(), "daemon.stopping says why")

	// Two failures restarted with backoff, each one an event.
	require.Eventually(t, func() bool { return len(state.EventsOf(messages.TypeObserverRestarted)) >= 2 },
		actortest.Wait, 5*time.Millisecond, "observer.restarted events")
	failed := state.EventsOf(messages.TypeObserverFailed)
	restarted := state.EventsOf(messages.TypeObserverRestarted)
	require.Len(t, failed, 2, "observer.failed events")
	require.Len(t, restarted, 2, "observer.restarted events")
	for i, ev := range failed {
		o := ev.GetObserver()
		assert.Equal(t, "flaky", o.GetActor())
		assert.Equal(t, int32(i+1), o.GetFailures())
		assert.Contains(t, o.GetReason(), "flaky cannot start")
		assert.Positive(t, o.GetBackoff().AsDuration())
		assert.Equal(t, time.Minute, o.GetWindow().AsDuration())
		assert.Equal(t, messages.Severity_SEVERITY_HIGH, ev.GetSeverity())
		assert.Equal(t, int32(i+1), restarted[i].GetObserver().GetFailures())
		assert.Equal(t, "flaky", restarted[i].GetObserver().GetActor())
	}
	for _, m := range state.Messages() {
		if e, ok := m.(*protocol.Emit); ok && e.Event.GetObserver() != nil {
			assert.Equal(t, "flaky", e.From.Path(), "lifecycle events come from the child's path")
		}
	}
	assert.ElementsMatch(t, []string{"steady", "flaky", "flaky", "flaky"}, j.with("started "), "flaky started once and restarted twice")

	assert.Equal(t, []string{"steady"}, j.with("stopping "), "the healthy child was stopped")
	assert.NotEmpty(t, state.EventsOf(messages.TypeDaemonStarted))
}

func TestSpawnFailureExits(t *testing.T) {
	// A child whose name is taken cannot start: the supervisor stops and
	// exits with the cause.
	sys, log := actortest.SystemAndLogger(t)
	actortest.NewRecorder(t, sys, protocol.Supervisor+"/taken")
	j := &journal{}
	ex := newExits()
	spawn(t, sys, supervisor.Options{
		Children: []supervisor.Child{{Name: "first", Props: recording(j, "first")}, {Name: "taken", Props: recording(j, "taken")}, {Name: "never", Props: recording(j, "never")}},
		Exit:     ex.exit,
		Log:      log,
	})
	err := ex.wait(t)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "start taken")
	assert.Equal(t, []string{"first"}, j.with("started "))
	assert.Equal(t, []string{"first"}, j.with("stopping "))
}

func TestStopDuringARestartBackoffIsPrompt(t *testing.T) {
	// A child waiting for its restart (mailbox suspended) when the daemon
	// is asked to stop must not hold the stop up: the supervisor cancels
	// the restart and stops it at once.
	sys, log := actortest.SystemAndLogger(t)
	state := actortest.NewRecorder(t, sys, protocol.Supervisor+"/"+protocol.StateManager)
	j := &journal{}
	type boom struct{}
	failing := actor.PropsFromFunc(func(ctx actor.Context) {
		switch ctx.Message().(type) {
		case *actor.Started:
			j.add("started failing")
		case *boom:
			panic("boom")
		}
	})
	ex := newExits()
	// Not spawn: its cleanup would wait for the stop this test is about.
	pid, err := sys.Root.SpawnNamed(supervisor.Props(supervisor.Options{
		Children:    []supervisor.Child{{Name: "steady", Props: recording(j, "steady")}, {Name: "failing", Props: failing}},
		Supervision: restart.Policy{MinBackoff: time.Minute, MaxBackoff: time.Minute, GiveUpAt: 5, Window: time.Minute},
		Exit:        ex.exit,
		Log:         log,
	}), protocol.Supervisor)
	require.NoError(t, err)
	t.Cleanup(func() { sys.Root.Stop(pid) })
	require.Eventually(t, func() bool { return len(j.with("started ")) == 2 }, actortest.Wait, 5*time.Millisecond)
	sys.Root.Send(supervisor.PID(sys, "failing"), &boom{})
	state.WaitEvent(t, messages.TypeObserverFailed, nil) // now in its minute of backoff

	start := time.Now()
	sys.Root.Stop(pid)
	select {
	case err := <-ex.ch:
		require.NoError(t, err)
		assert.Less(t, time.Since(start), 2*time.Second)
	case <-time.After(2 * time.Second):
		t.Fatal("Exit was not called within 2s of the stop: the supervisor waits for a child whose mailbox is suspended")
	}
	assert.Equal(t, []string{"steady"}, j.with("stopping "))
}

// crashOnString makes props fail on a string message.
func crashOnString(props *actor.Props) *actor.Props {
	return props.Clone(actor.WithReceiverMiddleware(func(next actor.ReceiverFunc) actor.ReceiverFunc {
		return func(ctx actor.ReceiverContext, env *actor.MessageEnvelope) {
			if s, ok := env.Message.(string); ok {
				panic(errors.New(s))
			}
			next(ctx, env)
		}
	}))
}

func TestRestartedManagersLeaveWhatRunsAlone(t *testing.T) {
	// A restart of the task-manager or of the policy-manager is nobody
	// else's business: the supervisor only restarts it. The task-manager
	// runs again what ran by itself; the policy-manager reads the files
	// again and changes nothing.
	sys, log := actortest.SystemAndLogger(t)
	state := actortest.NewRecorder(t, sys, protocol.Supervisor+"/"+protocol.StateManager)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "web.yaml"), []byte(`apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: web, url: "http://127.0.0.1:8080"}
  observers:
    - {name: a, kind: http, interval: 1h, http: {}}
    - {name: b, kind: http, interval: 1h, http: {}}
`), 0o600))
	allowed, err := targets.Parse([]string{"127.0.0.0/8"})
	require.NoError(t, err)
	closed := &protocol.Gate{}
	closed.Close(true) // the observers skip their turns: only their lives matter here
	spawn(t, sys, supervisor.Options{
		Children: []supervisor.Child{
			{Name: protocol.TaskManager, Props: crashOnString(task.Props(task.Options{
				State: supervisor.PID(sys, protocol.StateManager), Allowed: allowed, Gate: closed, Log: log,
			}))},
			{Name: protocol.PolicyManager, Props: crashOnString(policymanager.Props(policymanager.Options{
				Dir: dir, Env: policy.Env{Allowed: allowed, Limits: actortest.Limits()}, Task: supervisor.PID(sys, protocol.TaskManager), Log: log,
			}))},
		},
		Supervision: restart.Policy{MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, GiveUpAt: 3, Window: time.Minute},
		Log:         log,
	})
	applied := state.WaitEvent(t, messages.TypePolicyApplied, nil)
	started := func() []*messages.Event { return state.EventsOf(messages.TypeObserverStarted) }
	require.Eventually(t, func() bool { return len(started()) == 2 }, actortest.Wait, 5*time.Millisecond)
	policyEvents := func() int {
		return len(state.EventsOf(messages.TypePolicyApplied)) + len(state.EventsOf(messages.TypePolicyRemoved)) + len(state.EventsOf(messages.TypePolicyRejected))
	}
	restarted := func(name string) bool {
		for _, ev := range state.EventsOf(messages.TypeObserverRestarted) {
			if ev.GetObserver().GetActor() == name {
				return true
			}
		}
		return false
	}

	sys.Root.Send(supervisor.PID(sys, protocol.TaskManager), "task-manager bug")
	require.Eventually(t, func() bool { return restarted(protocol.TaskManager) }, actortest.Wait, 5*time.Millisecond)
	require.Eventually(t, func() bool { return len(started()) == 4 }, actortest.Wait, 5*time.Millisecond, "the observers did not start again")
	for _, ev := range started()[2:] {
		assert.Equal(t, applied.Id, ev.CorrelationId, "in the chain of the policy.applied that started them first")
	}

	loads := func() int {
		n := 0
		for _, m := range state.Messages() {
			if _, ok := m.(*protocol.PoliciesLoaded); ok {
				n++
			}
		}
		return n
	}
	before, stopped := loads(), len(state.EventsOf(messages.TypeObserverStopped))
	sys.Root.Send(supervisor.PID(sys, protocol.PolicyManager), "policy-manager bug")
	require.Eventually(t, func() bool { return restarted(protocol.PolicyManager) && loads() > before }, actortest.Wait, 5*time.Millisecond,
		"the restarted policy-manager did not finish its first round")
	assert.Equal(t, 1, policyEvents(), "neither restart made a policy event")
	assert.Len(t, state.EventsOf(messages.TypeObserverStopped), stopped, "the policy-manager's restart stopped nothing")
	assert.Len(t, started(), 4)
}

// The daemon's logger names the supervisor as the actor of its lines
// (cmd/observerd): a child's failure names the child under a key of its
// own, so that each key appears once per JSON line.
func TestAChildsFailureIsLoggedWithEachKeyOnce(t *testing.T) {
	sys, _ := actortest.SystemAndLogger(t)
	actortest.NewRecorder(t, sys, protocol.Supervisor+"/"+protocol.StateManager)
	var out actortest.SyncBuffer
	log := zerolog.New(&out).With().Str("actor", protocol.Supervisor).Logger()
	var starts atomic.Int32
	flaky := actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*actor.Started); ok && starts.Add(1) == 1 {
			panic(errors.New("flaky cannot start"))
		}
	})
	policy := restart.Policy{MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, GiveUpAt: 3, Window: time.Minute}
	spawn(t, sys, supervisor.Options{Children: []supervisor.Child{{Name: "flaky", Props: flaky}}, Supervision: policy, Log: log})

	require.Eventually(t, func() bool { return strings.Contains(out.String(), messages.TypeObserverRestarted) },
		actortest.Wait, 5*time.Millisecond, "the restart is logged")
	lines, err := jsonlog.Lines([]byte(out.String()))
	require.NoError(t, err, "each key once per line")
	var failed map[string]any
	for _, l := range lines {
		if l["message"] == messages.TypeObserverFailed {
			failed = l
		}
	}
	require.NotNil(t, failed, "the failure is logged")
	assert.Equal(t, protocol.Supervisor, failed["actor"])
	assert.Equal(t, "flaky", failed["child"])
}
