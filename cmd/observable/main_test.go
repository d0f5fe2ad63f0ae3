package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/polar/observerd/test/actortest"
	"github.com/stretchr/testify/require"
)

func TestHealthyEndpoints(t *testing.T) {
	in := start(t)

	code, body := in.get(t, "/healthz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok", body)

	code, st := in.status(t)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok", st.Status)
	require.Equal(t, modeOK, st.Mode)
	require.Equal(t, int64(0), st.Backlog)
	require.Equal(t, version, st.Version)
	require.GreaterOrEqual(t, st.UptimeSeconds, 0.0)
	require.Equal(t, map[string]uint64{"/healthz": 1, "/api/status": 1}, st.Requests)

	mfs := in.metrics(t)
	for _, name := range []string{
		"observable_http_requests_total",
		"observable_http_request_duration_seconds",
		"observable_queue_backlog",
		"observable_build_info",
		"go_goroutines",
		"process_start_time_seconds",
	} {
		require.Contains(t, mfs, name)
	}
	require.Equal(t, 1.0, metricValue(t, mfs, "observable_mode", map[string]string{"mode": "ok"}))
	require.Equal(t, 0.0, metricValue(t, mfs, "observable_mode", map[string]string{"mode": "fail"}))

	require.Contains(t, in.stdout.String(), "listening on "+in.addr+"\n")
	require.Equal(t, 0, in.stop())
}

func TestModes(t *testing.T) {
	tests := []struct {
		name  string
		args  []string          // flags at start
		setup map[string]string // control calls after start, in order of keys below
		check func(t *testing.T, in *instance)
	}{
		{
			name: "ok",
			check: func(t *testing.T, in *instance) {
				for range 3 {
					code, body := in.get(t, "/healthz")
					require.Equal(t, http.StatusOK, code)
					require.Equal(t, "ok", body)
				}
			},
		},
		{
			name:  "fail from the control API",
			setup: map[string]string{"mode": "fail"},
			check: func(t *testing.T, in *instance) {
				code, body := in.get(t, "/healthz")
				require.Equal(t, http.StatusServiceUnavailable, code)
				require.Equal(t, "failing\n", body)
				code, _ = in.get(t, "/metrics")
				require.Equal(t, http.StatusServiceUnavailable, code)
				code, st := in.status(t)
				require.Equal(t, http.StatusServiceUnavailable, code)
				require.Equal(t, "failing", st.Status)
				require.Equal(t, modeFail, st.Mode)
			},
		},
		{
			name: "fail from the flag",
			args: []string{"--mode", "fail"},
			check: func(t *testing.T, in *instance) {
				code, _ := in.get(t, "/healthz")
				require.Equal(t, http.StatusServiceUnavailable, code)
				in.control(t, "mode", "ok")
				code, _ = in.get(t, "/healthz")
				require.Equal(t, http.StatusOK, code)
			},
		},
		{
			name:  "slow applies the latency",
			setup: map[string]string{"latency": "60ms", "mode": "slow"},
			check: func(t *testing.T, in *instance) {
				for _, path := range []string{"/healthz", "/metrics", "/api/status"} {
					begin := time.Now()
					code, _ := in.get(t, path)
					require.Equal(t, http.StatusOK, code, path)
					require.GreaterOrEqual(t, time.Since(begin), 60*time.Millisecond, path)
				}
				_, st := in.status(t)
				require.Equal(t, "degraded", st.Status)
				require.Equal(t, "60ms", st.Latency)
			},
		},
		{
			name: "slow without a latency waits the default",
			args: []string{"--mode", "slow"},
			check: func(t *testing.T, in *instance) {
				// Not waiting 2s here: a short client timeout shows it is slow,
				// and the unit test of modeState pins the default.
				short := &http.Client{Transport: in.transport, Timeout: 100 * time.Millisecond}
				_, err := short.Get(in.base + "/healthz")
				requireTimeout(t, err)
			},
		},
		{
			name: "latency flag applies in mode ok too",
			args: []string{"--latency", "40ms"},
			check: func(t *testing.T, in *instance) {
				begin := time.Now()
				code, _ := in.get(t, "/healthz")
				require.Equal(t, http.StatusOK, code)
				require.GreaterOrEqual(t, time.Since(begin), 40*time.Millisecond)
			},
		},
		{
			name:  "flap alternates per request",
			setup: map[string]string{"mode": "flap"},
			check: func(t *testing.T, in *instance) {
				var got []int
				for range 6 {
					code, _ := in.get(t, "/healthz")
					got = append(got, code)
				}
				require.Equal(t, []int{200, 503, 200, 503, 200, 503}, got)
				_, st := in.status(t)
				require.Equal(t, "flapping", st.Status)
			},
		},
		{
			name: "flap per period",
			args: []string{"--mode", "flap", "--flap-period", "50ms"},
			check: func(t *testing.T, in *instance) {
				// Wall-clock periods: poll until both answers were seen.
				seen := map[int]bool{}
				require.Eventually(t, func() bool {
					resp, err := in.client.Get(in.base + "/healthz")
					if err != nil {
						return false
					}
					resp.Body.Close()
					seen[resp.StatusCode] = true
					return seen[200] && seen[503]
				}, waitFor, tick)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := start(t, tc.args...)
			for _, key := range []string{"latency", "flap", "backlog", "mode"} {
				if v, ok := tc.setup[key]; ok {
					in.control(t, key, v)
				}
			}
			tc.check(t, in)
			require.Equal(t, 0, in.stop())
		})
	}
}

