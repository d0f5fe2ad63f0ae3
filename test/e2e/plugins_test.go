//go:build integration

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/messages"
)

// installPlugins copies modules (paths) into the daemon's plugin_dir.
func installPlugins(t *testing.T, d *daemon, modules ...string) {
	t.Helper()
	for _, m := range modules {
		b, err := os.ReadFile(m)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(d.dir, "plugins", filepath.Base(m)), b, 0o644))
	}
}

// buildGuest builds one of the host's test plugins (wasm/testdata/NAME,
// written against the raw ABI) into dir as NAME.wasm.
func buildGuest(t *testing.T, dir, name string) string {
	t.Helper()
	out := filepath.Join(dir, name+".wasm")
	cmd := exec.Command("go", "build", "-trimpath", "-buildmode=c-shared", "-o", out, "github.com/polar/observerd/wasm/testdata/"+name)
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "build %s:\n%s", name, b)
	return out
}

// TestPluginsEndToEnd runs the example plugins of wasm/examples (built
// by make build into bin/plugins) against bin/observable, and checks
// their observations as a consumer of the real broker sees them.
func TestPluginsEndToEnd(t *testing.T) {
	target := startObservable(t)
	control(t, target, "backlog", "150")
	d := newDaemon(t, target, withObservers(`    - {name: health, kind: http, interval: 200ms, http: {path: /healthz}}
    - {name: backlog, kind: wasm, interval: 1s, wasm: {module: status-threshold.wasm, config: {threshold: 100}}}
    - {name: errors, kind: wasm, interval: 1s, wasm: {module: error-ratio.wasm}}
    - {name: raw, kind: wasm, interval: 1s, wasm: {module: raw-abi.wasm}}
`))
	installPlugins(t, d, filepath.Join(bin, "plugins", "status-threshold.wasm"), filepath.Join(bin, "plugins", "error-ratio.wasm"),
		filepath.Join(bin, "plugins", "raw-abi.wasm"))
	c := d.consume(t)
	d.start(t)

	_, applied := c.waitFor(t, messages.TypePolicyApplied)
	_, threshold := c.waitFor(t, "observation.plugin.threshold")
	assert.Equal(t, "observerd://e2e-node.example/observer/web/backlog", threshold.Source)
	assert.Equal(t, "web", threshold.Subject)
	assert.Equal(t, messages.Severity_SEVERITY_HIGH, threshold.Severity, "150 is above 100")
	assert.Equal(t, messages.Category_CATEGORY_OBSERVATION, threshold.Category)
	assert.Equal(t, applied.Id, threshold.CorrelationId)
	assert.Equal(t, applied.Policy.GetRevision(), threshold.Policy.GetRevision())
	p := threshold.GetPlugin()
	require.NotNil(t, p)
	assert.Equal(t, "status-threshold.wasm", p.Plugin)
	assert.Equal(t, "threshold", p.TypeSuffix)
	assert.Equal(t, "polar.examples.status_threshold.v1", p.Schema)
	assert.Equal(t, map[string]string{"pointer": "/backlog"}, p.Labels)
	assert.Positive(t, p.CallDuration.AsDuration())
	var payload struct {
		Value, Threshold float64
		Above            bool
	}
	require.NoError(t, json.Unmarshal(p.Payload, &payload))
	assert.Equal(t, 150.0, payload.Value)
	assert.Equal(t, 100.0, payload.Threshold)
	assert.True(t, payload.Above)

	// error-ratio keeps its counts in its state: the second call reports.
	_, ratio := c.waitFor(t, "observation.plugin.error_ratio")
	assert.Equal(t, "error-ratio.wasm", ratio.GetPlugin().GetPlugin())
	assert.Contains(t, string(ratio.GetPlugin().GetPayload()), `"requests"`)

	_, raw := c.waitFor(t, "observation.plugin.raw")
	assert.Equal(t, "raw-abi.wasm", raw.GetPlugin().GetPlugin())

	// A target that fails is an observation of the plugin, not a failure.
	control(t, target, "mode", "fail")
	unobservable := c.waitWhere(t, "observation.plugin.threshold", func(ev *messages.Event) bool {
		return ev.GetPlugin().GetLabels()["result"] == "error"
	})
	assert.Contains(t, string(unobservable.GetPlugin().GetPayload()), "status 503")
	assert.Empty(t, c.ofType(messages.TypeObserverFailed), "no plugin failed")
}

