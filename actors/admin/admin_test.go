package admin_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/admin"
	"github.com/polar/observerd/actors/broker"
	"github.com/polar/observerd/actors/supervision"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/actortest"
)

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

type fixture struct {
	sys   *actor.ActorSystem
	state *actortest.Recorder
	pid   *actor.PID
	base  string
	snap  atomic.Pointer[messages.Snapshot]
}

// setup starts the admin actor asking a recorder standing in for the
// state-manager; answer says whether it answers GetState (with f.snap).
func setup(t *testing.T, answer bool) *fixture {
	t.Helper()
	return setupWithMetrics(t, answer, nil)
}

// setupWithMetrics is setup with a Gatherer for /metrics.
func setupWithMetrics(t *testing.T, answer bool, metrics prometheus.Gatherer) *fixture {
	t.Helper()
	sys, log := actortest.SystemAndLogger(t)
	f := &fixture{sys: sys, state: actortest.NewRecorder(t, sys, "state-manager")}
	f.snap.Store(&messages.Snapshot{Node: "node-1"})
	brokerStub := actortest.NewRecorder(t, sys, "broker")
	brokerStub.Respond(func(msg any) any {
		if _, ok := msg.(*broker.GetStats); ok {
			return outboxStats
		}
		return nil
	})
	if answer {
		f.state.Respond(func(msg any) any {
			if _, ok := msg.(*messages.GetState); ok {
				s := *f.snap.Load()
				return &s
			}
			return nil
		})
	}
	addr := freeAddr(t)
	f.base = "http://" + addr
	f.pid = sys.Root.Spawn(admin.Props(admin.Options{Listen: addr, State: f.state.PID, Broker: brokerStub.PID, Metrics: metrics, Log: log}))
	t.Cleanup(func() { _ = sys.Root.StopFuture(f.pid).Wait() })
	// Poll until the server is up.
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	}, actortest.Wait, 5*time.Millisecond, "the admin server did not come up on %s", addr)
	return f
}

var client = &http.Client{Timeout: actortest.Wait}

// outboxStats is what the broker stub answers.
var outboxStats = broker.OutboxStats{Events: 3, Bytes: 900, LastSequence: 77}

func get(t *testing.T, url string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := client.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, body
}

func TestHealthz(t *testing.T) {
	f := setup(t, true)
	code, header, body := get(t, f.base+"/healthz")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "application/json", header.Get("Content-Type"))
	assert.JSONEq(t, `{"status": "ok"}`, string(body))
	// healthz asks the state-manager (the actor system answers).
	actortest.WaitMessage[*messages.GetState](t, f.state, nil)
}

func TestReadyz(t *testing.T) {
	f := setup(t, true)
	f.snap.Store(&messages.Snapshot{Node: "node-1", Broker: messages.BrokerStatus{Connected: false, LastError: "dial tcp 127.0.0.1:5671: connect: connection refused"}})

	code, _, body := get(t, f.base+"/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	var notReady struct {
		Ready   bool     `json:"ready"`
		Reasons []string `json:"reasons"`
	}
	require.NoError(t, json.Unmarshal(body, &notReady), string(body))
	assert.False(t, notReady.Ready)
	assert.Equal(t, []string{"broker not connected: dial tcp 127.0.0.1:5671: connect: connection refused", "policies not loaded yet"}, notReady.Reasons)

	// Half way there.
	f.snap.Store(&messages.Snapshot{Node: "node-1", Broker: messages.BrokerStatus{Connected: true}})
	code, _, body = get(t, f.base+"/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	require.NoError(t, json.Unmarshal(body, &notReady))
	assert.Equal(t, []string{"policies not loaded yet"}, notReady.Reasons)

	// Ready once the broker is connected and the policies are loaded.
	f.snap.Store(&messages.Snapshot{Node: "node-1", Broker: messages.BrokerStatus{Connected: true}, PoliciesLoaded: true})
	code, _, body = get(t, f.base+"/readyz")
	assert.Equal(t, http.StatusOK, code)
	assert.JSONEq(t, `{"ready": true}`, string(body))
}

func TestState(t *testing.T) {
	f := setup(t, true)
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.snap.Store(&messages.Snapshot{
		Node:           "node-1",
		Broker:         messages.BrokerStatus{Connected: true, URL: "amqps://observer@localhost:5671/"},
		PoliciesLoaded: true,
		Policies:       []string{"web"},
		Observers: []messages.ObserverSnapshot{
			{Path: "observer/web/health", Kind: "http", State: "up", LastResult: "ok", LastTime: when, Observations: 7},
			{Path: "observer/web/port", Kind: "tcp", State: "down", LastResult: "error", LastTime: when, ConsecutiveFailures: 3, Observations: 9},
		},
		EventsEmitted: 42,
	})
	code, header, body := get(t, f.base+"/v1/state")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "application/json", header.Get("Content-Type"))
	var got messages.Snapshot
	require.NoError(t, json.Unmarshal(body, &got), "not JSON: %s", body)
	want := *f.snap.Load()
	want.Outbox = &messages.OutboxSnapshot{Events: 3, Bytes: 900, LastSequence: 77}
	assert.Equal(t, want, got, "the state-manager's snapshot with the broker's outbox")

	// The documented field names.
	var raw map[string]any
	require.NoError(t, json.Unmarshal(body, &raw))
	for _, key := range []string{"node", "broker", "policies_loaded", "policies", "observers", "events_emitted", "outbox"} {
		assert.Contains(t, raw, key)
	}
	observers, ok := raw["observers"].([]any)
	require.True(t, ok)
	require.Len(t, observers, 2)
	first, ok := observers[0].(map[string]any)
	require.True(t, ok)
	assert.Equal(t, "observer/web/health", first["path"])
	assert.Equal(t, "up", first["state"])
	assert.Equal(t, "ok", first["last_result"])
}

