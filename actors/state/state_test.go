package state_test

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	_ "github.com/polar/observerd/actors/observer/kinds/all" // latency by kind
	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/actors/state"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/test/actortest"
)

const (
	node    = "node-1.example"
	version = "1.2.3"
	path    = "observer/web/health"
)

type fixture struct {
	sys    *actor.ActorSystem
	broker *actortest.Recorder
	pid    *actor.PID
}

func setup(t *testing.T) *fixture {
	t.Helper()
	sys, log := actortest.SystemAndLogger(t)
	f := &fixture{sys: sys, broker: actortest.NewRecorder(t, sys, "broker")}
	f.pid = sys.Root.Spawn(state.Props(state.Options{Node: node, Version: version, Broker: f.broker.PID, Log: log}))
	t.Cleanup(func() { _ = sys.Root.StopFuture(f.pid).Wait() })
	return f
}

// emit sends ev as emitted at path: an actor's name, or
// observer/<policy>/<name> (these tests name emitters as sources do).
func (f *fixture) emit(path string, ev *messages.Event) {
	f.sys.Root.Send(f.pid, &protocol.Emit{From: emitterAt(path), Event: ev})
}

func emitterAt(path string) protocol.Emitter {
	if rest, ok := strings.CutPrefix(path, "observer/"); ok {
		pol, name, _ := strings.Cut(rest, "/")
		return protocol.ObserverEmitter(pol, name)
	}
	return protocol.ActorEmitter(path)
}

func (f *fixture) snapshot(t *testing.T) *protocol.Snapshot {
	t.Helper()
	res, err := f.sys.Root.RequestFuture(f.pid, &protocol.GetState{}, actortest.Wait).Result()
	require.NoError(t, err)
	s, ok := res.(*protocol.Snapshot)
	require.True(t, ok, "GetState answered %T", res)
	return s
}

// published waits until n events were published to the broker.
func (f *fixture) published(t *testing.T, n int) []*messages.Event {
	t.Helper()
	require.Eventually(t, func() bool { return len(f.broker.Events()) >= n }, actortest.Wait, 5*time.Millisecond,
		"want %d published events", n)
	for _, m := range f.broker.Messages() {
		_, ok := m.(*protocol.Publish)
		require.True(t, ok, "the broker was sent a %T", m)
	}
	return f.broker.Events()
}

func observation(result messages.Result, subject, correlation string) *messages.Event {
	ev := messages.NewEvent(messages.TypeObservationHTTP)
	ev.Subject = subject
	ev.CorrelationId = correlation
	ev.Policy = &messages.PolicyRef{Name: "web", Revision: "abc123"}
	ev.Data = &messages.Event_Http{Http: &messages.HttpObservation{Url: "http://127.0.0.1/healthz", Result: result}}
	return ev
}

func TestEmitStampsAndPublishes(t *testing.T) {
	tests := []struct {
		name        string
		path        string
		subject     string
		wantSubject string
		wantSource  string
	}{
		{"observation with a subject", path, "web", "web", "observerd://node-1.example/observer/web/health"},
		{"subject defaults to the node", "policy-manager", "", node, "observerd://node-1.example/policy-manager"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			ev := observation(messages.Result_RESULT_OK, tc.subject, "corr-1")
			when := ev.Time.AsTime()
			before := time.Now()
			f.emit(tc.path, ev)

			got := f.published(t, 1)[0]
			assert.Equal(t, ev.Id, got.Id, "the event keeps its id")
			assert.Equal(t, messages.TypeObservationHTTP, got.Type)
			assert.Equal(t, node, got.Node)
			assert.Equal(t, tc.wantSource, got.Source)
			assert.Equal(t, tc.wantSubject, got.Subject)
			assert.Equal(t, when, got.Time.AsTime(), "the event's own time is kept")
			assert.Equal(t, "corr-1", got.CorrelationId)
			assert.Zero(t, got.Sequence, "the broker assigns the sequence")
			require.Len(t, got.Provenance, 1)
			hop := got.Provenance[0]
			assert.Equal(t, "observerd", hop.Service)
			assert.Equal(t, version, hop.Version)
			assert.Equal(t, node, hop.Node)
			assert.WithinRange(t, hop.Time.AsTime(), before.Add(-time.Second), time.Now().Add(time.Second))
		})
	}
}

