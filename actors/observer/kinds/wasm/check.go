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
// event, its result the plugin's. A trap, a timeout, a limit hit or a
// non-zero result fails the observer; an invalid emit is its last error
// until it persists (invalidCallsToFail).
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
	// invalidCalls counts the calls in a row that ended as an invalid
	// emit, across restarts of the actor.
	invalidCalls int
}

// invalidCallsToFail is how many calls in a row must end as an invalid
// emit for the observer to fail. One is a record a plugin may have built
// from what the target said (a label that is not UTF-8): the observer
// goes on, its last error saying why. Three in a row, three intervals,
// is the plugin's own bug, and fails the observer (observer.failed, and
// quarantine if it goes on), which an operator cannot miss; sooner would
// quarantine a plugin for one odd answer, later would leave a broken one
// looking merely unknown for longer.
const invalidCallsToFail = 3

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
		// The host names the plugin in its log lines, once.
		Log: s.Log,
		// A stateless module's instances serve the policy's observers
		// that run it, never another policy's, nor another revision's.
		Share: s.Policy.Metadata.Name + "@" + s.Policy.Revision,
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
		evs = append(evs, c.event(o, took))
	}
	return evs, c.judge(err)
}

// event is the observation.plugin event of what the plugin emitted. A
// plugin that sets no result (all did before results existed) observed
// what it expected: its result is OK, explicitly, for consumers.
func (c *check) event(o *messages.PluginObservation, took *durationpb.Duration) *messages.Event {
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
		Result: resultOf(o.Result), Error: o.Error,
	}}
	return ev
}

// judge says what a call's error does to the observer: an invalid emit
// is a warning until invalidCallsToFail calls in a row ended so; a call
// that found no free instance is a warning; a module that cannot run
// fails it for good; anything else fails it.
func (c *check) judge(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	ce, ok := errors.AsType[*wasm.CallError](err)
	if ok && ce.Failure == wasm.FailureBusy {
		// The daemon is congested (the policy's observers of a stateless
		// module wait for its shared instances): failing the plugin, and
		// quarantining it, would punish it for the daemon's load. The
		// turn is lost, and said so.
		return &kinds.Warning{Err: err}
	}
	if !ok || ce.Failure != wasm.FailureInvalidEmit {
		c.invalidCalls = 0
		return permanentIfModule(err)
	}
	c.invalidCalls++
	if c.invalidCalls < invalidCallsToFail {
		return &kinds.Warning{Err: err}
	}
	return fmt.Errorf("%w (%d calls in a row)", err, c.invalidCalls)
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
