//go:build integration

package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/boltdamage"
	"github.com/polar/observerd/test/tmpfs"
)

// hostileBroker (TestHostile/broker): the outbox's file and disk, and the broker's
// credentials, turned against the daemon (issue 11, items 7 and 9).
func hostileBroker(t *testing.T) {
	t.Run("a damaged outbox is replaced and its sequences are not reused", func(t *testing.T) {
		d := newDaemon(t, startObservable(t))
		c := d.consume(t)
		p := d.start(t)
		c.waitFor(t, messages.TypeDaemonStarted)
		c.waitFor(t, messages.TypeObservationHTTP)
		p.signal(t, syscall.SIGTERM)
		require.Equal(t, 0, p.exitCode(t, wait))
		var before uint64
		for _, ev := range c.ofType(messages.TypeDaemonStopping) {
			before = max(before, ev.Sequence)
		}
		require.Positive(t, before)

		// bbolt panics on this freelist when it opens the file.
		path := filepath.Join(d.dir, "state", "outbox", "outbox.db")
		boltdamage.Freelist(t, path)
		p = d.start(t)
		var report *messages.Event
		require.Eventually(t, func() bool {
			for _, ev := range c.ofType(messages.TypeOutboxOverflow) {
				if ev.GetOutboxOverflow().GetPolicy() == "corrupt" {
					report = ev
					return true
				}
			}
			return false
		}, wait, tick, "an outbox.overflow with policy corrupt arrives")
		r := report.GetOutboxOverflow()
		assert.LessOrEqual(t, r.GetFirstSequence(), before)
		assert.GreaterOrEqual(t, r.GetLastSequence(), before, "the range covers what the damaged file held")
		assert.Equal(t, r.GetLastSequence()+1, report.Sequence, "the new outbox goes on after the range")
		_, started := c.waitFor(t, messages.TypeDaemonStarted)
		require.Eventually(t, func() bool {
			for _, ev := range c.ofType(messages.TypeDaemonStarted) {
				if ev.Sequence > r.GetLastSequence() {
					started = ev
					return true
				}
			}
			return false
		}, wait, tick, "the restarted daemon's events follow the report, not from 1")
		assert.Greater(t, started.Sequence, report.Sequence)
		aside, _ := filepath.Glob(path + ".corrupt-*")
		assert.Len(t, aside, 1, "the damaged file is kept")
		require.Eventually(t, func() bool { code, _ := d.readyz(); return code == 200 }, wait, tick)
		assert.Equal(t, 1, p.logCount(`"message":"outbox file damaged`))
	})

	t.Run("an outbox the daemon cannot open stops it, untouched", func(t *testing.T) {
		d := newDaemon(t, startObservable(t))
		p := d.start(t)
		require.Eventually(t, func() bool { code, _ := d.readyz(); return code == 200 }, wait, tick)
		p.signal(t, syscall.SIGTERM)
		require.Equal(t, 0, p.exitCode(t, wait))

		// The daemon ran as root once; now it runs as nobody, who owns
		// everything of it but the outbox's files.
		outbox := filepath.Join(d.dir, "state", "outbox")
		before := snapshotDir(t, outbox)
		exe := asNobody(t, d)
		p = startCmd(t, asUser(exec.Command(exe, "--config", d.config), nobody))
		assert.Equal(t, 3, p.exitCode(t, wait), "state_dir unusable")
		assert.Contains(t, p.out.String(), filepath.Join(outbox, "outbox.db")+": permission denied")
		assert.Equal(t, before, snapshotDir(t, outbox), "nothing moved aside, nothing written")
	})

	t.Run("a full disk fails readiness, bounds memory, and reports what it dropped", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		d := newDaemon(t, startObservable(t), withLoad(10), withOutbox("{max_bytes: 1MiB}"))
		state := filepath.Join(d.dir, "state")
		tmpfs.Mount(t, state, "16m")
		d.declare(t)
		p := d.start(t)
		d.waitQueued(t, 200)
		rss := memOf(t, p, "VmRSS")

		// A memory alarm holds the events in the outbox, which must grow.
		_, err := node.Ctl(ctx, "set_vm_memory_high_watermark", "0")
		require.NoError(t, err)
		t.Cleanup(func() { _, _ = node.Ctl(context.Background(), "set_vm_memory_high_watermark", "0.4") })
		free := tmpfs.Fill(t, state)
		var body string
		require.Eventually(t, func() bool {
			_, body = d.readyz()
			return strings.Contains(body, "outbox cannot be written")
		}, wait, tick, "readyz says why")
		assert.Contains(t, body, "no space left on device")
		require.Eventually(t, func() bool {
			m, err := d.scrape()
			return err == nil && counterOf(m, "observerd_events_dropped_unaccepted_total") > 0
		}, time.Minute, 100*time.Millisecond, "pending reaches its bound")
		// Events keep coming; memory does not follow them.
		// Sampled every 250 ms for 5 s: the bound holds at every sample.
		sample := time.NewTicker(250 * time.Millisecond)
		defer sample.Stop()
		for end := time.After(5 * time.Second); ; {
			select {
			case <-sample.C:
				assert.Less(t, memOf(t, p, "VmRSS"), rss+64<<20, "RSS bounded while the disk is full")
				continue
			case <-end:
			}
			break
		}

		free()
		_, err = node.Ctl(ctx, "set_vm_memory_high_watermark", "0.4")
		require.NoError(t, err)
		require.Eventually(t, func() bool { code, _ := d.readyz(); return code == 200 }, time.Minute, tick)
		require.Eventually(t, func() bool { return p.logCount("events dropped from memory before they were accepted") > 0 }, wait, tick)
		p.signal(t, syscall.SIGTERM)
		require.Equal(t, 0, p.exitCode(t, wait))
		evs := d.drain(t)
		got := deliveryOf(evs)
		// The outbox (1 MiB) may also have dropped its oldest during the
		// alarm, before the disk was full: those ranges are reported.
		var unreported []uint64
		for _, s := range got.missing() {
			if !slices.ContainsFunc(got.overflow, func(r [2]uint64) bool { return r[0] <= s && s <= r[1] }) {
				unreported = append(unreported, s)
			}
		}
		assert.Empty(t, unreported, "every accepted sequence arrives or is reported dropped (of %d)", got.max)
		var dropped uint64
		for _, ev := range evs {
			if o := ev.GetOutboxOverflow(); o.GetPolicy() == "disk_full" {
				dropped += o.GetDroppedEvents()
			}
		}
		assert.Positive(t, dropped, "the outbox.overflow (disk_full) count")
		t.Logf("%d events, %d dropped before they were accepted", got.max, dropped)
	})

	t.Run("a rotated password is used at the next reconnect, without a restart", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		user, old := randomName("rotate-"), randomSecret(t)
		require.NoError(t, node.AddUser(ctx, user, old))
		pwFile := filepath.Join(t.TempDir(), "password")
		writeSecret(t, pwFile, old)
		d := newDaemon(t, startObservable(t), withURLs(fmt.Sprintf("amqps://%s@%s:%d/", user, node.Host, node.Port)))
		editConfig(t, d, "password_file: "+node.PasswordFile, "password_file: "+pwFile)
		d.declare(t)
		p := d.start(t)
		require.Eventually(t, func() bool { code, _ := d.readyz(); return code == 200 }, wait, tick)

		fresh := randomSecret(t)
		require.NoError(t, node.ChangePassword(ctx, user, fresh))
		writeSecret(t, pwFile, fresh)
		require.NoError(t, node.CloseConnections(ctx, user))
		require.Eventually(t, func() bool { return p.logCount(`"message":"broker connected"`) >= 2 }, wait, tick,
			"reconnected with the new password")
		before := d.queued()
		d.waitQueued(t, before+5)
		assert.NotContains(t, p.out.String(), fresh)
		assert.NotContains(t, p.out.String(), old)
	})

	t.Run("the password given in the environment leaves the environment", func(t *testing.T) {
		d := newDaemon(t, startObservable(t))
		editConfig(t, d, "  password_file: "+node.PasswordFile+"\n", "")
		cmd := exec.Command(filepath.Join(bin, "observerd"), "--config", d.config)
		cmd.Env = append(os.Environ(), "OBSERVERD_AMQP_PASSWORD="+node.Password)
		p := startCmd(t, cmd)
		require.Eventually(t, func() bool { code, _ := d.readyz(); return code == 200 }, wait, tick, "it logged in with it")
		environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.cmd.Process.Pid))
		require.NoError(t, err)
		assert.NotContains(t, string(environ), node.Password)
		assert.NotContains(t, string(environ), "OBSERVERD_AMQP_PASSWORD")
		assert.Contains(t, string(environ), "PATH=", "the rest of the environment is left")
	})
	hostileRecordDamage(t)
}

