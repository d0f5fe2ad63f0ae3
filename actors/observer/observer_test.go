package observer_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/polar/observerd/actors/observer"
	"github.com/polar/observerd/actors/observer/kinds"
	_ "github.com/polar/observerd/actors/observer/kinds/all"
	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/actors/restart"
	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/test/actortest"
	"github.com/polar/observerd/test/plugintest"
	"github.com/polar/observerd/wasm"
)

const correlation = "01900000-0000-7000-8000-000000000001"

func allowList(t *testing.T, entries ...string) *targets.AllowList {
	t.Helper()
	a, err := targets.Parse(entries)
	require.NoError(t, err)
	return a
}

// parse builds a policy named web targeting url from YAML text; limits and
// observers are the YAML of spec.limits (may be empty) and of the list
// items of spec.observers, indented by four spaces.
// parse parses a policy of observers with lenient limits, pid files
// allowed anywhere (the observer's own check, against fixture.pidDirs, is
// what the process tests exercise), and the process names given.
func parse(t *testing.T, url, limits, observers string, processNames ...string) *policy.Policy {
	t.Helper()
	if limits == "" {
		limits = "{}"
	}
	doc := fmt.Sprintf(`apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: web-target, url: %q}
  limits: %s
  observers:
%s`, url, limits, observers)
	p, err := policy.Parse("web.yaml", []byte(doc), policy.Env{Allowed: allowList(t, "127.0.0.0/8"), Limits: actortest.Limits(),
		PIDDirs: []string{"/"}, ProcessNames: processNames})
	require.NoError(t, err, "policy:\n%s", doc)
	require.NotEmpty(t, p.Revision)
	return p
}

type fixture struct {
	sys   *actor.ActorSystem
	log   zerolog.Logger
	state *actortest.Recorder
	// allowed (allowed_targets), pidDirs (allowed_pid_dirs) and
	// maxResponse (limits.max_response_bytes) are the daemon's, for the
	// observers start spawns: loopback, the temporary directory where
	// tests keep their pid files, and the default.
	allowed     []string
	pidDirs     []string
	maxResponse yamldoc.ByteSize
}

func setup(t *testing.T) *fixture {
	t.Helper()
	sys, log := actortest.SystemAndLogger(t)
	return &fixture{sys: sys, log: log, state: actortest.NewRecorder(t, sys, "state-manager"),
		allowed: []string{"127.0.0.0/8"}, pidDirs: []string{os.TempDir()}}
}

// start spawns one observer of p per name, sharing the policy's limits.
func (f *fixture) start(t *testing.T, p *policy.Policy, names ...string) []*actor.PID {
	t.Helper()
	access := kinds.NewTargetAccess(p, allowList(t, f.allowed...), nil)
	t.Cleanup(access.Close)
	var pids []*actor.PID
	for _, name := range names {
		o, ok := p.ObserverByName(name)
		require.True(t, ok, name)
		spec := observer.Spec{Policy: p, Observer: o, CorrelationID: correlation, Access: access, State: f.state.PID, Log: f.log,
			PIDDirs: f.pidDirs, MaxResponse: f.maxResponse}
		pid, err := f.sys.Root.SpawnNamed(observer.Props(spec), spec.Path())
		require.NoError(t, err)
		t.Cleanup(func() { _ = f.sys.Root.StopFuture(pid).Wait() })
		pids = append(pids, pid)
	}
	return pids
}

// observations returns the observations received from the observer at path.
func (f *fixture) observations(path string) []*messages.Event {
	var out []*messages.Event
	for _, m := range f.state.Messages() {
		if e, ok := m.(*protocol.Emit); ok && e.From.Path() == path && e.Event.Type == messages.TypeObservationHTTP {
			out = append(out, e.Event)
		}
	}
	return out
}

// waitObservations waits for n http observations in all.
func (f *fixture) waitObservations(t *testing.T, n int) []*messages.Event {
	t.Helper()
	return f.waitEvents(t, messages.TypeObservationHTTP, n)
}

// waitEvents waits for n events of type typ in all, and returns them all.
func (f *fixture) waitEvents(t *testing.T, typ string, n int) []*messages.Event {
	t.Helper()
	require.Eventually(t, func() bool { return len(f.state.EventsOf(typ)) >= n },
		actortest.Wait, 5*time.Millisecond, "want %d %s events", n, typ)
	return f.state.EventsOf(typ)
}

// stats asks the observer at pid for its counters.
func (f *fixture) stats(t *testing.T, pid *actor.PID) *protocol.ObserverStats {
	t.Helper()
	res, err := f.sys.Root.RequestFuture(pid, &protocol.GetObserverStats{}, actortest.Wait).Result()
	require.NoError(t, err)
	s, ok := res.(*protocol.ObserverStats)
	require.True(t, ok, "answer %T", res)
	return s
}

