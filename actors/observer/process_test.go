package observer_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/observer/kinds/process"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/actortest"
	"github.com/polar/observerd/test/proctest"
)

func writePIDFile(t *testing.T, path string, pid int32) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(strconv.Itoa(int(pid))+"\n"), 0o644))
}

// processObservations returns the process observations received so far.
func (f *fixture) processObservations() []*messages.ProcessObservation {
	var out []*messages.ProcessObservation
	for _, ev := range f.state.EventsOf(messages.TypeObservationProcess) {
		out = append(out, ev.GetProcess())
	}
	return out
}

// waitProcess waits for a process observation, after the first `after`
// ones, for which match holds.
func (f *fixture) waitProcess(t *testing.T, after int, match func(*messages.ProcessObservation) bool) (*messages.ProcessObservation, int) {
	t.Helper()
	var found *messages.ProcessObservation
	var at int
	require.Eventually(t, func() bool {
		obs := f.processObservations()
		for i := after; i < len(obs); i++ {
			if match(obs[i]) {
				found, at = obs[i], i
				return true
			}
		}
		return false
	}, actortest.Wait, 5*time.Millisecond, "no matching process observation")
	return found, at
}

func TestProcessByPIDFile(t *testing.T) {
	f := setup(t)
	name := proctest.UniqueName("svc-")
	bin := proctest.Program(t, name)
	pidFile := filepath.Join(t.TempDir(), "svc.pid")
	first := proctest.Spawn(t, bin, "600")
	writePIDFile(t, pidFile, first.PID())

	p := parse(t, "http://127.0.0.1:1", "", fmt.Sprintf("    - {name: proc, kind: process, interval: 30ms, process: {pid_file: %q}}\n", pidFile))
	f.start(t, p, "proc")

	ev := f.waitEvents(t, messages.TypeObservationProcess, 1)[0]
	assert.Equal(t, messages.TypeObservationProcess, ev.Type)
	assert.Equal(t, "web-target", ev.Subject)
	assert.Equal(t, correlation, ev.CorrelationId)
	obs := ev.GetProcess()
	require.NotNil(t, obs)
	assert.Equal(t, messages.Result_RESULT_OK, obs.Result, obs.Error)
	assert.Empty(t, obs.Error)
	assert.Equal(t, first.PID(), obs.Pid)
	assert.Equal(t, name, obs.Name, "the process's comm")
	assert.GreaterOrEqual(t, obs.CpuSeconds, 0.0)
	assert.Less(t, obs.CpuSeconds, 1.0, "sleep does not work")
	assert.Positive(t, obs.RssBytes)
	assert.Less(t, obs.RssBytes, uint64(100<<20))
	// The first turn can come while sleep's dynamic loader still holds a
	// library open: the count an observation reports settles at the
	// process's own.
	fds := first.FDs(t)
	f.waitProcess(t, 0, func(o *messages.ProcessObservation) bool { return o.OpenFds == fds })
	assert.Equal(t, int64(1), obs.Threads)
	// The kernel's boot time is in whole seconds: the start time is as
	// precise as that.
	assert.WithinDuration(t, first.Started, obs.StartTime.AsTime(), 2*time.Second)
	assert.False(t, obs.Restarted, "the first observation has nothing to compare with")

	// The same process again: same start time, not restarted.
	again, at := f.waitProcess(t, 1, func(*messages.ProcessObservation) bool { return true })
	assert.Equal(t, messages.Result_RESULT_OK, again.Result, again.Error)
	assert.Equal(t, first.PID(), again.Pid)
	assert.True(t, obs.StartTime.AsTime().Equal(again.StartTime.AsTime()))
	assert.False(t, again.Restarted)

	// Stopped: the pid file names a process that is gone, whose pid is
	// only what the file holds (neither published nor named).
	first.Stop(t)
	gone, at := f.waitProcess(t, at+1, func(o *messages.ProcessObservation) bool { return o.Result != messages.Result_RESULT_OK })
	assert.Equal(t, messages.Result_RESULT_FAILED, gone.Result)
	assert.Equal(t, fmt.Sprintf("find process of pid file %s: not running", pidFile), gone.Error)
	assert.Zero(t, gone.Pid)
	assert.False(t, gone.Restarted)
	assert.Zero(t, gone.RssBytes)

	// Started again, under another pid: restarted, once.
	second := proctest.Spawn(t, bin, "600")
	writePIDFile(t, pidFile, second.PID())
	back, at := f.waitProcess(t, at+1, func(o *messages.ProcessObservation) bool { return o.Result == messages.Result_RESULT_OK })
	assert.Equal(t, second.PID(), back.Pid)
	assert.True(t, back.Restarted, "a new pid is a restart")
	assert.False(t, back.StartTime.AsTime().Before(obs.StartTime.AsTime()))
	next, _ := f.waitProcess(t, at+1, func(*messages.ProcessObservation) bool { return true })
	assert.Equal(t, messages.Result_RESULT_OK, next.Result, next.Error)
	assert.False(t, next.Restarted, "restarted is said once")
}

