// Command badversion speaks an ABI the host does not.
package main

import _ "github.com/polar/observerd/wasm/testdata/guest"

//go:wasmexport polar_abi_version
func version() int32 { return 2 }

//go:wasmexport polar_observe
func observe(p, n int32) int32 { return 0 }

func main() {}
