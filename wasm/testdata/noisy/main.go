// Command noisy floods stdout, stderr and the log.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/polar/observerd/wasm/testdata/guest"
)

//go:wasmexport polar_abi_version
func version() int32 { return 1 }

//go:wasmexport polar_observe
func observe(p, n int32) int32 {
	line := strings.Repeat("x", 1000)
	for i := range 1000 {
		fmt.Fprintf(os.Stdout, "%d %s\n", i, line)
		fmt.Fprintf(os.Stderr, "%d %s\n", i, line)
		guest.Log(1, line)
	}
	return 0
}

func main() {}