// server is an httptest server counting the requests per path.
type server struct {
	*httptest.Server
	mu    sync.Mutex
	count map[string]int
	total atomic.Int64
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	t.Helper()
	s := &server{count: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.count[r.URL.Path]++
		s.mu.Unlock()
		s.total.Add(1)
		h(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) requests(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count[path]
}

// closedAddr is a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func TestSpecPath(t *testing.T) {
	p := parse(t, "http://127.0.0.1:1", "", "    - {name: health, kind: http, interval: 1s, http: {}}\n")
	s := observer.Spec{Policy: p, Observer: p.Spec.Observers[0]}
	assert.Equal(t, "observer/web/health", s.Path())
}

func TestHTTPObservationOK(t *testing.T) {
	f := setup(t)
	var header atomic.Value
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		header.Store(r.Header.Get("X-Probe"))
		_, _ = io.WriteString(w, "hello world")
	})
	p := parse(t, srv.URL, "", `    - name: health
      kind: http
      interval: 50ms
      http: {path: /healthz, headers: {x-probe: observerd}}
`)
	f.start(t, p, "health")

	ev := f.waitObservations(t, 1)[0]
	obs := ev.GetHttp()
	require.NotNil(t, obs)
	assert.Equal(t, messages.Result_RESULT_OK, obs.Result, obs.Error)
	assert.Equal(t, int32(200), obs.StatusCode)
	assert.Equal(t, int64(len("hello world")), obs.BodyBytes)
	assert.Positive(t, obs.Latency.AsDuration())
	assert.Less(t, obs.Latency.AsDuration(), time.Second)
	assert.Empty(t, obs.Error)
	assert.Equal(t, srv.URL+"/healthz", obs.Url)
	assert.Equal(t, http.MethodGet, obs.Method)
	assert.Equal(t, "observerd", header.Load(), "configured headers are sent")
	assert.GreaterOrEqual(t, srv.requests("/healthz"), 1)

	// The envelope.
	assert.Equal(t, messages.TypeObservationHTTP, ev.Type)
	assert.Equal(t, "web-target", ev.Subject)
	assert.Equal(t, "web", ev.GetPolicy().GetName())
	assert.Equal(t, p.Revision, ev.GetPolicy().GetRevision())
	assert.Equal(t, correlation, ev.CorrelationId)
	assert.Equal(t, correlation, ev.CausationId)
	assert.NotEmpty(t, ev.Id)
	e := actortest.WaitMessage(t, f.state, func(e *protocol.Emit) bool { return e.Event.Id == ev.Id })
	assert.Equal(t, "observer/web/health", e.From.Path())
	require.NotNil(t, e.Observer, "the spec goes along, for the state-manager's thresholds")
	assert.Equal(t, policy.Thresholds{DownAfter: 3, UpAfter: 1}, e.Observer.Thresholds)
	assert.Equal(t, yamldoc.Duration(50*time.Millisecond), e.Observer.Interval)

	// It keeps observing on its schedule, each observation a new event.
	evs := f.waitObservations(t, 3)
	assert.NotEqual(t, evs[0].Id, evs[1].Id)
}

func TestHTTPResults(t *testing.T) {
	type want struct {
		result      messages.Result
		status      int32
		err         string // substring of Error; "" means none
		bodyBytes   int64
		bodyMatched bool
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
		http    string // the observer's http section
		want    want
	}{
		{
			name:    "200 is OK",
			handler: func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "fine") },
			http:    "{}",
			want:    want{result: messages.Result_RESULT_OK, status: 200, bodyBytes: 4},
		},
		{
			name:    "503 against expect_status [200] fails",
			handler: func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "sick", http.StatusServiceUnavailable) },
			http:    "{expect_status: [200]}",
			want:    want{result: messages.Result_RESULT_FAILED, status: 503, err: "status 503", bodyBytes: 5},
		},
		{
			name:    "503 is OK when expected",
			handler: func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) },
			http:    "{expect_status: [200, 503]}",
			want:    want{result: messages.Result_RESULT_OK, status: 503},
		},
		{
			name:    "204 against the default [200] fails",
			handler: func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) },
			http:    "{}",
			want:    want{result: messages.Result_RESULT_FAILED, status: 204, err: "status 204"},
		},
		{
			name:    "body_match matches",
			handler: func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"ok": true}`) },
			http:    `{body_match: '"ok":\s*true'}`,
			want:    want{result: messages.Result_RESULT_OK, status: 200, bodyBytes: 12, bodyMatched: true},
		},
		{
			name:    "body_match does not match",
			handler: func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"ok": false}`) },
			http:    `{body_match: '"ok":\s*true'}`,
			want:    want{result: messages.Result_RESULT_FAILED, status: 200, err: "body does not match", bodyBytes: 13},
		},
		{
			name:    "a wrong status is reported before a wrong body",
			handler: func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "nope", http.StatusInternalServerError) },
			http:    `{body_match: 'yes'}`,
			want:    want{result: messages.Result_RESULT_FAILED, status: 500, err: "status 500", bodyBytes: 5},
		},
		{
			name:    "the body is read up to max_body_bytes",
			handler: func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, strings.Repeat("x", 5000)) },
			http:    "{max_body_bytes: 1KiB}",
			want:    want{result: messages.Result_RESULT_OK, status: 200, bodyBytes: 1024},
		},
		{
			name: "the configured method is used",
			handler: func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost {
					w.WriteHeader(http.StatusMethodNotAllowed)
				}
			},
			http: "{method: POST}",
			want: want{result: messages.Result_RESULT_OK, status: 200},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			srv := newServer(t, tc.handler)
			p := parse(t, srv.URL, "", fmt.Sprintf("    - {name: check, kind: http, interval: 1s, http: %s}\n", tc.http))
			f.start(t, p, "check")
			obs := f.waitObservations(t, 1)[0].GetHttp()
			assert.Equal(t, tc.want.result, obs.Result, obs.Error)
			assert.Equal(t, tc.want.status, obs.StatusCode)
			assert.Equal(t, tc.want.bodyBytes, obs.BodyBytes)
			assert.Equal(t, tc.want.bodyMatched, obs.BodyMatched)
			if tc.want.err == "" {
				assert.Empty(t, obs.Error)
			} else {
				assert.Contains(t, obs.Error, tc.want.err)
			}
		})
	}
}

