package admin_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/admin"
	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/test/actortest"
)

// The read endpoints' budget, as the daemon documents it.
const (
	readRate  = 20
	readBurst = 40
)

var readPaths = []string{"/healthz", "/readyz", "/v1/state", "/metrics"}

func TestReadsAreRateLimited(t *testing.T) {
	for _, path := range readPaths {
		t.Run(path, func(t *testing.T) {
			// The admin's clock stands still: no token comes back unless
			// the test advances it.
			f := setup(t, true)
			for i := range readBurst {
				code, _, body := get(t, f.base+path)
				require.NotEqual(t, http.StatusTooManyRequests, code, "request %d of the burst: %s", i, body)
			}
			resp, err := client.Get(f.base + path)
			require.NoError(t, err)
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
			assert.Equal(t, "1", resp.Header.Get("Retry-After"))
			assert.True(t, resp.Close, "a refused client's connection is closed, giving its slot back")
			assert.Contains(t, string(body), "too many requests for "+path+": at most 20 a second (bursts of 40); retry in a second")
			assert.NotContains(t, string(body), "node-1", "nothing of the state in a refusal")
			assert.Equal(t, 1.0, f.refused(t, "tcp", "rate limited"))

			// The other endpoints, and the socket, have buckets of their own.
			for _, other := range readPaths {
				if other != path {
					code, _, _ := get(t, f.base+other)
					assert.NotEqual(t, http.StatusTooManyRequests, code, "%s refused after a flood of %s", other, path)
				}
			}
			code, _, _ := do(t, f.unix, http.MethodGet, unixBase+path, nil)
			assert.NotEqual(t, http.StatusTooManyRequests, code, "the socket refused after a flood over TCP")

			// A token comes back every 1/20 s.
			f.clock.Advance(time.Second / readRate)
			code, _, _ = get(t, f.base+path)
			assert.NotEqual(t, http.StatusTooManyRequests, code)
			code, _, _ = get(t, f.base+path)
			assert.Equal(t, http.StatusTooManyRequests, code)
			assert.Equal(t, 2.0, f.refused(t, "tcp", "rate limited"))
		})
	}
}

// TestNormalUseIsNeverRefused plays ten minutes of what watches a daemon:
// two Prometheus servers scraping every 15 s, liveness and readiness
// probes every second, a dashboard reading the state every 5 s and a
// person running `watch observerctl status` (every 2 s) on the socket,
// all starting together.
func TestNormalUseIsNeverRefused(t *testing.T) {
	f := setup(t, true)
	every := []struct {
		period time.Duration
		base   string
		c      *http.Client
		paths  []string
	}{
		{15 * time.Second, f.base, client, []string{"/metrics", "/metrics"}},
		{time.Second, f.base, client, []string{"/healthz", "/readyz"}},
		{5 * time.Second, f.base, client, []string{"/v1/state"}},
		{2 * time.Second, unixBase, f.unix, []string{"/v1/state"}},
	}
	const tick = time.Second
	for elapsed := time.Duration(0); elapsed < 10*time.Minute; elapsed += tick {
		for _, e := range every {
			if elapsed%e.period != 0 {
				continue
			}
			for _, path := range e.paths {
				code, _, body := do(t, e.c, http.MethodGet, e.base+path, nil)
				require.NotEqual(t, http.StatusTooManyRequests, code, "%s at %s: %s", path, elapsed, body)
			}
		}
		f.clock.Advance(tick)
	}
}

func TestConcurrentReadsShareOneSnapshot(t *testing.T) {
	// A state-manager that does not answer: every request waits for the
	// one ask in flight instead of queueing its own in a busy mailbox.
	f := setup(t, false)
	concurrently := func(n int, check func(path string, code int)) {
		var wg sync.WaitGroup
		for i := range n {
			path := []string{"/healthz", "/readyz", "/v1/state"}[i%3]
			wg.Go(func() {
				resp, err := client.Get(f.base + path)
				if !assert.NoError(t, err) {
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				check(path, resp.StatusCode)
			})
		}
		wg.Wait()
	}
	concurrently(63, func(path string, code int) {
		assert.Equal(t, http.StatusServiceUnavailable, code, path)
	})
	assert.Equal(t, 1, received[*protocol.GetState](f.state), "63 requests, one ask")

	// An answering one, a snapshot's age later: one more ask, and one of
	// the broker for the outbox.
	f.state.Respond(func(msg any) any {
		if _, ok := msg.(*protocol.GetState); ok {
			return &protocol.Snapshot{Node: "node-1"}
		}
		return nil
	})
	f.later()
	concurrently(63, func(path string, code int) {
		want := http.StatusOK
		if path == "/readyz" {
			want = http.StatusServiceUnavailable // not ready, but answered
		}
		assert.Equal(t, want, code, path)
	})
	assert.Equal(t, 2, received[*protocol.GetState](f.state))
	assert.Equal(t, 1, received[*protocol.GetOutboxStats](f.broker))

	// Within the snapshot's age, no ask at all.
	code, _, body := get(t, f.base+"/v1/state")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, string(body), `"last_sequence": 77`, "the outbox is part of the shared answer")
	assert.Equal(t, 2, received[*protocol.GetState](f.state))
}

