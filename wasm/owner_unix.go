//go:build unix

package wasm

import (
	"io/fs"
	"syscall"
)

// owner is the uid that owns the file st describes.
func owner(st fs.FileInfo) (uid uint32, ok bool) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return sys.Uid, true
}