func TestUnknownPathAndMethod(t *testing.T) {
	f := setup(t, true)
	code, _, _ := get(t, f.base+"/nope")
	assert.Equal(t, http.StatusNotFound, code)
	resp, err := client.Post(f.base+"/healthz", "text/plain", nil)
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	events := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "observerd_test_events_total", Help: "test"}, []string{"type"})
	reg.MustRegister(events)
	events.WithLabelValues("observation.http").Add(3)
	// A state-manager that does not answer does not hold /metrics up.
	f := setupWithMetrics(t, false, reg)

	code, header, body := get(t, f.base+"/metrics")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, header.Get("Content-Type"), "text/plain")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	require.NoError(t, err, string(body))
	require.Contains(t, families, "observerd_test_events_total")
	m := families["observerd_test_events_total"].GetMetric()
	require.Len(t, m, 1)
	assert.Equal(t, "observation.http", m[0].GetLabel()[0].GetValue())
	assert.Equal(t, 3.0, m[0].GetCounter().GetValue())
}

func TestMetricsWithoutGathererIsNotFound(t *testing.T) {
	f := setup(t, true)
	code, _, _ := get(t, f.base+"/metrics")
	assert.Equal(t, http.StatusNotFound, code)
}

func TestStateManagerNotAnswering(t *testing.T) {
	f := setup(t, false)
	tests := []struct {
		path string
		key  string
	}{
		{"/healthz", "reason"},
		{"/readyz", "reasons"},
		{"/v1/state", "error"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			code, _, body := get(t, f.base+tc.path)
			assert.Equal(t, http.StatusServiceUnavailable, code)
			assert.Less(t, time.Since(start), 5*time.Second, "answered too late")
			var m map[string]any
			require.NoError(t, json.Unmarshal(body, &m), string(body))
			assert.Contains(t, string(body), "ask state-manager")
			assert.Contains(t, m, tc.key)
		})
	}
}

func TestStopClosesTheServer(t *testing.T) {
	f := setup(t, true)
	code, _, _ := get(t, f.base+"/healthz")
	require.Equal(t, http.StatusOK, code)
	require.NoError(t, f.sys.Root.StopFuture(f.pid).Wait())
	_, err := client.Get(f.base + "/healthz")
	require.Error(t, err, "the server still answers after the actor stopped")
}

func TestListenFailureFailsTheActor(t *testing.T) {
	// The port is taken: the actor fails at start, under supervision.
	sys, log := actortest.SystemAndLogger(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })

	gaveUp := make(chan supervision.Failure, 1)
	strategy := supervision.New(supervision.Policy{MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond, GiveUpAt: 2, Window: time.Minute},
		supervision.Callbacks{GaveUp: func(f supervision.Failure) { gaveUp <- f }})
	parent := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*actor.Started); ok {
			ctx.Spawn(admin.Props(admin.Options{Listen: ln.Addr().String(), Log: log}))
		}
	}, actor.WithSupervisor(strategy)))
	t.Cleanup(func() { _ = sys.Root.StopFuture(parent).Wait() })
	select {
	case f := <-gaveUp:
		assert.Contains(t, f.Reason.Error(), "admin listen")
		assert.Equal(t, 2, f.Failures, "restarted once with backoff, then given up")
	case <-time.After(actortest.Wait):
		t.Fatal("the admin actor did not fail")
	}
}

func TestListenMovesTheServer(t *testing.T) {
	f := setup(t, true)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()

	// An address that cannot be listened on leaves the old one serving.
	res, err := f.sys.Root.RequestFuture(f.pid, &admin.Listen{Addr: taken.Addr().String()}, actortest.Wait).Result()
	require.NoError(t, err)
	assert.ErrorContains(t, res.(*admin.Listened).Err, "address already in use")
	code, _, _ := get(t, f.base+"/healthz")
	assert.Equal(t, http.StatusOK, code)

	moved := freeAddr(t)
	f.sys.Root.Send(f.pid, &admin.Listen{Addr: moved})
	require.Eventually(t, func() bool {
		resp, err := client.Get("http://" + moved + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, actortest.Wait, 5*time.Millisecond, "serving on the new address")
	_, err = client.Get(f.base + "/healthz")
	assert.Error(t, err, "the old address is closed")

	// "" stops serving.
	f.sys.Root.Send(f.pid, &admin.Listen{Addr: ""})
	require.Eventually(t, func() bool {
		_, err := client.Get("http://" + moved + "/healthz")
		return err != nil
	}, actortest.Wait, 5*time.Millisecond, "still serving")
}
