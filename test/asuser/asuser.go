// Package asuser runs part of a test as another user, for tests of who may
// do what: the test binary runs again, as that user, with only one helper
// test selected, and that helper reports its findings on its output.
//
//	func TestHelperX(t *testing.T) {
//		if !asuser.Child() {
//			t.Skip("runs as another user, for TestX")
//		}
//		asuser.Report(t, findings)
//	}
//
// Tests that use it need root (to switch users); they are skipped
// otherwise.
package asuser

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

const (
	childEnv     = "ASUSER_CHILD"
	resultPrefix = "asuser-result: "
)

// Child reports whether this process is the child of a Command.
func Child() bool { return os.Getenv(childEnv) == "1" }

// Command returns the test binary running only the test helper, as
// uid:gid (no supplementary groups), with env added to a minimal
// environment. The binary is copied into a directory the user can read,
// as the go command's own is private; it is removed when the test ends.
func Command(t testing.TB, uid, gid uint32, helper string, env ...string) *exec.Cmd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run a process as another user")
	}
	self, err := os.Executable()
	require.NoError(t, err)
	dir, err := os.MkdirTemp("", "asuser")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	bin := filepath.Join(dir, filepath.Base(self))
	copyFile(t, self, bin)
	cmd := exec.Command(bin, "-test.run=^"+helper+"$", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = append([]string{childEnv + "=1", "PATH=" + os.Getenv("PATH")}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	return cmd
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	require.NoError(t, err)
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
}

// Report prints the helper's findings, for Result.
func Report(t testing.TB, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	os.Stdout.Write(append(append([]byte(resultPrefix), b...), '\n'))
}

// Result runs cmd and decodes what its helper reported into v.
func Result(t testing.TB, cmd *exec.Cmd, v any) {
	t.Helper()
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the helper failed:\n%s", out)
	for line := range bytes.Lines(out) {
		if rest, ok := bytes.CutPrefix(line, []byte(resultPrefix)); ok {
			require.NoError(t, json.Unmarshal(rest, v), "%s", rest)
			return
		}
	}
	t.Fatalf("the helper reported nothing:\n%s", out)
}
