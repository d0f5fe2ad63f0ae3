// Package tmpfs gives fault tests a real file system that really fills up:
// a tmpfs of a chosen size, mounted for one test (the tests run as root),
// and a way to fill it to the last byte and free it again.
package tmpfs

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// Mount mounts a tmpfs of size (such as "16m") on dir, which it creates
// (mode 0700), until the test ends.
func Mount(t testing.TB, dir, size string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o700))
	require.NoError(t, syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"), "mount a tmpfs (tests run as root)")
	t.Cleanup(func() { require.NoError(t, syscall.Unmount(dir, syscall.MNT_DETACH)) })
}

// Fill writes a file into dir until its file system is full (ENOSPC), and
// returns the function that frees the space again.
func Fill(t testing.TB, dir string) (free func()) {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			require.ErrorIs(t, err, syscall.ENOSPC)
			break
		}
	}
	return func() { require.NoError(t, os.Remove(path)) }
}
