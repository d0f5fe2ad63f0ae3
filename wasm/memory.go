package wasm

import (
	"sync"

	"github.com/tetratelabs/wazero/experimental"
)

// linearMemory backs one instance's linear memory and enforces its limit.
// It reserves the whole limit up front (see reserve): growing never copies,
// pages cost resident memory only once the guest touches them, and
// discarding the instance returns them to the OS at once instead of at the
// next garbage collection. A grow beyond the limit is refused and
// remembered, so that the failure it causes is reported as FailureMemory
// rather than as whatever the guest makes of it (a Go guest exits with
// "fatal error: out of memory").
type linearMemory struct {
	limit uint64

	mu      sync.Mutex
	buf     []byte // the reservation; nil once released
	release func() // unmaps buf
	refused bool   // a grow was refused: the guest hit the limit
	busy    bool   // guest code may be running on buf
	freed   bool   // wazero closed the instance; release when not busy
}

// allocator returns the memory allocator of an instance limited to limit
// bytes; it records the memory it makes in *mem.
func allocator(limit uint64, mem **linearMemory) experimental.MemoryAllocator {
	return experimental.MemoryAllocatorFunc(func(_, max uint64) experimental.LinearMemory {
		m := &linearMemory{limit: min(limit, max)}
		m.buf, m.release = reserve(m.limit)
		*mem = m
		return m
	})
}

// Reallocate implements experimental.LinearMemory: it grows the memory to
// size bytes, or returns nil (memory.grow returns -1) beyond the limit.
func (m *linearMemory) Reallocate(size uint64) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if size > m.limit || size > uint64(len(m.buf)) {
		m.refused = true
		return nil
	}
	return m.buf[:size:size]
}

// Free implements experimental.LinearMemory. wazero calls it when the
// instance closes, which Host.Close may do while a call is running on
// another goroutine: the reservation is then released when the call
// ends, never under running guest code.
func (m *linearMemory) Free() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.freed = true
	if !m.busy {
		m.unmap()
	}
}

// enter marks guest code running on the memory; leave ends it.
func (m *linearMemory) enter() {
	m.mu.Lock()
	m.busy = true
	m.mu.Unlock()
}

func (m *linearMemory) leave() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.busy = false
	if m.freed {
		m.unmap()
	}
}

func (m *linearMemory) unmap() {
	if m.buf != nil {
		m.release()
		m.buf = nil
	}
}

// hitLimit reports whether a grow was refused.
func (m *linearMemory) hitLimit() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.refused
}