func TestHTTPConnectionRefusedIsAnError(t *testing.T) {
	f := setup(t)
	p := parse(t, "http://"+closedAddr(t), "", "    - {name: check, kind: http, interval: 1s, http: {}}\n")
	f.start(t, p, "check")
	obs := f.waitObservations(t, 1)[0].GetHttp()
	assert.Equal(t, messages.Result_RESULT_ERROR, obs.Result)
	assert.Zero(t, obs.StatusCode)
	assert.Contains(t, obs.Error, "refused")
}

func TestHTTPExtract(t *testing.T) {
	body := `{"status": "ok", "a/b": {"c~d": "slash and tilde"}, "items": [{"name": "first"}, {"name": "second"}],
		"count": 42, "flag": true, "none": null}`
	tests := []struct {
		name    string
		body    string
		pointer string
		want    string
		absent  bool
	}{
		{"a string", body, "/status", "ok", false},
		{"escaped ~1 and ~0 tokens", body, "/a~1b/c~0d", "slash and tilde", false},
		{"an array index", body, "/items/1/name", "second", false},
		{"an object as JSON text", body, "/items/0", `{"name":"first"}`, false},
		{"a number as JSON text", body, "/count", "42", false},
		{"a boolean as JSON text", body, "/flag", "true", false},
		{"null as JSON text", body, "/none", "null", false},
		{"the whole document", `{"x": 1}`, "", `{"x":1}`, false},
		{"a missing key is left out", body, "/missing", "", true},
		{"an index out of range is left out", body, "/items/9/name", "", true},
		{"a non-numeric index is left out", body, "/items/first", "", true},
		{"a token past a leaf is left out", body, "/status/x", "", true},
		{"a body that is not JSON has no values", "not json", "/status", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, tc.body) })
			p := parse(t, srv.URL, "", fmt.Sprintf("    - {name: check, kind: http, interval: 1s, http: {extract: [%q]}}\n", tc.pointer))
			f.start(t, p, "check")
			obs := f.waitObservations(t, 1)[0].GetHttp()
			require.Equal(t, messages.Result_RESULT_OK, obs.Result, obs.Error)
			v, ok := obs.Values[tc.pointer]
			if tc.absent {
				assert.False(t, ok, "value %q for %q", v, tc.pointer)
				return
			}
			require.True(t, ok, "no value for %q in %v", tc.pointer, obs.Values)
			assert.Equal(t, tc.want, v)
		})
	}
}

func TestHTTPExtractSeveralPointers(t *testing.T) {
	f := setup(t)
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"status": "ok", "a/b": 1, "items": ["x", "y"]}`)
	})
	p := parse(t, srv.URL, "", `    - {name: check, kind: http, interval: 1s, http: {extract: ["/status", "/a~1b", "/items/1", "/nope"]}}
