package main

import (
	"strconv"

	"github.com/polar/observerd/wasm/sdk"
)

// typeSuffix makes the events observation.plugin.threshold.
const typeSuffix = "threshold"

// evaluate compares v, the number at pointer, with threshold: above it,
// the result is failed (which takes the observer down after
// thresholds.down_after such results) and the severity high; otherwise
// ok and info. The payload, schema polar.examples.status_threshold.v1, is
// {"value": v, "threshold": threshold, "above": bool}, written by hand:
// encoding/json's reflection would cost more than the rest of the call.
func evaluate(v float64, pointer string, threshold float64) sdk.Observation {
	above := v > threshold
	b := append([]byte(`{"value":`), strconv.FormatFloat(v, 'g', -1, 64)...)
	b = append(b, `,"threshold":`...)
	b = strconv.AppendFloat(b, threshold, 'g', -1, 64)
	b = append(b, `,"above":`...)
	b = strconv.AppendBool(b, above)
	b = append(b, '}')
	o := sdk.Observation{
		TypeSuffix: typeSuffix,
		Severity:   sdk.SeverityInfo,
		Result:     sdk.ResultOK,
		Payload:    b,
		Schema:     "polar.examples.status_threshold.v1",
		Labels:     map[string]string{"pointer": pointer},
	}
	if above {
		o.Severity, o.Result = sdk.SeverityHigh, sdk.ResultFailed
		o.Error = pointer + " is " + strconv.FormatFloat(v, 'g', -1, 64) + ", above the threshold " + strconv.FormatFloat(threshold, 'g', -1, 64)
	}
	return o
}
