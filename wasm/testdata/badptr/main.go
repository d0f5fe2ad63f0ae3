// Command badptr passes emit a buffer beyond its memory.
package main

import _ "github.com/polar/observerd/wasm/testdata/guest"

//go:wasmimport polar emit
func emit(ptr, n int32) int32

//go:wasmexport polar_abi_version
func version() int32 { return 1 }

//go:wasmexport polar_observe
func observe(p, n int32) int32 { return emit(0x7fff0000, 16) }

func main() {}
