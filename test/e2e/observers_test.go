//go:build integration

package e2e

import (
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/messages"
)

// control sets one of observable's run-time switches (mode, latency,
// backlog) through its control API.
func control(t *testing.T, target, key, value string) {
	t.Helper()
	resp, err := http.PostForm(target+"/control/"+key, url.Values{"value": {value}})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "set %s to %s", key, value)
}

// firstAfter waits for the first observation of the observer name of
// policy web made after since for which match (nil: any) holds, and
// returns it.
func (c *consumer) firstAfter(t *testing.T, name string, since time.Time, match func(*messages.Event) bool) *messages.Event {
	t.Helper()
	source := "observerd://e2e-node.example/observer/web/" + name
	var found *messages.Event
	require.Eventually(t, func() bool {
		_, evs := c.snapshot()
		for _, ev := range evs {
			if ev != nil && ev.Source == source && strings.HasPrefix(ev.Type, "observation.") && ev.Time.AsTime().After(since) &&
				(match == nil || match(ev)) {
				found = ev
				return true
			}
		}
		return false
	}, wait, tick, "no observation of %s after %s", name, since.Format(time.RFC3339Nano))
	return found
}

// uncut matches the observations that the observer's timeout did not cut.
// On a loaded host the daemon or the service can wait longer than the
// 150 ms timeout for a CPU: an observation of a service that answers at
// once then times out, which says nothing about the service. Where a phase
// expects an answer (or a refusal), the observation checked is the first
// one the timeout did not cut; where it expects the timeout (a service
// that takes 1 s or never answers), any observation is.
func uncut(ev *messages.Event) bool {
	r, _ := messages.ResultOf(ev)
	return r != messages.Result_RESULT_TIMEOUT
}

// sampleOf finds the sample of name with labels exactly.
func sampleOf(samples []*messages.Sample, name string, labels map[string]string) *messages.Sample {
	for _, s := range samples {
		if s.Name == name && fmt.Sprint(s.Labels) == fmt.Sprint(labels) {
			return s
		}
	}
	return nil
}

