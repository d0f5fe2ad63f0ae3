package observer

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/policy"
)

// Shared is what all observers of one policy share, so that together they
// stay within the policy's limits however short their intervals: one token
// bucket (max_requests_per_second), one concurrency limit
// (max_concurrent_requests), one HTTP client whose connections are reused,
// and the dialer that checks every connect against allowed_targets. The
// memory of answers is the daemon's Budget, which every policy's Shared
// draws on.
type Shared struct {
	limiter *rate.Limiter
	slots   chan struct{}
	budget  *Budget
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

// NewShared returns the shared limits and client of policy p. Targets,
// redirects and every address connected to are checked against allowed
// (nil allows nothing). Answers are held within budget, the daemon's
// (nil: a budget of the policy's own, of the default size).
func NewShared(p *policy.Policy, allowed *targets.AllowList, budget *Budget) *Shared {
	l := p.Spec.Limits
	burst := max(1, int(l.MaxRequestsPerSecond))
	if budget == nil {
		budget = NewBudget(0)
	}
	s := &Shared{
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
			MaxIdleConnsPerHost:    cap(s.slots),
			MaxConnsPerHost:        cap(s.slots),
			IdleConnTimeout:        90 * time.Second,
			TLSHandshakeTimeout:    5 * time.Second,
			MaxResponseHeaderBytes: maxHeaderBytes,
			ForceAttemptHTTP2:      true,
		},
	}
	return s
}

// dial connects to address (host:port) for every kind that talks to the
// target: the HTTP client (http, prometheus, plugins' http_request) and
// tcp. The policy's host passed allowed_targets when it was validated, but
// a name that is not listed there (localhost, allowed through a loopback
// prefix) may resolve, or be rebound, anywhere: its connects are checked.
// A listed name is trusted to resolve where its owner says.
func (s *Shared) dial(ctx context.Context, network, address string) (net.Conn, error) {
	if host, _, err := net.SplitHostPort(address); err == nil && s.allowed.ListsName(host) {
		return s.trusted.DialContext(ctx, network, address)
	}
	return s.checked.DialContext(ctx, network, address)
}

// dialHTTP is dial for the HTTP client: a connect gives up after 5 s,
// whatever the observer's timeout, leaving the rest of it to the exchange.
// (For the tcp kind the connect is the observation: only its timeout
// bounds it.)
func (s *Shared) dialHTTP(ctx context.Context, network, address string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel() // a connection, once made, does not depend on ctx
	return s.dial(ctx, network, address)
}

// checkAddress is the checked dialer's Control: it runs before each
// connect, with the address about to be connected, after resolution.
func (s *Shared) checkAddress(_, address string, _ syscall.RawConn) error {
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

// token waits within ctx for a token of the policy's rate limit.
func (s *Shared) token(ctx context.Context) error {
	if err := s.limiter.Wait(ctx); err != nil {
		return fmt.Errorf("wait for rate limit: %w", err)
	}
	return nil
}

// acquire waits for a token and a slot within ctx; release frees the slot.
func (s *Shared) acquire(ctx context.Context) (release func(), err error) {
	if err := s.token(ctx); err != nil {
		return nil, err
	}
	select {
	case s.slots <- struct{}{}:
		return func() { <-s.slots }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for concurrency limit: %w", ctx.Err())
	}
}

// clientFor returns a client of its own for one observer, sharing the
// policy's transport, so that the redirect policy is the observer's own
// while connections are pooled.
func (s *Shared) clientFor(followRedirects bool, maxRedirects int) *http.Client {
	client := *s.client
	client.CheckRedirect = s.checkRedirect(followRedirects, maxRedirects)
	return &client
}

// answer is what one HTTP exchange with the target produced.
type answer struct {
	status int    // 0 when no response arrived
	body   []byte // up to the cap given to fetch
	// latency runs from sending the request to the end of the (capped)
	// body or to the error; nil when no request was sent.
	latency     *durationpb.Duration
	tlsNotAfter *timestamppb.Timestamp // leaf certificate expiry, for https
}

// fetch sends req with client once it holds a token and a slot of the
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
func (s *Shared) fetch(ctx context.Context, client *http.Client, req *http.Request, limit int64) (a answer, done func(), err error) {
	release, err := s.acquire(ctx)
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
		a.latency = durationpb.New(time.Since(start))
		return a, done, err
	}
	defer resp.Body.Close()
	a.body, err = io.ReadAll(io.LimitReader(resp.Body, limit))
	a.latency = durationpb.New(time.Since(start))
	a.status = resp.StatusCode
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		a.tlsNotAfter = timestamppb.New(resp.TLS.PeerCertificates[0].NotAfter)
	}
	if err != nil {
		return a, done, fmt.Errorf("read body: %w", err)
	}
	return a, done, nil
}

// checkRedirect re-checks every redirect against allowed_targets, and
// refuses redirects unless the observer follows them.
func (s *Shared) checkRedirect(follow bool, maxRedirects int) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if !follow {
			return http.ErrUseLastResponse
		}
		if len(via) > maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		return s.checkURL(req.URL)
	}
}

func (s *Shared) checkURL(u *url.URL) error {
	if !s.allowed.AllowsHost(u.Hostname()) {
		return fmt.Errorf("target %s is not in allowed_targets (%s)", u.Host, s.allowed)
	}
	return nil
}

// Close releases idle connections.
func (s *Shared) Close() {
	s.client.CloseIdleConnections()
}