`)
	f.start(t, p, "check")
	obs := f.waitObservations(t, 1)[0].GetHttp()
	assert.Equal(t, map[string]string{"/status": "ok", "/a~1b": "1", "/items/1": "y"}, obs.Values)
}

func TestHTTPTimeoutAndRecovery(t *testing.T) {
	f := setup(t)
	var slow atomic.Bool
	slow.Store(true)
	release := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if slow.Load() {
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		_, _ = io.WriteString(w, "back")
	})
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	const timeout = 100 * time.Millisecond
	p := parse(t, srv.URL, "", "    - {name: check, kind: http, interval: 150ms, timeout: 100ms, http: {}}\n")
	f.start(t, p, "check")

	first := f.waitObservations(t, 1)[0].GetHttp()
	assert.Equal(t, messages.Result_RESULT_TIMEOUT, first.Result, first.Error)
	assert.NotEmpty(t, first.Error)
	assert.Zero(t, first.StatusCode)
	assert.GreaterOrEqual(t, first.Latency.AsDuration(), timeout/2)
	assert.Less(t, first.Latency.AsDuration(), timeout+time.Second, "the observation outlived its timeout")

	// It keeps scheduling: once the server answers again, so does the
	// observer.
	slow.Store(false)
	require.Eventually(t, func() bool {
		for _, ev := range f.state.EventsOf(messages.TypeObservationHTTP) {
			if ev.GetHttp().Result == messages.Result_RESULT_OK {
				return true
			}
		}
		return false
	}, actortest.Wait, 5*time.Millisecond, "no OK observation after the server recovered")
}

func TestHTTPRedirects(t *testing.T) {
	tests := []struct {
		name     string
		http     string
		location string // where /start redirects
		result   messages.Result
		status   int32
		err      string
		followed bool // whether /final was requested
	}{
		{
			name:     "refused unless follow_redirects",
			http:     "{path: /start}",
			location: "/final",
			result:   messages.Result_RESULT_FAILED,
			status:   http.StatusFound,
			err:      "status 302",
		},
		{
			name:     "followed with follow_redirects",
			http:     "{path: /start, follow_redirects: true}",
			location: "/final",
			result:   messages.Result_RESULT_OK,
			status:   http.StatusOK,
			followed: true,
		},
		{
			name:     "a redirect off allowed_targets is an error",
			http:     "{path: /start, follow_redirects: true}",
			location: "http://192.0.2.1/final",
			result:   messages.Result_RESULT_ERROR,
			err:      "not in allowed_targets",
		},
		{
			name:     "at most max_redirects are followed",
			http:     "{path: /start, follow_redirects: true, max_redirects: 2}",
			location: "/start",
			result:   messages.Result_RESULT_ERROR,
			err:      "stopped after 2 redirects",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/start" {
					http.Redirect(w, r, tc.location, http.StatusFound)
					return
				}
				_, _ = io.WriteString(w, "final")
			})
			p := parse(t, srv.URL, "", fmt.Sprintf("    - {name: check, kind: http, interval: 1s, http: %s}\n", tc.http))
			f.start(t, p, "check")
			obs := f.waitObservations(t, 1)[0].GetHttp()
			assert.Equal(t, tc.result, obs.Result, obs.Error)
			assert.Equal(t, tc.status, obs.StatusCode)
			if tc.err != "" {
				assert.Contains(t, obs.Error, tc.err)
			} else {
				assert.Empty(t, obs.Error)
			}
			if tc.followed {
				assert.Equal(t, 1, srv.requests("/final"))
			} else {
				assert.Zero(t, srv.requests("/final"), "the redirect was followed")
			}
		})
	}
}

func TestHTTPMaxRedirectsCountsRequests(t *testing.T) {
	// With max_redirects 2 the observer makes the first request and follows
	// two redirects: three requests, never a fourth.
	f := setup(t)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/start", http.StatusFound) })
	p := parse(t, srv.URL, "", "    - {name: check, kind: http, interval: 1s, http: {path: /start, follow_redirects: true, max_redirects: 2}}\n")
	f.start(t, p, "check")
	f.waitObservations(t, 1)
	assert.Equal(t, 3, srv.requests("/start"))
}

func TestSharedLimiterCapsTheRequestRate(t *testing.T) {
	f := setup(t)
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	const (
		rate  = 5.0
		burst = 5
	)
	p := parse(t, srv.URL, "{max_requests_per_second: 5, max_concurrent_requests: 2}", `    - {name: one, kind: http, interval: 10ms, timeout: 8ms, http: {}}
    - {name: two, kind: http, interval: 10ms, timeout: 8ms, http: {}}
`)
	start := time.Now()
	f.start(t, p, "one", "two")

	// Two observers every 10 ms try about 200 requests a second.
	evs := f.waitObservations(t, 150)
	served := srv.total.Load()
	elapsed := time.Since(start)

	limit := burst + rate*elapsed.Seconds() + 1
	assert.LessOrEqual(t, float64(served), limit, "the server saw %d requests in %s", served, elapsed)
	assert.GreaterOrEqual(t, served, int64(burst), "the burst went through")
	assert.NotEmpty(t, f.observations("observer/web/one"))
	assert.NotEmpty(t, f.observations("observer/web/two"))
	var limited int
	for _, ev := range evs {
		if obs := ev.GetHttp(); strings.Contains(obs.Error, "rate limit") {
			limited++
			assert.NotEqual(t, messages.Result_RESULT_OK, obs.Result)
			assert.Zero(t, obs.StatusCode, "a rate-limited observation sent no request")
		}
	}
	assert.Positive(t, limited, "no observation was held back by the limiter")
}

func TestSharedConcurrencyLimit(t *testing.T) {
	f := setup(t)
	var inFlight, peak atomic.Int32
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		// A slow answer, so that the other observers try meanwhile.
		select {
		case <-time.After(15 * time.Millisecond):
		case <-r.Context().Done():
		}
		_, _ = io.WriteString(w, "ok")
	})
	// Timeouts long enough that no request is abandoned: an abandoned
	// request frees its slot before the server notices the cancel (a known
	// gap, to be closed with the observers' service protection).
	p := parse(t, srv.URL, "{max_requests_per_second: 1000, max_concurrent_requests: 1}", `    - {name: one, kind: http, interval: 100ms, timeout: 90ms, http: {}}
    - {name: two, kind: http, interval: 100ms, timeout: 90ms, http: {}}
    - {name: three, kind: http, interval: 100ms, timeout: 90ms, http: {}}
