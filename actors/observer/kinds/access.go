package kinds

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"syscall"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/policy"
)

// TargetAccess is how the observers of one policy reach its target,
// together, so that they stay within the policy's limits however short
// their intervals: one token bucket (max_requests_per_second), one
// concurrency limit (max_concurrent_requests), one HTTP client whose
// connections are reused, and the dialer that checks every connect
// against allowed_targets. The memory of answers is the daemon's
// MemoryBudget, which every policy's TargetAccess draws on.
type TargetAccess struct {
	limiter *rate.Limiter
	slots   chan struct{}
	budget  *MemoryBudget
	allowed *targets.AllowList
	// trusted dials the names listed in allowed_targets; checked dials
	// every other host, refusing a connect to an address outside the
	// list's prefixes.
	trusted, checked *net.Dialer
	client           *http.Client
}

// maxHeaderBytes caps the headers of a response, which net/http would
// otherwise read up to 10 MiB of before any body cap applies.
const maxHeaderBytes = 1 << 20

// idleConnsPerHost bounds the keep-alive connections a policy keeps open
// to its target between requests.
//
// Why not as many as max_concurrent_requests? Each idle connection holds
// two buffers and two goroutines here and a goroutine in the service, for
// 90 s after its last use. Observers started together fire within a
// tenth of their interval, so at start-up a policy opens about as many
// connections as it may; kept, 100 policies held 1,400 connections to one
// service (some 40 MB of the daemon's heap) while their steady turns,
// spread over the interval, use one or two at a time. Beyond this bound,
// a burst's extra connections close after use.
const idleConnsPerHost = 4

// NewTargetAccess returns the access of policy p's observers to its
// target. Targets, redirects and every address connected to are checked
// against allowed (nil allows nothing). Answers are held within budget,
// the daemon's (nil: a budget of the policy's own, of the default size).
func NewTargetAccess(p *policy.Policy, allowed *targets.AllowList, budget *MemoryBudget) *TargetAccess {
	l := p.Spec.Limits
	burst := max(1, int(l.MaxRequestsPerSecond))
	if budget == nil {
		budget = NewMemoryBudget(0)
	}
	s := &TargetAccess{
		limiter: rate.NewLimiter(rate.Limit(l.MaxRequestsPerSecond), burst),
		slots:   make(chan struct{}, max(1, l.MaxConcurrentRequests)),
		budget:  budget,
		allowed: allowed,
		trusted: &net.Dialer{KeepAlive: 30 * time.Second},
	}
	checked := *s.trusted
	checked.Control = s.checkAddress
	s.checked = &checked
	s.client = &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil, // an observer talks to its target, never through a proxy
			DialContext:            s.dialHTTP,
			MaxIdleConnsPerHost:    min(cap(s.slots), idleConnsPerHost),
			MaxConnsPerHost:        cap(s.slots),
			IdleConnTimeout:        90 * time.Second,
			TLSHandshakeTimeout:    5 * time.Second,
			MaxResponseHeaderBytes: maxHeaderBytes,
			ForceAttemptHTTP2:      true,
		},
	}
	return s
}

// Dial connects to address (host:port) for every kind that talks to the
// target: the HTTP client (http, prometheus, plugins' http_request) and
// tcp. The policy's host passed allowed_targets when it was validated, but
// a name that is not listed there (localhost, allowed through a loopback
// prefix) may resolve, or be rebound, anywhere: its connects are checked.
// A listed name is trusted to resolve where its owner says.
func (s *TargetAccess) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	if host, _, err := net.SplitHostPort(address); err == nil && s.allowed.ListsName(host) {
		return s.trusted.DialContext(ctx, network, address)
	}
	return s.checked.DialContext(ctx, network, address)
}

// dialHTTP is Dial for the HTTP client: a connect gives up after 5 s,
// whatever the observer's timeout, leaving the rest of it to the exchange.
// (For the tcp kind the connect is the observation: only its timeout
// bounds it.)
func (s *TargetAccess) dialHTTP(ctx context.Context, network, address string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel() // a connection, once made, does not depend on ctx
	return s.Dial(ctx, network, address)
}

// checkAddress is the checked dialer's Control: it runs before each
// connect, with the address about to be connected, after resolution.
func (s *TargetAccess) checkAddress(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("check address %s: %w", address, err)
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || !s.allowed.AllowsIP(addr.AsSlice()) {
		return fmt.Errorf("address %s is not in allowed_targets %s", host, s.allowed)
	}
	return nil
}

// Token waits within ctx for a token of the policy's rate limit.
func (s *TargetAccess) Token(ctx context.Context) error {
	if err := s.limiter.Wait(ctx); err != nil {
		return fmt.Errorf("wait for rate limit: %w", err)
	}
	return nil
}