// TestProcessCPUSeconds: a busy service's CPU time shows, user and
// system together.
func TestProcessCPUSeconds(t *testing.T) {
	f := setup(t)
	busy := proctest.Spawn(t, "/bin/sh", "-c", "while :; do :; done")
	pidFile := filepath.Join(t.TempDir(), "busy.pid")
	writePIDFile(t, pidFile, busy.PID())
	p := parse(t, "http://127.0.0.1:1", "", fmt.Sprintf("    - {name: proc, kind: process, interval: 20ms, process: {pid_file: %q}}\n", pidFile))
	f.start(t, p, "proc")

	first, _ := f.waitProcess(t, 0, func(*messages.ProcessObservation) bool { return true })
	require.Equal(t, messages.Result_RESULT_OK, first.Result, first.Error)
	later, _ := f.waitProcess(t, 0, func(o *messages.ProcessObservation) bool { return o.CpuSeconds >= first.CpuSeconds+0.2 })
	assert.Equal(t, messages.Result_RESULT_OK, later.Result, later.Error)
	assert.Equal(t, busy.PID(), later.Pid)
	assert.Equal(t, "sh", later.Name)
	assert.False(t, later.Restarted)
}

func TestProcessResults(t *testing.T) {
	tests := []struct {
		name    string
		process func(t *testing.T) (section string, pid int32)
		result  messages.Result
		err     string // {file} stands for the pid file, {pid} for the pid
	}{
		{
			name: "running",
			process: func(t *testing.T) (string, int32) {
				pidFile := filepath.Join(t.TempDir(), "svc.pid")
				c := proctest.Spawn(t, proctest.Program(t, proctest.UniqueName("svc-")), "600")
				writePIDFile(t, pidFile, c.PID())
				return fmt.Sprintf("{pid_file: %q}", pidFile), c.PID()
			},
			result: messages.Result_RESULT_OK,
		},
		{
			// SIGSTOPped, the process is still there: the observation
			// reports it, and the other kinds see it hang.
			name: "suspended",
			process: func(t *testing.T) (string, int32) {
				pidFile := filepath.Join(t.TempDir(), "svc.pid")
				c := proctest.Spawn(t, proctest.Program(t, proctest.UniqueName("svc-")), "600")
				// Asleep (S), it is past its start-up: stopped before, it
				// might not have a page of its own yet.
				require.Eventually(t, func() bool { return c.State() == "S" }, actortest.Wait, time.Millisecond)
				require.NoError(t, c.Cmd.Process.Signal(syscall.SIGSTOP))
				require.Eventually(t, func() bool { return c.State() == "T" }, actortest.Wait, time.Millisecond)
				writePIDFile(t, pidFile, c.PID())
				return fmt.Sprintf("{pid_file: %q}", pidFile), c.PID()
			},
			result: messages.Result_RESULT_OK,
		},
		{
			name: "no pid file",
			process: func(t *testing.T) (string, int32) {
				return fmt.Sprintf("{pid_file: %q}", filepath.Join(t.TempDir(), "svc.pid")), 0
			},
			result: messages.Result_RESULT_FAILED,
			err:    "read pid file {file}: no such file or directory: not running",
		},
		{
			name: "a pid file without a pid",
			process: func(t *testing.T) (string, int32) {
				pidFile := filepath.Join(t.TempDir(), "svc.pid")
				require.NoError(t, os.WriteFile(pidFile, []byte("starting\n"), 0o644))
				return fmt.Sprintf("{pid_file: %q}", pidFile), 0
			},
			result: messages.Result_RESULT_ERROR,
			err:    `read pid file {file}: not a pid (9 bytes)`,
		},
		{
			// A pid of no process is only what a file holds: it is
			// neither published nor named.
			name: "the process of the pid file is gone",
			process: func(t *testing.T) (string, int32) {
				pidFile := filepath.Join(t.TempDir(), "svc.pid")
				c := proctest.Spawn(t, proctest.Program(t, proctest.UniqueName("svc-")), "600")
				c.Stop(t)
				writePIDFile(t, pidFile, c.PID())
				return fmt.Sprintf("{pid_file: %q}", pidFile), 0
			},
			result: messages.Result_RESULT_FAILED,
			err:    "find process of pid file {file}: not running",
		},
		{
			name: "the process exited and is not reaped yet",
			process: func(t *testing.T) (string, int32) {
				pidFile := filepath.Join(t.TempDir(), "svc.pid")
				c := proctest.Spawn(t, proctest.Program(t, proctest.UniqueName("svc-")), "600")
				require.NoError(t, c.Cmd.Process.Kill())
				require.Eventually(t, func() bool { return c.State() == "Z" }, actortest.Wait, time.Millisecond)
				writePIDFile(t, pidFile, c.PID())
				return fmt.Sprintf("{pid_file: %q}", pidFile), c.PID()
			},
			result: messages.Result_RESULT_FAILED,
			err:    "find process {pid} of pid file {file}: exited: not running",
		},
		{
			name: "no process of that name",
			process: func(*testing.T) (string, int32) {
				return "{name: no-such-process-here}", 0
			},
			result: messages.Result_RESULT_FAILED,
			err:    "find process named no-such-process-here: not running",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			section, pid := tc.process(t)
			p := parse(t, "http://127.0.0.1:1", "", fmt.Sprintf("    - {name: proc, kind: process, interval: 1s, process: %s}\n", section), "no-such-process-here")
			f.start(t, p, "proc")
			obs := f.waitEvents(t, messages.TypeObservationProcess, 1)[0].GetProcess()
			assert.Equal(t, tc.result, obs.Result, obs.Error)
			assert.Equal(t, pid, obs.Pid)
			if tc.err == "" {
				assert.Empty(t, obs.Error)
				assert.Positive(t, obs.RssBytes)
				assert.NotNil(t, obs.StartTime)
				return
			}
			want := strings.NewReplacer("{file}", p.Spec.Observers[0].Section.(*process.Section).PIDFile, "{pid}", strconv.Itoa(int(pid))).Replace(tc.err)
			assert.Equal(t, want, obs.Error)
			assert.Zero(t, obs.RssBytes)
			assert.Nil(t, obs.StartTime)
		})
	}
}

