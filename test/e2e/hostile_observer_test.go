//go:build integration

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/messages"
)

// hostileObserver (TestHostile/observer): what an observed service (not trusted) or whoever
// can write a plugin makes of the daemon's observers. A pid file is the
// service's to write: it cannot make the daemon publish a secret, block,
// or read without bound. A name the service controls cannot lead a
// connect outside allowed_targets. A plugin that others may write is
// refused, and one that is not pinned is named in the log, once.
func hostileObserver(t *testing.T) {
	t.Run("pid file symlinked to a secret outside allowed_pid_dirs", func(t *testing.T) {
		secret := randomName("e2e-secret-")
		file := filepath.Join(t.TempDir(), "amqp.password")
		require.NoError(t, os.WriteFile(file, []byte(secret+"\n"), 0o600))
		dir := t.TempDir()
		pidFile := filepath.Join(dir, "svc.pid")
		require.NoError(t, os.Symlink(file, pidFile))

		c, _ := processDaemon(t, dir, pidFile)
		del, ev := c.waitFor(t, messages.TypeObservationProcess)
		obs := ev.GetProcess()
		assert.Equal(t, messages.Result_RESULT_ERROR, obs.Result)
		assert.Equal(t, fmt.Sprintf("read pid file %s: resolves outside %s", pidFile, dir), obs.Error)
		assert.NotContains(t, string(del.Body), secret, "the secret is not published")
	})

	t.Run("FIFO pid file", func(t *testing.T) {
		dir := t.TempDir()
		pidFile := filepath.Join(dir, "svc.pid")
		require.NoError(t, syscall.Mkfifo(pidFile, 0o644))

		c, _ := processDaemon(t, dir, pidFile)
		// Each observation fails at once (not at its timeout), and the
		// next ones keep coming on schedule.
		require.Eventually(t, func() bool { return len(c.ofType(messages.TypeObservationProcess)) >= 5 }, wait, tick,
			"the observations keep coming")
		for _, ev := range c.ofType(messages.TypeObservationProcess) {
			obs := ev.GetProcess()
			assert.Equal(t, messages.Result_RESULT_ERROR, obs.Result, obs.Error)
			assert.Equal(t, "read pid file "+pidFile+": not a regular file (a FIFO)", obs.Error)
		}
	})

	t.Run("big pid file", func(t *testing.T) {
		dir := t.TempDir()
		pidFile := filepath.Join(dir, "svc.pid")
		f, err := os.Create(pidFile)
		require.NoError(t, err)
		require.NoError(t, f.Truncate(16<<20)) // sparse: nothing written, 16 MiB to read
		require.NoError(t, f.Close())

		c, daemon := processDaemon(t, dir, pidFile)
		_, ev := c.waitFor(t, messages.TypeObservationProcess)
		obs := ev.GetProcess()
		assert.Equal(t, messages.Result_RESULT_ERROR, obs.Result)
		assert.Equal(t, "read pid file "+pidFile+": not a pid (more than 64 bytes)", obs.Error)
		assert.Nil(t, daemon.cmd.ProcessState, "the daemon is still running")
	})

	t.Run("localhost resolving outside allowed_targets", func(t *testing.T) {
		// allowed_targets lists ::1 only; validation lets "localhost"
		// through on it, but localhost is 127.0.0.1 here, where the
		// service listens: every kind's connect is refused.
		_, addr := runObservable(t, "127.0.0.1:0")
		_, port, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		d := newDaemon(t, "http://localhost:"+port, withConfig(`allowed_targets: ["::1/128"]`+"\n"), withObservers(`    - {name: health, kind: http, interval: 200ms, http: {path: /healthz}}
    - {name: port, kind: tcp, interval: 200ms, tcp: {}}
    - {name: backlog, kind: wasm, interval: 500ms, wasm: {module: status-threshold.wasm, config: {threshold: 100}}}
`))
		installPlugins(t, d, filepath.Join(bin, "plugins", "status-threshold.wasm"))
		c := d.consume(t)
		daemon := d.start(t)

		refused := fmt.Sprintf("dial tcp 127.0.0.1:%s: address 127.0.0.1 is not in allowed_targets [::1/128]", port)
		_, ev := c.waitFor(t, messages.TypeObservationHTTP)
		assert.Equal(t, messages.Result_RESULT_ERROR, ev.GetHttp().GetResult())
		assert.Contains(t, ev.GetHttp().GetError(), refused)
		_, ev = c.waitFor(t, messages.TypeObservationTCP)
		assert.Equal(t, messages.Result_RESULT_ERROR, ev.GetTcp().GetResult())
		assert.Equal(t, refused, ev.GetTcp().GetError())
		// The plugin's http_request goes through the same dialer: the
		// plugin reports its target unobservable, and the daemon's log
		// says why.
		_, ev = c.waitFor(t, "observation.plugin.threshold")
		assert.Equal(t, "error", ev.GetPlugin().GetLabels()["result"], "payload %s", ev.GetPlugin().GetPayload())
		require.Eventually(t, func() bool { return daemon.logCount(refused) >= 3 }, wait, tick, "the daemon's log names the refused address")
	})

	t.Run("group-writable plugin_dir", func(t *testing.T) {
		target := startObservable(t)
		d := newDaemon(t, target, withObservers(`    - {name: backlog, kind: wasm, interval: 1s, wasm: {module: status-threshold.wasm, config: {threshold: 100}}}
`))
		installPlugins(t, d, filepath.Join(bin, "plugins", "status-threshold.wasm"))
		plugins := filepath.Join(d.dir, "plugins")
		require.NoError(t, os.Chmod(plugins, 0o775))
		c := d.consume(t)
		d.start(t)

		_, rejected := c.waitFor(t, messages.TypePolicyRejected)
		assert.Contains(t, rejected.GetPolicyOutcome().GetReason(),
			fmt.Sprintf("plugin_dir %s has mode 0775: writable by group or others", plugins))
		assert.Empty(t, c.ofType(messages.TypePolicyApplied))
	})

	t.Run("unpinned module warned about once", func(t *testing.T) {
		target := startObservable(t)
		d := newDaemon(t, target, withObservers(`    - {name: one, kind: wasm, interval: 200ms, wasm: {module: status-threshold.wasm, config: {threshold: 100}}}
    - {name: two, kind: wasm, interval: 200ms, wasm: {module: status-threshold.wasm, config: {threshold: 100}}}
`))
		module := filepath.Join(bin, "plugins", "status-threshold.wasm")
		installPlugins(t, d, module)
		b, err := os.ReadFile(module)
		require.NoError(t, err)
		sum := sha256.Sum256(b)
		c := d.consume(t)
		daemon := d.start(t)

		// Both observers loaded the module and observed twice.
		require.Eventually(t, func() bool {
			n := map[string]int{}
			for _, ev := range c.ofType("observation.plugin.threshold") {
				n[ev.Source]++
			}
			return len(n) == 2 && n["observerd://e2e-node.example/observer/web/one"] >= 2 && n["observerd://e2e-node.example/observer/web/two"] >= 2
		}, wait, tick, "both plugin observers observe")
		var lines []string
		for _, line := range strings.Split(daemon.out.String(), "\n") {
			if strings.Contains(line, "plugin module not pinned") {
				lines = append(lines, line)
			}
		}
		require.Len(t, lines, 1, "one warning for the module, whatever the number of observers")
		assert.Contains(t, lines[0], `"level":"warn"`)
		assert.Contains(t, lines[0], filepath.Join(d.dir, "plugins", "status-threshold.wasm"))
		assert.Contains(t, lines[0], hex.EncodeToString(sum[:]))
	})
}

// processDaemon runs a daemon whose allowed_pid_dirs is dir, with one
// process observer of pidFile every 100 ms, and consumes its events.
func processDaemon(t *testing.T, dir, pidFile string) (*consumer, *proc) {
	t.Helper()
	d := newDaemon(t, "http://127.0.0.1:1", withConfig(fmt.Sprintf("allowed_pid_dirs: [%q]\n", dir)),
		withObservers(fmt.Sprintf("    - {name: proc, kind: process, interval: 100ms, timeout: 80ms, process: {pid_file: %q}}\n", pidFile)))
	c := d.consume(t)
	return c, d.start(t)
}