func TestTheReadAfterACommandShowsIt(t *testing.T) {
	f := setup(t, true)
	f.snap.Store(&protocol.Snapshot{Node: "node-1", Observers: []protocol.ObserverSnapshot{{Path: "observer/web/health", Status: "running"}}})
	code, _, body := do(t, f.unix, http.MethodGet, unixBase+"/v1/state", nil)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, string(body), `"running"`)

	// The clock stands still: without the command, the snapshot would be
	// served again.
	f.snap.Store(&protocol.Snapshot{Node: "node-1", Observers: []protocol.ObserverSnapshot{{Path: "observer/web/health", Status: "paused"}}})
	code, _, _ = do(t, f.unix, http.MethodPost, unixBase+"/v1/observers/web/health/pause", nil)
	require.Equal(t, http.StatusOK, code)
	for _, read := range []struct {
		c    *http.Client
		base string
	}{{f.unix, unixBase}, {client, f.base}} {
		code, _, body = do(t, read.c, http.MethodGet, read.base+"/v1/state", nil)
		require.Equal(t, http.StatusOK, code)
		assert.Contains(t, string(body), `"paused"`, "%s: the read after the command", read.base)
	}
	assert.Equal(t, 2, received[*protocol.GetState](f.state), "one ask before the command, one after")
}

// received counts the messages of type T that r received.
func received[T any](r *actortest.Recorder) int {
	n := 0
	for _, m := range r.Messages() {
		if _, ok := m.(T); ok {
			n++
		}
	}
	return n
}

// TestIdleConnectionsAreClosedSoon: a local process that opens
// connections and leaves them idle holds the shared connection slots for
// 5 s, not 30.
func TestIdleConnectionsAreClosedSoon(t *testing.T) {
	t.Parallel()
	f := setup(t, true)
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.base, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
	require.NoError(t, err)
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.False(t, resp.Close, "kept alive")

	// Awaited: the 5 s idle timeout; the deadline leaves a loaded machine
	// 15 s of slack and still fails the 30 s timeout of before.
	idle := time.Now()
	require.NoError(t, conn.SetReadDeadline(idle.Add(20*time.Second)))
	_, err = r.ReadByte()
	require.ErrorIs(t, err, io.EOF, "the server did not close the idle connection")
	t.Logf("closed after %s idle", time.Since(idle).Round(time.Millisecond))
}

// TestNewAndPropsShareTheRegistry: an admin actor made with New and
// another made with Props, registering in one registry, count in the same
// counter.
func TestNewAndPropsShareTheRegistry(t *testing.T) {
	sys, log := actortest.SystemAndLogger(t)
	reg := prometheus.NewRegistry()
	opts := func() admin.Options {
		return admin.Options{Listen: freeAddr(t), Metrics: reg, Log: log}
	}
	var byNew *admin.Actor
	newOpts, propsOpts := opts(), opts()
	require.NotPanics(t, func() {
		byNew = admin.New(newOpts)
		_ = admin.Props(propsOpts)
	})
	pids := []*actor.PID{
		sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return byNew })),
		sys.Root.Spawn(admin.Props(propsOpts)), // a second Props with the same registry, too
	}
	for _, pid := range pids {
		t.Cleanup(func() { _ = sys.Root.StopFuture(pid).Wait() })
	}
	for _, addr := range []string{newOpts.Listen, propsOpts.Listen} {
		var code int
		require.Eventually(t, func() bool {
			resp, err := client.Post("http://"+addr+"/v1/observers/web/health/pause", "", nil)
			if err != nil {
				return false
			}
			resp.Body.Close()
			code = resp.StatusCode
			return true
		}, actortest.Wait, 5*time.Millisecond, "%s never served", addr)
		assert.Equal(t, http.StatusForbidden, code)
	}
	f := &fixture{reg: reg}
	assert.Equal(t, 2.0, f.refused(t, "tcp", "command over tcp"), "both count in the registered counter")
}
