//go:build !unix

package wasm

// reserve allocates size zeroed bytes on the Go heap, where there is no
// portable lazy mapping; the garbage collector reclaims them.
func reserve(size uint64) ([]byte, func()) {
	return make([]byte, size), func() {}
}
