// Command status-threshold is an observer plugin: it reads a number from the
// target's JSON status and reports whether it is above a threshold.
// README.md describes its configuration and payload.
package main

import (
	"bytes"
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

// The plugin keeps nothing of a call for the next one but the
// configuration it decoded, which it checks against each call's: any
// instance may serve any of its observers.
func init() { sdk.HandleStateless(observe) }

// main is never called: the module is a reactor, and the host calls its
// exports once _initialize has run init.
func main() {}

// parsed is the configuration decoded last, and the JSON it was decoded
// from: an observer's configuration is the same at every call, and
// decoding it again would be most of the plugin's own work (encoding/json
// is several times slower in the sandbox than in the daemon).
var parsed struct {
	json []byte
	cfg  config
	err  error
}

// configOf decodes the call's configuration, or returns the one decoded
// last when it is the same.
func configOf(req *sdk.Request) (config, error) {
	if parsed.json != nil && bytes.Equal(parsed.json, req.ConfigJSON) {
		return parsed.cfg, parsed.err
	}
	cfg := config{Path: "/api/status", Pointer: "/backlog"}
	err := req.Config(&cfg)
	if err == nil && cfg.Threshold == nil {
		err = errors.New("config: threshold is required")
	}
	// A copy: the request's buffer is the host's to reuse after the call.
	parsed.json, parsed.cfg, parsed.err = append([]byte{}, req.ConfigJSON...), cfg, err
	return cfg, err
}

func observe(req *sdk.Request) ([]sdk.Observation, error) {
	cfg, err := configOf(req)
	if err != nil {
		return nil, err
	}
	// The host decodes the document and hands over the number: the
	// plugin runs no JSON decoder of its own.
	// What goes wrong with the target is an observation, not a failure
	// of the plugin (see sdk.Unobservable).
	resp, err := sdk.DoOK(&sdk.HTTPRequest{URL: cfg.Path, Extract: []string{cfg.Pointer}})
	var v float64
	switch {
	case err != nil:
	case resp.Truncated:
		err = fmt.Errorf("get %s: body cut at the host's cap", cfg.Path)
	default:
		if v, err = resp.Number(cfg.Pointer); err != nil {
			err = fmt.Errorf("get %s: %w", cfg.Path, err)
		}
	}
	if err != nil {
		return []sdk.Observation{sdk.Unobservable(typeSuffix, err)}, nil
	}
	return []sdk.Observation{evaluate(v, cfg.Pointer, *cfg.Threshold)}, nil
}