func requireTimeout(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout(), "want a timeout, got %v", err)
}

func TestHangReleasesWhenTheClientGivesUp(t *testing.T) {
	in := start(t, "--mode", "hang")

	short := &http.Client{Transport: in.transport, Timeout: 150 * time.Millisecond}
	for _, path := range []string{"/healthz", "/metrics", "/api/status"} {
		_, err := short.Get(in.base + path)
		requireTimeout(t, err)
	}
	// The requests were counted on arrival even though never answered.
	require.Equal(t, map[string]uint64{"/healthz": 1, "/metrics": 1, "/api/status": 1}, in.counts(t))

	// Still in mode hang, the handlers gave up with their clients: nothing
	// is held any more, so no goroutine is left behind.
	require.Eventually(t, func() bool { return in.state(t).Hanging == 0 }, waitFor, tick)
	require.Equal(t, modeHang, in.state(t).Mode)

	in.control(t, "mode", "ok")
	mfs := in.metrics(t)
	require.Equal(t, 1.0, metricValue(t, mfs, "observable_http_requests_total", map[string]string{"path": "/healthz", "code": "499"}))
	require.Equal(t, 0.0, metricValue(t, mfs, "observable_hanging_requests", nil))

	require.Equal(t, 0, in.stop())
	// start's cleanup runs goleak.VerifyNone: no handler goroutine is left.
}

func TestHangHeldWhileTheClientWaits(t *testing.T) {
	in := start(t)
	in.control(t, "mode", "hang")

	// A client that would wait for ever is held: the count shows it arrived,
	// and no answer comes while the mode stays hang.
	type answer struct {
		code int
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := in.client.Get(in.base + "/healthz")
		if err != nil {
			got <- answer{err: err}
			return
		}
		resp.Body.Close()
		got <- answer{code: resp.StatusCode}
	}()
	require.Eventually(t, func() bool { return in.state(t).Hanging == 1 }, waitFor, tick)
	require.Equal(t, uint64(1), in.counts(t)["/healthz"])
	require.Empty(t, got, "a request answered in mode hang")

	// Switching the mode releases it and serves it in the new mode.
	in.control(t, "mode", "fail")
	select {
	case a := <-got:
		require.NoError(t, a.err)
		require.Equal(t, http.StatusServiceUnavailable, a.code)
	case <-time.After(waitFor):
		t.Fatal("the hung request was not released by the mode change")
	}
	require.Equal(t, 0, in.stop())
}

func TestHangReleasedOnShutdown(t *testing.T) {
	in := start(t, "--mode", "hang")
	got := make(chan int, 1)
	go func() {
		resp, err := in.client.Get(in.base + "/healthz")
		if err != nil {
			got <- -1
			return
		}
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	require.Eventually(t, func() bool { return in.state(t).Hanging == 1 }, waitFor, tick)

	begin := time.Now()
	require.Equal(t, 0, in.stop())
	require.Less(t, time.Since(begin), 5*time.Second, "shutdown waited for its deadline")
	require.Equal(t, http.StatusServiceUnavailable, <-got)
}

func TestCountsAndReset(t *testing.T) {
	in := start(t)
	require.Empty(t, in.counts(t))

	for range 3 {
		in.get(t, "/healthz")
	}
	in.get(t, "/metrics")
	in.get(t, "/api/status")
	code, _ := in.get(t, "/no/such/path")
	require.Equal(t, http.StatusNotFound, code)
	in.control(t, "backlog", "7") // control calls are never counted

	require.Equal(t, map[string]uint64{
		"/healthz":      3,
		"/metrics":      1,
		"/api/status":   1,
		"/no/such/path": 1,
	}, in.counts(t))

	code, body := in.get(t, "/control/connections")
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `{"accepted":1}`, body, "one kept-alive connection served everything")

	code, _ = in.do(t, http.MethodPost, "/control/reset")
	require.Equal(t, http.StatusOK, code)
	require.Empty(t, in.counts(t))
	_, body = in.get(t, "/control/connections")
	require.JSONEq(t, `{"accepted":0}`, body)

	// A bare TCP connect, as a tcp observer makes, is counted as a connection.
	c, err := net.Dial("tcp", in.addr)
	require.NoError(t, err)
	require.NoError(t, c.Close())
	require.Eventually(t, func() bool {
		_, body := in.get(t, "/control/connections")
		return strings.TrimSpace(body) == `{"accepted":1}`
	}, waitFor, tick)

	in.get(t, "/healthz")
	require.Equal(t, map[string]uint64{"/healthz": 1}, in.counts(t))
	require.Equal(t, 0, in.stop())
}