func TestProcessByName(t *testing.T) {
	tests := []struct {
		name string
		prog string
	}{
		{"by comm", proctest.UniqueName("svc-")},
		// The kernel truncates comm to 15 bytes: a longer name is found
		// by argv[0].
		{"by argv[0] when comm is truncated", proctest.UniqueName("observerd-test-service-")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			bin := proctest.Program(t, tc.prog)
			oldest := proctest.Spawn(t, bin, "600")
			// Started a clock tick (10 ms) later, so that the start times
			// differ.
			require.Eventually(t, func() bool { return time.Since(oldest.Started) > 20*time.Millisecond }, actortest.Wait, time.Millisecond)
			younger := proctest.Spawn(t, bin, "600")
			p := parse(t, "http://127.0.0.1:1", "", fmt.Sprintf("    - {name: proc, kind: process, interval: 200ms, process: {name: %q}}\n", tc.prog), tc.prog)
			f.start(t, p, "proc")

			obs, at := f.waitProcess(t, 0, func(*messages.ProcessObservation) bool { return true })
			assert.Equal(t, messages.Result_RESULT_OK, obs.Result, obs.Error)
			assert.Equal(t, oldest.PID(), obs.Pid, "the oldest of the processes of that name")
			assert.Equal(t, tc.prog[:min(15, len(tc.prog))], obs.Name)
			assert.Positive(t, obs.RssBytes)
			assert.False(t, obs.Restarted)

			// The oldest goes: the other one is now the process, a restart.
			oldest.Stop(t)
			next, _ := f.waitProcess(t, at+1, func(o *messages.ProcessObservation) bool { return o.Pid != oldest.PID() })
			assert.Equal(t, messages.Result_RESULT_OK, next.Result, next.Error)
			assert.Equal(t, younger.PID(), next.Pid)
			assert.True(t, next.Restarted)
		})
	}
}