// TestObserverKinds: observerd observes bin/observable with the four
// built-in kinds while the service is healthy, failing, slow, hanging,
// stopped and started again; the observations that a consumer of the real
// broker receives are checked field by field.
func TestObserverKinds(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "observable.pid")
	svc, addr := runObservable(t, "127.0.0.1:0", "--pid-file", pidFile)
	target := "http://" + addr
	d := newDaemon(t, target,
		withObservers(fmt.Sprintf(`    - {name: health, kind: http, interval: 200ms, timeout: 150ms, http: {path: /healthz}}
    - {name: metrics, kind: prometheus, interval: 200ms, timeout: 150ms, prometheus: {include: ["observable_.*"], exclude: ["observable_build_info"]}}
    - {name: port, kind: tcp, interval: 200ms, timeout: 150ms, tcp: {}}
    - {name: proc, kind: process, interval: 200ms, timeout: 150ms, process: {pid_file: %q}}
`, pidFile)), withConfig(fmt.Sprintf("allowed_pid_dirs: [%q]\n", filepath.Dir(pidFile))))
	c := d.consume(t)
	daemon := d.start(t)
	pid := int32(svc.cmd.Process.Pid)
	// settle sets the backlog that checkMetrics expects, and waits for a
	// /healthz answer, whose counter the next scrape then holds.
	settle := func(t *testing.T) {
		control(t, target, "backlog", "150")
		c.firstAfter(t, "health", time.Now(), uncut)
	}

	type want struct {
		result messages.Result
		err    string // substring of the error; "" for none
		status int32  // http only
	}
	phases := []struct {
		name  string
		enter func(t *testing.T)
		want  map[string]want // by observer
	}{
		{
			name:  "healthy",
			enter: settle,
			want: map[string]want{
				"health":  {result: messages.Result_RESULT_OK, status: 200},
				"metrics": {result: messages.Result_RESULT_OK},
				"port":    {result: messages.Result_RESULT_OK},
				"proc":    {result: messages.Result_RESULT_OK},
			},
		},
		{
			name:  "failing",
			enter: func(t *testing.T) { control(t, target, "mode", "fail") },
			want: map[string]want{
				"health":  {result: messages.Result_RESULT_FAILED, err: "status 503, expected [200]", status: 503},
				"metrics": {result: messages.Result_RESULT_FAILED, err: "status 503, expected 200"},
				"port":    {result: messages.Result_RESULT_OK}, // it still accepts connections
				"proc":    {result: messages.Result_RESULT_OK},
			},
		},
		{
			name: "slow",
			enter: func(t *testing.T) {
				control(t, target, "latency", "1s")
				control(t, target, "mode", "slow")
			},
			want: map[string]want{
				"health":  {result: messages.Result_RESULT_TIMEOUT, err: "context deadline exceeded"},
				"metrics": {result: messages.Result_RESULT_TIMEOUT, err: "context deadline exceeded"},
				"port":    {result: messages.Result_RESULT_OK},
				"proc":    {result: messages.Result_RESULT_OK},
			},
		},
		{
			name:  "hanging",
			enter: func(t *testing.T) { control(t, target, "mode", "hang") },
			want: map[string]want{
				"health":  {result: messages.Result_RESULT_TIMEOUT, err: "context deadline exceeded"},
				"metrics": {result: messages.Result_RESULT_TIMEOUT, err: "context deadline exceeded"},
				"port":    {result: messages.Result_RESULT_OK},
				"proc":    {result: messages.Result_RESULT_OK},
			},
		},
		{
			// Killed: the pid file stays behind, naming a process that is
			// gone, whose pid is then only what a file holds: neither
			// published nor named.
			name: "stopped",
			enter: func(t *testing.T) {
				require.NoError(t, svc.cmd.Process.Kill())
				svc.exitCode(t, wait)
				pid = 0
			},
			want: map[string]want{
				"health":  {result: messages.Result_RESULT_ERROR, err: "connection refused"},
				"metrics": {result: messages.Result_RESULT_ERROR, err: "connection refused"},
				"port":    {result: messages.Result_RESULT_ERROR, err: "connection refused"},
				"proc":    {result: messages.Result_RESULT_FAILED, err: fmt.Sprintf("find process of pid file %s: not running", pidFile)},
			},
		},
		{
			name: "started again",
			enter: func(t *testing.T) {
				restarting := time.Now()
				svc, _ = runObservable(t, addr, "--pid-file", pidFile)
				pid = int32(svc.cmd.Process.Pid)
				// The first observation of the new process says it is one.
				back := c.firstAfter(t, "proc", restarting, func(ev *messages.Event) bool {
					return ev.GetProcess().GetResult() == messages.Result_RESULT_OK
				}).GetProcess()
				assert.Equal(t, pid, back.Pid)
				assert.True(t, back.Restarted, "restarted")
				settle(t)
			},
			want: map[string]want{
				"health":  {result: messages.Result_RESULT_OK, status: 200},
				"metrics": {result: messages.Result_RESULT_OK},
				"port":    {result: messages.Result_RESULT_OK},
				"proc":    {result: messages.Result_RESULT_OK},
			},
		},
	}
	for _, ph := range phases {
		t.Run(ph.name, func(t *testing.T) {
			ph.enter(t)
			since := time.Now()
			got := map[string]*messages.Event{}
			for name, w := range ph.want {
				match := uncut
				if w.result == messages.Result_RESULT_TIMEOUT {
					match = nil
				}
				ev := c.firstAfter(t, name, since, match)
				got[name] = ev
				r, ok := messages.ResultOf(ev)
				require.True(t, ok, "%s: %s is no observation", name, ev.Type)
				assert.Equal(t, w.result, r, "%s: %v", name, ev.GetData())
				errText := ev.GetHttp().GetError() + ev.GetPrometheus().GetError() + ev.GetTcp().GetError() + ev.GetProcess().GetError()
				if w.err == "" {
					assert.Empty(t, errText, name)
				} else {
					assert.Contains(t, errText, w.err, name)
				}
				// The envelope of every observation.
				assert.Equal(t, "web", ev.Subject, name)
				assert.Equal(t, "e2e-node.example", ev.Node, name)
				assert.Equal(t, messages.Category_CATEGORY_OBSERVATION, ev.Category, name)
				assert.Equal(t, "web", ev.GetPolicy().GetName(), name)
				assert.NotZero(t, ev.Sequence, name)
			}

			h := got["health"]
			assert.Equal(t, messages.TypeObservationHTTP, h.Type)
			assert.Equal(t, target+"/healthz", h.GetHttp().GetUrl())
			assert.Equal(t, "GET", h.GetHttp().GetMethod())
			assert.Equal(t, ph.want["health"].status, h.GetHttp().GetStatusCode())
			assert.Less(t, h.GetHttp().GetLatency().AsDuration(), time.Second, "within the timeout")

			m := got["metrics"]
			assert.Equal(t, messages.TypeObservationPrometheus, m.Type)
			assert.Equal(t, target+"/metrics", m.GetPrometheus().GetUrl())
			assert.Less(t, m.GetPrometheus().GetLatency().AsDuration(), time.Second, "within the timeout")
			if ph.want["metrics"].result == messages.Result_RESULT_OK {
				checkMetrics(t, m.GetPrometheus())
			} else {
				assert.Empty(t, m.GetPrometheus().GetSamples())
			}

			tc := got["port"]
			assert.Equal(t, messages.TypeObservationTCP, tc.Type)
			assert.Equal(t, addr, tc.GetTcp().GetAddress(), "the target's host:port")
			assert.Less(t, tc.GetTcp().GetConnectLatency().AsDuration(), time.Second)

			pr := got["proc"]
			assert.Equal(t, messages.TypeObservationProcess, pr.Type)
			assert.Equal(t, pid, pr.GetProcess().GetPid())
			if ph.want["proc"].result == messages.Result_RESULT_OK {
				checkProcess(t, pr.GetProcess(), "observable")
			}
			assert.False(t, pr.GetProcess().GetRestarted(), "a restart is said once, by the first observation of the new process")
		})
	}

	daemon.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, daemon.exitCode(t, 20*time.Second))
}

