// Command flood emits garbage, an oversized record, then valid records
// until the host refuses them, and saves the results it saw in its state.
package main

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/polar/observerd/wasm/testdata/guest"
)

//go:wasmexport polar_abi_version
func version() int32 { return 1 }

//go:wasmexport polar_observe
func observe(p, n int32) int32 {
	seen := map[int32]bool{}
	seen[guest.Emit([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})] = true
	seen[guest.Emit(guest.Observation("Not A Type!", 1, nil, nil))] = true
	seen[guest.Emit(guest.Observation("flood", 1, bytes.Repeat([]byte{'x'}, 2<<20), nil))] = true
	for i := range 1000 {
		seen[guest.Emit(guest.Observation("flood", 1, nil, map[string]string{"i": strconv.Itoa(i)}))] = true
	}
	var codes []string
	for _, c := range []int32{0, -1, -2, -3} {
		if seen[c] {
			codes = append(codes, strconv.Itoa(int(c)))
		}
	}
	guest.SetState([]byte(strings.Join(codes, ",")))
	return 0
}

func main() {}
