// Command badstateless exports polar_stateless with a parameter, which
// ABI v1 does not have.
package main

import _ "github.com/polar/observerd/wasm/testdata/guest"

//go:wasmexport polar_abi_version
func version() int32 { return 1 }

//go:wasmexport polar_stateless
func stateless(int32) int32 { return 1 }

//go:wasmexport polar_observe
func observe(p, n int32) int32 { return 0 }

func main() {}
