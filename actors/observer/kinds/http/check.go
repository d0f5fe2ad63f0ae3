package http

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/jsonpointer"
	"github.com/polar/observerd/messages"
)

// check is one http observer's: one request to the policy's target per
// turn, its status checked against expect_status, its body (capped)
// optionally matched and mined for values by JSON pointer.
type check struct {
	spec   *Section
	url    string
	client *http.Client
	access *kinds.TargetAccess
	match  *regexp.Regexp
	// maxBody is max_body_bytes, within limits.max_response_bytes (which
	// policy validation also enforces).
	maxBody int64
}

func newCheck(h *Section, s kinds.Setup) (kinds.Check, error) {
	c := &check{
		spec:    h,
		url:     strings.TrimSuffix(s.Policy.Spec.Target.URL, "/") + h.Path,
		access:  s.Access,
		maxBody: min(int64(h.MaxBodyBytes), s.MaxResponse),
	}
	if h.BodyMatch != "" {
		re, err := regexp.Compile(h.BodyMatch)
		if err != nil {
			return nil, fmt.Errorf("compile body_match: %w", err)
		}
		c.match = re
	}
	c.client = s.Access.Client(h.FollowRedirects, h.MaxRedirects)
	return kinds.OneObservation(c.observe), nil
}

func (c *check) observe(ctx context.Context) *messages.Event {
	ev := messages.NewEvent(messages.TypeObservationHTTP)
	obs := &messages.HttpObservation{Url: c.url, Method: c.method()}
	ev.Data = &messages.Event_Http{Http: obs}

	req, err := http.NewRequestWithContext(ctx, obs.Method, c.url, nil)
	if err != nil {
		obs.Result, obs.Error = kinds.Failure(ctx, err)
		return ev
	}
	for k, v := range c.spec.Headers {
		req.Header.Set(k, v)
	}
	a, done, err := c.access.Fetch(ctx, c.client, req, c.maxBody)
	defer done() // the body is matched and mined below
	obs.Latency, obs.TlsNotAfter = a.Latency, a.TLSNotAfter
	obs.StatusCode, obs.BodyBytes = int32(a.Status), int64(len(a.Body))
	if err != nil {
		obs.Result, obs.Error = kinds.Failure(ctx, err)
		return ev
	}
	obs.Result = messages.Result_RESULT_OK
	if !slices.Contains(c.expected(), a.Status) {
		obs.Result = messages.Result_RESULT_FAILED
		obs.Error = fmt.Sprintf("status %d, expected %v", a.Status, c.expected())
	}
	if c.match != nil {
		obs.BodyMatched = c.match.Match(a.Body)
		if !obs.BodyMatched && obs.Result == messages.Result_RESULT_OK {
			obs.Result = messages.Result_RESULT_FAILED
			obs.Error = fmt.Sprintf("body does not match %q", c.spec.BodyMatch)
		}
	}
	if len(c.spec.Extract) > 0 {
		obs.Values = extract(a.Body, c.spec.Extract)
	}
	return ev
}

func (c *check) method() string {
	if c.spec.Method == "" {
		return http.MethodGet
	}
	return c.spec.Method
}

func (c *check) expected() []int {
	if len(c.spec.ExpectStatus) == 0 {
		return []int{http.StatusOK}
	}
	return c.spec.ExpectStatus
}

// extract returns the values at the given RFC 6901 JSON pointers of a JSON
// body, as strings (JSON text for objects and arrays); absent ones are left
// out.
func extract(body []byte, pointers []string) map[string]string {
	var doc any
	if json.Unmarshal(body, &doc) != nil {
		return nil
	}
	out := map[string]string{}
	for _, p := range pointers {
		if v, ok := jsonpointer.Find(doc, p); ok {
			switch x := v.(type) {
			case string:
				out[p] = x
			default:
				b, _ := json.Marshal(x)
				out[p] = string(b)
			}
		}
	}
	return out
}
