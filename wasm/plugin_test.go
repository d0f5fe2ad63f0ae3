package wasm

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/procfs"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/messages"
)

func timeNow() time.Time { return time.Unix(1_700_000_000, 0) }

// target is an httptest server standing for the policy's target, and
// outside one that is not the target; hits counts the requests outside
// received.
type target struct {
	srv     *httptest.Server
	outside *httptest.Server
	hits    atomic.Int64 // requests that reached outside
	// requests counts those that reached the target.
	requests atomic.Int64
	hang     chan struct{} // /app/hang answers when it is closed
}

func newTarget(t *testing.T) *target {
	tg := &target{}
	tg.outside = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		tg.hits.Add(1)
		fmt.Fprint(w, "outside")
	}))
	t.Cleanup(tg.outside.Close)
	mux := http.NewServeMux()
	mux.HandleFunc("/app/status", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"backlog":42}`)
	})
	tg.hang = make(chan struct{})
	t.Cleanup(func() { close(tg.hang) })
	mux.HandleFunc("/app/hang", func(w http.ResponseWriter, r *http.Request) {
		select { // answers once the test is over
		case <-tg.hang:
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/app/doc", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"backlog":42,"mode":"ok","queues":[{"n":1},{"n":2}]}`)
	})
	mux.HandleFunc("/app/hop", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/app/status", http.StatusFound)
	})
	mux.HandleFunc("/app/loop", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/app/loop", http.StatusFound)
	})
	mux.HandleFunc("/app/away", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, tg.outside.URL+"/", http.StatusFound)
	})
	mux.HandleFunc("/app/big", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(make([]byte, MaxBodyBytes+1000))
	})
	tg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tg.requests.Add(1)
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(tg.srv.Close)
	return tg
}

// spec returns a plugin spec for guest name against the target, with its
// config.
func (tg *target) spec(t *testing.T, name string, config any, logs *logBuffer) PluginSpec {
	cfg, err := json.Marshal(config)
	require.NoError(t, err)
	return PluginSpec{
		Path:       guest(t, name),
		Observer:   "obs-" + name,
		Target:     Target{Name: "web", URL: tg.srv.URL + "/app"},
		ConfigJSON: cfg,
		HTTP:       newDoer("127.0.0.1"),
		Log:        logs.logger(),
	}
}

func newPlugin(t *testing.T, h *Host, spec PluginSpec) *Plugin {
	t.Helper()
	p, err := h.NewPlugin(context.Background(), spec)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close(context.Background())) })
	return p
}

// observeOne runs one call that must succeed with one observation.
func observeOne(t *testing.T, p *Plugin) *messages.PluginObservation {
	t.Helper()
	obs, err := p.Observe(context.Background(), timeNow())
	require.NoError(t, err)
	require.Len(t, obs, 1)
	return obs[0]
}

func requireFailure(t *testing.T, err error, want Failure) *CallError {
	t.Helper()
	var ce *CallError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, want, ce.Failure, "%v", err)
	return ce
}

func TestWellBehaved(t *testing.T) {
	h := newTestHost(t)
	tg := newTarget(t)
	logs := &logBuffer{}
	p := newPlugin(t, h, tg.spec(t, "good", map[string]any{"url": "/status"}, logs))

	o := observeOne(t, p)
	assert.Equal(t, "good", o.TypeSuffix)
	assert.Equal(t, messages.Severity_SEVERITY_INFO, o.Severity)
	assert.JSONEq(t, `{"backlog":42}`, string(o.Payload))
	assert.Equal(t, "1", o.Labels["calls"])
	assert.Equal(t, "", o.Labels["state"])
	assert.Equal(t, "obs-good", o.Labels["observer"])
	assert.Equal(t, "web "+tg.srv.URL+"/app", o.Labels["target"])
	assert.Equal(t, strconv.FormatInt(timeNow().Unix(), 10), o.Labels["time"])
	assert.Equal(t, "200", o.Labels["status"])
	assert.Equal(t, "false", o.Labels["truncated"])
	n, err := strconv.Atoi(o.Labels["http"])
	require.NoError(t, err)
	assert.Positive(t, n, "http_request returned the response length")

	e := logs.find(t, "observing web")
	require.NotNil(t, e, "the plugin's log reaches the daemon's")
	assert.Equal(t, "good.wasm", e["plugin"])
	assert.Equal(t, "info", e["level"])

	// The same instance, warm, with the state the first call saved.
	o = observeOne(t, p)
	assert.Equal(t, "2", o.Labels["calls"])
	assert.Equal(t, "1", o.Labels["state"])
	assert.Equal(t, []byte("2"), p.state)
}

