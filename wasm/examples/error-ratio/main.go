// Command error-ratio is an observer plugin: it reads a request counter from
// the target's Prometheus /metrics and reports the share of 5xx answers
// since its previous call, keeping the counter between calls with
// sdk.SetState. README.md describes its configuration and payload.
package main

import (
	"fmt"

	"github.com/polar/observerd/wasm/sdk"
)

type config struct {
	// Path is where the target serves its metrics.
	Path string `json:"path"`
	// Metric is the request counter.
	Metric string `json:"metric"`
	// Label is the counter's label holding the HTTP status code.
	Label string `json:"label"`
}

func init() { sdk.Handle(observe) }

// main is never called: the module is a reactor, and the host calls its
// exports once _initialize has run init.
func main() {}

func observe(req *sdk.Request) ([]sdk.Observation, error) {
	cfg := config{Path: "/metrics", Metric: "observable_http_requests_total", Label: "code"}
	if err := req.Config(&cfg); err != nil {
		return nil, err
	}
	// What goes wrong with the target is an observation, not a failure
	// of the plugin (see sdk.Unobservable).
	resp, err := sdk.GetOK(cfg.Path)
	if err == nil && resp.Truncated {
		// A cut exposition would miss samples and skew the ratio.
		err = fmt.Errorf("get %s: body cut at the host's cap", cfg.Path)
	}
	if err != nil {
		return []sdk.Observation{sdk.Unobservable(typeSuffix, err)}, nil
	}
	cur, err := countRequests(resp.Body, cfg.Metric, cfg.Label)
	if err != nil {
		return []sdk.Observation{sdk.Unobservable(typeSuffix, fmt.Errorf("get %s: %w", cfg.Path, err))}, nil
	}
	cur.Time = req.Time
	r, state, err := step(req.State, cur)
	if err != nil {
		return nil, err
	}
	if err := sdk.SetState(state); err != nil {
		return nil, err
	}
	if r == nil {
		sdk.Log(sdk.LevelInfo, "counters of %s stored: the first ratio comes with the next call", cfg.Metric)
		return nil, nil
	}
	return []sdk.Observation{r.observation()}, nil
}
