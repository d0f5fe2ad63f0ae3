package kinds_test

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

	"github.com/polar/observerd/actors/observer/kinds"
	_ "github.com/polar/observerd/actors/observer/kinds/all"
	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/test/actortest"
)

// budgetSetup is the setup of the one observer of policy name (the YAML
// of a list item of spec.observers) targeting url, which allows 4
// requests at once, holding answers of at most maxResponse bytes within
// budget.
func budgetSetup(t *testing.T, name, url, observer string, budget *kinds.MemoryBudget, maxResponse yamldoc.ByteSize) kinds.Setup {
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
	access := kinds.NewTargetAccess(p, allowed, budget)
	t.Cleanup(access.Close)
	return kinds.Setup{Policy: p, Observer: &p.Spec.Observers[0], Access: access, MaxResponse: int64(maxResponse)}
}

// check makes the check of setup.
func check(t *testing.T, setup kinds.Setup) kinds.Check {
	t.Helper()
	c, err := kinds.NewCheck(setup)
	require.NoError(t, err)
	return c
}

// observeOnce makes one observation of a built-in kind.
func observeOnce(ctx context.Context, c kinds.Check) *messages.Event {
	evs, _ := c.Observe(ctx)
	return evs[0]
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
func newBlockingServer(t *testing.T, body string, budget *kinds.MemoryBudget) *blockingServer {
	t.Helper()
	s := &blockingServer{proceed: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		raise(&s.peak, s.inFlight.Add(1))
		raise(&s.peakHeld, budget.Held())
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
	budget := kinds.NewMemoryBudget(yamldoc.ByteSize(total))
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
	setup := func(name, observer string) kinds.Setup {
		return budgetSetup(t, name, srv.URL, observer, budget, capBytes)
	}
	for _, name := range []string{"web", "api"} {
		c := check(t, setup(name, "{name: health, kind: http, interval: 1s, http: {max_body_bytes: 64KiB}}"))
		observe(func(ctx context.Context) string {
			obs := observeOnce(ctx, c).GetHttp()
			return fmt.Sprintf("http %s %d %s", obs.Result, obs.BodyBytes, obs.Error)
		})
	}
	c := check(t, setup("metrics", "{name: metrics, kind: prometheus, interval: 1s, prometheus: {}}"))
	observe(func(ctx context.Context) string {
		obs := observeOnce(ctx, c).GetPrometheus()
		return fmt.Sprintf("prometheus %s %d %s", obs.Result, len(obs.Samples), obs.Error)
	})
	plugin := setup("plugin", "{name: plugin, kind: http, interval: 1s, http: {}}").Access.HoldingClient(capBytes + 1)
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
	assert.Zero(t, budget.Held(), "every reservation is given back")
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
	budget := kinds.NewMemoryBudget(capBytes)
	srv := newBlockingServer(t, "ok", budget)
	setup := func(name string) kinds.Setup {
		return budgetSetup(t, name, srv.URL, "{name: health, kind: http, interval: 1s, http: {max_body_bytes: 64KiB}}", budget, capBytes)
	}
	holder := check(t, setup("holder"))
	held := make(chan *messages.HttpObservation, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*actortest.Wait)
		defer cancel()
		held <- observeOnce(ctx, holder).GetHttp()
	}()
	require.Eventually(t, func() bool { return srv.inFlight.Load() == 1 }, actortest.Wait, time.Millisecond)
	require.Equal(t, int64(capBytes), budget.Held())

	const timeout = 200 * time.Millisecond
	waiter := check(t, setup("waiter"))
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	obs := observeOnce(ctx, waiter).GetHttp()
	assert.GreaterOrEqual(t, time.Since(start), timeout, "it waited for its whole timeout")
	assert.Equal(t, messages.Result_RESULT_TIMEOUT, obs.Result)
	assert.Equal(t, "wait for memory for the answer (limits.max_response_bytes_total): context deadline exceeded", obs.Error)

	access := setup("plugin").Access
	plugin := access.HoldingClient(capBytes + 1)
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
	assert.Zero(t, access.SlotsTaken(), "the slot is given back")

	assert.Equal(t, int64(1), srv.requests.Load(), "the waiters asked the service nothing")
	srv.let(t)
	got := <-held
	assert.Equal(t, messages.Result_RESULT_OK, got.Result, got.Error)
	assert.Zero(t, budget.Held())
}