// checkMetrics checks the samples scraped from a healthy observable.
func checkMetrics(t *testing.T, obs *messages.PrometheusObservation) {
	t.Helper()
	assert.Zero(t, obs.SamplesDropped)
	for _, s := range obs.Samples {
		assert.True(t, strings.HasPrefix(s.Name, "observable_"), "%s is not included", s.Name)
		assert.NotEqual(t, "observable_build_info", s.Name, "excluded")
	}
	backlog := sampleOf(obs.Samples, "observable_queue_backlog", nil)
	require.NotNil(t, backlog, "observable_queue_backlog")
	assert.Equal(t, messages.MetricType_METRIC_TYPE_GAUGE, backlog.Type)
	assert.Equal(t, 150.0, backlog.Value, "as set through the control API")

	mode := sampleOf(obs.Samples, "observable_mode", map[string]string{"mode": "ok"})
	require.NotNil(t, mode, "observable_mode{mode=ok}")
	assert.Equal(t, messages.MetricType_METRIC_TYPE_GAUGE, mode.Type)
	assert.Equal(t, 1.0, mode.Value)

	requests := sampleOf(obs.Samples, "observable_http_requests_total", map[string]string{"path": "/healthz", "code": "200"})
	require.NotNil(t, requests, "observable_http_requests_total{path=/healthz,code=200}")
	assert.Equal(t, messages.MetricType_METRIC_TYPE_COUNTER, requests.Type)
	assert.GreaterOrEqual(t, requests.Value, 1.0, "the http observer's requests")

	latency := sampleOf(obs.Samples, "observable_http_request_duration_seconds", map[string]string{"path": "/healthz"})
	require.NotNil(t, latency, "observable_http_request_duration_seconds{path=/healthz}")
	assert.Equal(t, messages.MetricType_METRIC_TYPE_HISTOGRAM, latency.Type)
	assert.Zero(t, latency.Value)
	assert.Positive(t, latency.Count)
	assert.Positive(t, latency.Sum)
	require.Len(t, latency.Buckets, 12, "client_golang's default buckets and +Inf")
	assert.Equal(t, 0.005, latency.Buckets[0].UpperBound)
	last := latency.Buckets[len(latency.Buckets)-1]
	assert.True(t, math.IsInf(last.UpperBound, 1))
	assert.Equal(t, latency.Count, last.CumulativeCount)
	for i := 1; i < len(latency.Buckets); i++ {
		assert.GreaterOrEqual(t, latency.Buckets[i].CumulativeCount, latency.Buckets[i-1].CumulativeCount, "cumulative")
	}
}

