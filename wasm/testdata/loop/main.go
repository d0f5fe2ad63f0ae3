// Command loop spins: forever on its first call (it saves that in its state
// first), for {"spin": n} iterations on the others.
package main

import (
	"encoding/json"
	"strconv"

	"github.com/polar/observerd/wasm/testdata/guest"
)

//go:wasmexport polar_abi_version
func version() int32 { return 1 }

var calls int

// sink keeps the loop from being optimised away.
var sink uint64

//go:wasmexport polar_observe
func observe(p, n int32) int32 {
	calls++
	req := guest.ParseRequest(p, n)
	var cfg struct {
		Spin int `json:"spin"`
	}
	_ = json.Unmarshal(req.Config, &cfg)
	if len(req.State) == 0 && cfg.Spin == 0 {
		guest.SetState([]byte("looped"))
		for {
			sink++
		}
	}
	for i := range cfg.Spin {
		sink += uint64(i) * sink
	}
	guest.Emit(guest.Observation("loop", 1, nil, map[string]string{"calls": strconv.Itoa(calls), "state": string(req.State)}))
	return 0
}

func main() {}