`)
	f.start(t, p, "one", "two", "three")
	f.waitObservations(t, 20)
	assert.Equal(t, int32(1), peak.Load(), "more than max_concurrent_requests requests at once")
}

func TestLifecycleEvents(t *testing.T) {
	f := setup(t)
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) {})
	p := parse(t, srv.URL, "", "    - {name: health, kind: http, interval: 20ms, http: {}}\n")
	pid := f.start(t, p, "health")[0]

	started := f.state.WaitEvent(t, messages.TypeObserverStarted, nil)
	o := started.GetObserver()
	require.NotNil(t, o)
	assert.Equal(t, "observer/web/health", o.Actor)
	assert.Equal(t, "health", o.Observer)
	assert.Equal(t, "http", o.Kind)
	assert.Equal(t, correlation, started.CorrelationId)
	assert.Equal(t, "web", started.GetPolicy().GetName())
	assert.Equal(t, p.Revision, started.GetPolicy().GetRevision())
	assert.Equal(t, "web-target", started.Subject)
	f.waitObservations(t, 2)
	assert.Equal(t, messages.TypeObserverStarted, f.state.Events()[0].Type, "observer.started comes first")

	require.NoError(t, f.sys.Root.PoisonFuture(pid).Wait())
	stopped := f.state.WaitEvent(t, messages.TypeObserverStopped, nil)
	assert.Equal(t, "observer/web/health", stopped.GetObserver().GetActor())
	assert.Equal(t, "stopped", stopped.GetObserver().GetReason())
	assert.Equal(t, correlation, stopped.CorrelationId)
	e := actortest.WaitMessage(t, f.state, func(e *protocol.Emit) bool { return e.Event.Id == stopped.Id })
	assert.Equal(t, "observer/web/health", e.From.Path())
}

func TestLifecycleEvent(t *testing.T) {
	p := parse(t, "http://127.0.0.1:1", "", "    - {name: health, kind: http, interval: 1s, http: {}}\n")
	tests := []struct {
		typ      string
		severity messages.Severity
	}{
		// No severity: the state-manager's stamp makes it info.
		{messages.TypeObserverStarted, messages.Severity_SEVERITY_UNSPECIFIED},
		{messages.TypeObserverStopped, messages.Severity_SEVERITY_UNSPECIFIED},
		{messages.TypeObserverRestarted, messages.Severity_SEVERITY_UNSPECIFIED},
		{messages.TypeObserverFailed, messages.Severity_SEVERITY_MEDIUM},
		{messages.TypeObserverQuarantined, messages.Severity_SEVERITY_MEDIUM},
	}
	for _, tc := range tests {
		t.Run(tc.typ, func(t *testing.T) {
			ev := observer.LifecycleEvent(tc.typ, p, p.Spec.Observers[0], correlation, &messages.ObserverLifecycle{Reason: "why"})
			assert.Equal(t, tc.typ, ev.Type)
			assert.Equal(t, tc.severity, ev.Severity)
			assert.Equal(t, "web-target", ev.Subject)
			assert.Equal(t, correlation, ev.CorrelationId)
			assert.Equal(t, correlation, ev.CausationId)
			assert.Equal(t, &messages.PolicyRef{Name: "web", Revision: p.Revision}, ev.Policy)
			o := ev.GetObserver()
			assert.Equal(t, "observer/web/health", o.Actor)
			assert.Equal(t, "health", o.Observer)
			assert.Equal(t, "http", o.Kind)
			assert.Equal(t, "why", o.Reason)
		})
	}
}

func TestObserverThatCannotStartIsPermanent(t *testing.T) {
	// A wasm observer without a plugin host cannot run.
	p := parse(t, "http://127.0.0.1:1", "", "    - {name: plugin, kind: wasm, interval: 1s, wasm: {module: backlog.wasm}}\n")
	spec := observer.Spec{Policy: p, Observer: p.Spec.Observers[0]}

	// Spawned, it fails at start with a *restart.Permanent, so that its
	// supervisor gives up at once.
	sys, _ := actortest.SystemAndLogger(t)
	gaveUp := make(chan restart.Failure, 1)
	strategy := restart.New(restart.Policy{MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond, GiveUpAt: 5, Window: time.Minute})
	parent := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		switch msg := ctx.Message().(type) {
		case *actor.Started:
			ctx.Spawn(observer.Props(spec))
		case *restart.GaveUp:
			gaveUp <- msg.Failure
		}
	}, actor.WithSupervisor(strategy)))
	t.Cleanup(func() { _ = sys.Root.StopFuture(parent).Wait() })
	select {
	case f := <-gaveUp:
		var perm *restart.Permanent
		require.True(t, errors.As(f.Reason, &perm), "reason %v", f.Reason)
		assert.Contains(t, f.Reason.Error(), "observer/web/plugin: no plugin host")
		assert.Equal(t, 1, f.Failures)
	case <-time.After(actortest.Wait):
		t.Fatal("the supervisor did not give up on the broken observer")
	}
}

// TestClosedGateSkipsTurns: while the broker's gate is closed (outbox full
// with when_full: block) an observer sends nothing; an ungated observer of
// the same policy is the clock that proves turns went by.
func TestClosedGateSkipsTurns(t *testing.T) {
	f := setup(t)
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	p := parse(t, srv.URL, "{max_requests_per_second: 1000, max_concurrent_requests: 4}", `    - {name: gated, kind: http, interval: 10ms, timeout: 5ms, http: {path: /gated}}
    - {name: clock, kind: http, interval: 10ms, timeout: 5ms, http: {path: /clock}}
