// Command good is a well-behaved plugin: it logs, makes the HTTP request
// its config names, emits one observation saying what it saw, and counts
// its calls in its state.
package main

import (
	"encoding/json"
	"strconv"

	"github.com/polar/observerd/wasm/testdata/guest"
)

//go:wasmexport polar_abi_version
func version() int32 { return 1 }

// calls counts the calls of this instance, so that the tests can tell a
// warm instance from a fresh one.
var calls int

//go:wasmexport polar_observe
func observe(p, n int32) int32 {
	calls++
	req := guest.ParseRequest(p, n)
	var cfg struct {
		URL     string   `json:"url"`
		Extract []string `json:"extract"`
		Fail    bool     `json:"fail"`
	}
	if err := json.Unmarshal(req.Config, &cfg); err != nil {
		guest.Log(3, "bad config: "+err.Error())
		return 1
	}
	guest.Log(1, "observing "+req.TargetName)
	labels := map[string]string{
		"calls":    strconv.Itoa(calls),
		"state":    string(req.State),
		"observer": req.Observer,
		"target":   req.TargetName + " " + req.TargetURL,
		"time":     strconv.FormatInt(req.Seconds, 10),
	}
	var body []byte
	if cfg.URL != "" {
		code, resp := guest.HTTP("GET", cfg.URL, cfg.Extract...)
		labels["http"] = strconv.Itoa(int(code))
		labels["status"] = strconv.Itoa(resp.Status)
		labels["truncated"] = strconv.FormatBool(resp.Truncated)
		labels["body"] = strconv.Itoa(len(resp.Body))
		for k, v := range resp.Values {
			labels["value "+k] = v
		}
		if !resp.Truncated {
			body = resp.Body
		}
	}
	labels["emit"] = strconv.Itoa(int(guest.Emit(guest.Observation("good", 1, body, labels))))
	total, _ := strconv.Atoi(string(req.State))
	if guest.SetState([]byte(strconv.Itoa(total+1))) != 0 {
		return 1
	}
	if cfg.Fail {
		return 1
	}
	return 0
}

func main() {}
