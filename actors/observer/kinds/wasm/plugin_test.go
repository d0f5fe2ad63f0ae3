package wasm

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/test/jsonlog"
	"github.com/polar/observerd/test/plugintest"
	"github.com/polar/observerd/wasm"
)

// syncBuffer is a log the plugin's calls write from their goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// newPluginCheck makes the check of a wasm observer running the test
// guest of wasm/testdata named guest, with config (YAML flow), logging as
// the task-manager's observers do.
func newPluginCheck(t *testing.T, guest, config string, log zerolog.Logger) *check {
	t.Helper()
	dir := t.TempDir()
	plugintest.Build(t, "github.com/polar/observerd/wasm/testdata/"+guest, dir, guest)
	p, err := policy.Parse("web.yaml", fmt.Appendf(nil, `apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: web, url: "http://127.0.0.1:1"}
  observers:
    - {name: plugin, kind: wasm, interval: 1s, wasm: {module: %s.wasm, config: %s}}
`, guest, config), policy.Env{})
	require.NoError(t, err)
	allowed, err := targets.Parse([]string{"127.0.0.0/8"})
	require.NoError(t, err)
	access := kinds.NewTargetAccess(p, allowed, nil)
	t.Cleanup(access.Close)
	host, err := wasm.NewHost(context.Background(), wasm.HostOptions{Log: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = host.Close(context.Background()) })
	made, err := kinds.NewCheck(kinds.Setup{Policy: p, Observer: &p.Spec.Observers[0], Path: "observer/web/plugin", Access: access,
		Plugins: host, PluginDir: dir, MaxResponse: 1 << 20, Log: log})
	require.NoError(t, err)
	c := made.(*check)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

// TestPluginLogLinesNameEachKeyOnce: a plugin's log lines, and the host's
// about it, carry the observer's keys and the plugin's once each, as JSON
// consumers expect (the kind and the host both named the plugin).
func TestPluginLogLinesNameEachKeyOnce(t *testing.T) {
	var out syncBuffer
	log := zerolog.New(&out).With().Str("actor", "task-manager").Str("observer", "web/plugin").Logger()
	c := newPluginCheck(t, "bademit", `{reject: suffix, log: "observe failed"}`, log)
	_, err := c.Observe(context.Background())
	require.Error(t, err)

	lines, err := jsonlog.Lines(out.bytes())
	require.NoError(t, err)
	require.Len(t, lines, 2, "%s", out.bytes())
	for _, l := range lines {
		assert.Equal(t, "bademit.wasm", l["plugin"])
		assert.Equal(t, "web/plugin", l["observer"])
	}
}

// TestInvalidEmitWarnsUntilItPersists: a call that ends as an invalid
// emit is a warning (the observer goes on, its last error says why), and
// the third in a row fails the observer with the host's reason.
func TestInvalidEmitWarnsUntilItPersists(t *testing.T) {
	c := newPluginCheck(t, "bademit", `{reject: suffix}`, zerolog.Nop())
	for i := 1; i <= invalidCallsToFail+1; i++ {
		evs, err := c.Observe(context.Background())
		require.Error(t, err)
		require.Len(t, evs, 1, "the valid record is published")
		assert.Contains(t, err.Error(), `plugin bademit.wasm: invalid emit: 1 of 2 records rejected; host: emit: record rejected: type_suffix "Not A Type!"`)
		_, warning := err.(*kinds.Warning)
		if i < invalidCallsToFail {
			assert.True(t, warning, "call %d: %v", i, err)
			continue
		}
		assert.False(t, warning, "call %d fails the observer", i)
		assert.Contains(t, err.Error(), fmt.Sprintf("(%d calls in a row)", i))
	}
}

// TestJudge: what each call's error does to the observer, in a row.
func TestJudge(t *testing.T) {
	invalid := &wasm.CallError{Plugin: "p.wasm", Failure: wasm.FailureInvalidEmit, Detail: "1 of 1 records rejected"}
	trap := &wasm.CallError{Plugin: "p.wasm", Failure: wasm.FailureTrap, Detail: "unreachable"}
	module := &wasm.ModuleError{Plugin: "p.wasm", Err: fmt.Errorf("gone")}
	busy := &wasm.CallError{Plugin: "p.wasm", Failure: wasm.FailureBusy, Detail: "all 16 instances its calls share stayed busy"}
	const (
		none = iota
		warns
		fails
		permanent
	)
	calls := []struct {
		err  error
		want int
	}{
		{invalid, warns}, {invalid, warns}, {nil, none}, // a clean call starts the count again
		{invalid, warns}, {trap, fails}, // so does a failure of another kind
		{invalid, warns}, {invalid, warns}, {invalid, fails}, {invalid, fails},
		{module, permanent},
		{busy, warns}, {busy, warns}, {busy, warns}, // the daemon's congestion, never the plugin's failure
	}
	c := &check{}
	for i, call := range calls {
		err := c.judge(call.err)
		var got int
		switch err.(type) {
		case nil:
			got = none
		case *kinds.Warning:
			got = warns
		case *kinds.Permanent:
			got = permanent
		default:
			got = fails
		}
		assert.Equal(t, call.want, got, "call %d: %v", i, err)
	}
}

// TestPluginEvent: the plugin's result and error reach the event; no
// result (every plugin's before results existed) is OK.
func TestPluginEvent(t *testing.T) {
	c := &check{module: "p.wasm"}
	took := durationpb.New(time.Millisecond)
	ev := c.event(&messages.PluginObservation{TypeSuffix: "disk", Severity: messages.Severity_SEVERITY_HIGH, Result: messages.Result_RESULT_FAILED,
		Error: "90% full", Labels: map[string]string{"a": "b"}}, took)
	assert.Equal(t, "observation.plugin.disk", ev.Type)
	assert.Equal(t, messages.Severity_SEVERITY_HIGH, ev.Severity)
	assert.Equal(t, messages.Result_RESULT_FAILED, ev.GetPlugin().GetResult())
	assert.Equal(t, "90% full", ev.GetPlugin().GetError())
	r, ok := messages.ResultOf(ev)
	assert.True(t, ok)
	assert.Equal(t, messages.Result_RESULT_FAILED, r, "a plugin's result counts")

	ev = c.event(&messages.PluginObservation{}, took)
	assert.Equal(t, messages.TypeObservationPlugin, ev.Type)
	assert.Equal(t, messages.Result_RESULT_OK, ev.GetPlugin().GetResult(), "none is OK, explicitly for consumers")
}

// TestRequestTimeIsTheCallsStart: the request's time, which a plugin
// divides a rate by (wasm/ABI.md, sdk.Request.Time), is when the host
// started the call, on its wall clock; the test guest reports it in whole
// seconds.
func TestRequestTimeIsTheCallsStart(t *testing.T) {
	c := newPluginCheck(t, "good", `{}`, zerolog.Nop())
	for range 2 { // a fresh instance, then a warm one
		before := time.Now().Unix()
		evs, err := c.Observe(context.Background())
		after := time.Now().Unix()
		require.NoError(t, err)
		require.Len(t, evs, 1)
		got, err := strconv.ParseInt(evs[0].GetPlugin().GetLabels()["time"], 10, 64)
		require.NoError(t, err)
		assert.GreaterOrEqual(t, got, before)
		assert.LessOrEqual(t, got, after)
	}
}

// TestStatelessSharedWithinAPolicy: the observers of one policy that run
// a stateless module share its instances; another policy's never do, nor
// does the next revision of the same policy.
func TestStatelessSharedWithinAPolicy(t *testing.T) {
	dir := t.TempDir()
	plugintest.Build(t, "github.com/polar/observerd/wasm/testdata/shared", dir, "shared")
	host, err := wasm.NewHost(context.Background(), wasm.HostOptions{Log: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = host.Close(context.Background()) })
	allowed, err := targets.Parse([]string{"127.0.0.0/8"})
	require.NoError(t, err)
	checks := func(name, interval string) []*check {
		p, err := policy.Parse(name+".yaml", fmt.Appendf(nil, `apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: %s}
spec:
  target: {name: web, url: "http://127.0.0.1:1"}
  observers:
    - {name: a, kind: wasm, interval: %s, wasm: {module: shared.wasm}}
    - {name: b, kind: wasm, interval: %s, wasm: {module: shared.wasm}}
`, name, interval, interval), policy.Env{})
		require.NoError(t, err)
		access := kinds.NewTargetAccess(p, allowed, nil)
		t.Cleanup(access.Close)
		var cs []*check
		for i := range p.Spec.Observers {
			made, err := kinds.NewCheck(kinds.Setup{Policy: p, Observer: &p.Spec.Observers[i], Path: "observer/" + name, Access: access,
				Plugins: host, PluginDir: dir, MaxResponse: 1 << 20, Log: zerolog.Nop()})
			require.NoError(t, err)
			c := made.(*check)
			t.Cleanup(func() { require.NoError(t, c.Close()) })
			cs = append(cs, c)
		}
		return cs
	}
	instanceCalls := func(c *check) string {
		evs, err := c.Observe(context.Background())
		require.NoError(t, err)
		require.Len(t, evs, 1)
		return evs[0].GetPlugin().GetLabels()["instance calls"]
	}
	web := checks("web", "1s")
	assert.Equal(t, "1", instanceCalls(web[0]))
	assert.Equal(t, "2", instanceCalls(web[1]), "the policy's observers share the instance")
	for _, other := range [][]*check{checks("db", "1s"), checks("web", "2s")} {
		assert.Equal(t, "1", instanceCalls(other[0]), "another policy, or revision, has instances of its own")
	}
}