`)
	access := kinds.NewTargetAccess(p, allowList(t, "127.0.0.0/8"), nil)
	t.Cleanup(access.Close)
	gate := &protocol.Gate{}
	gate.Close(true)
	reg := prometheus.NewRegistry()
	metrics := observer.NewMetrics(reg)
	for _, name := range []string{"gated", "clock"} {
		o, _ := p.ObserverByName(name)
		spec := observer.Spec{Policy: p, Observer: o, CorrelationID: correlation, Access: access, State: f.state.PID, Metrics: metrics, Log: f.log}
		if name == "gated" {
			spec.Gate = gate
		}
		pid, err := f.sys.Root.SpawnNamed(observer.Props(spec), spec.Path())
		require.NoError(t, err)
		t.Cleanup(func() { _ = f.sys.Root.StopFuture(pid).Wait() })
	}
	require.Eventually(t, func() bool { return len(f.observations("observer/web/clock")) >= 10 }, actortest.Wait, 5*time.Millisecond)
	assert.Empty(t, f.observations("observer/web/gated"), "a closed gate sends nothing")
	families, err := reg.Gather()
	require.NoError(t, err)
	var skipped []string
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == "observerd_observer_turns_skipped_total" && m.GetCounter().GetValue() >= 5 {
				skipped = append(skipped, m.GetLabel()[0].GetValue()+" "+m.GetLabel()[1].GetValue())
			}
		}
	}
	assert.Equal(t, []string{"observer/web/gated outbox full"}, skipped, "the skipped turns are counted, the clock's none")

	gate.Close(false)
	require.Eventually(t, func() bool { return len(f.observations("observer/web/gated")) >= 3 }, actortest.Wait, 5*time.Millisecond,
		"turns resume when the gate opens")
}

// TestBackoffWhileFailing: consecutive failures stretch the delay between
// turns (1x, 2x, then 4x the interval at most), and one OK result brings
// the interval back.
func TestBackoffWhileFailing(t *testing.T) {
	f := setup(t)
	var (
		healthy atomic.Bool
		mu      sync.Mutex
		arrived []time.Time
	)
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		arrived = append(arrived, time.Now())
		mu.Unlock()
		if !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	const interval = 40 * time.Millisecond
	p := parse(t, srv.URL, "", "    - {name: check, kind: http, interval: 40ms, timeout: 20ms, http: {}}\n")
	pid := f.start(t, p, "check")[0]

	f.waitObservations(t, 5)
	// Each gap is the delay after that many failures, less at most 5%
	// of jitter; the run itself only adds to it.
	mu.Lock()
	times := slices.Clone(arrived[:5])
	mu.Unlock()
	for i, factor := range []time.Duration{1, 2, 4, 4} {
		gap := times[i+1].Sub(times[i])
		assert.GreaterOrEqual(t, gap, factor*interval*95/100, "gap after %d failures", i+1)
	}
	s := f.stats(t, pid)
	assert.GreaterOrEqual(t, s.Failures, 5)
	assert.Equal(t, 4*interval, s.Delay, "capped at 4 intervals")

	healthy.Store(true)
	require.Eventually(t, func() bool {
		evs := f.state.EventsOf(messages.TypeObservationHTTP)
		return evs[len(evs)-1].GetHttp().Result == messages.Result_RESULT_OK
	}, actortest.Wait, 5*time.Millisecond)
	s = f.stats(t, pid)
	assert.Zero(t, s.Failures)
	assert.Equal(t, interval, s.Delay, "one OK result ends the backoff")
}

// TestBackoffCeiling drives failures with ObserveNow (the intervals are
// too long to wait for) and checks the delay each count of failures gives.
// The observer's first scheduled turn (within a tenth of the interval) may
// add a failure of its own: the delay is checked against the failures
// counted, whatever made them.
func TestBackoffCeiling(t *testing.T) {
	tests := []struct {
		interval string
		want     []time.Duration // the delay after 1, 2, ... failures; the last one stays
	}{
		// 4 intervals is below a minute: the ceiling.
		{"10s", []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 40 * time.Second}},
		// A minute is below 4 intervals: the ceiling.
		{"20s", []time.Duration{20 * time.Second, 40 * time.Second, time.Minute, time.Minute}},
		// Never below the interval.
		{"2m", []time.Duration{2 * time.Minute, 2 * time.Minute}},
	}
	for _, tc := range tests {
		t.Run(tc.interval, func(t *testing.T) {
			f := setup(t)
			p := parse(t, "http://"+closedAddr(t), "", fmt.Sprintf("    - {name: check, kind: http, interval: %s, http: {}}\n", tc.interval))
			pid := f.start(t, p, "check")[0]
			for seen := 0; seen < len(tc.want); {
				f.sys.Root.Send(pid, &protocol.RunNow{})
				f.waitObservations(t, seen+1)
				s := f.stats(t, pid)
				require.Greater(t, s.Failures, seen)
				seen = s.Failures
				assert.Equal(t, uint64(seen), s.Observations, "every observation failed")
				assert.Equal(t, tc.want[min(seen, len(tc.want))-1], s.Delay, "after %d failures", seen)
			}
		})
	}
}

func TestObserveNow(t *testing.T) {
	f := setup(t)
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	// An hour apart, the scheduled turns cannot account for two
	// observations: both are asked for.
	p := parse(t, srv.URL, "", "    - {name: check, kind: http, interval: 1h, http: {}}\n")
	pid := f.start(t, p, "check")[0]
	for n := 1; n <= 2; n++ {
		f.sys.Root.Send(pid, &protocol.RunNow{})
		obs := f.waitObservations(t, n)[n-1].GetHttp()
		assert.Equal(t, messages.Result_RESULT_OK, obs.Result, obs.Error)
	}
	s := f.stats(t, pid)
	assert.Equal(t, uint64(2), s.Observations)
	assert.Zero(t, s.Skipped)
	assert.Equal(t, 2, srv.requests("/"))
	assert.Equal(t, time.Hour, s.Delay, "the schedule goes on")
}

func TestObserveNowWhileInFlightIsSkipped(t *testing.T) {
	f := setup(t)
	release := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	p := parse(t, srv.URL, "", "    - {name: check, kind: http, interval: 1h, timeout: 30s, http: {}}\n")
	pid := f.start(t, p, "check")[0]

	f.sys.Root.Send(pid, &protocol.RunNow{})
	require.Eventually(t, func() bool { return srv.total.Load() == 1 }, actortest.Wait, time.Millisecond, "no request in flight")
	f.sys.Root.Send(pid, &protocol.RunNow{})
	s := f.stats(t, pid)
	assert.Equal(t, uint64(1), s.Skipped, "asked while an observation was in flight")
	assert.Zero(t, s.Observations)

	close(release)
	obs := f.waitObservations(t, 1)[0].GetHttp()
	assert.Equal(t, messages.Result_RESULT_OK, obs.Result, obs.Error)
	assert.Equal(t, int64(1), srv.total.Load(), "the skipped turn sent nothing")
}

// TestLateTurnsAreCounted holds the observer's mailbox past a due turn:
// the turn starts late, and is counted so.
func TestLateTurnsAreCounted(t *testing.T) {
	f := setup(t)
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	p := parse(t, srv.URL, "", "    - {name: check, kind: http, interval: 20ms, http: {}}\n")
	pid := f.start(t, p, "check")[0]
	f.waitObservations(t, 1)

	proc, ok := f.sys.ProcessRegistry.Get(pid)
	require.True(t, ok)
	proc.SendSystemMessage(pid, &actor.SuspendMailbox{})
	// Not a synchronisation: the mailbox must stay held for longer than an
	// interval plus the tolerance (10 ms here) for a turn to be late.
	<-time.After(100 * time.Millisecond)
	proc.SendSystemMessage(pid, &actor.ResumeMailbox{})

	require.Eventually(t, func() bool { return f.stats(t, pid).Late >= 1 }, actortest.Wait, 5*time.Millisecond)
	n := len(f.state.EventsOf(messages.TypeObservationHTTP))
	f.waitObservations(t, n+1) // and the schedule goes on
}

// TestUnansweringServiceBlocksNothing: while its observations hang on a
// service that never answers, an observer still serves its mailbox, stops
// at once, and leaves no goroutine behind.
func TestUnansweringServiceBlocksNothing(t *testing.T) {
	// Registered first, so that it runs last: after the observers, the
	// shared client, the servers and the actor system are gone.
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		goleak.VerifyNone(t, before,
			// protoactor's dead-letter log throttle: a one-second timer
			// of the actor system's that ends on its own.
			goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
	})

	f := setup(t)
	silent := newListener(t) // accepts, never answers
	p := parse(t, "http://"+silent.Addr().String(), "{max_requests_per_second: 100, max_concurrent_requests: 4}", fmt.Sprintf(`    - {name: health, kind: http, interval: 1h, timeout: 30s, http: {}}
    - {name: metrics, kind: prometheus, interval: 1h, timeout: 30s, prometheus: {}}
    - {name: port, kind: tcp, interval: 1h, timeout: 30s, tcp: {address: %q}}
