package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/polar/observerd/messages"
)

func TestTrackerFlagsGapsAndDuplicates(t *testing.T) {
	ev := func(id, node string, seq uint64) *messages.Event {
		return &messages.Event{Id: id, Node: node, Sequence: seq}
	}
	tests := []struct {
		name   string
		events []*messages.Event
		want   [][]string // warnings per event
	}{
		{"consecutive", []*messages.Event{ev("a", "n1", 1), ev("b", "n1", 2)}, [][]string{nil, nil}},
		{"a gap", []*messages.Event{ev("a", "n1", 1), ev("b", "n1", 5)},
			[][]string{nil, {"!! gap on n1: sequences 2..4 missing"}}},
		{"nodes are separate", []*messages.Event{ev("a", "n1", 7), ev("b", "n2", 1), ev("c", "n1", 8)}, [][]string{nil, nil, nil}},
		{"a redelivery is a duplicate, not a gap", []*messages.Event{ev("a", "n1", 1), ev("b", "n1", 2), ev("a", "n1", 1)},
			[][]string{nil, nil, {"!! duplicate id a (sequence 1)"}}},
		{"the first event of a node starts its count", []*messages.Event{ev("a", "n1", 40)}, [][]string{nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTracker()
			for i, e := range tt.events {
				assert.Equal(t, tt.want[i], tr.see(e), "event %d", i)
			}
		})
	}
}

func TestTrackerMemoryIsBounded(t *testing.T) {
	tr := newTracker()
	for i := range maxIDs + 10 {
		tr.see(&messages.Event{Id: fmt.Sprint(i), Node: "n", Sequence: uint64(i + 1)})
	}
	assert.Len(t, tr.ids, maxIDs)
	assert.NotContains(t, tr.ids, "0", "the oldest ids are forgotten")
	recent := fmt.Sprint(maxIDs + 9)
	assert.Equal(t, []string{"!! duplicate id " + recent + " (sequence 7)"}, tr.see(&messages.Event{Id: recent, Node: "n", Sequence: 7}),
		"the recent ones are still known")
}

func TestSummaries(t *testing.T) {
	ms := durationpb.New(1500 * time.Microsecond)
	tests := []struct {
		ev   *messages.Event
		want string
	}{
		{&messages.Event{Data: &messages.Event_Http{Http: &messages.HttpObservation{Method: "GET", Url: "http://x/healthz", StatusCode: 200, Result: messages.Result_RESULT_OK, Latency: ms}}},
			"GET http://x/healthz -> 200 ok in 1.5ms "},
		{&messages.Event{Data: &messages.Event_Prometheus{Prometheus: &messages.PrometheusObservation{Url: "http://x/metrics", Result: messages.Result_RESULT_OK, Samples: make([]*messages.Sample, 3), SamplesDropped: 1, Latency: ms}}},
			"http://x/metrics ok 3 samples (1 dropped) in 1.5ms "},
		{&messages.Event{Data: &messages.Event_Tcp{Tcp: &messages.TcpObservation{Address: "127.0.0.1:8080", Result: messages.Result_RESULT_ERROR, ConnectLatency: ms, Error: "refused"}}},
			"127.0.0.1:8080 error in 1.5ms refused"},
		{&messages.Event{Data: &messages.Event_Process{Process: &messages.ProcessObservation{Pid: 42, Name: "web", Result: messages.Result_RESULT_OK, CpuSeconds: 1.25, RssBytes: 2 << 20, OpenFds: 9, Threads: 4}}},
			"pid 42 web ok cpu 1.25s rss 2MiB fds 9 threads 4 restarted=false "},
		{&messages.Event{Data: &messages.Event_Plugin{Plugin: &messages.PluginPayload{Plugin: "status-threshold.wasm", Schema: "polar.examples.status_threshold.v1",
			Labels: map[string]string{"pointer": "/backlog"}, Payload: []byte(`{"value":7}`), Result: messages.Result_RESULT_OK, CallDuration: ms}}},
			`status-threshold.wasm ok polar.examples.status_threshold.v1 pointer=/backlog {"value":7} (11 bytes) in 1.5ms`},
		{&messages.Event{Data: &messages.Event_StateChange{StateChange: &messages.StateChange{Observer: "observer/web/health", OldState: messages.ObserverState_OBSERVER_STATE_UP, NewState: messages.ObserverState_OBSERVER_STATE_DOWN}}},
			"observer/web/health: up -> down"},
		{&messages.Event{Data: &messages.Event_PolicyThrottled{PolicyThrottled: &messages.PolicyThrottled{Name: "flood", Window: durationpb.New(10 * time.Second), DroppedEvents: 4180, EventsPerSecond: 20, Burst: 64}}},
			"flood: 4180 observations not published in 10s (budget 20/s, burst 64)"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, summary(tt.ev))
	}
}

// TestLine: an event's line shows its envelope (severity included) and
// its payload's summary, escaped for a terminal.
func TestLine(t *testing.T) {
	ev := &messages.Event{Type: "observation.plugin.threshold", Severity: messages.Severity_SEVERITY_HIGH, Sequence: 42, Node: "web-1",
		Subject: "web", Time: timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.Local)),
		Data: &messages.Event_Plugin{Plugin: &messages.PluginPayload{Plugin: "p.wasm", Result: messages.Result_RESULT_FAILED,
			Payload: []byte("\x1b[31mred"), CallDuration: durationpb.New(time.Millisecond)}}}
	assert.Equal(t, `03:04:05     42 observation.plugin.threshold high     web-1      web          p.wasm failed \x1b[31mred (8 bytes) in 1ms`, line(ev))
}

// TestShowJSON: with --json, stdout holds one JSON object per line and
// nothing else; the gap and duplicate warnings go to stderr. Without, they
// are lines of stdout before the event's.
func TestShowJSON(t *testing.T) {
	evs := []*messages.Event{
		{Id: "a", Node: "n", Sequence: 1, Type: messages.TypeObservationHTTP},
		{Id: "b", Node: "n", Sequence: 4, Type: messages.TypeObservationHTTP},
		{Id: "b", Node: "n", Sequence: 4, Type: messages.TypeObservationHTTP},
	}
	var stdout, stderr bytes.Buffer
	tr := newTracker()
	for _, ev := range evs {
		show(&stdout, &stderr, tr, ev, true)
	}
	lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	require.Len(t, lines, 3)
	for _, l := range lines {
		var v map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &v), "stdout line %q", l)
	}
	assert.Equal(t, "!! gap on n: sequences 2..3 missing\n!! duplicate id b (sequence 4)\n", stderr.String())

	stdout.Reset()
	stderr.Reset()
	tr = newTracker()
	for _, ev := range evs {
		show(&stdout, &stderr, tr, ev, false)
	}
	assert.Empty(t, stderr.String())
	assert.Equal(t, 5, strings.Count(stdout.String(), "\n"), "three events and two warnings:\n%s", stdout.String())
	assert.Contains(t, stdout.String(), "!! gap on n: sequences 2..3 missing\n")
}