const nobody = 65534

// asNobody hands the daemon's files to nobody, but for the outbox's files
// (as they are after a run as root), and returns a copy of observerd that
// nobody can run.
func asNobody(t *testing.T, d *daemon) string {
	t.Helper()
	// The broker's CA and password files live in the node's private dir.
	for name, src := range map[string]string{"ca.pem": node.CAFile, "password": node.PasswordFile} {
		data, err := os.ReadFile(src)
		require.NoError(t, err)
		dst := filepath.Join(d.dir, name)
		require.NoError(t, os.WriteFile(dst, data, 0o600))
		editConfig(t, d, src, dst)
	}
	// bin is a directory only root can enter.
	exe := filepath.Join(d.dir, "observerd")
	data, err := os.ReadFile(filepath.Join(bin, "observerd"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(exe, data, 0o755))
	outbox := filepath.Join(d.dir, "state", "outbox")
	require.NoError(t, filepath.WalkDir(d.dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || filepath.Dir(path) == outbox {
			return err
		}
		return os.Lchown(path, nobody, nobody)
	}))
	for dir := filepath.Dir(d.dir); dir != os.TempDir() && dir != "/"; dir = filepath.Dir(dir) {
		require.NoError(t, os.Chmod(dir, 0o755))
	}
	return exe
}

