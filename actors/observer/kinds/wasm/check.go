package wasm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/wasm"
)

// check is one wasm observer's. Each turn is one polar_observe call;
// every PluginObservation the plugin emits becomes an observation.plugin
// event. A trap, a timeout, a limit hit or a non-zero result fails the
// observer.
type check struct {
	host   *wasm.Host
	spec   wasm.PluginSpec
	module string

	mu sync.Mutex
	// plugin is made at the first turn, on the observer's goroutine:
	// compiling a module (when the cache misses) must not hold up the
	// task-manager's mailbox. It then lives as long as the check, across
	// restarts of the actor, and with it the plugin's state.
	plugin *wasm.Plugin
}

func newCheck(w *Section, s kinds.Setup) (kinds.Check, error) {
	if s.Plugins == nil {
		return nil, fmt.Errorf("observer %s: no plugin host", s.Path)
	}
	config, err := json.Marshal(w.Config)
	if err != nil {
		return nil, fmt.Errorf("encode wasm.config: %w", err)
	}
	t := s.Policy.Spec.Target
	// The plugin's http_response bodies are answers too, which the host
	// caps at wasm.MaxBodyBytes whatever the daemon allows.
	maxBody := min(s.MaxResponse, wasm.MaxBodyBytes)
	return &check{host: s.Plugins, module: w.Module, spec: wasm.PluginSpec{
		Path:        filepath.Join(s.PluginDir, w.Module),
		SHA256:      w.SHA256,
		Observer:    s.Observer.Name,
		Target:      wasm.Target{Name: t.Name, URL: t.URL},
		ConfigJSON:  config,
		MemoryLimit: uint64(w.MemoryLimit),
		Timeout:     time.Duration(w.Timeout),
		// The host reads a byte over the cap, to tell a body cut.
		HTTP:         s.Access.HoldingClient(maxBody + 1),
		MaxBodyBytes: maxBody,
		// Checked again at every load, since the file may have changed
		// since its policy was validated.
		Installed: true,
		Log:       s.Log.With().Str("plugin", w.Module).Logger(),
	}}, nil
}

// Observe runs one plugin call.
func (c *check) Observe(ctx context.Context) ([]*messages.Event, error) {
	p, err := c.start(ctx)
	if err != nil {
		return nil, permanentIfModule(err)
	}
	start := time.Now()
	obs, err := p.Observe(ctx, start)
	took := durationpb.New(time.Since(start))
	evs := make([]*messages.Event, 0, len(obs))
	for _, o := range obs {
		typ := messages.TypeObservationPlugin
		if o.TypeSuffix != "" {
			typ += "." + o.TypeSuffix
		}
		ev := messages.NewEvent(typ)
		if o.Severity != messages.Severity_SEVERITY_UNSPECIFIED {
			ev.Severity = o.Severity
		}
		ev.Subject = o.Subject
		ev.Data = &messages.Event_Plugin{Plugin: &messages.PluginPayload{
			Plugin: c.module, TypeSuffix: o.TypeSuffix, Schema: o.Schema, Payload: o.Payload, Labels: o.Labels, CallDuration: took,
		}}
		evs = append(evs, ev)
	}
	return evs, permanentIfModule(err)
}

// start makes the plugin at the first turn.
func (c *check) start(ctx context.Context) (*wasm.Plugin, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.plugin == nil {
		// Not under the turn's deadline: a compile that the cache misses
		// takes a second or so, once, and is not the plugin's failure.
		p, err := c.host.NewPlugin(context.WithoutCancel(ctx), c.spec)
		if err != nil {
			return nil, fmt.Errorf("start plugin: %w", err)
		}
		c.plugin = p
	}
	return c.plugin, nil
}

// permanentIfModule makes a module that cannot run (missing, not the
// pinned sum, not ABI v1 after all) a permanent failure: restarting
// cannot help, only a new module can.
func permanentIfModule(err error) error {
	if _, ok := errors.AsType[*wasm.ModuleError](err); ok {
		return &kinds.Permanent{Err: err}
	}
	return err
}

// Close releases the plugin's instance and module.
func (c *check) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.plugin == nil {
		return nil
	}
	return c.plugin.Close(context.Background())
}
