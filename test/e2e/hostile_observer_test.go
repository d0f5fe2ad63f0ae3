//go:build integration

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/messages"
)

// hostileObserver (TestHostile/observer): what an observed service (not trusted) or whoever
// can write a plugin makes of the daemon's observers. A pid file is the
// service's to write: it cannot make the daemon publish a secret or what
// the file holds, block, or read without bound. A service answering large
// bodies to many policies cannot make the daemon hold more than
// limits.max_response_bytes_total. A name the service controls cannot
// lead a connect outside allowed_targets. A plugin that others may write
// or own, or too large to hash, is refused, and one that is not pinned is
// named in the log, once.
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

	t.Run("pid file holding a number that is no process's pid", func(t *testing.T) {
		// Above pid_max: never a pid. Published, the number would tell a
		// policy writer what any file of allowed_pid_dirs holds.
		const number = "19283746"
		dir := t.TempDir()
		pidFile := filepath.Join(dir, "svc.pid")
		require.NoError(t, os.WriteFile(pidFile, []byte(number+"\n"), 0o644))

		c, _ := processDaemon(t, dir, pidFile)
		del, ev := c.waitFor(t, messages.TypeObservationProcess)
		obs := ev.GetProcess()
		assert.Equal(t, messages.Result_RESULT_FAILED, obs.Result)
		assert.Equal(t, "find process of pid file "+pidFile+": not running", obs.Error)
		assert.Zero(t, obs.Pid)
		assert.NotContains(t, string(del.Body), number, "the number is not published")
	})

	t.Run("many policies hold no more answers than max_response_bytes_total", func(t *testing.T) {
		// Each answer is 1 MiB, and the daemon holds 2 MiB of answers:
		// two requests at once, whatever the policies allow (4 each).
		body := strings.Repeat("x", 1<<20)
		var inFlight, peak, requests atomic.Int64
		proceed := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			requests.Add(1)
			n := inFlight.Add(1)
			for {
				if old := peak.Load(); n <= old || peak.CompareAndSwap(old, n) {
					break
				}
			}
			select {
			case <-proceed:
				// Counted out before the body goes: the client may give
				// its memory back once it has read 1 MiB, before this
				// handler returns.
				inFlight.Add(-1)
				_, _ = io.WriteString(w, body)
			case <-r.Context().Done():
				inFlight.Add(-1)
			}
		}))
		t.Cleanup(srv.Close)
		var once sync.Once
		let := func() { once.Do(func() { close(proceed) }) }
		t.Cleanup(let) // before the server closes
		d := newDaemon(t, "", withLimits("{min_interval: 10ms, max_requests_per_second: 10000, max_concurrent_requests: 64, "+
			"max_events_per_second: 100000, max_response_bytes: 1MiB, max_response_bytes_total: 2MiB}"))
		observers := func(n int, timing string) string {
			var list string
			for i := range n {
				list += fmt.Sprintf("    - {name: o%d, kind: http, %s, http: {max_body_bytes: 1MiB}}\n", i, timing)
			}
			return list
		}
		// The holders' answers are held for as long as the test needs;
		// the others' observations end at their timeout, waiting.
		writePolicyFile(t, d, "holders.yaml", "holders", srv.URL, observers(4, "interval: 1m, timeout: 50s"))
		c := d.consume(t)
		d.start(t)
		require.Eventually(t, func() bool { return inFlight.Load() >= 2 }, wait, tick, "the holders' requests are in flight")
		writePolicyFile(t, d, "waiters.yaml", "waiters", srv.URL, observers(4, "interval: 1s, timeout: 300ms"))
		ev := c.waitWhere(t, messages.TypeObservationHTTP, func(ev *messages.Event) bool { return ev.GetPolicy().GetName() == "waiters" })
		obs := ev.GetHttp()
		assert.Equal(t, messages.Result_RESULT_TIMEOUT, obs.Result)
		assert.Equal(t, "wait for memory for the answer (limits.max_response_bytes_total): context deadline exceeded", obs.Error)
		assert.Equal(t, int64(2), peak.Load(), "requests at the service at once")
		assert.Equal(t, int64(2), requests.Load(), "the waiters asked nothing")

		// Answered, the holders give the memory back: the waiters get it.
		let()
		c.waitWhere(t, messages.TypeObservationHTTP, func(ev *messages.Event) bool {
			return ev.GetPolicy().GetName() == "waiters" && ev.GetHttp().GetResult() == messages.Result_RESULT_OK
		})
		assert.Equal(t, int64(2), peak.Load(), "requests at the service at once")
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

	t.Run("module owned by another user", func(t *testing.T) {
		// Mode 0644 and in a safe directory, but its owner (the observed
		// service's user, say) may rewrite it whatever its mode.
		target := startObservable(t)
		d := newDaemon(t, target, withObservers(`    - {name: backlog, kind: wasm, interval: 1s, wasm: {module: status-threshold.wasm, config: {threshold: 100}}}
`))
		installPlugins(t, d, filepath.Join(bin, "plugins", "status-threshold.wasm"))
		module := filepath.Join(d.dir, "plugins", "status-threshold.wasm")
		require.NoError(t, os.Chown(module, nobody, nobody))
		c := d.consume(t)
		d.start(t)

		_, rejected := c.waitFor(t, messages.TypePolicyRejected)
		assert.Contains(t, rejected.GetPolicyOutcome().GetReason(),
			fmt.Sprintf("module %s is owned by uid %d: only root or the daemon's user (uid 0) may own it", module, nobody))
		assert.Empty(t, c.ofType(messages.TypePolicyApplied))
	})

	t.Run("module of a TiB", func(t *testing.T) {
		// Sparse: nothing written, hours of hashing at every parse.
		target := startObservable(t)
		d := newDaemon(t, target, withObservers(`    - {name: backlog, kind: wasm, interval: 1s, wasm: {module: huge.wasm}}
`))
		huge := filepath.Join(d.dir, "plugins", "huge.wasm")
		require.NoError(t, os.WriteFile(huge, nil, 0o644))
		require.NoError(t, os.Truncate(huge, 1<<40))
		c := d.consume(t)
		d.start(t)

		_, rejected := c.waitFor(t, messages.TypePolicyRejected)
		assert.Contains(t, rejected.GetPolicyOutcome().GetReason(), "cannot read plugin huge.wasm: larger than 64MiB")
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
