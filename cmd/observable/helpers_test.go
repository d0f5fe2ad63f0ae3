package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polar/observerd/test/actortest"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

const (
	waitFor = 5 * time.Second
	tick    = 5 * time.Millisecond
)

// instance is one observable service run in-process.
type instance struct {
	t         *testing.T
	dir       string
	readyFile string
	addr      string
	base      string
	transport *http.Transport
	client    *http.Client
	stdout    actortest.SyncBuffer
	stderr    actortest.SyncBuffer
	cancel    context.CancelFunc
	done      chan int
	stopOnce  sync.Once
	code      int
}

// start runs the service on a free port and waits for its ready file. It
// registers a cleanup that stops it and then checks that no goroutine
// outlived it; tests that stop it themselves get the same check.
func start(t *testing.T, args ...string) *instance {
	t.Helper()
	in := &instance{t: t, dir: t.TempDir(), done: make(chan int, 1)}
	in.readyFile = filepath.Join(in.dir, "ready")
	in.transport = &http.Transport{}
	in.client = &http.Client{Transport: in.transport, Timeout: waitFor}
	// Cleanups run last-registered first: the leak check runs after stop.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	t.Cleanup(func() { in.stop() })

	ctx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	all := append([]string{"--listen", "127.0.0.1:0", "--ready-file", in.readyFile}, args...)
	go func() { in.done <- run(ctx, all, &in.stdout, &in.stderr) }()

	var exited bool
	require.Eventually(t, func() bool {
		if len(in.done) > 0 {
			exited = true
			return true
		}
		b, err := os.ReadFile(in.readyFile)
		if err != nil {
			return false
		}
		in.addr = string(b)
		return true
	}, waitFor, tick, "the ready file never appeared")
	require.False(t, exited, "run exited before it was ready; stderr:\n%s", in.stderr.String())
	in.base = "http://" + in.addr
	return in
}

// stop cancels the run and returns its exit code; it may be called again.
func (in *instance) stop() int {
	in.stopOnce.Do(func() {
		in.cancel()
		select {
		case in.code = <-in.done:
		case <-time.After(2 * waitFor):
			in.t.Errorf("run did not return after cancel; stderr:\n%s", in.stderr.String())
			in.code = -1
		}
		in.transport.CloseIdleConnections()
	})
	return in.code
}

func (in *instance) do(t *testing.T, method, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, in.base+path, nil)
	require.NoError(t, err)
	resp, err := in.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func (in *instance) get(t *testing.T, path string) (int, string) {
	t.Helper()
	return in.do(t, http.MethodGet, path)
}

// control posts value to a control endpoint and requires success.
func (in *instance) control(t *testing.T, what, value string) controlStateBody {
	t.Helper()
	code, body := in.do(t, http.MethodPost, "/control/"+what+"?value="+url.QueryEscape(value))
	require.Equal(t, http.StatusOK, code, body)
	var st controlStateBody
	require.NoError(t, json.Unmarshal([]byte(body), &st))
	return st
}

// state reads GET /control/state, which answers in every mode.
func (in *instance) state(t *testing.T) controlStateBody {
	t.Helper()
	code, body := in.get(t, "/control/state")
	require.Equal(t, http.StatusOK, code, body)
	var st controlStateBody
	require.NoError(t, json.Unmarshal([]byte(body), &st))
	return st
}

func (in *instance) counts(t *testing.T) map[string]uint64 {
	t.Helper()
	code, body := in.get(t, "/control/counts")
	require.Equal(t, http.StatusOK, code, body)
	var m map[string]uint64
	require.NoError(t, json.Unmarshal([]byte(body), &m))
	return m
}

func (in *instance) status(t *testing.T) (int, statusBody) {
	t.Helper()
	code, body := in.get(t, "/api/status")
	var st statusBody
	require.NoError(t, json.Unmarshal([]byte(body), &st), body)
	return code, st
}

// metrics scrapes and parses /metrics.
func (in *instance) metrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := in.get(t, "/metrics")
	require.Equal(t, http.StatusOK, code, body)
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	require.NoError(t, err)
	return mfs
}

// metricValue is the value of the sample of family name whose labels include
// labels; 0 when there is none yet, as for a counter never incremented.
func metricValue(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	mf, ok := mfs[name]
	if !ok {
		return 0
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue()
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount())
		default:
			t.Fatalf("metric %s has unexpected type %v", name, mf.GetType())
		}
	}
	return 0
}
