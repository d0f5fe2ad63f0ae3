package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/polar/observerd/wasm/sdk"
)

// typeSuffix makes the events observation.plugin.threshold.
const typeSuffix = "threshold"

// payload is the observation's payload, schema
// polar.examples.status_threshold.v1.
type payload struct {
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
	Above     bool    `json:"above"`
}

// evaluate compares the number at pointer in the JSON document doc with
// threshold: above it, the result is failed (which takes the observer
// down after thresholds.down_after such results) and the severity high;
// otherwise ok and info.
func evaluate(doc []byte, pointer string, threshold float64) (sdk.Observation, error) {
	v, err := lookupNumber(doc, pointer)
	if err != nil {
		return sdk.Observation{}, err
	}
	p := payload{Value: v, Threshold: threshold, Above: v > threshold}
	b, err := json.Marshal(p)
	if err != nil {
		return sdk.Observation{}, fmt.Errorf("encode payload: %w", err)
	}
	o := sdk.Observation{
		TypeSuffix: typeSuffix,
		Severity:   sdk.SeverityInfo,
		Result:     sdk.ResultOK,
		Payload:    b,
		Schema:     "polar.examples.status_threshold.v1",
		Labels:     map[string]string{"pointer": pointer},
	}
	if p.Above {
		o.Severity, o.Result = sdk.SeverityHigh, sdk.ResultFailed
		o.Error = fmt.Sprintf("%s is %g, above the threshold %g", pointer, v, threshold)
	}
	return o, nil
}

// lookupNumber returns the number that the JSON pointer (RFC 6901) locates
// in doc.
func lookupNumber(doc []byte, pointer string) (float64, error) {
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		return 0, fmt.Errorf("decode json: %w", err)
	}
	if pointer != "" && pointer[0] != '/' {
		return 0, fmt.Errorf("pointer %q: does not start with /", pointer)
	}
	for _, tok := range strings.Split(pointer, "/")[1:] {
		// RFC 6901: ~1 before ~0, so that "~01" is "~1", not "/".
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch n := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = n[tok]; !ok {
				return 0, fmt.Errorf("pointer %q: no member %q", pointer, tok)
			}
		case []any:
			// Only the canonical decimal form is an index: no sign, no leading 0.
			idx, err := strconv.Atoi(tok)
			if err != nil || idx < 0 || idx >= len(n) || tok != strconv.Itoa(idx) {
				return 0, fmt.Errorf("pointer %q: no element %q in an array of %d", pointer, tok, len(n))
			}
			v = n[idx]
		default:
			return 0, fmt.Errorf("pointer %q: %s has no member %q", pointer, jsonType(v), tok)
		}
	}
	f, ok := v.(float64)
	if !ok {
		return 0, fmt.Errorf("pointer %q: %s, not a number", pointer, jsonType(v))
	}
	return f, nil
}

// jsonType names the JSON type of a value decoded into an any.
func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case float64:
		return "a number"
	case []any:
		return "an array"
	default:
		return "an object"
	}
}
