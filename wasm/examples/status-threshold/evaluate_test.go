package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/wasm/sdk"
)

// status is what cmd/observable serves on /api/status.
const status = `{"status":"ok","mode":"ok","backlog":150,"latency":"0s","uptime_seconds":12.5,
	"requests":{"/healthz":3},"version":"dev","a/b":{"~x":[1,2,{"n":-4.5}]}}`

func TestEvaluate(t *testing.T) {
	o, err := evaluate([]byte(status), "/backlog", 100)
	require.NoError(t, err)
	assert.Equal(t, sdk.Observation{
		TypeSuffix: "threshold",
		Severity:   sdk.SeverityHigh,
		Result:     sdk.ResultFailed,
		Error:      "/backlog is 150, above the threshold 100",
		Payload:    []byte(`{"value":150,"threshold":100,"above":true}`),
		Schema:     "polar.examples.status_threshold.v1",
		Labels:     map[string]string{"pointer": "/backlog"},
	}, o)

	o, err = evaluate([]byte(status), "/backlog", 150)
	require.NoError(t, err)
	assert.Equal(t, sdk.SeverityInfo, o.Severity, "equal is not above")
	assert.Equal(t, sdk.ResultOK, o.Result)
	assert.Empty(t, o.Error)
	assert.JSONEq(t, `{"value":150,"threshold":150,"above":false}`, string(o.Payload))
}

func TestLookupNumber(t *testing.T) {
	for pointer, want := range map[string]float64{
		"/uptime_seconds":     12.5,
		"/requests/~1healthz": 3,
		"/a~1b/~0x/1":         2,
		"/a~1b/~0x/2/n":       -4.5,
	} {
		got, err := lookupNumber([]byte(status), pointer)
		require.NoError(t, err, pointer)
		assert.Equal(t, want, got, pointer)
	}
	got, err := lookupNumber([]byte(`7`), "")
	require.NoError(t, err)
	assert.Equal(t, 7.0, got, "the empty pointer is the whole document")

	for pointer, want := range map[string]string{
		"backlog":      `pointer "backlog": does not start with /`,
		"/missing":     `pointer "/missing": no member "missing"`,
		"/status":      `pointer "/status": a string, not a number`,
		"/requests":    `pointer "/requests": an object, not a number`,
		"/backlog/x":   `pointer "/backlog/x": a number has no member "x"`,
		"/a~1b/~0x/3":  `pointer "/a~1b/~0x/3": no element "3" in an array of 3`,
		"/a~1b/~0x/01": `pointer "/a~1b/~0x/01": no element "01" in an array of 3`,
		"/a~1b/~0x/-1": `pointer "/a~1b/~0x/-1": no element "-1" in an array of 3`,
	} {
		_, err := lookupNumber([]byte(status), pointer)
		assert.EqualError(t, err, want, pointer)
	}
	_, err = lookupNumber([]byte(`{"backlog":`), "/backlog")
	assert.ErrorContains(t, err, "decode json: ")
}