func asUser(cmd *exec.Cmd, uid uint32) *exec.Cmd {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	return cmd
}

// snapshotDir is every file of dir with its owner, mode and content.
func snapshotDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		var st syscall.Stat_t
		require.NoError(t, syscall.Stat(path, &st))
		out[e.Name()] = fmt.Sprintf("uid %d mode %o %x", st.Uid, st.Mode, data)
	}
	return out
}

func editConfig(t *testing.T, d *daemon, old, new string) {
	t.Helper()
	data, err := os.ReadFile(d.config)
	require.NoError(t, err)
	require.Contains(t, string(data), old)
	require.NoError(t, os.WriteFile(d.config, []byte(strings.ReplaceAll(string(data), old, new)), 0o600))
}

func randomSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

// writeSecret replaces a password file as an operator's tooling would:
// a new file renamed over the old one.
func writeSecret(t *testing.T, path, secret string) {
	t.Helper()
	tmp := path + ".new"
	require.NoError(t, os.WriteFile(tmp, []byte(secret+"\n"), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

// memOf is a memory figure of p from /proc/<pid>/status, in bytes:
// VmRSS (resident now), VmHWM (the peak of resident).
func memOf(t *testing.T, p *proc, field string) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	require.NoError(t, err)
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if kb, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(kb), "kB")), 10, 64)
			require.NoError(t, err)
			return n << 10
		}
	}
	t.Fatalf("no %s", field)
	return 0
}
