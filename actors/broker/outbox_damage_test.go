package broker

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/boltdamage"
)

// seeded makes an outbox in dir that went past its first reserved block:
// 3 events, the first two confirmed, then a block's worth more. Its
// sequence file then says floor 3 (the lowest unconfirmed when the second
// block was reserved) and ceiling 3+reserveBlock+reserveBlock. It returns
// a copy of the file as it was before any event.
func seeded(t *testing.T, dir string) (fresh []byte) {
	t.Helper()
	o, err := OpenOutbox(dir, OutboxOptions{})
	require.NoError(t, err)
	require.NoError(t, o.Close())
	fresh, err = os.ReadFile(filepath.Join(dir, "outbox.db"))
	require.NoError(t, err)
	o, err = OpenOutbox(dir, OutboxOptions{})
	require.NoError(t, err)
	_, err = o.Append(events(3))
	require.NoError(t, err)
	require.NoError(t, o.Delete([]uint64{1, 2}))
	_, err = o.Append(events(reserveBlock))
	require.NoError(t, err)
	require.NoError(t, o.Close())
	return fresh
}

const seededFloor, seededCeiling = 3, 3 + 2*reserveBlock

// corruptReport returns the outbox's only event, which must be the report
// of a damaged file.
func corruptReport(t *testing.T, o *Outbox) *messages.OutboxOverflow {
	t.Helper()
	got, err := o.After(0, 10)
	require.NoError(t, err)
	require.Len(t, got, 1)
	ev := got[0].Event
	require.Equal(t, messages.TypeOutboxOverflow, ev.Type)
	assert.Equal(t, "test.node", ev.Node)
	assert.Equal(t, ev.Sequence, o.Stats().LastSequence)
	report := ev.GetOutboxOverflow()
	assert.Equal(t, "corrupt", report.GetPolicy())
	assert.Equal(t, ev.Sequence, report.GetLastSequence()+1, "the new file goes on right after the reported range")
	return report
}

func TestDamagedOutboxIsReplacedAndItsSequencesAreNotReused(t *testing.T) {
	writeGarbage := func(t *testing.T, path string) {
		require.NoError(t, os.WriteFile(path, bytes.Repeat([]byte("garbage!"), 4096), 0o600))
	}
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string, fresh []byte)
		aside  bool // the damaged file is kept
	}{
		{"garbage", func(t *testing.T, path string, _ []byte) { writeGarbage(t, path) }, true},
		{"freelist: bbolt panics", func(t *testing.T, path string, _ []byte) { boltdamage.Freelist(t, path) }, true},
		{"truncated: reading faults", func(t *testing.T, path string, _ []byte) { boltdamage.Truncate(t, path) }, true},
		{"checksums", func(t *testing.T, path string, _ []byte) { boltdamage.Checksums(t, path) }, true},
		{"version", func(t *testing.T, path string, _ []byte) { boltdamage.Version(t, path) }, true},
		{"restored from an older copy", func(t *testing.T, path string, fresh []byte) {
			require.NoError(t, os.WriteFile(path, fresh, 0o600))
		}, true},
		{"truncated to nothing", func(t *testing.T, path string, _ []byte) { require.NoError(t, os.Truncate(path, 0)) }, true},
		{"missing", func(t *testing.T, path string, _ []byte) { require.NoError(t, os.Remove(path)) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "outbox.db")
			tc.damage(t, path, seeded(t, dir))
			damaged, _ := os.ReadFile(path)

			o, err := OpenOutbox(dir, OutboxOptions{Node: "test.node"})
			require.NoError(t, err, "a damaged file is not an outage")
			defer o.Close()
			report := corruptReport(t, o)
			assert.Equal(t, uint64(seededFloor), report.GetFirstSequence(), "from the lowest unconfirmed sequence")
			assert.Equal(t, uint64(seededCeiling), report.GetLastSequence(), "to the reserved ceiling")
			next := events(1)
			_, err = o.Append(next)
			require.NoError(t, err)
			assert.Equal(t, uint64(seededCeiling+2), next[0].Sequence)

			aside, _ := filepath.Glob(path + ".corrupt-*")
			if !tc.aside {
				assert.Empty(t, aside)
				return
			}
			require.Len(t, aside, 1, "the damaged file is kept for inspection")
			kept, err := os.ReadFile(aside[0])
			require.NoError(t, err)
			assert.Equal(t, damaged, kept, "as it was")

			// The new file and its sequence file carry on across a restart.
			require.NoError(t, o.Close())
			o, err = OpenOutbox(dir, OutboxOptions{})
			require.NoError(t, err)
			assert.Equal(t, uint64(seededCeiling+2), o.Stats().LastSequence)
			assert.Equal(t, 2, o.Stats().Events)
		})
	}
}

