package observer

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/test/actortest"
)

// budgetSpec is the spec of the one observer of policy name (the YAML of
// a list item of spec.observers) targeting url, which allows 4 requests
// at once, holding answers of at most maxResponse bytes within budget.
func budgetSpec(t *testing.T, name, url, observer string, budget *Budget, maxResponse yamldoc.ByteSize) *Spec {
	t.Helper()
	allowed, err := targets.Parse([]string{"127.0.0.0/8"})
	require.NoError(t, err)
	p, err := policy.Parse(name+".yaml", fmt.Appendf(nil, `apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: %s}
spec:
  target: {name: %s, url: %q}
  limits: {max_requests_per_second: 1000, max_concurrent_requests: 4}
  observers:
    - %s
`, name, name, url, observer), policy.Env{Allowed: allowed, Limits: actortest.Limits()})
	require.NoError(t, err)
	shared := NewShared(p, allowed, budget)
	t.Cleanup(shared.Close)
	return &Spec{Policy: p, Observer: p.Spec.Observers[0], Shared: shared, MaxResponse: maxResponse}
}

// raise sets peak to v when v is higher.
func raise(peak *atomic.Int64, v int64) {
	for {
		old := peak.Load()
		if v <= old || peak.CompareAndSwap(old, v) {
			return
		}
	}
}

// blockingServer answers body to each request once the test lets it, and
// counts the requests it holds.
type blockingServer struct {
	*httptest.Server
	proceed            chan struct{}
	inFlight, peak     atomic.Int64
	peakHeld, requests atomic.Int64
}

// newBlockingServer answers body; held is read at each arrival.
func newBlockingServer(t *testing.T, body string, budget *Budget) *blockingServer {
	t.Helper()
	s := &blockingServer{proceed: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		raise(&s.peak, s.inFlight.Add(1))
		raise(&s.peakHeld, budget.held.Load())
		defer s.inFlight.Add(-1)
		select {
		case <-s.proceed:
			_, _ = io.WriteString(w, body)
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(s.Close)
	return s
}

// let lets one held request answer.
func (s *blockingServer) let(t *testing.T) {
	t.Helper()
	select {
	case s.proceed <- struct{}{}:
	case <-time.After(actortest.Wait):
		t.Fatal("no request came to answer")
	}
}

// TestBudgetBoundsAllPolicies: 16 answers of 64 KiB are asked for at once
// by the http, prometheus and plugin observers of four policies, each of
// which allows 4 requests at once; the daemon's budget holds 4 answers.
// Never more than 4 requests reach the service before the earlier answers
// are read and dropped, and never more than the budget is reserved;
// every observation gets its answer in the end.
func TestBudgetBoundsAllPolicies(t *testing.T) {
	const (
		capBytes  = 64 << 10 // max_response_bytes and max_body_bytes
		fits      = 4        // answers the budget holds
		perPolicy = 4
	)
	// prometheus and plugins reserve a byte more than the cap, to tell a
	// page or a body over it.
	total := int64(fits * (capBytes + 1))
	budget := NewBudget(yamldoc.ByteSize(total))
	body := "up 1\n" + strings.Repeat("#\n", (capBytes-5)/2)
	srv := newBlockingServer(t, body, budget)

	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		results []string
	)
	observe := func(f func(ctx context.Context) string) {
		for range perPolicy {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*actortest.Wait)
				defer cancel()
				r := f(ctx)
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			})
		}
	}
	spec := func(name, observer string) *Spec { return budgetSpec(t, name, srv.URL, observer, budget, capBytes) }
	for _, name := range []string{"web", "api"} {
		c, err := newHTTPCheck(spec(name, "{name: health, kind: http, interval: 1s, http: {max_body_bytes: 64KiB}}"))
		require.NoError(t, err)
		observe(func(ctx context.Context) string {
			obs := c.run(ctx).GetHttp()
			return fmt.Sprintf("http %s %d %s", obs.Result, obs.BodyBytes, obs.Error)
		})
	}
	c, err := newPrometheusCheck(spec("metrics", "{name: metrics, kind: prometheus, interval: 1s, prometheus: {}}"))
	require.NoError(t, err)
	observe(func(ctx context.Context) string {
		obs := c.run(ctx).GetPrometheus()
		return fmt.Sprintf("prometheus %s %d %s", obs.Result, len(obs.Samples), obs.Error)
	})
	s := spec("plugin", "{name: plugin, kind: http, interval: 1s, http: {}}").Shared
	plugin := pluginHTTP{shared: s, client: s.clientFor(false, 0), reserve: capBytes + 1}
	observe(func(ctx context.Context) string {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		if err != nil {
			return err.Error()
		}
		resp, err := plugin.Do(req)
		if err != nil {
			return "plugin " + err.Error()
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, capBytes+1))
		return fmt.Sprintf("plugin %d %d %v", resp.StatusCode, len(b), err)
	})

	// The budget lets exactly 4 in; each answer read and dropped lets
	// the next one in.
	require.Eventually(t, func() bool { return srv.inFlight.Load() >= fits }, actortest.Wait, time.Millisecond,
		"%d requests reach the service at once", fits)
	for range 4 * perPolicy {
		srv.let(t)
	}
	wg.Wait()
	assert.Equal(t, int64(fits), srv.peak.Load(), "requests at the service at once")
	assert.LessOrEqual(t, srv.peakHeld.Load(), total, "bytes reserved at once")
	assert.Zero(t, budget.held.Load(), "every reservation is given back")
	assert.Equal(t, int64(4*perPolicy), srv.requests.Load())
	want := map[string]int{
		fmt.Sprintf("http RESULT_OK %d ", len(body)):  2 * perPolicy,
		"prometheus RESULT_OK 1 ":                     perPolicy,
		fmt.Sprintf("plugin 200 %d <nil>", len(body)): perPolicy,
	}
	got := map[string]int{}
	for _, r := range results {
		got[r]++
	}
	assert.Equal(t, want, got)
}

