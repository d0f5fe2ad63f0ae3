//go:build integration

package e2e

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/jsonlog"
	"github.com/polar/observerd/test/plugintest"
)

// buildOutside builds the Go example status-threshold as an author outside
// the repository does (wasm/sdk/doc.go): its files in a module of its own
// in dir, requiring the SDK by a replace to this checkout, then its tests
// and the build. It returns the plugin, and the same code built as a
// command (the classic mistake: -buildmode=c-shared forgotten).
func buildOutside(t *testing.T, dir string) (plugin, command string) {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	src := filepath.Join(dir, "threshold")
	require.NoError(t, os.Mkdir(src, 0o755))
	files, err := filepath.Glob(filepath.Join(root, "wasm", "examples", "status-threshold", "*.go"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(src, filepath.Base(f)), b, 0o644))
	}
	// No workspace of the repository's may help: the module stands alone.
	host := []string{"GOWORK=off"}
	wasip1 := append(host, "GOOS=wasip1", "GOARCH=wasm")
	plugintest.Go(t, src, host, "mod", "init", "example.com/threshold")
	plugintest.Go(t, src, host, "mod", "edit", "-require=github.com/polar/observerd/wasm/sdk@v0.0.0",
		"-replace=github.com/polar/observerd/wasm/sdk="+filepath.Join(root, "wasm", "sdk"))
	plugintest.Go(t, src, host, "mod", "tidy")
	plugintest.Go(t, src, host, "test", "-count=1", "./...")
	plugin, command = filepath.Join(dir, "threshold.wasm"), filepath.Join(dir, "command.wasm")
	plugintest.Go(t, src, wasip1, "build", "-trimpath", "-buildmode=c-shared", "-o", plugin, ".")
	plugintest.Go(t, src, wasip1, "build", "-trimpath", "-o", command, ".")

	// What a plugin pulls in: the SDK and protobuf, nothing of the daemon.
	for _, m := range strings.Fields(plugintest.Go(t, src, wasip1, "list", "-deps", "-f", "{{with .Module}}{{.Path}}{{end}}", ".")) {
		assert.Contains(t, []string{"example.com/threshold", "github.com/polar/observerd/wasm/sdk", "google.golang.org/protobuf"}, m,
			"a module the plugin links")
	}
	return plugin, command
}

// noABISource is a C plugin that forgot polar_abi_version.
const noABISource = `#include <stdint.h>
#include <stdlib.h>
__attribute__((export_name("polar_alloc"))) void *polar_alloc(int32_t n) { return malloc(n ? (size_t)n : 1); }
__attribute__((export_name("polar_observe"))) int32_t polar_observe(void *p, int32_t n) { (void)n; free(p); return 0; }
`

// cModule builds the C source src into dir as name.wasm with the C
// example's toolchain (Debian's clang and wasi-libc): a reactor, or
// without -mexec-model=reactor a command (src then needs a main).
func cModule(t *testing.T, dir, name, src string, reactor bool) string {
	t.Helper()
	file, out := filepath.Join(dir, name+".c"), filepath.Join(dir, name+".wasm")
	require.NoError(t, os.WriteFile(file, []byte(src), 0o644))
	args := []string{"--target=wasm32-wasi", "-O2", "-Wl,--strip-all", "-o", out, file}
	if reactor {
		args = append(args, "-mexec-model=reactor")
	}
	b, err := exec.Command("/usr/bin/clang", args...).CombinedOutput()
	require.NoError(t, err, "clang (make deps installs it):\n%s", b)
	return out
}

// checkPlugin runs observerctl plugin check with args and returns its exit
// code and output.
func checkPlugin(t *testing.T, args ...string) (int, string) {
	t.Helper()
	p := start(t, "observerctl", append([]string{"plugin", "check"}, args...)...)
	return p.exitCode(t, wait), p.out.String()
}

// policyFile writes a policy of one wasm observer into the daemon's
// policy_dir and returns its path.
func policyFile(t *testing.T, d *daemon, name, target, observer string) string {
	t.Helper()
	file := filepath.Join(d.dir, "policies", name+".yaml")
	require.NoError(t, os.WriteFile(file, fmt.Appendf(nil, `apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: %s}
spec:
  target: {name: web, url: %q}
  observers:
    - %s
`, name, target, observer), 0o644))
	return file
}

