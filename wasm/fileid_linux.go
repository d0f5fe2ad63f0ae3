package wasm

import (
	"io/fs"
	"syscall"
)

// fileID identifies a file's content without reading it: its device and
// inode, its size, and its modification and change times to the
// nanosecond. Writing the file changes its mtime and ctime; nobody but
// root can set a ctime, and setting an mtime back changes the ctime.
type fileID struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // ns
}

// identify returns the fileID of the file st describes.
func identify(st fs.FileInfo) (fileID, bool) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{
		dev: sys.Dev, ino: sys.Ino, size: sys.Size,
		mtime: syscall.TimespecToNsec(sys.Mtim), ctime: syscall.TimespecToNsec(sys.Ctim),
	}, true
}