// TestBudgetWaitEndsAtTheDeadline: while another policy's answer holds
// the whole budget, an observation waits for memory within its timeout
// and ends there, a timeout saying what it waited for, without asking the
// service; so does a plugin's request. The held answer is unharmed.
func TestBudgetWaitEndsAtTheDeadline(t *testing.T) {
	const capBytes = 64 << 10
	budget := NewBudget(capBytes)
	srv := newBlockingServer(t, "ok", budget)
	spec := func(name string) *Spec {
		return budgetSpec(t, name, srv.URL, "{name: health, kind: http, interval: 1s, http: {max_body_bytes: 64KiB}}", budget, capBytes)
	}
	holder, err := newHTTPCheck(spec("holder"))
	require.NoError(t, err)
	held := make(chan *messages.HttpObservation, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*actortest.Wait)
		defer cancel()
		held <- holder.run(ctx).GetHttp()
	}()
	require.Eventually(t, func() bool { return srv.inFlight.Load() == 1 }, actortest.Wait, time.Millisecond)
	require.Equal(t, int64(capBytes), budget.held.Load())

	const timeout = 200 * time.Millisecond
	waiter, err := newHTTPCheck(spec("waiter"))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	obs := waiter.run(ctx).GetHttp()
	assert.GreaterOrEqual(t, time.Since(start), timeout, "it waited for its whole timeout")
	assert.Equal(t, messages.Result_RESULT_TIMEOUT, obs.Result)
	assert.Equal(t, "wait for memory for the answer (limits.max_response_bytes_total): context deadline exceeded", obs.Error)

	s := spec("plugin").Shared
	plugin := pluginHTTP{shared: s, client: s.clientFor(false, 0), reserve: capBytes + 1}
	pctx, pcancel := context.WithTimeout(context.Background(), timeout)
	defer pcancel()
	req, err := http.NewRequestWithContext(pctx, http.MethodGet, srv.URL, nil)
	require.NoError(t, err)
	resp, err := plugin.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "wait for memory for the answer")
	assert.Len(t, s.slots, 0, "the slot is given back")

	assert.Equal(t, int64(1), srv.requests.Load(), "the waiters asked the service nothing")
	srv.let(t)
	got := <-held
	assert.Equal(t, messages.Result_RESULT_OK, got.Result, got.Error)
	assert.Zero(t, budget.held.Load())
}