func TestEmitSetsAMissingTime(t *testing.T) {
	f := setup(t)
	ev := messages.NewEvent(messages.TypePolicyApplied)
	ev.Time = nil
	before := time.Now()
	f.emit("policy-manager", ev)
	got := f.published(t, 1)[0]
	require.NotNil(t, got.Time)
	assert.WithinRange(t, got.Time.AsTime(), before.Add(-time.Second), time.Now().Add(time.Second))
}

func stateChanges(evs []*messages.Event) []*messages.Event {
	var out []*messages.Event
	for _, ev := range evs {
		if ev.Type == messages.TypeStateChanged {
			out = append(out, ev)
		}
	}
	return out
}

func TestTransitions(t *testing.T) {
	const (
		ok      = messages.Result_RESULT_OK
		failed  = messages.Result_RESULT_FAILED
		timeout = messages.Result_RESULT_TIMEOUT
		errored = messages.Result_RESULT_ERROR

		unknown  = messages.ObserverState_OBSERVER_STATE_UNKNOWN
		up       = messages.ObserverState_OBSERVER_STATE_UP
		degraded = messages.ObserverState_OBSERVER_STATE_DEGRADED
		down     = messages.ObserverState_OBSERVER_STATE_DOWN
	)
	type change struct {
		cause    int // index of the causing observation
		old, new messages.ObserverState
		failures int32
		severity messages.Severity
		reason   string
	}
	flapping := []messages.Result{ok, failed, ok, failed, ok, failed, ok, failed}
	stable := make([]messages.Result, state.FlapIntervals+2)
	for i := range stable {
		stable[i] = ok
	}
	tests := []struct {
		name       string
		thresholds *policy.Thresholds // nil: no spec, the defaults
		results    []messages.Result
		want       []change
	}{
		{
			name:    "up, down at down_after, up again: two changes after the first",
			results: []messages.Result{ok, ok, failed, timeout, errored, failed, ok, ok},
			want: []change{
				{0, unknown, up, 0, messages.Severity_SEVERITY_INFO, ""},
				{4, up, down, 3, messages.Severity_SEVERITY_HIGH, "3 consecutive failures (down_after 3)"},
				{6, down, up, 0, messages.Severity_SEVERITY_INFO, ""},
			},
		},
		{
			name:    "fewer failures than down_after change nothing",
			results: []messages.Result{ok, failed, failed, ok, failed, failed, ok},
			want:    []change{{0, unknown, up, 0, messages.Severity_SEVERITY_INFO, ""}},
		},
		{
			name:    "unknown until down_after failures",
			results: []messages.Result{failed, failed, failed},
			want:    []change{{2, unknown, down, 3, messages.Severity_SEVERITY_HIGH, "3 consecutive failures (down_after 3)"}},
		},
		{
			name:       "down_after 1 goes down at once, up_after 2 needs two successes",
			thresholds: &policy.Thresholds{DownAfter: 1, UpAfter: 2},
			results:    []messages.Result{ok, failed, ok, ok, ok},
			want: []change{
				{0, unknown, up, 0, messages.Severity_SEVERITY_INFO, ""},
				{1, up, down, 1, messages.Severity_SEVERITY_HIGH, "1 consecutive failures (down_after 1)"},
				{3, down, up, 0, messages.Severity_SEVERITY_INFO, ""},
			},
		},
		{
			name:       "flapping is damped into degraded until stable for the window",
			thresholds: &policy.Thresholds{DownAfter: 1, UpAfter: 1},
			results:    append(append(flapping, stable...), failed),
			want: []change{
				{0, unknown, up, 0, messages.Severity_SEVERITY_INFO, ""},
				{1, up, down, 1, messages.Severity_SEVERITY_HIGH, "1 consecutive failures (down_after 1)"},
				{2, down, up, 0, messages.Severity_SEVERITY_INFO, ""},
				{3, up, down, 1, messages.Severity_SEVERITY_HIGH, "1 consecutive failures (down_after 1)"},
				{4, down, degraded, 0, messages.Severity_SEVERITY_MEDIUM, "flapping: 4 changes between up and down within 20s"},
				// The last flip is the first success after the flapping, at
				// 8; 21 s later it is out of the 20 s window.
				{len(flapping) + state.FlapIntervals + 1, degraded, up, 0, messages.Severity_SEVERITY_INFO, "stable for 20s"},
				{len(flapping) + len(stable), up, down, 1, messages.Severity_SEVERITY_HIGH, "1 consecutive failures (down_after 1)"},
			},
		},
		{
			name:    "no change, no event",
			results: []messages.Result{ok, ok, ok, ok},
			want:    []change{{0, unknown, up, 0, messages.Severity_SEVERITY_INFO, ""}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			var spec *policy.Observer
			if tc.thresholds != nil {
				spec = &policy.Observer{Name: "health", Interval: yamldoc.Duration(time.Second), Thresholds: *tc.thresholds}
			}
			// One observation a second, as the spec's interval says.
			start := time.Now()
			var sent []*messages.Event
			for i, r := range tc.results {
				ev := observation(r, "web", "corr-"+strconv.Itoa(i))
				ev.Time = timestamppb.New(start.Add(time.Duration(i) * time.Second))
				sent = append(sent, ev)
				f.sys.Root.Send(f.pid, &protocol.Emit{From: emitterAt(path), Event: ev, Observer: spec})
			}
			// A sentinel after the observations: once it is published,
			// everything they caused was published before it.
			f.emit("policy-manager", messages.NewEvent(messages.TypePolicyApplied))
			f.broker.WaitEvent(t, messages.TypePolicyApplied, nil)

			all := f.broker.Events()
			changes := stateChanges(all)
			require.Len(t, changes, len(tc.want), "state.changed events")
			for i, w := range tc.want {
				ev := changes[i]
				cause := sent[w.cause]
				sc := ev.GetStateChange()
				require.NotNil(t, sc)
				assert.Equal(t, w.old, sc.OldState, "change %d", i)
				assert.Equal(t, w.new, sc.NewState, "change %d", i)
				assert.Equal(t, w.failures, sc.ConsecutiveFailures, "change %d", i)
				assert.Equal(t, w.reason, sc.Reason, "change %d", i)
				assert.Equal(t, tc.results[w.cause], sc.LastResult, "change %d", i)
				assert.Equal(t, path, sc.Observer, "change %d", i)
				assert.Equal(t, w.severity, ev.Severity, "change %d", i)
				assert.Equal(t, cause.Id, ev.CausationId, "change %d is caused by observation %d", i, w.cause)
				assert.Equal(t, cause.CorrelationId, ev.CorrelationId, "change %d copies the correlation", i)
				assert.Equal(t, messages.Category_CATEGORY_STATE, ev.Category)
				assert.Equal(t, "web", ev.Subject)
				assert.Equal(t, "web", ev.GetPolicy().GetName())
				assert.Equal(t, node, ev.Node)
				assert.Equal(t, messages.Source(node, path), ev.Source)
				require.Len(t, ev.Provenance, 1)
				assert.NotEqual(t, cause.Id, ev.Id)
			}
			// Each change is published right after its observation.
			for i, ev := range all {
				if ev.Type == messages.TypeStateChanged {
					require.Positive(t, i)
					assert.Equal(t, all[i-1].Id, ev.CausationId, "a state.changed follows its observation")
				}
			}
		})
	}
}

