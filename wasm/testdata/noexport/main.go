// Command noexport lacks polar_observe.
package main

import _ "github.com/polar/observerd/wasm/testdata/guest"

//go:wasmexport polar_abi_version
func version() int32 { return 1 }

func main() {}
