// Package plugintest builds the plugins that tests run: a Go package of
// the repository (a test guest of wasm/testdata, an example of
// wasm/examples) compiled as a WASI preview 1 reactor, as make build
// builds the examples.
package plugintest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// Build compiles the Go package pkg (an import path of the repository's
// module) into dir as name.wasm, and returns its path.
func Build(tb testing.TB, pkg, dir, name string) string {
	tb.Helper()
	out := filepath.Join(dir, name+".wasm")
	cmd := exec.Command(goTool(), "build", "-trimpath", "-buildmode=c-shared", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	b, err := cmd.CombinedOutput()
	require.NoError(tb, err, "build %s:\n%s", pkg, b)
	return out
}

// goTool is the go command of the toolchain that built the test binary,
// whatever PATH says.
func goTool() string {
	//lint:ignore SA1019 the test binary runs where it was built
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}
