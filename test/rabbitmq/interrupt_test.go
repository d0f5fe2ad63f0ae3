//go:build integration

package rabbitmq

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// childEnv makes this test binary, run by TestInterruptCleansUp, the
// interrupted child: TestInterruptedChild then starts a cluster, writes
// what it started to the file the variable names, and waits.
const childEnv = "OBSERVERD_RABBITMQ_INTERRUPTED_CHILD"

// started is what the child started, as it writes it.
type childStarted struct {
	Pids []int    `json:"pids"`
	Dirs []string `json:"dirs"`
}

// TestInterruptCleansUp: a test binary interrupted with Ctrl-C (SIGINT)
// or stopped with SIGTERM, while its package node and a cluster run,
// leaves no process and no directory behind, and ends by that signal.
func TestInterruptCleansUp(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			report := filepath.Join(t.TempDir(), "started.json")
			cmd := exec.Command(os.Args[0], "-test.run", "^TestInterruptedChild$", "-test.count", "1")
			cmd.Env = append(os.Environ(), childEnv+"="+report)
			require.NoError(t, cmd.Start())
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				<-done
			})

			var got childStarted
			require.Eventually(t, func() bool {
				b, err := os.ReadFile(report)
				return err == nil && json.Unmarshal(b, &got) == nil
			}, clusterTimeout, tick, "the child started nothing")
			require.NotEmpty(t, got.Pids)
			require.Len(t, got.Dirs, 2, "the package node's and the cluster's")

			require.NoError(t, cmd.Process.Signal(sig))
			var err error
			select {
			case err = <-done:
				done <- err // for the cleanup
			case <-time.After(clusterTimeout):
				t.Fatal("the child did not exit")
			}
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit)
			status := exit.Sys().(syscall.WaitStatus)
			assert.True(t, status.Signaled() && status.Signal() == sig, "the child ended by %v, want %v", err, sig)
			for _, pid := range got.Pids {
				require.Eventually(t, func() bool { return !alive(pid) }, killTimeout, tick, "pid %d survived", pid)
			}
			for _, d := range got.Dirs {
				_, err := os.Stat(d)
				assert.True(t, os.IsNotExist(err), "%s survived", d)
			}
		})
	}
}

func TestInterruptedChild(t *testing.T) {
	report := os.Getenv(childEnv)
	if report == "" {
		t.Skip("run by TestInterruptCleansUp only")
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	c, err := StartCluster(ctx, ClusterOptions{Nodes: 2})
	require.NoError(t, err)
	defer c.Close()

	var s childStarted
	started.Lock()
	for p := range started.children {
		pid := p.cmd.Process.Pid
		s.Pids = append(append(s.Pids, pid), descendants(pid)...)
	}
	for d := range started.dirs {
		s.Dirs = append(s.Dirs, d)
	}
	started.Unlock()
	b, err := json.Marshal(s)
	require.NoError(t, err)
	// Written whole or not at all: the parent polls it.
	require.NoError(t, os.WriteFile(report+".tmp", b, 0o600))
	require.NoError(t, os.Rename(report+".tmp", report))
	<-ctx.Done()
	t.Fatal("not interrupted")
}