// Acquire waits for a token and a slot within ctx; release frees the slot.
func (s *TargetAccess) Acquire(ctx context.Context) (release func(), err error) {
	if err := s.Token(ctx); err != nil {
		return nil, err
	}
	select {
	case s.slots <- struct{}{}:
		return func() { <-s.slots }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for concurrency limit: %w", ctx.Err())
	}
}

// Client returns a client of its own for one observer, sharing the
// policy's transport, so that the redirect policy is the observer's own
// while connections are pooled.
func (s *TargetAccess) Client(followRedirects bool, maxRedirects int) *http.Client {
	client := *s.client
	client.CheckRedirect = s.checkRedirect(followRedirects, maxRedirects)
	return &client
}

// Answer is what one HTTP exchange with the target produced.
type Answer struct {
	Status int    // 0 when no response arrived
	Body   []byte // up to the cap given to Fetch
	// Latency runs from sending the request to the end of the (capped)
	// body or to the error; nil when no request was sent.
	Latency     *durationpb.Duration
	TLSNotAfter *timestamppb.Timestamp // leaf certificate expiry, for https
}

// Fetch sends req with client once it holds a token and a slot of the
// policy's limits, then limit bytes of the daemon's budget, and reads the
// body up to limit bytes. The slot is held until the body is read, so
// that max_concurrent_requests bounds what the service is busy answering;
// the bytes until the caller calls done, once it has dropped the body
// (parsed it, matched it). done is never nil: call it on error too. On
// error the answer holds what arrived before it.
//
// The slot comes first: waiting for memory holds a slot of the policy's
// own, while holding memory to wait for a slot would starve the other
// policies of a budget that one busy policy cannot use.
func (s *TargetAccess) Fetch(ctx context.Context, client *http.Client, req *http.Request, limit int64) (a Answer, done func(), err error) {
	release, err := s.Acquire(ctx)
	if err != nil {
		return a, func() {}, err
	}
	defer release()
	if done, err = s.budget.reserve(ctx, limit); err != nil {
		return a, func() {}, err
	}

	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		a.Latency = durationpb.New(time.Since(start))
		return a, done, err
	}
	defer resp.Body.Close()
	a.Body, err = io.ReadAll(io.LimitReader(resp.Body, limit))
	a.Latency = durationpb.New(time.Since(start))
	a.Status = resp.StatusCode
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		a.TLSNotAfter = timestamppb.New(resp.TLS.PeerCertificates[0].NotAfter)
	}
	if err != nil {
		return a, done, fmt.Errorf("read body: %w", err)
	}
	return a, done, nil
}

// checkRedirect re-checks every redirect against allowed_targets, and
// refuses redirects unless the observer follows them.
func (s *TargetAccess) checkRedirect(follow bool, maxRedirects int) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if !follow {
			return http.ErrUseLastResponse
		}
		if len(via) > maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		return s.CheckURL(req.URL)
	}
}

// CheckURL returns an error when u's host is not in allowed_targets.
func (s *TargetAccess) CheckURL(u *url.URL) error {
	if !s.allowed.AllowsHost(u.Hostname()) {
		return fmt.Errorf("target %s is not in allowed_targets (%s)", u.Host, s.allowed)
	}
	return nil
}

// Close releases idle connections.
func (s *TargetAccess) Close() {
	s.client.CloseIdleConnections()
}

// HoldingClient sends requests to the target for a caller that reads
// their bodies later (a plugin's http_request, read by the plugin host):
// each request waits for a token and a slot of the policy's limits, then
// for Reserve bytes of the daemon's budget (what the caller reads of the
// body at most), and holds the slot and the bytes until its body is
// closed. Redirects are not followed: the caller follows them, asking
// Allowed about every hop. It is the plugin host's wasm.HTTPDoer.
type HoldingClient struct {
	access  *TargetAccess
	client  *http.Client
	Reserve int64
}

// HoldingClient returns a HoldingClient reserving reserve bytes per body.
func (s *TargetAccess) HoldingClient(reserve int64) HoldingClient {
	return HoldingClient{access: s, client: s.Client(false, 0), Reserve: reserve}
}

// Do sends req once it holds a token, a slot and the memory of its body.
func (c HoldingClient) Do(req *http.Request) (*http.Response, error) {
	slot, err := c.access.Acquire(req.Context())
	if err != nil {
		return nil, err
	}
	memory, err := c.access.budget.reserve(req.Context(), c.Reserve)
	if err != nil {
		slot()
		return nil, err
	}
	release := func() {
		memory()
		slot()
	}
	resp, err := c.client.Do(req)
	if err != nil {
		release()
		return nil, err
	}
	resp.Body = &releasingBody{ReadCloser: resp.Body, release: release}
	return resp, nil
}

// Allowed returns an error when u's host is not in allowed_targets.
func (c HoldingClient) Allowed(u *url.URL) error { return c.access.CheckURL(u) }

// releasingBody frees a concurrency slot and the body's memory when it is
// closed.
type releasingBody struct {
	io.ReadCloser
	release func()
	once    sync.Once
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}
