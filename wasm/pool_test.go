package wasm

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sharedSpec is a plugin of the stateless guest in the pool of share.
func sharedSpec(t *testing.T, observer, share string, config string) PluginSpec {
	return PluginSpec{Path: guest(t, "shared"), Observer: observer, ConfigJSON: []byte(config), Share: share, Log: (&logBuffer{}).logger()}
}

// calls runs one call of p and returns the calls its instance has served
// and the calls of p (its state), as the guest counts them.
func calls(t *testing.T, p *Plugin) (instance, plugin string) {
	t.Helper()
	o := observeOne(t, p)
	return o.Labels["instance calls"], o.Labels["plugin calls"]
}

// TestStatelessShared: the plugins of one policy (one Share) running a
// stateless module take turns in one instance, each with its own state.
func TestStatelessShared(t *testing.T) {
	h := newTestHost(t)
	a := newPlugin(t, h, sharedSpec(t, "a", "web@1", `{}`))
	b := newPlugin(t, h, sharedSpec(t, "b", "web@1", `{}`))
	for i, want := range [][2]string{{"1", "1"}, {"2", "1"}, {"3", "2"}, {"4", "2"}} {
		p := a
		if i%2 == 1 {
			p = b
		}
		inst, plugin := calls(t, p)
		assert.Equal(t, want, [2]string{inst, plugin}, "call %d: one instance serves both, the state stays each plugin's", i+1)
	}
	assert.Equal(t, 1, a.pool.idleCount())
}

// TestStatelessNotSharedAcrossPolicies: plugins of two policies never
// share an instance, nor do plugins without Share, nor plugins of a
// module that does not declare itself stateless.
func TestStatelessNotSharedAcrossPolicies(t *testing.T) {
	h := newTestHost(t)
	for name, specs := range map[string][2]PluginSpec{
		"two policies":  {sharedSpec(t, "a", "web@1", `{}`), sharedSpec(t, "a", "db@1", `{}`)},
		"two revisions": {sharedSpec(t, "a", "web@1", `{}`), sharedSpec(t, "a", "web@2", `{}`)},
		"no share":      {sharedSpec(t, "a", "", `{}`), sharedSpec(t, "b", "", `{}`)},
		"stateful module": {
			{Path: guest(t, "good"), Observer: "a", ConfigJSON: []byte(`{}`), Share: "web@1", Log: (&logBuffer{}).logger()},
			{Path: guest(t, "good"), Observer: "b", ConfigJSON: []byte(`{}`), Share: "web@1", Log: (&logBuffer{}).logger()},
		},
	} {
		t.Run(name, func(t *testing.T) {
			a, b := newPlugin(t, h, specs[0]), newPlugin(t, h, specs[1])
			for round := range 2 {
				for _, p := range []*Plugin{a, b} {
					o := observeOne(t, p)
					// good counts its instance's calls as "calls".
					assert.Equal(t, strconv.Itoa(round+1), o.Labels["instance calls"]+o.Labels["calls"], "each plugin in its own instance")
				}
			}
		})
	}
}

// TestStatelessTrapDiscards: an instance that trapped never returns to
// the pool: the next call of the pool gets a fresh instance.
func TestStatelessTrapDiscards(t *testing.T) {
	h := newTestHost(t)
	a := newPlugin(t, h, sharedSpec(t, "a", "web@1", `{}`))
	trap := newPlugin(t, h, sharedSpec(t, "trap", "web@1", `{"trap":true}`))
	inst, _ := calls(t, a)
	require.Equal(t, "1", inst)
	require.Equal(t, 1, a.pool.idleCount())
	_, err := trap.Observe(context.Background(), timeNow())
	requireFailure(t, err, FailureTrap)
	assert.Zero(t, a.pool.idleCount(), "the instance that trapped is gone")
	inst, plugin := calls(t, a)
	assert.Equal(t, "1", inst, "a fresh instance")
	assert.Equal(t, "2", plugin, "with the plugin's state")
}

// TestStatelessPoolBounded: however many plugins of a pool call at once,
// at most maxBusy instances serve them (the others wait for one), at most
// maxIdle stay once they are done, and the last plugin to leave the pool
// closes them. Each call holds its instance 50 ms, so that they overlap.
func TestStatelessPoolBounded(t *testing.T) {
	for _, tc := range []struct {
		name    string
		maxIdle int
	}{
		// Every instance made is kept: the instances made are the most
		// that lived at once, which must be maxBusy at most.
		{"instances at once", maxBusy},
		// The default: the instances beyond maxIdle are closed after
		// their call (so more than maxBusy may be made over the burst).
		{"idle", maxIdle},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func(n int) { maxIdle = n }(maxIdle)
			maxIdle = tc.maxIdle
			h := newTestHost(t)
			ps := make([]*Plugin, 3*maxBusy)
			for i := range ps {
				ps[i] = newPlugin(t, h, sharedSpec(t, fmt.Sprint(i), "web@1", `{"sleep_ms":50}`))
			}
			_, err := ps[0].Observe(context.Background(), timeNow()) // the pool learns the module is stateless
			require.NoError(t, err)
			var (
				wg    sync.WaitGroup
				mu    sync.Mutex
				fresh = 1 // calls served by a fresh instance: the instances made
			)
			for _, p := range ps {
				wg.Go(func() {
					obs, err := p.Observe(context.Background(), timeNow())
					if assert.NoError(t, err) && assert.Len(t, obs, 1) && obs[0].Labels["instance calls"] == "1" {
						mu.Lock()
						fresh++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			pl := ps[0].pool
			if tc.maxIdle == maxBusy {
				assert.LessOrEqual(t, fresh, maxBusy, "instances made for %d calls at once", len(ps))
				assert.Equal(t, fresh, pl.idleCount(), "every instance made was kept")
			}
			assert.LessOrEqual(t, pl.idleCount(), tc.maxIdle)
			assert.Positive(t, pl.idleCount())
			for _, p := range ps {
				require.NoError(t, p.Close(context.Background()))
			}
			assert.Zero(t, pl.idleCount(), "the last plugin closed the idle instances")
			h.mu.Lock()
			defer h.mu.Unlock()
			assert.Empty(t, h.pools)
		})
	}
}

// TestCheckStateless: Check reports what polar_stateless returns, false
// for a module that does not export it.
func TestCheckStateless(t *testing.T) {
	h := newTestHost(t)
	for name, want := range map[string]bool{"shared": true, "good": false} {
		info, err := h.Check(context.Background(), guest(t, name), 0)
		require.NoError(t, err)
		assert.Equal(t, want, info.Stateless, name)
	}
}

// TestStatelessBusy: a call that finds every instance of its pool busy
// until its deadline fails as FailureBusy, without running the guest.
func TestStatelessBusy(t *testing.T) {
	h := newTestHost(t)
	spec := sharedSpec(t, "a", "web@1", `{}`)
	spec.Timeout = 50 * time.Millisecond
	p := newPlugin(t, h, spec)
	inst, plugin := calls(t, p) // the pool learns the module is stateless
	require.Equal(t, [2]string{"1", "1"}, [2]string{inst, plugin})
	for range maxBusy { // every slot taken, as by calls running elsewhere
		require.NoError(t, p.pool.enter(context.Background()))
	}
	_, err := p.Observe(context.Background(), timeNow())
	requireFailure(t, err, FailureBusy)
	for range maxBusy {
		p.pool.leave()
	}
	inst, plugin = calls(t, p)
	assert.Equal(t, [2]string{"2", "2"}, [2]string{inst, plugin}, "the busy call never reached the guest")
}