func TestGetStateSnapshot(t *testing.T) {
	f := setup(t)
	started := messages.NewEvent(messages.TypeObserverStarted)
	started.Data = &messages.Event_Observer{Observer: &messages.ObserverLifecycle{Actor: "observer/web/metrics", Observer: "metrics", Kind: "prometheus"}}
	f.emit("observer/web/metrics", started)
	f.emit(path, observation(messages.Result_RESULT_OK, "web", ""))
	f.emit(path, observation(messages.Result_RESULT_FAILED, "web", ""))
	last := observation(messages.Result_RESULT_TIMEOUT, "web", "")
	f.emit(path, last)

	s := f.snapshot(t)
	assert.Equal(t, node, s.Node)
	require.Len(t, s.Observers, 2)
	// Sorted by path.
	health, metrics := s.Observers[0], s.Observers[1]
	assert.Equal(t, protocol.ObserverSnapshot{Path: "observer/web/metrics", Kind: "prometheus", State: "unknown", Status: "running", LastResult: "unspecified"}, metrics)
	assert.Equal(t, path, health.Path)
	assert.Equal(t, "http", health.Kind)
	assert.Equal(t, "up", health.State, "two failures are below down_after")
	assert.Equal(t, "timeout", health.LastResult)
	assert.Equal(t, 2, health.ConsecutiveFailures)
	assert.Equal(t, uint64(3), health.Observations)
	assert.True(t, last.Time.AsTime().Equal(health.LastTime), "LastTime is the last observation's time")
	// 1 observer.started + 3 observations + 1 state.changed.
	assert.Equal(t, uint64(5), s.EventsEmitted)

	// A stopped observer leaves the state.
	stopped := messages.NewEvent(messages.TypeObserverStopped)
	f.emit("observer/web/metrics", stopped)
	s = f.snapshot(t)
	require.Len(t, s.Observers, 1)
	assert.Equal(t, path, s.Observers[0].Path)

	// A paused one stays, and says so.
	paused := lifecycleOf(messages.TypeObserverStopped, path, protocol.StopReasonPaused)
	f.emit(path, paused)
	s = f.snapshot(t)
	require.Len(t, s.Observers, 1)
	assert.Equal(t, "paused", s.Observers[0].Status)

	// A quarantined one stays, and says so.
	q := messages.NewEvent(messages.TypeObserverQuarantined)
	q.Data = &messages.Event_Observer{Observer: &messages.ObserverLifecycle{Actor: path, Reason: "boom"}}
	f.emit(path, q)
	s = f.snapshot(t)
	require.Len(t, s.Observers, 1)
	assert.Equal(t, "quarantined", s.Observers[0].Status)
	assert.Equal(t, "boom", s.Observers[0].LastError)
}

