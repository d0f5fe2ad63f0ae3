//go:build integration

package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/messages"
)

// TestHostile plays what docs/security.md says the less trusted cannot do
// (a policy writer, a plugin, the observed service, other local users, a
// damaged or full disk), each against the real daemon and the real TLS
// broker. Every subtest failed before the fix it holds.
//
//   - policy: a hostile policy writer (merge bombs, a symlink to a secret,
//     limits, pid files and process names, answer sizes);
//   - observer: the observed service and plugins (pid files it plants,
//     names rebound off allowed_targets, plugins from an unsafe place);
//   - admin: other local users (commands, Host and Origin, floods);
//   - state: one policy against the others (event budget, totals);
//   - broker: a damaged or full disk, credentials rotated or given in the
//     environment;
//   - secrets: a config whose secrets are exposed.
//
// The unit's limits are tested by test/install.
func TestHostile(t *testing.T) {
	t.Run("policy", hostilePolicy)
	t.Run("observer", hostileObserver)
	t.Run("admin", hostileAdmin)
	t.Run("state", hostileState)
	t.Run("broker", hostileBroker)
	t.Run("secrets", hostileSecrets)
}

// hostilePolicy: one daemon observes its service while a policy writer
// drops hostile files beside the good policy. Each is rejected with a
// reason that quotes nothing it read; the good policy keeps observing,
// the daemon stays within its memory, and no accepted event is lost.
func hostilePolicy(t *testing.T) {
	target := startObservable(t)
	d := newDaemon(t, "")
	writePolicyFile(t, d, "web.yaml", "web", target, "    - {name: health, kind: http, interval: 100ms, http: {path: /healthz}}\n")
	secret := strings.TrimSpace(string(mustRead(t, node.PasswordFile)))
	require.NotEmpty(t, secret)
	c := d.consume(t)
	daemon := d.start(t)
	c.waitWhere(t, messages.TypeObservationHTTP, func(ev *messages.Event) bool { return ev.GetPolicy().GetName() == "web" })

	// rejected drops file into policy_dir (write it, or make it a symlink
	// when target is set) and returns the policy.rejected that names it.
	rejected := func(t *testing.T, file, content, link string) *messages.PolicyOutcome {
		t.Helper()
		path := filepath.Join(d.dir, "policies", file)
		if link != "" {
			require.NoError(t, os.Symlink(link, path))
		} else {
			require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
		}
		ev := c.waitWhere(t, messages.TypePolicyRejected, func(ev *messages.Event) bool { return ev.GetPolicyOutcome().GetFile() == path })
		out := ev.GetPolicyOutcome()
		assert.NotContains(t, out.Reason, secret)
		return out
	}
	policy := func(name, spec string) string {
		return fmt.Sprintf("apiVersion: observer.polar/v1\nkind: ObservationPolicy\nmetadata: {name: %s}\nspec:\n  target: {name: %s, url: %q}\n%s", name, name, target, spec)
	}

	t.Run("a merge bomb is rejected within the daemon's memory", func(t *testing.T) {
		// 19 KB: on the old decoder, 8.6 GB of copies before a rejection.
		keys := make([]string, 2000)
		for i := range keys {
			keys[i] = fmt.Sprintf("k%d: 0", i)
		}
		var b strings.Builder
		// Under wasm.config, a free-form mapping: merges there are expanded.
		b.WriteString("  observers:\n    - name: lol\n      kind: wasm\n      interval: 1s\n      wasm:\n        module: lol.wasm\n        config:\n")
		fmt.Fprintf(&b, "          a0: &a0 {%s}\n", strings.Join(keys, ", "))
		for level := 1; level <= 4; level++ {
			fmt.Fprintf(&b, "          a%d: &a%d {<<: [%s]}\n", level, level, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d, ", level-1), 20), ", "))
		}
		cpu := cpuOf(t, daemon)
		out := rejected(t, "bomb.yaml", policy("bomb", b.String()), "")
		assert.Contains(t, out.Reason, "the document expands too much through aliases")
		// CPU time, not wall time: what the daemon spent, however loaded
		// the machine is. The old decoder spent 9 s on this file.
		assert.Less(t, cpuOf(t, daemon)-cpu, 2*time.Second, "the daemon's CPU for the bomb")
		assert.Less(t, memOf(t, daemon, "VmHWM"), int64(200<<20), "the daemon's peak memory, the bomb included")
	})

	t.Run("a symlink to the broker password is refused and not quoted", func(t *testing.T) {
		out := rejected(t, "secret.yaml", "", node.PasswordFile)
		assert.Contains(t, out.Reason, "the file resolves outside its directory")
		assert.NotContains(t, daemon.out.String(), secret, "the password in the daemon's log")
	})

	t.Run("a file whose content is a secret is rejected without quoting it", func(t *testing.T) {
		out := rejected(t, "pasted.yaml", secret+"\n", "")
		assert.Contains(t, out.Reason, "the document must be a mapping of keys to values, not a string of")
	})

	t.Run("observing faster or harder than the daemon allows is rejected", func(t *testing.T) {
		out := rejected(t, "greedy.yaml", policy("greedy", `  limits: {max_requests_per_second: 1e9, max_concurrent_requests: 1000000}
  observers:
    - {name: fast, kind: http, interval: 1ns, http: {path: /}}
    - {name: big, kind: http, interval: 1s, http: {path: /, max_body_bytes: 1GiB}}
`), "")
		for _, want := range []string{
			"spec.limits.max_requests_per_second: must be at most 10000 (limits.max_requests_per_second of the daemon config), got 1e+09",
			"spec.limits.max_concurrent_requests: must be at most 64",
			"spec.observers[0].interval: must be at least 10ms (limits.min_interval of the daemon config), got 1ns",
			"spec.observers[1].http.max_body_bytes: must be between 1B and 16MiB (limits.max_response_bytes of the daemon config), got 1GiB",
		} {
			assert.Contains(t, out.Reason, want)
		}
	})

	t.Run("a process observer cannot read a file or probe a process outside what the config allows", func(t *testing.T) {
		out := rejected(t, "probe.yaml", policy("probe", fmt.Sprintf(`  observers:
    - {name: key, kind: process, interval: 1s, process: {pid_file: %q}}
    - {name: ssh, kind: process, interval: 1s, process: {name: sshd}}
`, node.PasswordFile)), "")
		assert.Contains(t, out.Reason, "spec.observers[0].process.pid_file: is not inside allowed_pid_dirs [/run] of the daemon config")
		assert.Contains(t, out.Reason, "spec.observers[1].process.name: is not in allowed_process_names [] of the daemon config")
	})

	// Through all of it the good policy kept observing, and every accepted
	// event arrived.
	since := lastObservation(t, c, "web")
	c.waitWhere(t, messages.TypeObservationHTTP, func(ev *messages.Event) bool {
		return ev.GetPolicy().GetName() == "web" && ev.Time.AsTime().After(since)
	})
	require.Nil(t, daemon.cmd.ProcessState, "the daemon is still running")
	_, evs := c.snapshot()
	var got []*messages.Event
	for _, ev := range evs {
		require.NotNil(t, ev, "an undecodable delivery")
		got = append(got, ev)
	}
	assert.Empty(t, deliveryOf(got).missing(), "sequences never delivered")
}

// cpuOf is the CPU time (user and system) process p has used so far.
func cpuOf(t *testing.T, p *proc) time.Duration {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	require.NoError(t, err)
	// utime and stime are fields 14 and 15, counted after the command
	// name, which is in parentheses and may hold spaces.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	require.Greater(t, len(fields), 13)
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	require.NoError(t, errors.Join(err1, err2))
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// clockTicks is the kernel's USER_HZ, the unit of /proc's CPU times: 100
// on every Linux architecture Go supports.
const clockTicks = 100

// lastObservation is the time of the latest observation of policy the
// consumer has.
func lastObservation(t *testing.T, c *consumer, policy string) (last time.Time) {
	t.Helper()
	for _, ev := range c.ofType(messages.TypeObservationHTTP) {
		if ev.GetPolicy().GetName() == policy && ev.Time.AsTime().After(last) {
			last = ev.Time.AsTime()
		}
	}
	require.False(t, last.IsZero(), "no observation of %s", policy)
	return last
}

// hostileSecrets: a config whose secrets are exposed does not start, and
// says which file and why (exit 2, nothing else done).
func hostileSecrets(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(t *testing.T, d *daemon)
		wants []string
	}{
		{
			name: "a password file others may read",
			edit: func(t *testing.T, d *daemon) {
				pw := filepath.Join(d.dir, "amqp.password")
				require.NoError(t, os.WriteFile(pw, mustRead(t, node.PasswordFile), 0o600))
				require.NoError(t, os.Chmod(pw, 0o644))
				editConfig(t, d, "password_file: "+node.PasswordFile, "password_file: "+pw)
			},
			wants: []string{"broker.password_file: ", "amqp.password has mode 0644: a secret must not be writable by its group nor accessible by others"},
		},
		{
			name: "a list of broker URLs that would fail over to plaintext",
			edit: func(t *testing.T, d *daemon) {
				editConfig(t, d, fmt.Sprintf("urls: [%q]", node.URL()), fmt.Sprintf("urls: [%q, \"amqp://observer@127.0.0.1:5672/\"]\n  allow_insecure: true", node.URL()))
			},
			wants: []string{"broker.urls: mixes amqps:// and amqp://: a failover would silently drop TLS"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newDaemon(t, "")
			tc.edit(t, d)
			p := d.start(t)
			assert.Equal(t, 2, p.exitCode(t, wait), "an invalid config")
			for _, want := range tc.wants {
				assert.Contains(t, p.out.String(), want)
			}
			assert.NotContains(t, p.out.String(), strings.TrimSpace(string(mustRead(t, node.PasswordFile))))
		})
	}
}
