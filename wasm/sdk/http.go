package sdk

import (
	"cmp"
	"fmt"
	"strconv"
)

// HTTPRequest is a request to the policy's target, made by the host.
type HTTPRequest struct {
	// Method defaults to GET.
	Method string
	// URL is a path relative to the target's URL ("/metrics") or an
	// absolute URL on the target; anything else is ErrNotAllowed.
	URL string
	// Header holds the request's headers, one value each.
	Header map[string]string
	// Body is sent as is; nil sends none.
	Body []byte
	// Extract lists RFC 6901 JSON pointers (at most 64, each at most
	// 1 KiB) that the host looks up in the response body, decoded as
	// JSON, and returns in Response.Values: a plugin that needs a few
	// values of a JSON answer gets them without decoding it in the
	// sandbox, where encoding/json runs several times slower than in the
	// daemon. Value and Number read them.
	Extract []string
}

// Response is the target's answer. Any status is a Response, not an error,
// as with net/http.
type Response struct {
	// StatusCode is the HTTP status of the final response, after the
	// redirects the host followed.
	StatusCode int
	// Header holds the response's headers as the host reports them.
	Header map[string]string
	// Body is the response's body, the plugin's own memory.
	Body []byte
	// Truncated is set when the host cut Body at its cap.
	Truncated bool
	// Values holds the values of HTTPRequest.Extract found in the body,
	// by pointer, as JSON text (150, "ok", {"a":1}); a pointer that
	// locates nothing, or a body that is not JSON, has none.
	Values map[string]string
}

// Value returns the JSON text of the value at pointer, which the request
// asked for in Extract, or an error when the body has none there.
func (r *Response) Value(pointer string) (string, error) {
	v, ok := r.Values[pointer]
	if !ok {
		return "", fmt.Errorf("pointer %q: no value in the body (not extracted, absent, or the body is not JSON)", pointer)
	}
	return v, nil
}

// Number returns the number at pointer, which the request asked for in
// Extract, or an error when the value there is absent or not a number.
func (r *Response) Number(pointer string) (float64, error) {
	v, err := r.Value(pointer)
	if err != nil {
		return 0, err
	}
	// JSON's numbers are a subset of ParseFloat's syntax; what else
	// parses (a quoted string does not) is no JSON number.
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || v == "" || v[0] == '"' {
		return 0, fmt.Errorf("pointer %q: %s, not a number", pointer, v)
	}
	return f, nil
}

// Get is Do with a GET request of url.
func Get(url string) (*Response, error) {
	return Do(&HTTPRequest{URL: url})
}

// GetOK is Get that also fails on a status other than 2xx.
func GetOK(url string) (*Response, error) {
	return DoOK(&HTTPRequest{URL: url})
}

// DoOK is Do that also fails on a status other than 2xx.
func DoOK(req *HTTPRequest) (*Response, error) {
	resp, err := Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("http %s %s: status %d", cmp.Or(req.Method, "GET"), req.URL, resp.StatusCode)
	}
	return resp, nil
}

// Do makes req through the host and returns the response. The errors are
// the ABI's: ErrInvalid, ErrNotAllowed, ErrTooManyRequests,
// ErrRequestFailed and ErrTimeout, wrapped with the method and the url.
func Do(req *HTTPRequest) (*Response, error) {
	method := req.Method
	if method == "" {
		method = "GET"
	}
	n := polar.HTTPRequest(appendHTTPRequest(nil, method, req))
	if n < 0 {
		return nil, fmt.Errorf("http %s %s: %w", method, req.URL, httpError(n))
	}
	buf := make([]byte, n)
	if got := polar.HTTPResponse(buf); got != n {
		return nil, fmt.Errorf("http %s %s: read response: host copied %d of %d bytes", method, req.URL, got, n)
	}
	resp, err := decodeHTTPResponse(buf)
	if err != nil {
		return nil, fmt.Errorf("http %s %s: %w", method, req.URL, err)
	}
	return resp, nil
}

// httpError maps a negative result of http_request to its error.
func httpError(rc int32) error {
	switch rc {
	case -1:
		return ErrInvalid
	case -2:
		return ErrNotAllowed
	case -3:
		return ErrTooManyRequests
	case -4:
		return ErrRequestFailed
	case -5:
		return ErrTimeout
	default:
		return fmt.Errorf("unknown result %d", rc)
	}
}