// TestProcessPIDFileHostile: a pid file is the observed service's to
// write, and the service is not trusted. Whatever it puts there, the
// observation comes at once, names the file and sizes only (never what
// the file holds: the observation is published), and reads nothing
// outside allowed_pid_dirs, nothing but a regular file, and at most 64
// bytes of it.
func TestProcessPIDFileHostile(t *testing.T) {
	const secret = "s3cret-broker-password"
	tests := []struct {
		name string
		// file makes the pid file in dir, an allowed_pid_dirs entry, and
		// returns its path and the allowed_pid_dirs.
		file   func(t *testing.T, dir string) (string, []string)
		result messages.Result
		err    string // {file} stands for the pid file, {dir} for dir
	}{
		{
			name: "symlink to a secret outside the allowed dir",
			file: func(t *testing.T, dir string) (string, []string) {
				outside := filepath.Join(t.TempDir(), "amqp.password")
				require.NoError(t, os.WriteFile(outside, []byte(secret+"\n"), 0o600))
				require.NoError(t, os.Symlink(outside, filepath.Join(dir, "svc.pid")))
				return filepath.Join(dir, "svc.pid"), []string{dir}
			},
			result: messages.Result_RESULT_ERROR,
			err:    "read pid file {file}: resolves outside {dir}",
		},
		{
			name: "relative symlink climbing out of the allowed dir",
			file: func(t *testing.T, dir string) (string, []string) {
				sub := filepath.Join(dir, "allowed")
				require.NoError(t, os.Mkdir(sub, 0o755))
				require.NoError(t, os.WriteFile(filepath.Join(dir, "amqp.password"), []byte(secret), 0o600))
				require.NoError(t, os.Symlink("../amqp.password", filepath.Join(sub, "svc.pid")))
				return filepath.Join(sub, "svc.pid"), []string{sub}
			},
			result: messages.Result_RESULT_ERROR,
			err:    "read pid file {dir}/allowed/svc.pid: resolves outside {dir}/allowed",
		},
		{
			name: "symlinked directory leading out",
			file: func(t *testing.T, dir string) (string, []string) {
				outside := t.TempDir()
				require.NoError(t, os.WriteFile(filepath.Join(outside, "svc.pid"), []byte(secret), 0o600))
				require.NoError(t, os.Symlink(outside, filepath.Join(dir, "run")))
				return filepath.Join(dir, "run", "svc.pid"), []string{dir}
			},
			result: messages.Result_RESULT_ERROR,
			err:    "read pid file {file}: resolves outside {dir}",
		},
		{
			name: "symlink to /dev/zero",
			file: func(t *testing.T, dir string) (string, []string) {
				require.NoError(t, os.Symlink("/dev/zero", filepath.Join(dir, "svc.pid")))
				return filepath.Join(dir, "svc.pid"), []string{dir}
			},
			result: messages.Result_RESULT_ERROR,
			err:    "read pid file {file}: resolves outside {dir}",
		},
		{
			name: "a device in an allowed dir",
			file: func(*testing.T, string) (string, []string) {
				return "/dev/zero", []string{"/dev"}
			},
			result: messages.Result_RESULT_ERROR,
			err:    "read pid file /dev/zero: not a regular file (a character device)",
		},
		{
			// Opened for reading without O_NONBLOCK, a FIFO without a
			// writer blocks the observer for ever.
			name: "a FIFO",
			file: func(t *testing.T, dir string) (string, []string) {
				require.NoError(t, syscall.Mkfifo(filepath.Join(dir, "svc.pid"), 0o644))
				return filepath.Join(dir, "svc.pid"), []string{dir}
			},
			result: messages.Result_RESULT_ERROR,
			err:    "read pid file {file}: not a regular file (a FIFO)",
		},
		{
			name: "a directory",
			file: func(t *testing.T, dir string) (string, []string) {
				require.NoError(t, os.Mkdir(filepath.Join(dir, "svc.pid"), 0o755))
				return filepath.Join(dir, "svc.pid"), []string{dir}
			},
			result: messages.Result_RESULT_ERROR,
			err:    "read pid file {file}: not a regular file (a directory)",
		},
		{
			name: "a sparse file of 1 GiB",
			file: func(t *testing.T, dir string) (string, []string) {
				f, err := os.Create(filepath.Join(dir, "svc.pid"))
				require.NoError(t, err)
				require.NoError(t, f.Truncate(1<<30))
				require.NoError(t, f.Close())
				return f.Name(), []string{dir}
			},
			result: messages.Result_RESULT_ERROR,
			err:    "read pid file {file}: not a pid (more than 64 bytes)",
		},
		{
			name: "a secret that is not a pid",
			file: func(t *testing.T, dir string) (string, []string) {
				require.NoError(t, os.WriteFile(filepath.Join(dir, "svc.pid"), []byte(secret+"\n"), 0o644))
				return filepath.Join(dir, "svc.pid"), []string{dir}
			},
			result: messages.Result_RESULT_ERROR,
			err:    fmt.Sprintf("read pid file {file}: not a pid (%d bytes)", len(secret)+1),
		},
		{
			// Above pid_max (at most 2^22): never a process's. Named or
			// published, the number would tell what any file of
			// allowed_pid_dirs holds.
			name: "a number that is no process's pid",
			file: func(t *testing.T, dir string) (string, []string) {
				require.NoError(t, os.WriteFile(filepath.Join(dir, "svc.pid"), []byte("19283746\n"), 0o644))
				return filepath.Join(dir, "svc.pid"), []string{dir}
			},
			result: messages.Result_RESULT_FAILED,
			err:    "find process of pid file {file}: not running",
		},
		{
			name: "a pid beyond int32",
			file: func(t *testing.T, dir string) (string, []string) {
				require.NoError(t, os.WriteFile(filepath.Join(dir, "svc.pid"), []byte("4294967297\n"), 0o644))
				return filepath.Join(dir, "svc.pid"), []string{dir}
			},
			result: messages.Result_RESULT_ERROR,
			err:    "read pid file {file}: not a pid (11 bytes)",
		},
		{
			// Validation refuses it; the observer holds on its own.
			name: "a pid file outside allowed_pid_dirs",
			file: func(t *testing.T, dir string) (string, []string) {
				require.NoError(t, os.WriteFile(filepath.Join(dir, "svc.pid"), []byte("1\n"), 0o644))
				return filepath.Join(dir, "svc.pid"), []string{filepath.Join(dir, "elsewhere")}
			},
			result: messages.Result_RESULT_ERROR,
			err:    "read pid file {file}: not inside allowed_pid_dirs [{dir}/elsewhere]",
		},
		{
			name: "the allowed dir itself",
			file: func(_ *testing.T, dir string) (string, []string) {
				return dir, []string{dir}
			},
			result: messages.Result_RESULT_ERROR,
			err:    "read pid file {dir}: not inside allowed_pid_dirs [{dir}]",
		},
		{
			name: "an allowed dir that does not exist",
			file: func(_ *testing.T, dir string) (string, []string) {
				return filepath.Join(dir, "gone", "svc.pid"), []string{filepath.Join(dir, "gone")}
			},
			result: messages.Result_RESULT_FAILED,
			err:    "read pid file {file}: open {dir}/gone: no such file or directory: not running",
		},
		{
			name: "an allowed dir that is a file",
			file: func(t *testing.T, dir string) (string, []string) {
				require.NoError(t, os.WriteFile(filepath.Join(dir, "run"), []byte("1\n"), 0o644))
				return filepath.Join(dir, "run", "svc.pid"), []string{filepath.Join(dir, "run")}
			},
			result: messages.Result_RESULT_ERROR,
			err:    "read pid file {file}: open {dir}/run: not a directory",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			dir := t.TempDir()
			pidFile, dirs := tc.file(t, dir)
			f.pidDirs = dirs
			p := parse(t, "http://127.0.0.1:1", "", fmt.Sprintf("    - {name: proc, kind: process, interval: 1s, process: {pid_file: %q}}\n", pidFile))
			f.start(t, p, "proc")
			obs := f.waitEvents(t, messages.TypeObservationProcess, 1)[0].GetProcess()
			assert.Equal(t, tc.result, obs.Result, obs.Error)
			assert.Equal(t, strings.NewReplacer("{file}", pidFile, "{dir}", dir).Replace(tc.err), obs.Error)
			assert.NotContains(t, obs.Error, secret)
			assert.NotContains(t, obs.Error, "19283746")
			assert.Zero(t, obs.Pid)
		})
	}
}