// TestPluginAuthorPath plays a plugin author's path end to end: the Go
// example built from outside the repository with the SDK, the C and Rust
// examples, each checked with observerctl plugin check and run in the
// daemon against the real broker; the three classic mistakes (no
// polar_abi_version, a command module, an invalid emit), each with what
// to do in plugin check and in observerctl status (the quarantined one
// still listed after its stop); plugins driving their observers down and
// up again (state.changed); and their events reaching a queue bound the
// way docs/plugins.md says.
func TestPluginAuthorPath(t *testing.T) {
	target := startObservable(t)
	work := t.TempDir()
	threshold, command := buildOutside(t, work)
	noABI := cModule(t, work, "noabi", noABISource, true)
	// The daemon gets the command mistake as a small C module: it reads
	// a policy within 10 s, module compilation included, which a loaded
	// machine may spend on a Go module of 3 MiB (the bademit and threshold
	// ones are compiled meanwhile).
	commandC := cModule(t, work, "command-c", noABISource+
		`__attribute__((export_name("polar_abi_version"))) int32_t polar_abi_version(void) { return 1; }
int main(void) { return 0; }
`, false)
	badEmit := plugintest.Build(t, "github.com/polar/observerd/wasm/testdata/bademit", work, "bademit")
	cPlugin, rsPlugin := filepath.Join(bin, "plugins", "healthz-c.wasm"), filepath.Join(bin, "plugins", "healthz-rs.wasm")

	// plugin check: the examples pass, the mistakes fail saying what to do.
	code, out := checkPlugin(t, "--target", target, "--config", `{"threshold": 100}`, threshold)
	require.Equal(t, 0, code, out)
	assert.Contains(t, out, "- observation.plugin.threshold severity=info result=ok")
	code, out = checkPlugin(t, "--target", target, cPlugin)
	require.Equal(t, 0, code, out)
	assert.Contains(t, out, `- observation.plugin.healthz severity=info result=ok subject="" schema="application/json" labels=map[path:/healthz]`)
	assert.Contains(t, out, `payload: {"status":200}`)
	code, out = checkPlugin(t, "--calls", "2", "--target", target, rsPlugin)
	require.Equal(t, 0, code, out)
	assert.Contains(t, out, "call 2 of 2 against "+target+": 1 observations")
	assert.Contains(t, out, `payload: {"status":200,"failing":0}`)

	mistakes := []struct {
		name, module, config, check string
	}{
		{"no polar_abi_version", noABI, "", "noabi.wasm: does not export polar_abi_version () -> i32"},
		{"a command, not a reactor", command, "", "command.wasm: is a WASI command (exports _start): build it as a reactor (Go: -buildmode=c-shared)"},
		{"an invalid emit", badEmit, `{"reject": "suffix"}`,
			`plugin bademit.wasm: invalid emit: 1 of 2 records rejected; host: emit: record rejected: type_suffix "Not A Type!" is not lower-case dotted words`},
	}
	for _, m := range mistakes {
		code, out := checkPlugin(t, "--target", target, "--config", cmp.Or(m.config, "{}"), m.module)
		assert.Equal(t, 1, code, "%s: %s", m.name, out)
		assert.Contains(t, out, m.check, m.name)
	}

	// The daemon runs the examples; the mistakes are rejected with the
	// reason, or fail their observer with it.
	d := newDaemon(t, target, withObservers(`    - {name: threshold, kind: wasm, interval: 500ms, timeout: 450ms, wasm: {module: threshold.wasm, config: {threshold: 100}}}
    - {name: healthz-c, kind: wasm, interval: 500ms, timeout: 450ms, wasm: {module: healthz-c.wasm}}
    - {name: healthz-rs, kind: wasm, interval: 500ms, timeout: 450ms, wasm: {module: healthz-rs.wasm}}
`))
	installPlugins(t, d, threshold, cPlugin, rsPlugin, noABI, commandC, badEmit)
	noABIFile := policyFile(t, d, "noabi", target, "{name: plugin, kind: wasm, interval: 1s, wasm: {module: noabi.wasm}}")
	commandFile := policyFile(t, d, "command", target, "{name: plugin, kind: wasm, interval: 1s, wasm: {module: command-c.wasm}}")
	policyFile(t, d, "emit", target, "{name: bad, kind: wasm, interval: 500ms, timeout: 450ms, wasm: {module: bademit.wasm, config: {reject: suffix}}}")
	c := d.consume(t)
	// The binding docs/plugins.md gives for one plugin type.
	healthz := d.consumeBound(t, randomName("e2e-healthz-"), "observation.plugin.healthz.*")
	daemon := d.start(t)

	rejected := func(file string) string {
		return c.waitWhere(t, messages.TypePolicyRejected, func(ev *messages.Event) bool {
			return ev.GetPolicyOutcome().GetFile() == file
		}).GetPolicyOutcome().GetReason()
	}
	assert.Contains(t, rejected(noABIFile), "spec.observers[0].wasm.module: plugin noabi.wasm: does not export polar_abi_version () -> i32")
	assert.Contains(t, rejected(commandFile), "plugin command-c.wasm: is a WASI command (exports _start): build it as a reactor (Go: -buildmode=c-shared)")

	for _, name := range []string{"threshold", "healthz-c", "healthz-rs"} {
		// A loaded machine may time a first call's request out (uncut).
		ev := c.firstAfter(t, name, time.Time{}, uncut)
		assert.Equal(t, messages.Result_RESULT_OK, ev.GetPlugin().GetResult(), name)
	}

	// The invalid emit: a warning, then observer.failed with the reason
	// (the first failure for it: a loaded machine may also time a call
	// out), and quarantine as it goes on; listed, with its reason, after
	// its stop.
	failed := c.waitWhere(t, messages.TypeObserverFailed, func(ev *messages.Event) bool {
		return ev.GetObserver().GetActor() == "observer/emit/bad" && strings.Contains(ev.GetObserver().GetReason(), "invalid emit")
	})
	badReason := `plugin bademit.wasm: invalid emit: 1 of 2 records rejected; host: emit: record rejected: type_suffix "Not A Type!" is not lower-case dotted words (3 calls in a row)`
	assert.Equal(t, badReason, failed.GetObserver().GetReason())
	c.waitWhere(t, messages.TypeObserverQuarantined, func(ev *messages.Event) bool { return ev.GetObserver().GetActor() == "observer/emit/bad" })
	c.waitWhere(t, messages.TypeObserverStopped, func(ev *messages.Event) bool { return ev.GetObserver().GetActor() == "observer/emit/bad" })

	p := start(t, "observerctl", "status", "--admin", "http://"+d.admin)
	require.Equal(t, 0, p.exitCode(t, wait), p.out.String())
	status := p.out.String()
	assert.Regexp(t, `(?m)^rejected: +/`, status)
	assert.Contains(t, status, noABIFile+":7:63: spec.observers[0].wasm.module: plugin noabi.wasm: does not export polar_abi_version () -> i32\n")
	assert.Contains(t, status, commandFile+":7:63: spec.observers[0].wasm.module: plugin command-c.wasm: is a WASI command (exports _start): "+
		"build it as a reactor (Go: -buildmode=c-shared)\n")
	// The last failure's count: it went on failing until quarantined.
	lastReason := regexp.QuoteMeta(strings.TrimSuffix(badReason, "(3 calls in a row)")) + `\(\d+ calls in a row\)`
	assert.Regexp(t, `observer/emit/bad +emit@\w+ +wasm .* quarantined +`+lastReason, status)

	p = start(t, "observerctl", "status", "--json", "--admin", "http://"+d.admin)
	require.Equal(t, 0, p.exitCode(t, wait), p.out.String())
	var snap protocol.Snapshot
	require.NoError(t, json.Unmarshal([]byte(p.out.String()), &snap))
	var bad *protocol.ObserverSnapshot
	for i, o := range snap.Observers {
		if o.Path == "observer/emit/bad" {
			bad = &snap.Observers[i]
		}
	}
	require.NotNil(t, bad, "a quarantined observer stays listed")
	assert.Equal(t, protocol.StatusQuarantined, bad.Status)
	assert.Regexp(t, "^"+lastReason+"$", bad.LastError)
	assert.Equal(t, "wasm", bad.Kind)
	assert.Contains(t, metrics(t, d), `observerd_plugin_emits_rejected_total{plugin="bademit.wasm"}`)

	// Plugins drive their observers' state: down while the target fails
	// (the Go one by its result error, the C and Rust ones by failed),
	// up again once it is well.
	for _, step := range []struct {
		mode  string
		state messages.ObserverState
	}{{"fail", messages.ObserverState_OBSERVER_STATE_DOWN}, {"ok", messages.ObserverState_OBSERVER_STATE_UP}} {
		control(t, target, "mode", step.mode)
		for _, name := range []string{"threshold", "healthz-c", "healthz-rs"} {
			change := c.waitWhere(t, messages.TypeStateChanged, func(ev *messages.Event) bool {
				s := ev.GetStateChange()
				return s.GetObserver() == "observer/web/"+name && s.GetNewState() == step.state
			})
			cause := c.byID(t, change.CausationId)
			assert.Equal(t, change.GetStateChange().GetLastResult(), cause.GetPlugin().GetResult(), "%s: its plugin's result caused it", name)
		}
	}

	_, got := healthz.snapshot()
	require.NotEmpty(t, got)
	for _, ev := range got {
		assert.Equal(t, "observation.plugin.healthz", ev.GetType(), "the binding gets a plugin type's events, no other")
	}

	// Every line the daemon logged is a JSON object naming each key once.
	_, err := jsonlog.Lines([]byte(daemon.out.String()))
	assert.NoError(t, err)
}

// byID waits for the event of id.
func (c *consumer) byID(t *testing.T, id string) *messages.Event {
	t.Helper()
	var found *messages.Event
	require.Eventually(t, func() bool {
		_, evs := c.snapshot()
		for _, ev := range evs {
			if ev != nil && ev.Id == id {
				found = ev
				return true
			}
		}
		return false
	}, wait, tick, "no event %s arrived", id)
	return found
}

// metrics is the daemon's /metrics.
func metrics(t *testing.T, d *daemon) string {
	t.Helper()
	resp, err := http.Get("http://" + d.admin + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}
