package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/wasm/sdk"
)

// exposition is an excerpt of cmd/observable's /metrics.
const exposition = `# HELP observable_http_requests_total HTTP requests answered, by route and status code (499: the client went away first).
# TYPE observable_http_requests_total counter
observable_http_requests_total{code="200",path="/control/mode"} 2
observable_http_requests_total{code="200",path="/healthz"} 7
observable_http_requests_total{code="503",path="/api/status"} 1
observable_http_requests_total{code="503",path="/healthz"} 2
observable_http_requests_total{code="499",path="/healthz"} 1 1700000000000
observable_http_requests_total_created{code="200",path="/healthz"} 1.7e9
# TYPE observable_http_request_duration_seconds histogram
observable_http_request_duration_seconds_bucket{path="/healthz",le="+Inf"} 13
observable_queue_backlog 150
`

func TestCountRequests(t *testing.T) {
	c, err := countRequests([]byte(exposition), "observable_http_requests_total", "code")
	require.NoError(t, err)
	assert.Equal(t, counts{Metric: "observable_http_requests_total", Requests: 13, Errors: 3}, c)

	c, err = countRequests([]byte("x 4\nx{code=\"500\"} 1\n"), "x", "code")
	require.NoError(t, err)
	assert.Equal(t, counts{Metric: "x", Requests: 5, Errors: 1}, c, "a sample without labels counts as a request")

	// Quotes, commas, braces and escapes inside values, spaces around.
	c, err = countRequests([]byte(`x{ path="/a,\"}\\" , status="502", } 3`), "x", "status")
	require.NoError(t, err)
	assert.Equal(t, counts{Metric: "x", Requests: 3, Errors: 3}, c)

	_, err = countRequests([]byte(exposition), "nope_total", "code")
	assert.EqualError(t, err, "metric nope_total not found")
	for body, want := range map[string]string{
		"x{code=\"500\"}":          "metrics line 1: no value",
		"x NaN":                    `metrics line 1: value "NaN" is not a finite number`,
		"\nx +Inf":                 `metrics line 2: value "+Inf" is not a finite number`,
		`x{code="500} 1`:           "metrics line 1: label code: value not terminated",
		`x{code=500} 1`:            "metrics line 1: label code: value not quoted",
		`x{code="500" path="/"} 1`: "metrics line 1: label code: want , or } after the value",
		`x{code} 1`:                `metrics line 1: label set: want name="value" or }`,
	} {
		_, err := countRequests([]byte(body), "x", "code")
		assert.EqualError(t, err, want, body)
	}
}

func TestStep(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	first := counts{Metric: "m", Time: t0, Requests: 100, Errors: 10}

	r, state, err := step(nil, first)
	require.NoError(t, err)
	assert.Nil(t, r, "the first call has nothing to compare with")

	second := counts{Metric: "m", Time: t0.Add(10 * time.Second), Requests: 140, Errors: 20}
	r, state, err = step(state, second)
	require.NoError(t, err)
	assert.Equal(t, &ratio{Metric: "m", Ratio: 0.25, Requests: 40, Errors: 10, WindowSeconds: 10}, r)

	r, state, err = step(state, counts{Metric: "m", Time: t0.Add(20 * time.Second), Requests: 140, Errors: 20})
	require.NoError(t, err)
	assert.Equal(t, &ratio{Metric: "m", WindowSeconds: 10}, r, "no request: ratio 0")

	r, _, err = step(state, counts{Metric: "m", Time: t0.Add(30 * time.Second), Requests: 8, Errors: 2})
	require.NoError(t, err)
	assert.Equal(t, &ratio{Metric: "m", Ratio: 0.25, Requests: 8, Errors: 2, WindowSeconds: 10, Reset: true}, r)

	r, _, err = step(state, counts{Metric: "other"})
	require.NoError(t, err)
	assert.Nil(t, r, "another metric starts over")
	r, _, err = step([]byte("garbage"), first)
	require.NoError(t, err)
	assert.Nil(t, r, "an unreadable state starts over")
}

func TestObservation(t *testing.T) {
	o := (&ratio{Metric: "m", Ratio: 0.25, Requests: 8, Errors: 2, WindowSeconds: 10}).observation()
	assert.Equal(t, "error_ratio", o.TypeSuffix)
	assert.Equal(t, sdk.SeverityInfo, o.Severity)
	assert.Equal(t, "polar.examples.error_ratio.v1", o.Schema)
	var got map[string]any
	require.NoError(t, json.Unmarshal(o.Payload, &got))
	assert.Equal(t, map[string]any{"metric": "m", "ratio": 0.25, "requests": 8.0, "errors": 2.0, "window_seconds": 10.0}, got)
}