// TestProcessPIDFileInside: what stays inside the allowed dir is read: a
// symlink to a file beside it, through a subdirectory, and a pid padded
// with white space to the 64 bytes read. When allowed dirs nest, the
// widest holds: a link from the inner one to the outer one stays inside.
func TestProcessPIDFileInside(t *testing.T) {
	svc := proctest.Spawn(t, proctest.Program(t, proctest.UniqueName("svc-")), "600")
	pid := strconv.Itoa(int(svc.PID()))
	tests := []struct {
		name string
		file func(t *testing.T, dir string) (string, []string)
	}{
		{"symlink inside", func(t *testing.T, dir string) (string, []string) {
			require.NoError(t, os.MkdirAll(filepath.Join(dir, "svc"), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "svc", "real.pid"), []byte(pid+"\n"), 0o644))
			require.NoError(t, os.Symlink("svc/real.pid", filepath.Join(dir, "svc.pid")))
			return filepath.Join(dir, "svc.pid"), []string{dir}
		}},
		{"64 bytes", func(t *testing.T, dir string) (string, []string) {
			content := strings.Repeat(" ", 64-len(pid)-1) + pid + "\n"
			require.Len(t, content, 64)
			require.NoError(t, os.WriteFile(filepath.Join(dir, "svc.pid"), []byte(content), 0o644))
			return filepath.Join(dir, "svc.pid"), []string{dir}
		}},
		{"nested allowed dirs", func(t *testing.T, dir string) (string, []string) {
			inner := filepath.Join(dir, "inner")
			require.NoError(t, os.Mkdir(inner, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "real.pid"), []byte(pid), 0o644))
			require.NoError(t, os.Symlink("../real.pid", filepath.Join(inner, "svc.pid")))
			return filepath.Join(inner, "svc.pid"), []string{inner, dir}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			pidFile, dirs := tc.file(t, t.TempDir())
			f.pidDirs = dirs
			p := parse(t, "http://127.0.0.1:1", "", fmt.Sprintf("    - {name: proc, kind: process, interval: 1s, process: {pid_file: %q}}\n", pidFile))
			f.start(t, p, "proc")
			obs := f.waitEvents(t, messages.TypeObservationProcess, 1)[0].GetProcess()
			assert.Equal(t, messages.Result_RESULT_OK, obs.Result, obs.Error)
			assert.Equal(t, svc.PID(), obs.Pid)
		})
	}
}

