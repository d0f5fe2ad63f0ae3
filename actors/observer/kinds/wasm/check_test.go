package wasm

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/wasm"
)

// The tests of a kind run with that kind alone registered: kinds/all,
// which registers every kind, imports this package.
func init() {
	if err := kinds.Register(Kind); err != nil {
		panic(err)
	}
}

// TestPluginSpecOfTheWASMKind: a plugin observer's http_request goes
// through its policy's dialer, which checks the address connected (here
// localhost's 127.0.0.1 against allowed_targets [::1/128]); its response
// bodies are capped by limits.max_response_bytes, and reserve that much
// of the daemon's budget; and its module is
// checked as an installed one.
func TestPluginSpecOfTheWASMKind(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	require.NoError(t, err)
	target := "http://localhost:" + port

	p, err := policy.Parse("web.yaml", fmt.Appendf(nil, `apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: web, url: %q}
  observers:
    - {name: plugin, kind: wasm, interval: 1s, wasm: {module: some.wasm}}
`, target), policy.Env{})
	require.NoError(t, err)
	allowed, err := targets.Parse([]string{"::1/128"})
	require.NoError(t, err)
	access := kinds.NewTargetAccess(p, allowed, nil)
	t.Cleanup(access.Close)
	host, err := wasm.NewHost(context.Background(), wasm.HostOptions{Log: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = host.Close(context.Background()) })

	made, err := kinds.NewCheck(kinds.Setup{Policy: p, Observer: &p.Spec.Observers[0], Access: access, Plugins: host,
		PluginDir: t.TempDir(), MaxResponse: int64(4 * yamldoc.KiB)})
	require.NoError(t, err)
	c := made.(*check)
	assert.True(t, c.spec.Installed)
	assert.Equal(t, int64(4096), c.spec.MaxBodyBytes)
	assert.Equal(t, int64(4097), c.spec.HTTP.(kinds.HoldingClient).Reserve, "the host reads a byte over the cap")

	req, err := http.NewRequest(http.MethodGet, target+"/", nil)
	require.NoError(t, err)
	require.NoError(t, c.spec.HTTP.Allowed(req.URL), "localhost passes the check of its name")
	resp, err := c.spec.HTTP.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	require.Error(t, err)
	assert.Contains(t, err.Error(), "dial tcp 127.0.0.1:"+port+": address 127.0.0.1 is not in allowed_targets [::1/128]")
	assert.Zero(t, hits.Load())
}
