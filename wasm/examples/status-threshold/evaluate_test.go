package main

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/polar/observerd/wasm/sdk"
)

func TestEvaluate(t *testing.T) {
	assert.Equal(t, sdk.Observation{
		TypeSuffix: "threshold",
		Severity:   sdk.SeverityHigh,
		Result:     sdk.ResultFailed,
		Error:      "/backlog is 150, above the threshold 100",
		Payload:    []byte(`{"value":150,"threshold":100,"above":true}`),
		Schema:     "polar.examples.status_threshold.v1",
		Labels:     map[string]string{"pointer": "/backlog"},
	}, evaluate(150, "/backlog", 100))

	o := evaluate(150, "/backlog", 150)
	assert.Equal(t, sdk.SeverityInfo, o.Severity, "equal is not above")
	assert.Equal(t, sdk.ResultOK, o.Result)
	assert.Empty(t, o.Error)
	assert.JSONEq(t, `{"value":150,"threshold":150,"above":false}`, string(o.Payload))

	o = evaluate(-4.5e-7, "/x", 1e21)
	assert.JSONEq(t, `{"value":-4.5e-7,"threshold":1e21,"above":false}`, string(o.Payload), "any float64 is valid JSON")
}