`, unresponsive(t)))
	pids := f.start(t, p, "health", "metrics", "port")
	for _, pid := range pids {
		f.sys.Root.Send(pid, &protocol.RunNow{})
	}
	require.Eventually(t, func() bool { return silent.accepted.Load() == 2 }, actortest.Wait, time.Millisecond,
		"the http and prometheus requests are in flight")

	for _, pid := range pids {
		f.sys.Root.Send(pid, &protocol.RunNow{})
		start := time.Now()
		s := f.stats(t, pid)
		assert.Less(t, time.Since(start), time.Second, "the mailbox is served while the observation hangs")
		assert.Equal(t, uint64(1), s.Skipped, "the observation is still in flight")
		assert.Zero(t, s.Observations)
	}
	for _, pid := range pids {
		start := time.Now()
		require.NoError(t, f.sys.Root.StopFuture(pid).Wait())
		assert.Less(t, time.Since(start), time.Second, "stopping waits for no observation")
	}
	assert.Empty(t, f.state.EventsOf(messages.TypeObservationHTTP), "an abandoned observation is not reported")
}

// TestPluginInvalidEmitWarnsThenFails: a plugin whose call ends as an
// invalid emit does not fail its observer: the state-manager hears a
// warning (its last error) and gets the valid observations; the third
// call in a row fails the observer, with the host's reason.
func TestPluginInvalidEmitWarnsThenFails(t *testing.T) {
	dir := t.TempDir()
	plugintest.Build(t, "github.com/polar/observerd/wasm/testdata/bademit", dir, "bademit")
	p := parse(t, "http://127.0.0.1:1", "",
		"    - {name: plugin, kind: wasm, interval: 500ms, timeout: 400ms, wasm: {module: bademit.wasm, config: {reject: suffix}}}\n")
	host, err := wasm.NewHost(context.Background(), wasm.HostOptions{CacheDir: t.TempDir(), Log: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = host.Close(context.Background()) })
	// As the daemon's policy validation does: the module is compiled into
	// the cache before its observer starts, whose first turn would
	// otherwise spend its deadline compiling.
	require.NoError(t, host.CheckFile(filepath.Join(dir, "bademit.wasm"), 0))
	f := setup(t)
	spec := observer.Spec{Policy: p, Observer: p.Spec.Observers[0], CorrelationID: correlation, State: f.state.PID, Log: f.log,
		Access: kinds.NewTargetAccess(p, allowList(t, f.allowed...), nil), Plugins: host, PluginDir: dir}
	t.Cleanup(spec.Access.Close)

	failed := make(chan restart.Failure, 10)
	strategy := restart.New(restart.Policy{MinBackoff: time.Hour, MaxBackoff: time.Hour, GiveUpAt: 5, Window: time.Minute})
	parent := f.sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		switch msg := ctx.Message().(type) {
		case *actor.Started:
			ctx.Spawn(observer.Props(spec))
		case *restart.Failed:
			failed <- msg.Failure
		}
	}, actor.WithSupervisor(strategy)))
	t.Cleanup(func() { _ = f.sys.Root.StopFuture(parent).Wait() })

	var failure restart.Failure
	select {
	case failure = <-failed:
	case <-time.After(actortest.Wait):
		t.Fatal("the observer never failed")
	}
	assert.Contains(t, failure.Reason.Error(), `plugin bademit.wasm: invalid emit: 1 of 2 records rejected; host: emit: record rejected: type_suffix "Not A Type!"`)
	assert.Contains(t, failure.Reason.Error(), "(3 calls in a row)")

	var warnings []*protocol.ObserverWarning
	require.Eventually(t, func() bool {
		warnings = warnings[:0]
		for _, m := range f.state.Messages() {
			if w, ok := m.(*protocol.ObserverWarning); ok {
				warnings = append(warnings, w)
			}
		}
		return len(warnings) >= 2
	}, actortest.Wait, 5*time.Millisecond, "the first two calls warn")
	require.Len(t, warnings, 2, "the third call failed instead")
	for _, w := range warnings {
		assert.Equal(t, "observer/web/plugin", w.From.Path())
		assert.Equal(t, `plugin bademit.wasm: invalid emit: 1 of 2 records rejected; host: emit: record rejected: type_suffix "Not A Type!" is not lower-case dotted words`, w.Reason)
	}
	// Every call's valid record is published, the failed one's included.
	f.waitEvents(t, "observation.plugin.valid", 3)
}
