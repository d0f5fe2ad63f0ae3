// Command bademit emits a valid observation with the result its config
// names, then, as its config says, a record the host must reject (a bad
// type_suffix, bytes that are not protobuf, a result out of range), logs
// a line at level error and returns a code, so that the tests see what
// the host makes of each.
package main

import (
	"encoding/json"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/polar/observerd/wasm/testdata/guest"
)

type config struct {
	Result int32  `json:"result"` // of the valid observation, with an error text
	Reject string `json:"reject"` // suffix, garbage, result, or none
	Log    string `json:"log"`    // logged at level error when set
	Return int32  `json:"return"` // what polar_observe returns
}

//go:wasmexport polar_abi_version
func version() int32 { return 1 }

//go:wasmexport polar_observe
func observe(p, n int32) int32 {
	var cfg config
	if err := json.Unmarshal(guest.ParseRequest(p, n).Config, &cfg); err != nil {
		guest.Log(3, "bad config: "+err.Error())
		return 1
	}
	guest.Emit(withResult(guest.Observation("valid", 1, nil, nil), cfg.Result, "the error text"))
	switch cfg.Reject {
	case "suffix":
		guest.Emit(guest.Observation("Not A Type!", 1, nil, nil))
	case "garbage":
		guest.Emit([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	case "result":
		guest.Emit(withResult(guest.Observation("valid", 1, nil, nil), 9, ""))
	}
	if cfg.Log != "" {
		guest.Log(3, cfg.Log)
	}
	return cfg.Return
}

// withResult appends PluginObservation's result (7) and error (8) to b.
func withResult(b []byte, result int32, text string) []byte {
	b = protowire.AppendTag(b, 7, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(result))
	b = protowire.AppendTag(b, 8, protowire.BytesType)
	return protowire.AppendString(b, text)
}

func main() {}
