// Command shared declares itself stateless, so that its instances may be
// shared by the plugins of a pool, and counts the calls of its instance
// all the same, which shows the tests which instance served a call. Its
// state counts the calls of the plugin; config {"trap": true} traps, and
// {"sleep_ms": n} holds the instance n ms before returning.
package main

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/polar/observerd/wasm/testdata/guest"
)

//go:wasmexport polar_abi_version
func version() int32 { return 1 }

//go:wasmexport polar_stateless
func stateless() int32 { return 1 }

// calls counts the calls of this instance.
var calls int

//go:wasmexport polar_observe
func observe(p, n int32) int32 {
	calls++
	req := guest.ParseRequest(p, n)
	var cfg struct {
		Trap    bool `json:"trap"`
		SleepMS int  `json:"sleep_ms"`
	}
	if err := json.Unmarshal(req.Config, &cfg); err != nil {
		guest.Log(3, "bad config: "+err.Error())
		return 1
	}
	if cfg.Trap {
		panic("trap as configured")
	}
	time.Sleep(time.Duration(cfg.SleepMS) * time.Millisecond)
	total, _ := strconv.Atoi(string(req.State))
	if guest.SetState([]byte(strconv.Itoa(total+1))) != 0 {
		return 1
	}
	labels := map[string]string{
		"instance calls": strconv.Itoa(calls),
		"plugin calls":   strconv.Itoa(total + 1),
		"observer":       req.Observer,
	}
	if guest.Emit(guest.Observation("shared", 1, nil, labels)) != 0 {
		return 1
	}
	return 0
}

func main() {}
