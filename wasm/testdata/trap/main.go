// Command trap panics on every call.
package main

import "github.com/polar/observerd/wasm/testdata/guest"

//go:wasmexport polar_abi_version
func version() int32 { return 1 }

//go:wasmexport polar_observe
func observe(p, n int32) int32 {
	guest.Log(2, "about to panic")
	panic("trap on every call")
}

func main() {}
