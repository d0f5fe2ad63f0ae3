package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
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
	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/actors/restart"
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

// socketDir returns a new directory for a socket: t.TempDir() can be too
// long for a socket's path (at most 107 bytes).
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "adm")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

type fixture struct {
	sys    *actor.ActorSystem
	state  *actortest.Recorder
	task   *actortest.Recorder
	broker *actortest.Recorder
	pid    *actor.PID
	base   string       // the TCP server's URL
	socket string       // the socket's path
	unix   *http.Client // a client of the socket, as root
	reg    *prometheus.Registry
	snap   atomic.Pointer[protocol.Snapshot]
	// clock is the admin's: rates refill and snapshots age only when the
	// test advances it.
	clock *actortest.Clock
}

// unixBase is the URL of the socket's API for unixClient.
const unixBase = "http://localhost"

// setup starts the admin actor, serving TCP and a socket, asking
// recorders standing in for the state-manager and the task-manager (which
// carries out every command); answer says whether the state-manager
// answers GetState (with f.snap). opts change the actor's options.
func setup(t *testing.T, answer bool, opts ...func(*admin.Options)) *fixture {
	t.Helper()
	sys, log := actortest.SystemAndLogger(t)
	f := &fixture{sys: sys, state: actortest.NewRecorder(t, sys, "state-manager"), task: actortest.NewRecorder(t, sys, "task-manager"),
		reg: prometheus.NewRegistry(), clock: actortest.NewClock()}
	f.snap.Store(&protocol.Snapshot{Node: "node-1"})
	f.broker = actortest.NewRecorder(t, sys, "broker")
	f.broker.Respond(func(msg any) any {
		if _, ok := msg.(*protocol.GetOutboxStats); ok {
			return outboxStats
		}
		return nil
	})
	if answer {
		f.state.Respond(func(msg any) any {
			if _, ok := msg.(*protocol.GetState); ok {
				s := *f.snap.Load()
				return &s
			}
			return nil
		})
	}
	f.task.Respond(func(any) any { return &protocol.CommandDone{} })
	addr := freeAddr(t)
	f.base = "http://" + addr
	o := admin.Options{Listen: addr, Socket: filepath.Join(socketDir(t), "admin.sock"), State: f.state.PID, Broker: f.broker.PID,
		Task: f.task.PID, Metrics: f.reg, Now: f.clock.Now, Log: log}
	for _, opt := range opts {
		opt(&o)
	}
	f.socket, f.unix = o.Socket, unixClient(o.Socket)
	f.pid = sys.Root.Spawn(admin.Props(o))
	t.Cleanup(func() { _ = sys.Root.StopFuture(f.pid).Wait() })
	// Poll until the servers are up.
	require.Eventually(t, func() bool {
		for _, d := range [][2]string{{"tcp", o.Listen}, {"unix", o.Socket}} {
			if d[1] == "" {
				continue
			}
			c, err := net.DialTimeout(d[0], d[1], 100*time.Millisecond)
			if err != nil {
				return false
			}
			_ = c.Close()
		}
		return true
	}, actortest.Wait, 5*time.Millisecond, "the admin servers did not come up on %s and %s", o.Listen, o.Socket)
	return f
}

// unixClient is an HTTP client of the socket at path.
func unixClient(path string) *http.Client {
	return &http.Client{Timeout: actortest.Wait, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}}
}

var client = &http.Client{Timeout: actortest.Wait}

// later moves the admin's clock past the age of a snapshot it may serve,
// and past any rate limit's refusal.
func (f *fixture) later() { f.clock.Advance(10 * time.Second) }

// outboxStats is what the broker stub answers.
var outboxStats = &protocol.OutboxSnapshot{Events: 3, Bytes: 900, LastSequence: 77}

func get(t *testing.T, url string) (int, http.Header, []byte) {
	t.Helper()
	return do(t, client, http.MethodGet, url, nil)
}

// do sends a request with headers (Host sets the Host) and returns the
// answer.
func do(t *testing.T, c *http.Client, method, url string, header map[string]string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	require.NoError(t, err)
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
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
	actortest.WaitMessage[*protocol.GetState](t, f.state, nil)
}

