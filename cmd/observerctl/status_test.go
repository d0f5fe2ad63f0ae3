package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polar/observerd/actors/protocol"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// snapshotAt is a daemon's state at now, with a rejected policy, a failed
// manager and observers in every state and status.
func snapshotAt(now time.Time) *protocol.Snapshot {
	return &protocol.Snapshot{
		Node: "web-1.example", Version: "1.4.0", Started: now.Add(-2*time.Hour - 3*time.Minute),
		Broker:         protocol.BrokerStatus{Connected: true, URL: "amqps://observer@mq.example:5671/", Since: now.Add(-90 * time.Minute)},
		PoliciesLoaded: true, Policies: []string{"db", "web"},
		Rejected: []string{"/etc/observerd/policies.d/bad.yaml", "/etc/observerd/policies.d/cache.yaml", "/etc/observerd/policies.d/plugin.yaml"},
		Rejections: map[string]string{
			"/etc/observerd/policies.d/bad.yaml": "/etc/observerd/policies.d/bad.yaml:7:44: spec.observers[0].interval: must be at least 1s (limits.min_interval of the daemon config), got 0s",
			"/etc/observerd/policies.d/plugin.yaml": "/etc/observerd/policies.d/plugin.yaml:8:41: spec.observers[0].wasm.module: plugin noabi.wasm: " +
				"does not export polar_abi_version () -> i32",
		},
		Actors: []protocol.ActorSnapshot{
			{Path: "broker", Status: "running"},
			{Path: "state-manager", Status: "running"},
			{Path: "task-manager", Status: "running", Failures: 1, Restarts: 1, LastError: "task-manager bug", LastTime: now.Add(-time.Hour)},
			{Path: "policy-manager", Status: "running"},
			{Path: "admin", Status: "running"},
		},
		Observers: []protocol.ObserverSnapshot{
			{Path: "observer/db/port", Policy: "db", Revision: "a19fad5b4ce8", Kind: "tcp", State: "down", Status: "running",
				LastResult: "error", LastTime: now.Add(-1500 * time.Millisecond), ConsecutiveFailures: 4, Observations: 812},
			{Path: "observer/web/health", Policy: "web", Revision: "97bde5d7cf0d", Kind: "http", State: "up", Status: "running",
				LastResult: "ok", LastTime: now.Add(-300 * time.Millisecond), Observations: 7431},
			{Path: "observer/web/plugin", Policy: "web", Revision: "97bde5d7cf0d", Kind: "wasm", State: "unknown", Status: "quarantined",
				Failures: 5, LastError: "plugin backlog.wasm: trap: wasm error: unreachable", LastResult: "unspecified"},
		},
		EventsEmitted: 8312,
		Outbox:        &protocol.OutboxSnapshot{Events: 12, Bytes: 4200, LastSequence: 8312},
	}
}

func TestRenderStatusGolden(t *testing.T) {
	now := time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	renderStatus(&b, snapshotAt(now), now)
	golden := filepath.Join("testdata", "status.golden")
	if *update {
		require.NoError(t, os.WriteFile(golden, b.Bytes(), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err, "run go test -update to create it")
	assert.Equal(t, string(want), b.String())
}

func TestStatusExitCodes(t *testing.T) {
	now := time.Now()
	ready := snapshotAt(now)
	notReady := snapshotAt(now)
	notReady.Broker = protocol.BrokerStatus{URL: "amqps://observer@mq.example:5671/", LastError: "dial tcp: connection refused"}
	serve := func(s *protocol.Snapshot) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			require.Equal(t, "/v1/state", r.URL.Path)
			_ = json.NewEncoder(w).Encode(s)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	config := filepath.Join(t.TempDir(), "observerd.yaml")
	require.NoError(t, os.WriteFile(config, []byte("admin: {listen: \"\", socket: \"\"}\n"), 0o600))

	tests := []struct {
		name       string
		args       []string
		code       int
		out, err   string
		jsonOutput bool
	}{
		{name: "ready", args: []string{"--admin", serve(ready)}, code: exitOK, out: "ready:     yes"},
		{name: "not ready", args: []string{"--admin", serve(notReady)}, code: exitProblems,
			out: "ready:     NO: broker not connected: dial tcp: connection refused"},
		{name: "json", args: []string{"--admin", serve(ready), "--json"}, code: exitOK, jsonOutput: true},
		{name: "unreachable", args: []string{"--admin", closed.URL}, code: exitProblems, err: "is observerd running"},
		{name: "admin disabled in the config", args: []string{"--config", config}, code: exitProblems, err: "admin.listen and admin.socket are empty: the daemon serves no state"},
		{name: "stray argument", args: []string{"extra"}, code: exitUsage, err: "unexpected arguments"},
		{name: "help", args: []string{"--help"}, code: exitOK, err: "-admin URL"},
		{name: "bad flag", args: []string{"--bogus"}, code: exitUsage, err: "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"status"}, tt.args...), &stdout, &stderr)
			assert.Equal(t, tt.code, code, "stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
			assert.Contains(t, stdout.String(), tt.out)
			assert.Contains(t, stderr.String(), tt.err)
			if tt.jsonOutput {
				var s protocol.Snapshot
				require.NoError(t, json.Unmarshal(stdout.Bytes(), &s))
				assert.Equal(t, roundTrip(t, ready), &s, "the state as the daemon served it")
				assert.False(t, strings.Contains(stdout.String(), "ACTOR"), "no table in JSON mode")
			}
		})
	}
}

// roundTrip is s through JSON, as the daemon serves it.
func roundTrip(t *testing.T, s *protocol.Snapshot) *protocol.Snapshot {
	t.Helper()
	b, err := json.Marshal(s)
	require.NoError(t, err)
	var out protocol.Snapshot
	require.NoError(t, json.Unmarshal(b, &out))
	return &out
}

// TestBrokerLine: status and top say why the broker is not connected,
// also when every URL failed to dial (the status has no URL then).
func TestBrokerLine(t *testing.T) {
	now := time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name        string
		broker      protocol.BrokerStatus
		status, top string
	}{
		{"starting", protocol.BrokerStatus{}, "broker:    not connected yet", "broker  not connected yet"},
		{"every URL failed", protocol.BrokerStatus{LastError: "dial amqps://mq.example:5671/: connection refused"},
			"broker:    NOT connected: dial amqps://mq.example:5671/: connection refused",
			"broker  NOT connected: dial amqps://mq.example:5671/: connection refused"},
		{"lost", protocol.BrokerStatus{URL: "amqps://observer@mq.example:5671/", LastError: "EOF"},
			"broker:    NOT connected (last tried amqps://observer@mq.example:5671/): EOF",
			"broker  NOT connected (amqps://observer@mq.example:5671/): EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := snapshotAt(now)
			s.Broker = tc.broker
			var b bytes.Buffer
			renderStatus(&b, s, now)
			assert.Contains(t, strings.Split(b.String(), "\n"), tc.status)
			assert.Contains(t, topLines(newView("x", &sample{at: now, state: s}, nil)), tc.top)
		})
	}
}
