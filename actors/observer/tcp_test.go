package observer_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/actortest"
)

// listener accepts connections and never answers them. Each accepted
// connection is read until the peer closes it, and counted as closed then;
// the test's end closes the rest.
type listener struct {
	net.Listener
	accepted, closed atomic.Int64
}

func newListener(t *testing.T) *listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	l := &listener{Listener: ln}
	var (
		mu     sync.Mutex
		conns  []net.Conn
		closed bool
		wg     sync.WaitGroup
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			if closed {
				c.Close() // accepted as the test ended
			}
			mu.Unlock()
			wg.Go(func() {
				if _, err := io.Copy(io.Discard, c); err == nil {
					l.closed.Add(1) // EOF: the peer closed
				}
			})
		}
	})
	return l
}

// unresponsive returns the address of a listening socket whose accept
// queue is full and never drained: the kernel answers no more handshakes,
// so a connect there hangs, as against a service too busy to accept.
func unresponsive(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	require.NoError(t, err)
	t.Cleanup(func() { syscall.Close(fd) })
	require.NoError(t, syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	// A backlog of 0 queues one connection; the test's own fills it.
	require.NoError(t, syscall.Listen(fd, 0))
	sa, err := syscall.Getsockname(fd)
	require.NoError(t, err)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	c, err := net.DialTimeout("tcp", addr, time.Second)
	require.NoError(t, err, "fill the accept queue")
	t.Cleanup(func() { c.Close() })
	return addr
}

func TestTCPObservationOK(t *testing.T) {
	f := setup(t)
	ln := newListener(t)
	addr := ln.Addr().String()
	p := parse(t, "http://"+addr, "", "    - {name: port, kind: tcp, interval: 50ms, tcp: {}}\n")
	f.start(t, p, "port")

	ev := f.waitEvents(t, messages.TypeObservationTCP, 1)[0]
	obs := ev.GetTcp()
	require.NotNil(t, obs)
	assert.Equal(t, messages.Result_RESULT_OK, obs.Result, obs.Error)
	assert.Equal(t, addr, obs.Address, "the address defaults to the target's host:port")
	assert.Positive(t, obs.ConnectLatency.AsDuration())
	assert.Less(t, obs.ConnectLatency.AsDuration(), time.Second)
	assert.Empty(t, obs.Error)
	assert.Equal(t, messages.TypeObservationTCP, ev.Type)
	assert.Equal(t, "web-target", ev.Subject)
	assert.Equal(t, correlation, ev.CorrelationId)

	// Every connection is closed at once by the observer: the service
	// sees as many closes as connects, none held open.
	f.waitEvents(t, messages.TypeObservationTCP, 3)
	require.Eventually(t, func() bool {
		n := len(f.state.EventsOf(messages.TypeObservationTCP))
		return ln.closed.Load() >= int64(n) && ln.accepted.Load() == ln.closed.Load()
	}, actortest.Wait, 5*time.Millisecond, "accepted %d, closed %d", ln.accepted.Load(), ln.closed.Load())
}

func TestTCPResults(t *testing.T) {
	tests := []struct {
		name    string
		address func(t *testing.T) string // the tcp address observed
		result  messages.Result
		err     string
		atLeast time.Duration // lower bound of the connect latency
	}{
		{
			name:    "healthy",
			address: func(t *testing.T) string { return newListener(t).Addr().String() },
			result:  messages.Result_RESULT_OK,
		},
		{
			// The port is all a tcp observer sees: a service answering
			// 503 still accepts connections.
			name: "failing at the HTTP level",
			address: func(t *testing.T) string {
				srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
				return srv.Listener.Addr().String()
			},
			result: messages.Result_RESULT_OK,
		},
		{
			name: "slow at the HTTP level",
			address: func(t *testing.T) string {
				srv := newServer(t, func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
				return srv.Listener.Addr().String()
			},
			result: messages.Result_RESULT_OK,
		},
		{
			name:    "too busy to accept",
			address: unresponsive,
			result:  messages.Result_RESULT_TIMEOUT,
			err:     "i/o timeout",
			atLeast: 100 * time.Millisecond,
		},
		{
			name:    "stopped",
			address: closedAddr,
			result:  messages.Result_RESULT_ERROR,
			err:     "connection refused",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			addr := tc.address(t)
			p := parse(t, "http://127.0.0.1:1", "", fmt.Sprintf("    - {name: port, kind: tcp, interval: 1s, timeout: 200ms, tcp: {address: %q}}\n", addr))
			f.start(t, p, "port")
			obs := f.waitEvents(t, messages.TypeObservationTCP, 1)[0].GetTcp()
			assert.Equal(t, tc.result, obs.Result, obs.Error)
			assert.Equal(t, addr, obs.Address)
			if tc.err == "" {
				assert.Empty(t, obs.Error)
			} else {
				assert.Contains(t, obs.Error, tc.err)
			}
			assert.GreaterOrEqual(t, obs.ConnectLatency.AsDuration(), tc.atLeast)
			assert.Less(t, obs.ConnectLatency.AsDuration(), time.Second, "the observation outlived its timeout")
		})
	}
}

// TestLimitsHoldAcrossKinds: http, prometheus and tcp observers of one
// policy draw from one token bucket, so that together they stay within
// max_requests_per_second (plus the bucket's burst).
func TestLimitsHoldAcrossKinds(t *testing.T) {
	f := setup(t)
	srv := metricsServer(t, page)
	ln := newListener(t)
	const (
		rate  = 5.0
		burst = 5
	)
	p := parse(t, srv.URL, "{max_requests_per_second: 5, max_concurrent_requests: 2}", fmt.Sprintf(`    - {name: health, kind: http, interval: 10ms, timeout: 8ms, http: {}}
    - {name: metrics, kind: prometheus, interval: 10ms, timeout: 8ms, prometheus: {}}
    - {name: port, kind: tcp, interval: 10ms, timeout: 8ms, tcp: {address: %q}}
`, ln.Addr().String()))
	start := time.Now()
	f.start(t, p, "health", "metrics", "port")

	require.Eventually(t, func() bool { return len(f.state.Events()) >= 150 }, actortest.Wait, 5*time.Millisecond)
	served := srv.total.Load() + ln.accepted.Load()
	elapsed := time.Since(start)

	assert.LessOrEqual(t, float64(served), burst+rate*elapsed.Seconds()+1, "the service saw %d requests and connects in %s", served, elapsed)
	assert.GreaterOrEqual(t, served, int64(burst), "the burst went through")
	for _, typ := range []string{messages.TypeObservationHTTP, messages.TypeObservationPrometheus, messages.TypeObservationTCP} {
		assert.NotEmpty(t, f.state.EventsOf(typ), typ)
	}
	var limited int
	for _, ev := range f.state.EventsOf(messages.TypeObservationTCP) {
		if obs := ev.GetTcp(); strings.Contains(obs.Error, "rate limit") {
			assert.NotEqual(t, messages.Result_RESULT_OK, obs.Result)
			assert.Nil(t, obs.ConnectLatency, "a rate-limited observation did not connect")
			limited++
		}
	}
	assert.Positive(t, limited, "no tcp observation was held back by the limiter")
}