// TestHostilePlugins: plugins that trap on every call, spin forever or
// grab memory fail their observer (observer.failed with the cause) and are
// restarted with backoff or quarantined, a module of another ABI version
// rejects its policy, and meanwhile the daemon stays up, its memory
// bounded, and the other observers keep their schedule.
func TestHostilePlugins(t *testing.T) {
	dir := t.TempDir()
	target := startObservable(t)
	d := newDaemon(t, target, withObservers(`    - {name: health, kind: http, interval: 100ms, http: {path: /healthz}}
    - {name: trap, kind: wasm, interval: 2s, timeout: 1s, wasm: {module: trap.wasm}}
    - {name: loop, kind: wasm, interval: 2s, timeout: 1s, wasm: {module: loop.wasm}}
    - {name: bomb, kind: wasm, interval: 2s, timeout: 1s, wasm: {module: bomb.wasm, memory_limit: 16MiB}}
`))
	installPlugins(t, d, buildGuest(t, dir, "trap"), buildGuest(t, dir, "loop"), buildGuest(t, dir, "bomb"), buildGuest(t, dir, "badversion"))
	require.NoError(t, os.WriteFile(filepath.Join(d.dir, "policies", "bad.yaml"), []byte(fmt.Sprintf(`apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: bad}
spec:
  target: {name: web, url: %q}
  observers:
    - {name: v2, kind: wasm, interval: 1s, wasm: {module: badversion.wasm}}
`, target)), 0o644))
	c := d.consume(t)
	daemon := d.start(t)

	rejected := c.waitWhere(t, messages.TypePolicyRejected, func(*messages.Event) bool { return true })
	assert.Contains(t, rejected.GetPolicyOutcome().GetReason(), "badversion.wasm")
	assert.Contains(t, rejected.GetPolicyOutcome().GetReason(), "version")

	failed := func(name, cause string) *messages.Event {
		return c.waitWhere(t, messages.TypeObserverFailed, func(ev *messages.Event) bool {
			return ev.GetObserver().GetActor() == "observer/web/"+name && strings.Contains(ev.GetObserver().GetReason(), cause)
		})
	}
	failed("trap", "trap")
	q := c.waitWhere(t, messages.TypeObserverQuarantined, func(ev *messages.Event) bool {
		return ev.GetObserver().GetActor() == "observer/web/trap"
	})
	assert.Equal(t, int32(5), q.GetObserver().GetFailures())
	failed("loop", "timeout")
	failed("bomb", "memory")

	// The loop plugin saved its state before spinning: the restarted
	// observer's fresh instance gets it back, and does not spin again.
	loop := c.waitWhere(t, "observation.plugin.loop", func(*messages.Event) bool { return true })
	assert.Equal(t, "looped", loop.GetPlugin().GetLabels()["state"])

	// The http observer kept its schedule through all of it: at least a
	// third of its turns (every 100 ms) from its start to the quarantine.
	started := c.waitWhere(t, messages.TypeObserverStarted, func(ev *messages.Event) bool {
		return ev.GetObserver().GetActor() == "observer/web/health"
	})
	turns := 0
	for _, ev := range c.ofType(messages.TypeObservationHTTP) {
		if ev.Sequence > started.Sequence && ev.Sequence < q.Sequence {
			turns++
		}
	}
	elapsed := q.Time.AsTime().Sub(started.Time.AsTime())
	assert.GreaterOrEqual(t, float64(turns), elapsed.Seconds()*10/3, "%d http observations in %s", turns, elapsed)

	rss := vmRSS(t, daemon.cmd.Process.Pid)
	t.Logf("observerd RSS %d MiB", rss>>20)
	assert.Less(t, rss, uint64(300<<20), "the memory bomb is bounded by its 16 MiB limit")
	assert.Nil(t, daemon.cmd.ProcessState, "the daemon is still running")
}

// vmRSS is the resident memory of process pid.
func vmRSS(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestObserverctlPluginCheck: plugin check validates a module and, with a
// target, runs one call in the sandbox and prints what it emitted.
func TestObserverctlPluginCheck(t *testing.T) {
	target := startObservable(t)
	control(t, target, "backlog", "7")
	module := filepath.Join(bin, "plugins", "status-threshold.wasm")

	p := start(t, "observerctl", "plugin", "check", module)
	require.Equal(t, 0, p.exitCode(t, wait), p.out.String())
	assert.Contains(t, p.out.String(), "ABI v1")
	assert.Contains(t, p.out.String(), "polar.http_request")

	p = start(t, "observerctl", "plugin", "check", "--target", target, "--config", `{"threshold": 5}`, module)
	require.Equal(t, 0, p.exitCode(t, wait), p.out.String())
	assert.Contains(t, p.out.String(), "1 observations")
	assert.Contains(t, p.out.String(), "observation.plugin.threshold severity=high")
	assert.Contains(t, p.out.String(), `{"value":7,"threshold":5,"above":true}`)

	p = start(t, "observerctl", "plugin", "check", buildGuest(t, t.TempDir(), "badversion"))
	assert.Equal(t, 1, p.exitCode(t, wait))
	assert.Contains(t, p.out.String(), "version")
}