func TestHTTPRequest(t *testing.T) {
	h := newTestHost(t)
	tg := newTarget(t)
	tests := []struct {
		name      string
		url       string
		wantCode  int // http_request's result; > 0 for any length
		wantLog   string
		truncated bool
	}{
		{name: "path on the target", url: "/status", wantCode: 1},
		{name: "absolute url on the target", url: tg.srv.URL + "/app/status", wantCode: 1},
		{name: "redirect on the target", url: "/hop", wantCode: 1},
		{name: "body over the cap", url: "/big", wantCode: 1, truncated: true},
		{name: "host outside the target", url: tg.outside.URL + "/", wantCode: requestNotAllowed, wantLog: "is not on the target"},
		{name: "other scheme", url: "ftp://127.0.0.1/", wantCode: requestNotAllowed, wantLog: "is not on the target"},
		{name: "redirect outside the target", url: "/away", wantCode: requestFailed, wantLog: "redirect refused"},
		{name: "redirect loop", url: "/loop", wantCode: requestFailed, wantLog: "stopped after 5 redirects"},
		{name: "neither absolute nor a path", url: "status", wantCode: requestInvalid, wantLog: "bad url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := &logBuffer{}
			p := newPlugin(t, h, tg.spec(t, "good", map[string]any{"url": tt.url}, logs))
			o := observeOne(t, p)
			code, err := strconv.Atoi(o.Labels["http"])
			require.NoError(t, err)
			if tt.wantCode > 0 {
				assert.Positive(t, code)
				assert.Equal(t, "200", o.Labels["status"])
				assert.Equal(t, strconv.FormatBool(tt.truncated), o.Labels["truncated"])
				if tt.truncated {
					assert.Equal(t, strconv.Itoa(MaxBodyBytes), o.Labels["body"])
				}
			} else {
				assert.Equal(t, tt.wantCode, code)
			}
			if tt.wantLog != "" {
				assert.NotNil(t, logs.find(t, tt.wantLog), "log says %q", tt.wantLog)
			}
			assert.Zero(t, tg.hits.Load(), "nothing reached the host outside the target")
		})
	}
}