// TestProcessFIFOKeepsTheSchedule: a FIFO for a pid file fails each
// observation at once, and the observations keep coming.
func TestProcessFIFOKeepsTheSchedule(t *testing.T) {
	f := setup(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "svc.pid")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	f.pidDirs = []string{dir}
	p := parse(t, "http://127.0.0.1:1", "{max_requests_per_second: 1000}",
		fmt.Sprintf("    - {name: proc, kind: process, interval: 20ms, timeout: 15ms, process: {pid_file: %q}}\n", fifo))
	f.start(t, p, "proc")
	for _, ev := range f.waitEvents(t, messages.TypeObservationProcess, 5) {
		obs := ev.GetProcess()
		assert.Equal(t, messages.Result_RESULT_ERROR, obs.Result, "not a timeout: %s", obs.Error)
		assert.Equal(t, "read pid file "+fifo+": not a regular file (a FIFO)", obs.Error)
	}
}

// TestProcessTakesARateToken: the process kind draws a token of the
// policy's max_requests_per_second for each observation, so that the
// limit bounds the observations of every kind: at most the bucket's
// burst plus the rate over the time they took reach /proc.
func TestProcessTakesARateToken(t *testing.T) {
	const (
		limit = 5.0
		burst = 5
	)
	f := setup(t)
	svc := proctest.Spawn(t, proctest.Program(t, proctest.UniqueName("svc-")), "600")
	pidFile := filepath.Join(t.TempDir(), "svc.pid")
	writePIDFile(t, pidFile, svc.PID())
	p := parse(t, "http://127.0.0.1:1", fmt.Sprintf("{max_requests_per_second: %g}", limit),
		fmt.Sprintf("    - {name: proc, kind: process, interval: 10ms, process: {pid_file: %q}}\n", pidFile))
	start := time.Now()
	f.start(t, p, "proc")
	evs := f.waitEvents(t, messages.TypeObservationProcess, 30)
	elapsed := time.Since(start)
	var ok, waited int
	for _, ev := range evs {
		switch obs := ev.GetProcess(); {
		case obs.Result == messages.Result_RESULT_OK:
			ok++
		case strings.Contains(obs.Error, "wait for rate limit"):
			waited++
		default:
			t.Errorf("unexpected observation: %s %s", obs.Result, obs.Error)
		}
	}
	t.Logf("%d observations in %s: %d OK, %d refused a token", len(evs), elapsed.Round(time.Millisecond), ok, waited)
	assert.LessOrEqual(t, float64(ok), burst+limit*elapsed.Seconds(), "more observations than the rate limit allows")
	assert.Positive(t, waited, "turns without a token are reported")
}
