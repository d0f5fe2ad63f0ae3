package kinds_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/test/actortest"
)

// TestABurstLeavesFewConnectionsOpen: a policy may run
// max_concurrent_requests requests at once, and a burst opens as many
// connections; once it is over, at most kinds.IdleConnsPerHost stay open
// to the service, not one per request of the burst.
func TestABurstLeavesFewConnectionsOpen(t *testing.T) {
	const burst = 16
	var open atomic.Int64 // connections the service holds
	var inFlight sync.WaitGroup
	inFlight.Add(burst)
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		inFlight.Done()
		<-release
		_, _ = w.Write([]byte("ok"))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)

	allowed, err := targets.Parse([]string{"127.0.0.0/8"})
	require.NoError(t, err)
	p, err := policy.Parse("web.yaml", fmt.Appendf(nil, `apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: web, url: %q}
  limits: {max_requests_per_second: 1000, max_concurrent_requests: %d}
  observers:
    - {name: health, kind: http, interval: 1s, http: {}}
`, srv.URL, burst), policy.Env{Allowed: allowed, Limits: actortest.Limits()})
	require.NoError(t, err)
	access := kinds.NewTargetAccess(p, allowed, nil)
	t.Cleanup(access.Close)
	client := access.Client(false, 0)

	var done sync.WaitGroup
	for range burst {
		done.Go(func() {
			req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL, nil)
			if !assert.NoError(t, err) {
				return
			}
			_, free, err := access.Fetch(context.Background(), client, req, 1024)
			free()
			assert.NoError(t, err)
		})
	}
	inFlight.Wait() // every request of the burst on a connection of its own
	require.Equal(t, int64(burst), open.Load())
	close(release)
	done.Wait()

	require.Eventually(t, func() bool { return open.Load() <= kinds.IdleConnsPerHost },
		actortest.Wait, 10*time.Millisecond, "connections left open after the burst: want at most %d", kinds.IdleConnsPerHost)
}
