// Command status-threshold is an observer plugin: it reads a number from the
// target's JSON status and reports whether it is above a threshold.
// README.md describes its configuration and payload.
package main

import (
	"errors"
	"fmt"

	"github.com/polar/observerd/wasm/sdk"
)

type config struct {
	// Path is where the target serves its JSON status.
	Path string `json:"path"`
	// Pointer locates the number in the document (RFC 6901).
	Pointer string `json:"pointer"`
	// Threshold has no sensible default, hence a pointer: required.
	Threshold *float64 `json:"threshold"`
}

func init() { sdk.Handle(observe) }

// main is never called: the module is a reactor, and the host calls its
// exports once _initialize has run init.
func main() {}

func observe(req *sdk.Request) ([]sdk.Observation, error) {
	cfg := config{Path: "/api/status", Pointer: "/backlog"}
	if err := req.Config(&cfg); err != nil {
		return nil, err
	}
	if cfg.Threshold == nil {
		return nil, errors.New("config: threshold is required")
	}
	// What goes wrong with the target is an observation, not a failure
	// of the plugin (see sdk.Unobservable).
	resp, err := sdk.GetOK(cfg.Path)
	if err == nil && resp.Truncated {
		err = fmt.Errorf("get %s: body cut at the host's cap", cfg.Path)
	}
	if err != nil {
		return []sdk.Observation{sdk.Unobservable(typeSuffix, err)}, nil
	}
	o, err := evaluate(resp.Body, cfg.Pointer, *cfg.Threshold)
	if err != nil {
		return []sdk.Observation{sdk.Unobservable(typeSuffix, fmt.Errorf("get %s: %w", cfg.Path, err))}, nil
	}
	return []sdk.Observation{o}, nil
}
