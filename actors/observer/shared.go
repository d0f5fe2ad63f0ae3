package observer

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/time/rate"

	"github.com/polar/observerd/configs"
	"github.com/polar/observerd/policy"
)

// Shared is what all observers of one policy share, so that together they
// stay within the policy's limits however short their intervals: one token
// bucket (max_requests_per_second), one concurrency limit
// (max_concurrent_requests) and one HTTP client whose connections are
// reused.
type Shared struct {
	limiter *rate.Limiter
	slots   chan struct{}
	allowed *configs.AllowList
	client  *http.Client
}

// NewShared returns the shared limits and client of policy p. Targets and
// redirects are checked against allowed.
func NewShared(p *policy.Policy, allowed *configs.AllowList) *Shared {
	l := p.Spec.Limits
	burst := max(1, int(l.MaxRequestsPerSecond))
	s := &Shared{
		limiter: rate.NewLimiter(rate.Limit(l.MaxRequestsPerSecond), burst),
		slots:   make(chan struct{}, max(1, l.MaxConcurrentRequests)),
		allowed: allowed,
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	s.client = &http.Client{
		Transport: &http.Transport{
			Proxy:               nil, // an observer talks to its target, never through a proxy
			DialContext:         dialer.DialContext,
			MaxIdleConnsPerHost: cap(s.slots),
			MaxConnsPerHost:     cap(s.slots),
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: 5 * time.Second,
			ForceAttemptHTTP2:   true,
		},
	}
	return s
}

// acquire waits for a token and a slot within ctx; release frees the slot.
func (s *Shared) acquire(ctx context.Context) (release func(), err error) {
	if err := s.limiter.Wait(ctx); err != nil {
		return nil, fmt.Errorf("wait for rate limit: %w", err)
	}
	select {
	case s.slots <- struct{}{}:
		return func() { <-s.slots }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for concurrency limit: %w", ctx.Err())
	}
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
	if s.allowed != nil && !s.allowed.AllowsHost(u.Hostname()) {
		return fmt.Errorf("target %s is not in allowed_targets (%s)", u.Host, s.allowed)
	}
	return nil
}

// Close releases idle connections.
func (s *Shared) Close() {
	s.client.CloseIdleConnections()
}