// checkProcess checks the measures of a live process called name.
func checkProcess(t *testing.T, obs *messages.ProcessObservation, name string) {
	t.Helper()
	assert.Equal(t, name, obs.Name)
	assert.Positive(t, obs.RssBytes)
	assert.Positive(t, obs.OpenFds)
	assert.Positive(t, obs.Threads)
	assert.GreaterOrEqual(t, obs.CpuSeconds, 0.0)
	assert.True(t, obs.StartTime.AsTime().Before(time.Now()), "started %s", obs.StartTime.AsTime())
	// Cross-check with the kernel's own view of the process.
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", obs.Pid))
	require.NoError(t, err)
	assert.Equal(t, name, strings.TrimSpace(string(comm)))
}

// TestObserverProcessForeign observes a real foreign service's process:
// the RabbitMQ node the harness started, by its pid file and by name.
func TestObserverProcessForeign(t *testing.T) {
	pidFile := filepath.Join(node.Dir, "node.pid")
	var pid int32
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(pidFile)
		n, perr := strconv.Atoi(strings.TrimSpace(string(b)))
		pid = int32(n)
		return err == nil && perr == nil && n > 0
	}, wait, tick, "the node writes its pid file")

	d := newDaemon(t, "http://127.0.0.1:1",
		withObservers(fmt.Sprintf(`    - {name: broker, kind: process, interval: 200ms, process: {pid_file: %q}}
    - {name: beam, kind: process, interval: 200ms, process: {name: beam.smp}}
`, pidFile)), withConfig(fmt.Sprintf("allowed_pid_dirs: [%q]\nallowed_process_names: [beam.smp]\n", node.Dir)))
	c := d.consume(t)
	daemon := d.start(t)
	since := time.Now()

	broker := c.firstAfter(t, "broker", since, nil).GetProcess()
	require.NotNil(t, broker)
	assert.Equal(t, messages.Result_RESULT_OK, broker.Result, broker.Error)
	assert.Empty(t, broker.Error)
	assert.Equal(t, pid, broker.Pid)
	checkProcess(t, broker, "beam.smp")
	assert.Greater(t, broker.Threads, int64(1), "the Erlang VM runs schedulers on threads")
	assert.Greater(t, broker.RssBytes, uint64(10<<20), "a RabbitMQ node holds tens of MiB")
	assert.Positive(t, broker.CpuSeconds, "a booted node has worked")
	assert.False(t, broker.Restarted)

	// By name, the oldest beam.smp: the harness's node, unless another
	// one was running before it.
	beam := c.firstAfter(t, "beam", since, nil).GetProcess()
	require.NotNil(t, beam)
	assert.Equal(t, messages.Result_RESULT_OK, beam.Result, beam.Error)
	checkProcess(t, beam, "beam.smp")
	assert.False(t, beam.StartTime.AsTime().After(broker.StartTime.AsTime()), "the oldest of its name")
	if beam.Pid == broker.Pid {
		assert.Equal(t, broker.StartTime.AsTime(), beam.StartTime.AsTime())
	}

	daemon.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, daemon.exitCode(t, 20*time.Second))
}
