package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/tetratelabs/wazero/api"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/messages"
)

// HTTPDoer performs a plugin's HTTP requests within its policy's limits;
// actors/observer passes the policy's shared limiter and client.
type HTTPDoer interface {
	// Do sends one request and returns its response without following
	// redirects: the host follows them itself, checking every hop. It
	// waits for the policy's rate and concurrency limits within the
	// request's context, and may wait there for the memory of the body.
	// The host reads the body up to its cap and closes it, which must free
	// the concurrency slot and the memory.
	Do(req *http.Request) (*http.Response, error)
	// Allowed returns an error when u's host is not in allowed_targets.
	Allowed(u *url.URL) error
}

func (c *call) httpRequest(ctx context.Context, mod api.Module, ptr, n uint32) int32 {
	c.pending = nil
	if c.requests >= MaxRequests {
		c.hit(FailureHTTPLimit, fmt.Sprintf("more than %d http_request calls", MaxRequests))
		return requestCount
	}
	if n > MaxRequestBytes {
		c.refuse("http_request: request over its cap", fmt.Sprintf("%d bytes, the cap is %d", n, MaxRequestBytes))
		return requestInvalid
	}
	b := read(mod, "http_request", ptr, n)
	c.requests++
	var hr messages.HttpRequest
	// A copy: the body outlives the guest's buffer.
	if err := proto.Unmarshal(bytes.Clone(b), &hr); err != nil {
		c.refuse("http_request: not an HttpRequest", err.Error())
		return requestInvalid
	}
	if err := checkExtract(hr.Extract); err != nil {
		c.refuse("http_request: bad extract", err.Error())
		return requestInvalid
	}
	if c.target == nil || c.http == nil {
		c.refuse("http_request: the plugin has no target", hr.Url)
		return requestNotAllowed
	}
	u, err := c.resolve(hr.Url)
	if err != nil {
		c.refuse("http_request: bad url", err.Error())
		return requestInvalid
	}
	if err := c.allowed(u); err != nil {
		c.refuse("http_request: url not allowed", err.Error())
		return requestNotAllowed
	}
	method := hr.Method
	if method == "" {
		method = http.MethodGet
	}
	ctx, cancel := c.requestContext(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(hr.Body))
	if err != nil {
		c.refuse("http_request: bad request", err.Error())
		return requestInvalid
	}
	for k, v := range hr.Headers {
		req.Header.Set(k, v)
	}
	resp, err := c.follow(req, hr.Body)
	if err == nil {
		c.pending, err = readResponse(resp, c.maxBody, hr.Extract)
	}
	switch {
	case err == nil:
		return int32(len(c.pending))
	case ctx.Err() != nil:
		return requestTimeout
	default:
		c.refuse("http_request failed", err.Error())
		return requestFailed
	}
}

// requestContext bounds a request of the call: it ends a tenth of the
// call's timeout before the call's deadline. A request that runs out of
// time returns -5 while the guest still has time to report it (the
// target as unobservable, say) and return; one that ran to the call's
// deadline would have the guest stopped there, the call failed as a
// timeout, and the instance discarded, so that the next call spends its
// time on a fresh one: what a slow target, or a congested daemon, should
// not cost.
func (c *call) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, deadline.Add(-c.timeout/10))
}

// follow sends req and follows redirects on the target, as a browser
// would: 301, 302 and 303 turn into a GET without body, 307 and 308 send
// the same request again.
func (c *call) follow(req *http.Request, body []byte) (*http.Response, error) {
	for hops := 0; ; hops++ {
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Redacted(), err)
		}
		loc := resp.Header.Get("Location")
		if !redirect(resp.StatusCode) || loc == "" {
			return resp, nil
		}
		resp.Body.Close()
		if hops == MaxRedirects {
			return nil, fmt.Errorf("%s %s: stopped after %d redirects", req.Method, req.URL.Redacted(), MaxRedirects)
		}
		next, err := req.URL.Parse(loc)
		if err != nil {
			return nil, fmt.Errorf("%s %s: redirect to %q: %w", req.Method, req.URL.Redacted(), loc, err)
		}
		if err := c.allowed(next); err != nil {
			return nil, fmt.Errorf("%s %s: redirect refused: %w", req.Method, req.URL.Redacted(), err)
		}
		method, b := req.Method, body
		if resp.StatusCode <= http.StatusSeeOther && method != http.MethodHead {
			method, b = http.MethodGet, nil
		}
		nreq, err := http.NewRequestWithContext(req.Context(), method, next.String(), bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s %s: redirect: %w", req.Method, req.URL.Redacted(), err)
		}
		nreq.Header = req.Header.Clone()
		if b == nil {
			nreq.Header.Del("Content-Type")
		}
		req = nreq
	}
}

func redirect(status int) bool {
	switch status {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// readResponse reads resp's body up to limit bytes, closes it, and encodes
// the HttpResponse, with the values of the extract pointers.
func readResponse(resp *http.Response, limit int, extract []string) ([]byte, error) {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	out := &messages.HttpResponse{StatusCode: int32(resp.StatusCode), Headers: map[string]string{}}
	if len(body) > limit {
		body, out.Truncated = body[:limit], true
	}
	out.Body = body
	out.Values = extractJSON(body, extract)
	for k, v := range resp.Header {
		out.Headers[k] = strings.Join(v, ", ")
	}
	b, err := proto.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode response: %w", err)
	}
	return b, nil
}

// resolve turns a request's url into an absolute one: a path starting
// with "/" is relative to the target url, anything else must be absolute.
func (c *call) resolve(raw string) (*url.URL, error) {
	ref, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("parse url: %w", err)
	}
	if ref.Scheme == "" && ref.Host == "" && strings.HasPrefix(ref.Path, "/") {
		u := *c.target
		u.Path = strings.TrimSuffix(u.Path, "/") + ref.Path
		u.RawPath, u.RawQuery, u.Fragment = "", ref.RawQuery, ""
		return &u, nil
	}
	if !ref.IsAbs() || ref.Host == "" {
		return nil, fmt.Errorf("url %q is neither absolute nor a path starting with /", raw)
	}
	return ref, nil
}

// allowed checks that u is on the target (scheme, host and port) and in
// allowed_targets.
func (c *call) allowed(u *url.URL) error {
	if !sameOrigin(u, c.target) {
		return fmt.Errorf("%s is not on the target %s", origin(u), origin(c.target))
	}
	if err := c.http.Allowed(u); err != nil {
		return fmt.Errorf("%s: %w", origin(u), err)
	}
	return nil
}

func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(a.Hostname(), b.Hostname()) && port(a) == port(b)
}

func port(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	switch strings.ToLower(u.Scheme) {
	case "http":
		return "80"
	case "https":
		return "443"
	}
	return ""
}

func origin(u *url.URL) string {
	return strings.ToLower(u.Scheme) + "://" + net.JoinHostPort(u.Hostname(), port(u))
}

// errNoTarget is returned by NewPlugin for a target url it cannot use.
var errNoTarget = errors.New("target url must be an absolute http or https url")
