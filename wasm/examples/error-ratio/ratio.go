package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/polar/observerd/wasm/sdk"
)

// typeSuffix makes the events observation.plugin.error_ratio.
const typeSuffix = "error_ratio"

// counts is one reading of the counter, and the state kept between calls.
type counts struct {
	Metric   string    `json:"metric"`
	Time     time.Time `json:"time"`
	Requests float64   `json:"requests"`
	Errors   float64   `json:"errors"`
}

// ratio is the observation's payload, schema polar.examples.error_ratio.v1:
// the requests and 5xx answers counted between two calls.
type ratio struct {
	Metric        string  `json:"metric"`
	Ratio         float64 `json:"ratio"`
	Requests      float64 `json:"requests"`
	Errors        float64 `json:"errors"`
	WindowSeconds float64 `json:"window_seconds"`
	// Reset: a counter went down, so the target restarted within the
	// window, and the counts are those since its restart.
	Reset bool `json:"reset,omitempty"`
}

// step returns the ratio between the counts kept in state and cur, and the
// state to keep, cur. The ratio is nil when there is nothing to compare
// with: on the first call, and when state is of another metric (the policy
// changed) or unreadable (another version of the plugin wrote it).
func step(state []byte, cur counts) (*ratio, []byte, error) {
	next, err := json.Marshal(cur)
	if err != nil {
		return nil, nil, fmt.Errorf("encode state: %w", err)
	}
	var prev counts
	if len(state) == 0 || json.Unmarshal(state, &prev) != nil || prev.Metric != cur.Metric {
		return nil, next, nil
	}
	r := &ratio{
		Metric:        cur.Metric,
		Requests:      cur.Requests - prev.Requests,
		Errors:        cur.Errors - prev.Errors,
		WindowSeconds: cur.Time.Sub(prev.Time).Seconds(),
	}
	if r.Requests < 0 || r.Errors < 0 {
		r.Requests, r.Errors, r.Reset = cur.Requests, cur.Errors, true
	}
	// No request, no error: 0 rather than NaN, which JSON cannot carry.
	if r.Requests > 0 {
		r.Ratio = r.Errors / r.Requests
	}
	return r, next, nil
}

// observation is r as an observation.
func (r *ratio) observation() sdk.Observation {
	b, _ := json.Marshal(r) // finite numbers only: countRequests rejects the others
	return sdk.Observation{
		TypeSuffix: typeSuffix,
		Severity:   sdk.SeverityInfo,
		Payload:    b,
		Schema:     "polar.examples.error_ratio.v1",
	}
}

// countRequests sums the samples of the counter metric in body, a
// Prometheus text exposition: all of them as requests, and those whose
// label is a 5xx status code as errors.
func countRequests(body []byte, metric, label string) (counts, error) {
	c := counts{Metric: metric}
	found := false
	for i, line := range strings.Split(string(body), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		end := strings.IndexAny(line, "{ \t")
		if end < 0 {
			end = len(line)
		}
		if line[:end] != metric {
			continue
		}
		rest, code := line[end:], ""
		if strings.HasPrefix(rest, "{") {
			var err error
			if code, rest, err = labelValue(rest, label); err != nil {
				return c, fmt.Errorf("metrics line %d: %w", i+1, err)
			}
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return c, fmt.Errorf("metrics line %d: no value", i+1)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return c, fmt.Errorf("metrics line %d: value %q is not a finite number", i+1, fields[0])
		}
		c.Requests += v
		if len(code) == 3 && code[0] == '5' {
			c.Errors += v
		}
		found = true
	}
	if !found {
		return c, fmt.Errorf("metric %s not found", metric)
	}
	return c, nil
}

// labelValue reads the label set at the start of s, `{a="x",b="y"}`, and
// returns the value of label ("" when the set does not have it) and what
// follows the set.
func labelValue(s, label string) (value, rest string, err error) {
	s = s[1:]
	for {
		s = strings.TrimLeft(s, " \t")
		if strings.HasPrefix(s, "}") {
			return value, s[1:], nil
		}
		name, after, ok := strings.Cut(s, "=")
		if !ok {
			return "", "", errors.New("label set: want name=\"value\" or }")
		}
		name = strings.TrimSpace(name)
		s = strings.TrimLeft(after, " \t")
		v, n, err := unquote(s)
		if err != nil {
			return "", "", fmt.Errorf("label %s: %w", name, err)
		}
		if name == label {
			value = v
		}
		s = strings.TrimLeft(s[n:], " \t")
		switch {
		case strings.HasPrefix(s, ","):
			s = s[1:]
		case !strings.HasPrefix(s, "}"):
			return "", "", fmt.Errorf("label %s: want , or } after the value", name)
		}
	}
}

// unquote reads the quoted label value at the start of s, with the
// exposition format's escapes (\\, \" and \n), and returns it and the
// number of bytes of s it spans.
func unquote(s string) (string, int, error) {
	if !strings.HasPrefix(s, `"`) {
		return "", 0, errors.New("value not quoted")
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return b.String(), i + 1, nil
		case c == '\\' && i+1 < len(s):
			i++
			if s[i] == 'n' {
				b.WriteByte('\n')
			} else {
				b.WriteByte(s[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, errors.New("value not terminated")
}