func TestMetricsMove(t *testing.T) {
	in := start(t)
	healthOK := map[string]string{"path": "/healthz", "code": "200"}
	healthFail := map[string]string{"path": "/healthz", "code": "503"}

	before := in.metrics(t)
	for range 4 {
		in.get(t, "/healthz")
	}
	in.control(t, "mode", "fail")
	in.get(t, "/healthz")
	in.control(t, "mode", "ok")
	in.control(t, "backlog", "150")
	after := in.metrics(t)

	require.Equal(t, 4.0, metricValue(t, after, "observable_http_requests_total", healthOK)-metricValue(t, before, "observable_http_requests_total", healthOK))
	require.Equal(t, 1.0, metricValue(t, after, "observable_http_requests_total", healthFail)-metricValue(t, before, "observable_http_requests_total", healthFail))
	require.Equal(t, 5.0, metricValue(t, after, "observable_http_request_duration_seconds", map[string]string{"path": "/healthz"}))
	require.Equal(t, 150.0, metricValue(t, after, "observable_queue_backlog", nil))
	// Control routes are labelled by route too, and unknown paths share one label.
	require.Equal(t, 1.0, metricValue(t, after, "observable_http_requests_total", map[string]string{"path": "/control/backlog", "code": "200"}))
	in.get(t, "/x/1")
	in.get(t, "/x/2")
	require.Equal(t, 2.0, metricValue(t, in.metrics(t), "observable_http_requests_total", map[string]string{"path": "unmatched", "code": "404"}))

	_, st := in.status(t)
	require.Equal(t, int64(150), st.Backlog)
	require.Equal(t, 0, in.stop())
}

func TestControlErrors(t *testing.T) {
	in := start(t)
	tests := []struct {
		method, path string
		want         int
	}{
		{http.MethodPost, "/control/mode?value=sideways", http.StatusBadRequest},
		{http.MethodPost, "/control/mode", http.StatusBadRequest},
		{http.MethodPost, "/control/latency?value=soon", http.StatusBadRequest},
		{http.MethodPost, "/control/latency?value=-1s", http.StatusBadRequest},
		{http.MethodPost, "/control/flap?value=-1s", http.StatusBadRequest},
		{http.MethodPost, "/control/backlog?value=lots", http.StatusBadRequest},
		{http.MethodPost, "/control/backlog?value=-3", http.StatusBadRequest},
		{http.MethodGet, "/control/mode?value=fail", http.StatusMethodNotAllowed},
		{http.MethodPost, "/control/counts", http.StatusMethodNotAllowed},
		{http.MethodPost, "/healthz", http.StatusMethodNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			code, body := in.do(t, tc.method, tc.path)
			require.Equal(t, tc.want, code, body)
		})
	}
	// Nothing above changed the state.
	require.Equal(t, controlStateBody{Mode: modeOK, Latency: "0s", FlapPeriod: "0s"}, in.state(t))
	require.Equal(t, 0, in.stop())
}

func TestFormValue(t *testing.T) {
	in := start(t)
	resp, err := in.client.PostForm(in.base+"/control/mode", map[string][]string{"value": {"fail"}})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	code, _ := in.get(t, "/healthz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, 0, in.stop())
}

func TestPIDAndReadyFiles(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "observable.pid")
	in := start(t, "--pid-file", pidFile)

	b, err := os.ReadFile(pidFile)
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(os.Getpid()), strings.TrimSpace(string(b)))
	_, port, err := net.SplitHostPort(in.addr)
	require.NoError(t, err)
	require.NotEqual(t, "0", port)

	require.Equal(t, 0, in.stop())
	require.NoFileExists(t, pidFile)
	require.NoFileExists(t, in.readyFile)
}

func TestFlags(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()

	tests := []struct {
		name       string
		args       []string
		want       int
		wantOut    string
		wantErrOut string
	}{
		{name: "version", args: []string{"--version"}, want: 0, wantOut: version + "\n"},
		{name: "help", args: []string{"-h"}, want: 0, wantErrOut: "-ready-file"},
		{name: "unknown flag", args: []string{"--nope"}, want: 2, wantErrOut: "flag provided but not defined"},
		{name: "bad mode", args: []string{"--mode", "sideways"}, want: 2, wantErrOut: "parse mode"},
		{name: "negative latency", args: []string{"--latency", "-1s"}, want: 2, wantErrOut: "negative"},
		{name: "zero shutdown timeout", args: []string{"--shutdown-timeout", "0s"}, want: 2, wantErrOut: "must be positive"},
		{name: "extra argument", args: []string{"serve"}, want: 2, wantErrOut: "unexpected arguments"},
		{name: "port in use", args: []string{"--listen", busy.Addr().String()}, want: 1, wantErrOut: "listen on"},
		{name: "unwritable pid file", args: []string{"--listen", "127.0.0.1:0", "--pid-file", filepath.Join(t.TempDir(), "missing", "x.pid")}, want: 1, wantErrOut: "write pid file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr actortest.SyncBuffer
			got := run(context.Background(), tc.args, &stdout, &stderr)
			require.Equal(t, tc.want, got, stderr.String())
			require.Contains(t, stdout.String(), tc.wantOut)
			require.Contains(t, stderr.String(), tc.wantErrOut)
		})
	}
}