// lifecycleOf is an observer.* event of actor.
func lifecycleOf(typ, actor, reason string) *messages.Event {
	ev := messages.NewEvent(typ)
	ev.Policy = &messages.PolicyRef{Name: "web", Revision: "r1"}
	ev.Data = &messages.Event_Observer{Observer: &messages.ObserverLifecycle{Actor: actor, Kind: "http", Reason: reason}}
	return ev
}

func TestLifecyclesAndMetrics(t *testing.T) {
	sys, log := actortest.SystemAndLogger(t)
	broker := actortest.NewRecorder(t, sys, "broker")
	reg := prometheus.NewRegistry()
	pid := sys.Root.Spawn(state.Props(state.Options{Node: node, Version: version, Broker: broker.PID, Log: log,
		Actors: []string{"broker", "state-manager", "task-manager"}, Metrics: reg}))
	t.Cleanup(func() { _ = sys.Root.StopFuture(pid).Wait() })
	f := &fixture{sys: sys, broker: broker, pid: pid}

	f.emit(path, lifecycleOf(messages.TypeObserverStarted, path, ""))
	ok := observation(messages.Result_RESULT_OK, "web", "")
	ok.GetHttp().Latency = durationpb.New(20 * time.Millisecond)
	f.emit(path, ok)
	f.emit(path, lifecycleOf(messages.TypeObserverFailed, path, "panic: boom"))
	f.emit("task-manager", lifecycleOf(messages.TypeObserverFailed, "task-manager", "bug"))
	f.emit("task-manager", lifecycleOf(messages.TypeObserverRestarted, "task-manager", "bug"))
	f.emit("policy-manager", lifecycleOf(messages.TypeObserverFailed, "policy-manager", "disk"))
	f.emit("policy-manager", messages.NewEvent(messages.TypePolicyApplied))
	f.emit("policy-manager", messages.NewEvent(messages.TypePolicyRejected))

	s := f.snapshot(t)
	assert.Equal(t, version, s.Version)
	assert.WithinDuration(t, time.Now(), s.Started, time.Minute)
	var actors []string
	for _, a := range s.Actors {
		actors = append(actors, fmt.Sprintf("%s %s %d/%d %s", a.Path, a.Status, a.Failures, a.Restarts, a.LastError))
	}
	assert.Equal(t, []string{
		"broker running 0/0 ",
		"state-manager running 0/0 ",
		"task-manager running 1/1 bug",
		"policy-manager restarting 1/0 disk",
	}, actors, "in start order, then the others")
	require.Len(t, s.Observers, 1)
	o := s.Observers[0]
	assert.Equal(t, "web", o.Policy)
	assert.Equal(t, "r1", o.Revision)
	assert.Equal(t, "restarting", o.Status)
	assert.Equal(t, 1, o.Failures)
	assert.Equal(t, "panic: boom", o.LastError)
	assert.Equal(t, "up", o.State)
	assert.InDelta(t, 0.020, o.LastLatency, 1e-9, "the latency its last observation measured")

	// The metrics count what the events said.
	families, err := reg.Gather()
	require.NoError(t, err)
	got := map[string]float64{}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.GetCounter() != nil:
				got[key] = m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				got[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	assert.Equal(t, map[string]float64{
		"observerd_observations_total,observer=" + path + ",result=ok": 1,
		"observerd_observation_latency_seconds,kind=http":              1,
		"observerd_state_changes_total,observer=" + path + ",state=up": 1,
		"observerd_actor_failures_total,actor=" + path:                 1,
		"observerd_actor_failures_total,actor=task-manager":            1,
		"observerd_actor_failures_total,actor=policy-manager":          1,
		"observerd_actor_restarts_total,actor=task-manager":            1,
		"observerd_policy_reloads_total,result=applied":                1,
		"observerd_policy_reloads_total,result=rejected":               1,
	}, got)
}

func TestGetStateSnapshotIsACopy(t *testing.T) {
	f := setup(t)
	f.sys.Root.Send(f.pid, &protocol.PoliciesLoaded{Applied: []string{"web"}, Rejected: []string{"/p/bad.yaml"}})
	s := f.snapshot(t)
	require.Equal(t, []string{"web"}, s.Policies)
	s.Policies[0] = "changed"
	s.Rejected[0] = "changed"
	again := f.snapshot(t)
	assert.Equal(t, []string{"web"}, again.Policies)
	assert.Equal(t, []string{"/p/bad.yaml"}, again.Rejected)
}

func TestReadiness(t *testing.T) {
	tests := []struct {
		name    string
		send    []any
		ready   bool
		reasons []string
	}{
		{
			name:    "nothing known yet",
			ready:   false,
			reasons: []string{"broker not connected", "policies not loaded yet"},
		},
		{
			name:    "broker failed to connect",
			send:    []any{&protocol.BrokerStatus{Connected: false, URL: "amqps://observer@localhost:5671/", LastError: "dial tcp 127.0.0.1:5671: connect: connection refused"}},
			ready:   false,
			reasons: []string{"broker not connected: dial tcp 127.0.0.1:5671: connect: connection refused", "policies not loaded yet"},
		},
		{
			name:    "broker connected, policies not loaded",
			send:    []any{&protocol.BrokerStatus{Connected: true}},
			ready:   false,
			reasons: []string{"policies not loaded yet"},
		},
		{
			name:    "policies loaded, broker not connected",
			send:    []any{&protocol.PoliciesLoaded{Applied: []string{"web"}}},
			ready:   false,
			reasons: []string{"broker not connected"},
		},
		{
			name:    "broker blocked",
			send:    []any{&protocol.BrokerStatus{Connected: true, Blocked: true, LastError: "low on memory"}, &protocol.PoliciesLoaded{}},
			ready:   false,
			reasons: []string{"broker blocked publishing: low on memory"},
		},
		{
			name:    "returned and nacked events are told apart",
			send:    []any{&protocol.BrokerStatus{Connected: true, URL: "amqps://b@n2:5671/", Unroutable: true, Nacked: true}, &protocol.PoliciesLoaded{}},
			ready:   false,
			reasons: []string{"events returned unroutable (no queue bound to their routing key): kept in the outbox and retried", "events nacked by RabbitMQ at amqps://b@n2:5671/ (a queue refused them or lost its leader): kept in the outbox and retried"},
		},
		{
			name:    "nacked only",
			send:    []any{&protocol.BrokerStatus{Connected: true, URL: "amqps://b@n2:5671/", Nacked: true}, &protocol.PoliciesLoaded{}},
			ready:   false,
			reasons: []string{"events nacked by RabbitMQ at amqps://b@n2:5671/ (a queue refused them or lost its leader): kept in the outbox and retried"},
		},
		{
			name:    "confirms do not come",
			send:    []any{&protocol.BrokerStatus{Connected: true, URL: "amqps://b@n3:5671/", Unconfirmed: true}, &protocol.PoliciesLoaded{}},
			ready:   false,
			reasons: []string{"RabbitMQ at amqps://b@n3:5671/ has not confirmed publications for 5s or more (a quorum queue without a majority?): events kept in the outbox"},
		},
		{
			name:  "connected and loaded",
			send:  []any{&protocol.BrokerStatus{Connected: true}, &protocol.PoliciesLoaded{Applied: []string{"web"}, Rejected: []string{"bad.yaml"}}},
			ready: true,
		},
		{
			name:  "loaded with every policy rejected is still ready",
			send:  []any{&protocol.BrokerStatus{Connected: true}, &protocol.PoliciesLoaded{Rejected: []string{"bad.yaml"}}},
			ready: true,
		},
		{
			name:    "the latest broker status wins",
			send:    []any{&protocol.PoliciesLoaded{}, &protocol.BrokerStatus{Connected: true}, &protocol.BrokerStatus{Connected: false, LastError: "connection lost"}},
			ready:   false,
			reasons: []string{"broker not connected: connection lost"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			for _, m := range tc.send {
				f.sys.Root.Send(f.pid, m)
			}
			s := f.snapshot(t)
			ready, reasons := s.Ready()
			assert.Equal(t, tc.ready, ready)
			assert.Equal(t, tc.reasons, reasons)
			for _, m := range tc.send {
				if m, ok := m.(*protocol.PoliciesLoaded); ok {
					assert.True(t, s.PoliciesLoaded)
					assert.Equal(t, m.Applied, s.Policies)
					assert.Equal(t, m.Rejected, s.Rejected)
				}
			}
			if b := lastBroker(tc.send); b != nil {
				assert.Equal(t, *b, s.Broker, "the snapshot holds the last broker status")
			}
			assert.Empty(t, f.broker.Messages(), "status messages are not events")
		})
	}
}

func lastBroker(msgs []any) *protocol.BrokerStatus {
	var b *protocol.BrokerStatus
	for _, m := range msgs {
		if s, ok := m.(*protocol.BrokerStatus); ok {
			b = s
		}
	}
	return b
}

func TestObserverListFollowsIncarnationsAndPolicies(t *testing.T) {
	f := setup(t)
	// A replaced incarnation stops before its replacement starts (the
	// task-manager waits): it stays listed meanwhile, with what it went
	// through, and the replacement runs on.
	f.emit(path, lifecycleOf(messages.TypeObserverStarted, path, ""))
	f.emit(path, lifecycleOf(messages.TypeObserverFailed, path, "boom"))
	f.emit(path, lifecycleOf(messages.TypeObserverStopped, path, protocol.StopReasonReplaced))
	s := f.snapshot(t)
	require.Len(t, s.Observers, 1, "a replaced observer stays listed")
	assert.Equal(t, 1, s.Observers[0].Failures, "what it went through stays counted")
	f.emit(path, lifecycleOf(messages.TypeObserverStarted, path, ""))
	s = f.snapshot(t)
	require.Len(t, s.Observers, 1)
	assert.Equal(t, "running", s.Observers[0].Status)
	assert.Equal(t, 1, s.Observers[0].Failures, "what its predecessor went through stays counted")

	// A quarantine after its stop (a give-up stops the child first), and
	// one of an observer that never started, are listed.
	other := "observer/web/broken"
	f.emit(path, lifecycleOf(messages.TypeObserverStopped, path, "stopped"))
	f.emit(path, lifecycleOf(messages.TypeObserverQuarantined, path, "trap"))
	f.emit(other, lifecycleOf(messages.TypeObserverQuarantined, other, "no plugin host"))
	s = f.snapshot(t)
	require.Len(t, s.Observers, 2)
	for _, o := range s.Observers {
		assert.Equal(t, "quarantined", o.Status, o.Path)
		assert.Equal(t, "web", o.Policy)
	}

	// A policy change that removes one, then the policy's removal, forget
	// them, quarantined or not.
	applied := messages.NewEvent(messages.TypePolicyApplied)
	applied.Data = &messages.Event_PolicyOutcome{PolicyOutcome: &messages.PolicyOutcome{Name: "web", Removed: []string{"broken"}}}
	f.emit("policy-manager", applied)
	require.Len(t, f.snapshot(t).Observers, 1)
	removed := messages.NewEvent(messages.TypePolicyRemoved)
	removed.Data = &messages.Event_PolicyOutcome{PolicyOutcome: &messages.PolicyOutcome{Name: "web", Removed: []string{"health"}}}
	f.emit("policy-manager", removed)
	assert.Empty(t, f.snapshot(t).Observers)
}

// A quarantine is followed by the stop of the quarantined child: the
// observer stays listed, quarantined with its reason, until its policy
// changes or it is resumed (the stop used to make it vanish from
// /v1/state, where an operator needs it most).
func TestQuarantinedObserverStaysListedAfterItsStop(t *testing.T) {
	f := setup(t)
	path := "observer/web/trap"
	started := lifecycleOf(messages.TypeObserverStarted, path, "")
	started.CorrelationId = "v1"
	q := lifecycleOf(messages.TypeObserverQuarantined, path, "trap: unreachable")
	q.CorrelationId = "v1"
	stopped := lifecycleOf(messages.TypeObserverStopped, path, "stopped")
	stopped.CorrelationId = "v1"
	f.emit(path, started)
	f.emit(path, q)
	f.emit(path, stopped)
	s := f.snapshot(t)
	require.Len(t, s.Observers, 1)
	assert.Equal(t, "quarantined", s.Observers[0].Status)
	assert.Equal(t, "trap: unreachable", s.Observers[0].LastError)

	// Resumed: a new incarnation starts, and is running.
	resumed := lifecycleOf(messages.TypeObserverStarted, path, "")
	resumed.CorrelationId = "v1"
	f.emit(path, resumed)
	assert.Equal(t, "running", f.snapshot(t).Observers[0].Status)
}

// pluginObservation is a plugin's observation with result r.
func pluginObservation(r messages.Result) *messages.Event {
	ev := messages.NewEvent("observation.plugin.threshold")
	ev.Category = messages.Category_CATEGORY_OBSERVATION
	ev.Subject = "web"
	ev.Policy = &messages.PolicyRef{Name: "web", Revision: "r1"}
	ev.Data = &messages.Event_Plugin{Plugin: &messages.PluginPayload{Plugin: "p.wasm", TypeSuffix: "threshold", Result: r}}
	return ev
}

// TestPluginObserver: a plugin's results drive its observer's state as a
// built-in's do (down after down_after failures, up again), it is listed
// as of kind wasm, and a warning (an invalid emit) is its last error,
// with no event.
func TestPluginObserver(t *testing.T) {
	f := setup(t)
	const plugin = "observer/web/plugin"
	f.emit(plugin, pluginObservation(messages.Result_RESULT_OK))
	for range 3 { // the default down_after
		f.emit(plugin, pluginObservation(messages.Result_RESULT_FAILED))
	}
	f.emit(plugin, pluginObservation(messages.Result_RESULT_OK)) // the default up_after is 1
	f.sys.Root.Send(f.pid, &protocol.ObserverWarning{From: emitterAt(plugin), Reason: "plugin p.wasm: invalid emit: 1 of 1 records rejected"})
	f.sys.Root.Send(f.pid, &protocol.ObserverWarning{From: emitterAt("observer/web/gone"), Reason: "of an observer not listed"})

	s := f.snapshot(t)
	require.Len(t, s.Observers, 1, "a warning lists no observer")
	o := s.Observers[0]
	assert.Equal(t, "wasm", o.Kind, "the policy's kind, not the event type's suffix")
	assert.Equal(t, "up", o.State)
	assert.Equal(t, "running", o.Status)
	assert.Equal(t, "plugin p.wasm: invalid emit: 1 of 1 records rejected", o.LastError)

	var states []string
	for _, ev := range f.published(t, 8) {
		if c := ev.GetStateChange(); c != nil {
			states = append(states, c.NewState.String())
		}
	}
	assert.Equal(t, []string{"OBSERVER_STATE_UP", "OBSERVER_STATE_DOWN", "OBSERVER_STATE_UP"}, states)
	assert.Len(t, f.broker.Events(), 8, "5 observations and 3 state changes; no event for the warning")
}

// TestRejections: the snapshot says why each rejected file is, the first
// line of its last policy.rejected, bounded, for as long as it stays
// rejected.
func TestRejections(t *testing.T) {
	f := setup(t)
	rejected := func(file, reason string) *messages.Event {
		ev := messages.NewEvent(messages.TypePolicyRejected)
		ev.Data = &messages.Event_PolicyOutcome{PolicyOutcome: &messages.PolicyOutcome{File: file, Reason: reason}}
		return ev
	}
	f.emit("policy-manager", rejected("/p/a.yaml", "/p/a.yaml:8:41: spec.observers[0].wasm.module: plugin x.wasm: does not export polar_abi_version () -> i32\n/p/a.yaml:9:1: bogus: unknown key"))
	f.emit("policy-manager", rejected("/p/b.yaml", "/p/b.yaml:1:1: "+strings.Repeat("é", 1000)))
	f.emit("policy-manager", rejected("/p/c.yaml", "/p/c.yaml:3:1: gone since"))
	f.sys.Root.Send(f.pid, &protocol.PoliciesLoaded{Applied: []string{"web"}, Rejected: []string{"/p/a.yaml", "/p/b.yaml"}})

	s := f.snapshot(t)
	assert.Equal(t, []string{"/p/a.yaml", "/p/b.yaml"}, s.Rejected)
	require.Len(t, s.Rejections, 2, "c.yaml is no longer rejected")
	assert.Equal(t, "/p/a.yaml:8:41: spec.observers[0].wasm.module: plugin x.wasm: does not export polar_abi_version () -> i32", s.Rejections["/p/a.yaml"])
	b := s.Rejections["/p/b.yaml"]
	assert.LessOrEqual(t, len(b), 1<<10+len("…"))
	assert.True(t, utf8.ValidString(b))

	f.sys.Root.Send(f.pid, &protocol.PoliciesLoaded{Applied: []string{"web", "a"}, Rejected: []string{"/p/b.yaml"}})
	assert.Equal(t, []string{"/p/b.yaml"}, slices.Collect(maps.Keys(f.snapshot(t).Rejections)), "a.yaml good again")
}