// TestHTTPExtract: the host looks up the pointers of HttpRequest.extract
// in the JSON body and returns their values as JSON text; a pointer that
// locates nothing, or a body that is not JSON, has none; an extract over
// its caps is refused before anything is sent.
func TestHTTPExtract(t *testing.T) {
	h := newTestHost(t)
	tg := newTarget(t)
	long := "/" + strings.Repeat("x", MaxPointerBytes)
	tests := []struct {
		name    string
		url     string
		extract []string
		want    map[string]string // the values returned
		code    int               // http_request's result when refused
	}{
		{name: "values", url: "/doc", extract: []string{"/backlog", "/mode", "/queues/1", "/queues/1/n", ""},
			want: map[string]string{"/backlog": "42", "/mode": `"ok"`, "/queues/1": `{"n":2}`, "/queues/1/n": "2",
				"": `{"backlog":42,"mode":"ok","queues":[{"n":1},{"n":2}]}`}},
		{name: "absent", url: "/doc", extract: []string{"/missing", "/queues/01", "/queues/2", "/backlog/x"}, want: map[string]string{}},
		{name: "not json", url: "/big", extract: []string{"/backlog"}, want: map[string]string{}},
		{name: "none asked", url: "/status", want: map[string]string{}},
		{name: "not a pointer", url: "/status", extract: []string{"backlog"}, code: requestInvalid},
		{name: "pointer over the cap", url: "/status", extract: []string{long}, code: requestInvalid},
		{name: "too many pointers", url: "/status", extract: make([]string, MaxExtract+1), code: requestInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := &logBuffer{}
			before := tg.requests.Load()
			o := observeOne(t, newPlugin(t, h, tg.spec(t, "good", map[string]any{"url": tt.url, "extract": tt.extract}, logs)))
			if tt.code != 0 {
				assert.Equal(t, strconv.Itoa(tt.code), o.Labels["http"])
				assert.NotNil(t, logs.find(t, "http_request: bad extract"))
				assert.Equal(t, before, tg.requests.Load(), "nothing was sent")
				return
			}
			got := map[string]string{}
			for k, v := range o.Labels {
				if p, ok := strings.CutPrefix(k, "value "); ok {
					got[p] = v
				}
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

// TestHTTPRequestEndsBeforeTheCall: a request that gets no answer ends
// with -5 a tenth of the call's timeout before the call's deadline, so
// that the guest reports it and returns in time: the call succeeds and
// the instance stays warm.
func TestHTTPRequestEndsBeforeTheCall(t *testing.T) {
	h := newTestHost(t)
	tg := newTarget(t)
	spec := tg.spec(t, "good", map[string]any{"url": "/hang"}, &logBuffer{})
	spec.Timeout = 300 * time.Millisecond
	p := newPlugin(t, h, spec)
	for i := range 2 {
		o := observeOne(t, p)
		assert.Equal(t, strconv.Itoa(requestTimeout), o.Labels["http"])
		assert.Equal(t, strconv.Itoa(i+1), o.Labels["calls"], "the instance stayed warm")
	}
}

// TestHTTPBodyCap: a response body is cut at the spec's MaxBodyBytes (the
// daemon's limits.max_response_bytes) when it is below MaxBodyBytes, and
// at MaxBodyBytes otherwise.
func TestHTTPBodyCap(t *testing.T) {
	h := newTestHost(t)
	tg := newTarget(t)
	for _, tt := range []struct {
		spec, want int64
	}{
		{spec: 0, want: MaxBodyBytes},
		{spec: 1000, want: 1000},
		{spec: 4 << 20, want: MaxBodyBytes},
	} {
		t.Run(strconv.FormatInt(tt.spec, 10), func(t *testing.T) {
			spec := tg.spec(t, "good", map[string]any{"url": "/big"}, &logBuffer{})
			spec.MaxBodyBytes = tt.spec
			o := observeOne(t, newPlugin(t, h, spec))
			assert.Equal(t, "true", o.Labels["truncated"])
			assert.Equal(t, strconv.FormatInt(tt.want, 10), o.Labels["body"])
		})
	}
}

func TestGuestErrorKeepsInstance(t *testing.T) {
	h := newTestHost(t)
	tg := newTarget(t)
	p := newPlugin(t, h, tg.spec(t, "good", map[string]any{"fail": true}, &logBuffer{}))
	for i := 1; i <= 2; i++ {
		obs, err := p.Observe(context.Background(), timeNow())
		ce := requireFailure(t, err, FailureGuest)
		assert.Equal(t, "plugin good.wasm: guest error: polar_observe returned 1", ce.Error())
		require.Len(t, obs, 1, "observations emitted before the failure are returned")
		assert.Equal(t, strconv.Itoa(i), obs[0].Labels["calls"], "the instance is kept warm")
	}
}

func TestInfiniteLoop(t *testing.T) {
	h := newTestHost(t)
	tg := newTarget(t)
	spec := tg.spec(t, "loop", map[string]any{}, &logBuffer{})
	spec.Timeout = 200 * time.Millisecond
	p := newPlugin(t, h, spec)

	start := time.Now()
	_, err := p.Observe(context.Background(), timeNow())
	ce := requireFailure(t, err, FailureTimeout)
	assert.Contains(t, ce.Error(), "timeout 200ms")
	assert.Less(t, time.Since(start), 5*time.Second, "the loop was stopped")
	assert.Nil(t, p.inst, "the instance was discarded")

	// A fresh instance, with the state saved before the loop.
	o := observeOne(t, p)
	assert.Equal(t, "1", o.Labels["calls"])
	assert.Equal(t, "looped", o.Labels["state"])
	o = observeOne(t, p)
	assert.Equal(t, "2", o.Labels["calls"])
}

func TestCallerCancel(t *testing.T) {
	h := newTestHost(t)
	tg := newTarget(t)
	p := newPlugin(t, h, tg.spec(t, "loop", map[string]any{}, &logBuffer{}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Whether it comes during instantiation or in the loop, the result is
	// the same: the call ends as canceled, well before its deadline.
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := p.Observe(ctx, timeNow())
	requireFailure(t, err, FailureCanceled)
}

// rss is the process's resident memory.
func rss(t *testing.T) uint64 {
	t.Helper()
	p, err := procfs.Self()
	require.NoError(t, err)
	st, err := p.Stat()
	require.NoError(t, err)
	return uint64(st.ResidentMemory())
}

func TestMemoryBomb(t *testing.T) {
	h := newTestHost(t)
	tg := newTarget(t)
	spec := tg.spec(t, "bomb", map[string]any{}, &logBuffer{})
	spec.MemoryLimit = 16 << 20
	spec.Timeout = 10 * time.Second
	p := newPlugin(t, h, spec)

	// Warm up (compilation, the first instance), then measure.
	_, err := p.Observe(context.Background(), timeNow())
	requireFailure(t, err, FailureMemory)
	before := rss(t)
	for range 5 {
		_, err := p.Observe(context.Background(), timeNow())
		ce := requireFailure(t, err, FailureMemory)
		assert.Contains(t, ce.Error(), "past its limit of 16384 KiB")
		assert.Nil(t, p.inst)
		// Each bomb touched its 16 MiB; the discarded instances gave it back.
		assert.Less(t, rss(t), before+24<<20, "RSS stays bounded by the limit")
	}
}

func TestTrap(t *testing.T) {
	h := newTestHost(t)
	tg := newTarget(t)
	logs := &logBuffer{}
	p := newPlugin(t, h, tg.spec(t, "trap", map[string]any{}, logs))
	for range 2 {
		_, err := p.Observe(context.Background(), timeNow())
		ce := requireFailure(t, err, FailureTrap)
		assert.Contains(t, ce.Detail, "(stderr: panic: trap on every call)")
		assert.Nil(t, p.inst)
	}
	assert.NotNil(t, logs.find(t, "about to panic"))
	assert.NotNil(t, logs.find(t, "goroutine"), "the guest's stderr is logged")
}

func TestEmitFlood(t *testing.T) {
	h := newTestHost(t)
	tg := newTarget(t)
	p := newPlugin(t, h, tg.spec(t, "flood", map[string]any{}, &logBuffer{}))
	obs, err := p.Observe(context.Background(), timeNow())
	ce := requireFailure(t, err, FailureEmitLimit)
	assert.Contains(t, ce.Error(), "more than 1024 KiB emitted")
	// Two invalid records counted as emit calls, the oversized one refused
	// before; the rest accepted up to the cap.
	assert.Len(t, obs, MaxEmits-2)
	assert.Equal(t, "0,-1,-2,-3", string(p.state), "the results the guest saw")
	assert.Nil(t, p.inst)
}

func TestOutputCapped(t *testing.T) {
	h := newTestHost(t)
	tg := newTarget(t)
	logs := &logBuffer{}
	p := newPlugin(t, h, tg.spec(t, "noisy", map[string]any{}, logs))
	_, err := p.Observe(context.Background(), timeNow())
	require.NoError(t, err, "a full log is not a failure")
	// The guest wrote 3 MB; the log got its cap plus JSON framing.
	assert.Less(t, logs.len(), 2*MaxLogBytes)
	e := logs.find(t, "plugin output over its cap per call")
	require.NotNil(t, e)
	assert.Greater(t, e["dropped_bytes"], float64(2_000_000))
}

func TestStateLimit(t *testing.T) {
	h := newTestHost(t)
	tg := newTarget(t)
	p := newPlugin(t, h, tg.spec(t, "bigstate", map[string]any{}, &logBuffer{}))
	obs, err := p.Observe(context.Background(), timeNow())
	ce := requireFailure(t, err, FailureStateLimit)
	assert.Contains(t, ce.Error(), "set_state of 102400 bytes, over the cap of 65536")
	require.Len(t, obs, 1)
	assert.Equal(t, "0", obs[0].Labels["small"])
	assert.Equal(t, "-1", obs[0].Labels["big"])
	assert.Equal(t, []byte("v1"), p.state, "the state is unchanged by the refused one")

	obs, err = p.Observe(context.Background(), timeNow())
	requireFailure(t, err, FailureStateLimit)
	assert.Equal(t, "v1", obs[0].Labels["state"], "and passed to the next call")
}

func TestClosedPlugin(t *testing.T) {
	h := newTestHost(t)
	p, err := h.NewPlugin(context.Background(), PluginSpec{Path: guest(t, "empty")})
	require.NoError(t, err)
	require.NoError(t, p.Close(context.Background()))
	require.NoError(t, p.Close(context.Background()))
	_, err = p.Observe(context.Background(), timeNow())
	assert.ErrorContains(t, err, "closed")
}

func TestABIViolation(t *testing.T) {
	h := newTestHost(t)
	tg := newTarget(t)
	p := newPlugin(t, h, tg.spec(t, "badptr", map[string]any{}, &logBuffer{}))
	_, err := p.Observe(context.Background(), timeNow())
	ce := requireFailure(t, err, FailureABI)
	assert.Equal(t, "plugin badptr.wasm: abi violation: emit: buffer [0x7fff0000, +16) outside the guest's memory", ce.Error())
	assert.Nil(t, p.inst)
}

func TestCallMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	h, err := NewHost(context.Background(), HostOptions{CacheDir: filepath.Join(testRoot, "cache"), Log: zerolog.Nop(), Metrics: reg})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, h.Close(context.Background())) })

	good := newPlugin(t, h, PluginSpec{Path: guest(t, "good"), ConfigJSON: []byte("{}")})
	trap := newPlugin(t, h, PluginSpec{Path: guest(t, "trap")})
	for range 2 {
		_, err := good.Observe(context.Background(), timeNow())
		require.NoError(t, err)
	}
	_, err = trap.Observe(context.Background(), timeNow())
	require.Error(t, err)

	families, err := reg.Gather()
	require.NoError(t, err)
	require.Len(t, families, 1)
	assert.Equal(t, "observerd_plugin_call_duration_seconds", families[0].GetName())
	counts := map[string]uint64{}
	for _, m := range families[0].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		counts[labels["plugin"]+" "+labels["result"]] = m.GetHistogram().GetSampleCount()
	}
	assert.Equal(t, map[string]uint64{"good.wasm ok": 2, "trap.wasm trap": 1}, counts)
}
