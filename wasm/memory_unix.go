//go:build unix

package wasm

import "syscall"

// reserve maps size bytes of zeroed, private, lazily committed memory.
// When the mapping fails (address space exhausted), the reservation is
// empty: every grow is refused and the call fails with FailureMemory.
func reserve(size uint64) ([]byte, func()) {
	if size == 0 {
		return nil, func() {}
	}
	b, err := syscall.Mmap(-1, 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
	if err != nil {
		return nil, func() {}
	}
	return b, func() { _ = syscall.Munmap(b) }
}
