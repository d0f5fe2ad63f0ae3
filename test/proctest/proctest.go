// Package proctest starts the processes that the tests of the process
// observer kind look for: copies of sleep(1) under names no other process
// has, killed and reaped when the test ends.
package proctest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Program copies sleep(1) to a fresh file called name, so that the
// processes a test starts are the only ones of that name on the machine.
func Program(t *testing.T, name string) string {
	t.Helper()
	src, err := exec.LookPath("sleep")
	require.NoError(t, err)
	in, err := os.Open(src)
	require.NoError(t, err)
	defer in.Close()
	path := filepath.Join(t.TempDir(), name)
	out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
	return path
}

// UniqueName is prefix plus random hex, for process names no other
// process has.
func UniqueName(prefix string) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// Child is a process the test started.
type Child struct {
	Cmd     *exec.Cmd
	Started time.Time
}

// Spawn starts path with args; the test's end kills and reaps it.
func Spawn(t *testing.T, path string, args ...string) *Child {
	t.Helper()
	return Start(t, exec.Command(path, args...))
}

// Start starts cmd; the test's end kills and reaps it. It returns once
// the program is exec'd, with its comm.
func Start(t *testing.T, cmd *exec.Cmd) *Child {
	t.Helper()
	c := &Child{Cmd: cmd, Started: time.Now()}
	require.NoError(t, c.Cmd.Start())
	t.Cleanup(func() {
		_ = c.Cmd.Process.Kill()
		_ = c.Cmd.Wait()
	})
	return c
}

// PID is the child's pid.
func (c *Child) PID() int32 { return int32(c.Cmd.Process.Pid) }

// Stop kills the child and reaps it: it is gone from /proc.
func (c *Child) Stop(t *testing.T) {
	t.Helper()
	require.NoError(t, c.Cmd.Process.Kill())
	_ = c.Cmd.Wait() // "signal: killed", as asked
}

// State is the child's state letter in /proc/<pid>/stat.
func (c *Child) State() string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.PID()))
	if err != nil {
		return ""
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return fields[0]
}

// FDs counts the child's open file descriptors: stdin, stdout, stderr and
// whatever the test process inherited without close-on-exec.
func (c *Child) FDs(t *testing.T) int64 {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", c.PID()))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(entries), 3)
	return int64(len(entries))
}