func TestDamagedOutboxWithoutSequenceFileGoesOnAfterTheClock(t *testing.T) {
	dir := t.TempDir()
	seeded(t, dir)
	require.NoError(t, os.Remove(filepath.Join(dir, seqFileName)))
	boltdamage.Freelist(t, filepath.Join(dir, "outbox.db"))
	before := clockCeiling(time.Now())
	o, err := OpenOutbox(dir, OutboxOptions{Node: "test.node"})
	require.NoError(t, err)
	defer o.Close()
	report := corruptReport(t, o)
	assert.Equal(t, uint64(1), report.GetFirstSequence())
	assert.GreaterOrEqual(t, report.GetLastSequence(), before)
	assert.LessOrEqual(t, report.GetLastSequence(), clockCeiling(time.Now()))
}

func TestOutboxWithoutSequenceFileKeepsWorking(t *testing.T) {
	// An outbox from a version without the sequence file (an upgrade), or
	// one whose sequence file is damaged: the outbox's own last sequence
	// holds, and the sequence file is written from it.
	for _, tc := range []struct {
		name   string
		break_ func(path string) error
	}{
		{"missing", os.Remove},
		{"damaged", func(path string) error {
			return os.WriteFile(path, []byte("observerd-outbox-seq v1 floor=1 last=0 ceiling=99 crc=00000000\n"), 0o600)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o, err := OpenOutbox(dir, OutboxOptions{})
			require.NoError(t, err)
			_, err = o.Append(events(3))
			require.NoError(t, err)
			require.NoError(t, o.Close())
			require.NoError(t, tc.break_(filepath.Join(dir, seqFileName)))

			o, err = OpenOutbox(dir, OutboxOptions{})
			require.NoError(t, err)
			defer o.Close()
			assert.Equal(t, OutboxStats{Events: 3, Bytes: o.Stats().Bytes, LastSequence: 3}, o.Stats())
			next := events(1)
			_, err = o.Append(next)
			require.NoError(t, err)
			assert.Equal(t, uint64(4), next[0].Sequence)
			s, err := readSeqFile(dir)
			require.NoError(t, err)
			assert.Equal(t, &seqFile{floor: 1, last: 3, ceiling: 3 + reserveBlock}, s)
		})
	}
}

func TestSequenceFileReservesInBlocks(t *testing.T) {
	dir := t.TempDir()
	o, err := OpenOutbox(dir, OutboxOptions{})
	require.NoError(t, err)
	defer o.Close()
	stat := func() time.Time {
		st, err := os.Stat(filepath.Join(dir, seqFileName))
		require.NoError(t, err)
		return st.ModTime()
	}
	s, err := readSeqFile(dir)
	require.NoError(t, err)
	assert.Equal(t, &seqFile{floor: 1, last: 0, ceiling: reserveBlock}, s, "a fresh state_dir starts at 1")
	written := stat()
	for range 10 {
		_, err = o.Append(events(100))
		require.NoError(t, err)
	}
	assert.Equal(t, written, stat(), "not rewritten within the block")
	require.NoError(t, o.Delete([]uint64{1, 2, 3}))
	_, err = o.Append(events(reserveBlock))
	require.NoError(t, err)
	s, err = readSeqFile(dir)
	require.NoError(t, err)
	assert.Equal(t, &seqFile{floor: 4, last: 1000, ceiling: 1000 + 2*reserveBlock}, s)
	assert.Equal(t, uint64(1000+reserveBlock), o.Stats().LastSequence)
}

