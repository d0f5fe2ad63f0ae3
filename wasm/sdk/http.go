package sdk

import "fmt"

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
}

// Get is Do with a GET request of url.
func Get(url string) (*Response, error) {
	return Do(&HTTPRequest{URL: url})
}

// GetOK is Get that also fails on a status other than 2xx.
func GetOK(url string) (*Response, error) {
	resp, err := Get(url)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("http GET %s: status %d", url, resp.StatusCode)
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
