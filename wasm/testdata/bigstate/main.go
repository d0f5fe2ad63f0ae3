// Command bigstate saves a small state, then tries a state beyond the
// host's cap, and emits what it saw.
package main

import (
	"strconv"

	"github.com/polar/observerd/wasm/testdata/guest"
)

//go:wasmexport polar_abi_version
func version() int32 { return 1 }

//go:wasmexport polar_observe
func observe(p, n int32) int32 {
	req := guest.ParseRequest(p, n)
	small := guest.SetState([]byte("v1"))
	big := guest.SetState(make([]byte, 100<<10))
	guest.Emit(guest.Observation("bigstate", 1, nil, map[string]string{
		"state": string(req.State),
		"small": strconv.Itoa(int(small)),
		"big":   strconv.Itoa(int(big)),
	}))
	return 0
}

func main() {}
