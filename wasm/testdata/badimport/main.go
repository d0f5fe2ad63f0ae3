// Command badimport imports a function the host does not offer.
package main

import _ "github.com/polar/observerd/wasm/testdata/guest"

//go:wasmimport env socket
func socket(domain, typ int32) int32

//go:wasmexport polar_abi_version
func version() int32 { return 1 }

//go:wasmexport polar_observe
func observe(p, n int32) int32 { return socket(2, 1) }

func main() {}
