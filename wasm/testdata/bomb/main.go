// Command bomb allocates (and touches) memory until it is stopped.
package main

import _ "github.com/polar/observerd/wasm/testdata/guest"

//go:wasmexport polar_abi_version
func version() int32 { return 1 }

var hoard [][]byte

//go:wasmexport polar_observe
func observe(p, n int32) int32 {
	for {
		b := make([]byte, 1<<20)
		for i := range b {
			b[i] = byte(i)
		}
		hoard = append(hoard, b)
	}
}

func main() {}