func TestOutboxDamagedInUseIsReplacedAndKeepsWhatWasPending(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "outbox.db")
	o, err := OpenOutbox(dir, OutboxOptions{Node: "test.node"})
	require.NoError(t, err)
	defer o.Close()
	_, err = o.Append(events(3))
	require.NoError(t, err)
	published, err := o.After(0, 3)
	require.NoError(t, err)
	_, err = o.Claim(published)
	require.NoError(t, err)

	// Damaged under the open file: bbolt panics in the commit (and again
	// in its rollback, which leaves its lock held).
	boltdamage.Pages(t, path)
	pending := events(2)
	_, err = o.Append(pending)
	require.NoError(t, err, "the commit goes to the new file")
	assert.Empty(t, claimed(o), "the claims went with the old file")
	assert.Equal(t, uint64(reserveBlock+2), pending[0].Sequence)
	assert.Equal(t, uint64(reserveBlock+3), pending[1].Sequence)
	got, err := o.After(0, 10)
	require.NoError(t, err)
	require.Len(t, got, 3)
	report := got[0].Event.GetOutboxOverflow()
	assert.Equal(t, "corrupt", report.GetPolicy())
	assert.Equal(t, uint64(1), report.GetFirstSequence())
	assert.Equal(t, uint64(reserveBlock), report.GetLastSequence())
	assert.Equal(t, pending[0].Id, got[1].Event.Id)
	aside, _ := filepath.Glob(path + ".corrupt-*")
	assert.Len(t, aside, 1)

	// Found by a reader: the reader fails, the next commit (even of
	// nothing) repairs, unless a file was replaced within replaceEvery.
	boltdamage.Pages(t, path)
	_, err = o.After(0, 10)
	require.ErrorIs(t, err, errDamaged)
	assert.True(t, o.NeedsRepair())
	again := events(1)
	_, err = o.Append(again)
	require.ErrorContains(t, err, "already replaced")
	assert.Zero(t, again[0].Sequence, "not accepted")
	o.mu.Lock()
	o.replaced = time.Now().Add(-replaceEvery)
	o.mu.Unlock()
	_, err = o.Commit(nil, nil)
	require.NoError(t, err)
	assert.False(t, o.NeedsRepair())
	got, err = o.After(0, 10)
	require.NoError(t, err)
	require.Len(t, got, 1)
	second := got[0].Event.GetOutboxOverflow()
	assert.Equal(t, uint64(reserveBlock+1), second.GetFirstSequence(), "from the first report, never confirmed")
	assert.Equal(t, uint64(2*reserveBlock+1), second.GetLastSequence())
}

// The permission tests run OpenOutbox in a child process as nobody: root
// opens any file whatever its mode. The child is this test binary, which
// does nothing else when the variable is set.
const openAsChildEnv = "OBSERVERD_TEST_OPEN_OUTBOX"

func init() {
	if dir := os.Getenv(openAsChildEnv); dir != "" {
		_, err := OpenOutbox(dir, OutboxOptions{})
		fmt.Print(err)
		os.Exit(0)
	}
}

const nobody = 65534

// openAsNobody runs OpenOutbox(dir) as nobody and returns its error text.
func openAsNobody(t *testing.T, dir string) string {
	t.Helper()
	// The test binary sits in a directory only root can enter.
	bin := filepath.Join(t.TempDir(), "broker.test")
	src, err := os.Open(os.Args[0])
	require.NoError(t, err)
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(dst, src)
	require.NoError(t, err)
	require.NoError(t, dst.Close())
	reachable(t, bin)
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), openAsChildEnv+"="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	return string(out)
}

// reachable lets everyone through the directories above path (t.TempDir's
// are 0700).
func reachable(t *testing.T, path string) {
	t.Helper()
	for d := filepath.Dir(path); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		require.NoError(t, os.Chmod(d, 0o755))
	}
}

// snapshot is every file of dir with its content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		out[e.Name()] = string(data)
	}
	return out
}

func TestUnusableOutboxIsAnErrorAndLeavesTheFilesAlone(t *testing.T) {
	for _, tc := range []struct {
		name string
		// prepare breaks the outbox in dir (written by root) and returns
		// the error OpenOutbox gives then.
		prepare func(t *testing.T, dir string) string
		want    string
	}{
		{"file of another user (after a run as root)", func(t *testing.T, dir string) string {
			require.NoError(t, os.Chown(dir, nobody, nobody))
			reachable(t, dir)
			return openAsNobody(t, dir)
		}, "outbox.db: permission denied; the file was left as it is"},
		{"directory of another user", func(t *testing.T, dir string) string {
			reachable(t, dir)
			require.NoError(t, os.Chmod(dir, 0o700))
			return openAsNobody(t, dir)
		}, "outbox.db: permission denied; the file was left as it is"},
		{"read-only file system", func(t *testing.T, dir string) string {
			require.NoError(t, syscall.Mount(dir, dir, "", syscall.MS_BIND, ""))
			t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
			require.NoError(t, syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""))
			_, err := OpenOutbox(dir, OutboxOptions{})
			require.Error(t, err)
			return err.Error()
		}, "outbox.db: read-only file system; the file was left as it is"},
		{"locked by another daemon", func(t *testing.T, dir string) string {
			o, err := OpenOutbox(dir, OutboxOptions{})
			require.NoError(t, err)
			defer o.Close()
			_, err = OpenOutbox(dir, OutboxOptions{})
			require.Error(t, err)
			return err.Error()
		}, "outbox.db: locked by another process"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "outbox")
			seeded(t, dir)
			before := snapshot(t, dir)
			got := tc.prepare(t, dir)
			assert.Contains(t, got, filepath.Join(dir, "outbox.db"), "names the file")
			assert.Contains(t, got, tc.want)
			assert.NotContains(t, got, "<nil>")
			assert.Equal(t, before, snapshot(t, dir), "nothing moved, nothing written")
			assert.False(t, strings.Contains(fmt.Sprint(before), ".corrupt-"))
		})
	}
}