func TestReadyz(t *testing.T) {
	f := setup(t, true)
	f.snap.Store(&protocol.Snapshot{Node: "node-1", Broker: protocol.BrokerStatus{Connected: false, LastError: "dial tcp 127.0.0.1:5671: connect: connection refused"}})

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
	f.snap.Store(&protocol.Snapshot{Node: "node-1", Broker: protocol.BrokerStatus{Connected: true}})
	f.later()
	code, _, body = get(t, f.base+"/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	require.NoError(t, json.Unmarshal(body, &notReady))
	assert.Equal(t, []string{"policies not loaded yet"}, notReady.Reasons)

	// Ready once the broker is connected and the policies are loaded.
	f.snap.Store(&protocol.Snapshot{Node: "node-1", Broker: protocol.BrokerStatus{Connected: true}, PoliciesLoaded: true})
	f.later()
	code, _, body = get(t, f.base+"/readyz")
	assert.Equal(t, http.StatusOK, code)
	assert.JSONEq(t, `{"ready": true}`, string(body))
}

func TestState(t *testing.T) {
	f := setup(t, true)
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.snap.Store(&protocol.Snapshot{
		Node:           "node-1",
		Broker:         protocol.BrokerStatus{Connected: true, URL: "amqps://observer@localhost:5671/"},
		PoliciesLoaded: true,
		Policies:       []string{"web"},
		Observers: []protocol.ObserverSnapshot{
			{Path: "observer/web/health", Kind: "http", State: "up", LastResult: "ok", LastTime: when, Observations: 7},
			{Path: "observer/web/port", Kind: "tcp", State: "down", LastResult: "error", LastTime: when, ConsecutiveFailures: 3, Observations: 9},
		},
		EventsEmitted: 42,
	})
	code, header, body := get(t, f.base+"/v1/state")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "application/json", header.Get("Content-Type"))
	var got protocol.Snapshot
	require.NoError(t, json.Unmarshal(body, &got), "not JSON: %s", body)
	want := *f.snap.Load()
	want.Outbox = &protocol.OutboxSnapshot{Events: 3, Bytes: 900, LastSequence: 77}
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
	f := setup(t, false, func(o *admin.Options) { o.Metrics = reg })

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

func TestMetricsWithoutRegistryIsNotFound(t *testing.T) {
	f := setup(t, true, func(o *admin.Options) { o.Metrics = nil })
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

func TestStopClosesTheServers(t *testing.T) {
	f := setup(t, true)
	code, _, _ := get(t, f.base+"/healthz")
	require.Equal(t, http.StatusOK, code)
	code, _, _ = do(t, f.unix, http.MethodGet, unixBase+"/healthz", nil)
	require.Equal(t, http.StatusOK, code)
	require.NoError(t, f.sys.Root.StopFuture(f.pid).Wait())
	_, err := client.Get(f.base + "/healthz")
	require.Error(t, err, "the server still answers after the actor stopped")
	assert.NoFileExists(t, f.socket, "the socket is removed on stop")
}

func TestListenFailureFailsTheActor(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = taken.Close() })
	tests := []struct {
		name    string
		prepare func(t *testing.T, o *admin.Options)
		reason  func(o admin.Options) string
		after   func(t *testing.T, o admin.Options)
	}{
		{
			name:    "the port is taken",
			prepare: func(t *testing.T, o *admin.Options) { o.Listen = taken.Addr().String() },
			reason:  func(admin.Options) string { return "admin listen: " },
			after: func(t *testing.T, o admin.Options) {
				assert.NoFileExists(t, o.Socket, "the socket listened on before the port failed is closed")
			},
		},
		{
			name: "a file is where the socket goes",
			prepare: func(t *testing.T, o *admin.Options) {
				require.NoError(t, os.WriteFile(o.Socket, []byte("keep me"), 0o600))
			},
			reason: func(o admin.Options) string { return "admin socket: " + o.Socket + " exists and is not a socket" },
			after: func(t *testing.T, o admin.Options) {
				assert.Equal(t, "keep me", string(mustRead(t, o.Socket)), "the file is left alone")
			},
		},
		{
			name: "another process serves the socket",
			prepare: func(t *testing.T, o *admin.Options) {
				ln, err := net.Listen("unix", o.Socket)
				require.NoError(t, err)
				t.Cleanup(func() { _ = ln.Close() })
			},
			reason: func(o admin.Options) string { return "admin socket: " + o.Socket + " is in use" },
		},
		{
			name:    "other users can write to the socket's directory",
			prepare: func(t *testing.T, o *admin.Options) { require.NoError(t, os.Chmod(filepath.Dir(o.Socket), 0o777)) },
			reason:  func(admin.Options) string { return "is writable by other users (mode 0777)" },
		},
		{
			name:    "the socket's group does not exist",
			prepare: func(t *testing.T, o *admin.Options) { o.SocketGroup = "no-such-group-here" },
			reason: func(admin.Options) string {
				return "admin socket: group no-such-group-here: no group of that name on this host"
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys, log := actortest.SystemAndLogger(t)
			o := admin.Options{Listen: freeAddr(t), Socket: filepath.Join(socketDir(t), "admin.sock"), Log: log}
			tt.prepare(t, &o)
			gaveUp := make(chan restart.Failure, 1)
			strategy := restart.New(restart.Policy{MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond, GiveUpAt: 2, Window: time.Minute})
			parent := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
				switch msg := ctx.Message().(type) {
				case *actor.Started:
					ctx.Spawn(admin.Props(o))
				case *restart.GaveUp:
					gaveUp <- msg.Failure
				}
			}, actor.WithSupervisor(strategy)))
			t.Cleanup(func() { _ = sys.Root.StopFuture(parent).Wait() })
			select {
			case f := <-gaveUp:
				assert.Contains(t, f.Reason.Error(), tt.reason(o))
				assert.Equal(t, 2, f.Failures, "restarted once with backoff, then given up")
			case <-time.After(actortest.Wait):
				t.Fatal("the admin actor did not fail")
			}
			if tt.after != nil {
				tt.after(t, o)
			}
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

func TestListenMovesTheServer(t *testing.T) {
	f := setup(t, true)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()

	// An address that cannot be listened on leaves the old one serving.
	res, err := f.sys.Root.RequestFuture(f.pid, &protocol.Listen{Addr: taken.Addr().String()}, actortest.Wait).Result()
	require.NoError(t, err)
	assert.ErrorContains(t, res.(*protocol.Listened).Err, "address already in use")
	code, _, _ := get(t, f.base+"/healthz")
	assert.Equal(t, http.StatusOK, code)

	moved := freeAddr(t)
	f.sys.Root.Send(f.pid, &protocol.Listen{Addr: moved})
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
	f.sys.Root.Send(f.pid, &protocol.Listen{Addr: ""})
	require.Eventually(t, func() bool {
		_, err := client.Get("http://" + moved + "/healthz")
		return err != nil
	}, actortest.Wait, 5*time.Millisecond, "still serving")
}
