package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/test/plugintest"
)

// modules builds the plugins the tests check into a directory of the test.
func modules(t *testing.T) (threshold, ratio, bademit string) {
	t.Helper()
	dir := t.TempDir()
	var wg sync.WaitGroup
	wg.Go(func() {
		threshold = plugintest.Build(t, "github.com/polar/observerd/wasm/examples/status-threshold", dir, "status-threshold")
	})
	wg.Go(func() {
		ratio = plugintest.Build(t, "github.com/polar/observerd/wasm/examples/error-ratio", dir, "error-ratio")
	})
	wg.Go(func() {
		bademit = plugintest.Build(t, "github.com/polar/observerd/wasm/testdata/bademit", dir, "bademit")
	})
	wg.Wait()
	return threshold, ratio, bademit
}

// fakeTarget serves what the plugins read: a JSON status, and a request
// counter that grows by 10 at every scrape, 2 of them errors.
func fakeTarget(t *testing.T) string {
	var scrapes atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/api/status", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, `{"backlog":150}`) })
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		n := scrapes.Add(1)
		fmt.Fprintf(w, "observable_http_requests_total{code=\"200\"} %d\nobservable_http_requests_total{code=\"500\"} %d\n", 8*n, 2*n)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestPluginCheck(t *testing.T) {
	threshold, ratio, bademit := modules(t)
	target := fakeTarget(t)
	tests := []struct {
		name     string
		args     []string
		code     int
		out      []string // in order
		notOut   []string
		err      []string
		compiles int // "plugin module compiled" lines
	}{
		{name: "the module alone", args: []string{threshold}, code: exitOK,
			out: []string{threshold + ": ABI v1", "imports: ", "polar.http_request"}, compiles: 1},
		{name: "one call, compiled once", args: []string{"--target", target, "--config", `{"threshold": 100}`, threshold}, code: exitOK,
			out: []string{"observe against " + target + ": 1 observations in ",
				`- observation.plugin.threshold severity=high result=failed subject="" schema="polar.examples.status_threshold.v1" labels=map[pointer:/backlog]`,
				"  error: /backlog is 150, above the threshold 100",
				`  payload: {"value":150,"threshold":100,"above":true}`}, compiles: 1},
		{name: "the state carried from call to call", args: []string{"--calls", "3", "--target", target, ratio}, code: exitOK,
			out: []string{"call 1 of 3 against " + target + ": 0 observations", "call 2 of 3 against " + target + ": 1 observations",
				"- observation.plugin.error_ratio severity=info result=ok (none set)", `"ratio":0.2,"requests":10,"errors":2`,
				"call 3 of 3 against " + target + ": 1 observations"},
			err: []string{"counters of observable_http_requests_total stored"}, compiles: 1},
		{name: "flags after the module", args: []string{ratio, "--target", target, "--calls", "2"}, code: exitOK,
			out: []string{"call 2 of 2"}, compiles: 1},
		{name: "an invalid emit fails the check", args: []string{"--target", target, "--config", `{"reject": "suffix"}`, bademit}, code: exitProblems,
			out:      []string{"observe against " + target + ": 1 observations", "- observation.plugin.valid"},
			err:      []string{bademit + `: call 1: plugin bademit.wasm: invalid emit: 1 of 2 records rejected; host: emit: record rejected: type_suffix "Not A Type!" is not lower-case dotted words`},
			compiles: 1},
		{name: "stops at the first failing call", args: []string{"--calls", "5", "--target", target, "--config", `{"reject": "garbage"}`, bademit},
			code: exitProblems, out: []string{"call 1 of 5"}, notOut: []string{"call 2 of 5"},
			err: []string{"call 1: plugin bademit.wasm: invalid emit: 1 of 2 records rejected; host: emit: record rejected: not a PluginObservation"}, compiles: 1},
		{name: "--calls bounded", args: []string{"--calls", "101", "--target", target, ratio}, code: exitUsage,
			err: []string{"--calls must be between 1 and 100, got 101"}},
		{name: "--calls at least 1", args: []string{"--calls", "0", "--target", target, ratio}, code: exitUsage,
			err: []string{"--calls must be between 1 and 100, got 0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"plugin", "check"}, tt.args...), &stdout, &stderr)
			require.Equal(t, tt.code, code, "stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
			out := stdout.String()
			for _, want := range tt.out {
				i := strings.Index(out, want)
				require.GreaterOrEqual(t, i, 0, "stdout has %q:\n%s", want, stdout.String())
				out = out[i+len(want):]
			}
			for _, not := range tt.notOut {
				assert.NotContains(t, stdout.String(), not)
			}
			for _, want := range tt.err {
				assert.Contains(t, stderr.String(), want)
			}
			assert.Equal(t, tt.compiles, strings.Count(stderr.String(), "plugin module compiled"), "compilations:\n%s", stderr.String())
		})
	}
}
