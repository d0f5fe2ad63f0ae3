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
	Go(tb, "", []string{"GOOS=wasip1", "GOARCH=wasm"}, "build", "-trimpath", "-buildmode=c-shared", "-o", out, pkg)
	return out
}

// Go runs the go command of the toolchain that built the test binary
// (whatever PATH says) with args, in dir ("": the test's), its
// environment plus env, and returns its output; it fails the test when
// the command fails.
func Go(tb testing.TB, dir string, env []string, args ...string) string {
	tb.Helper()
	//lint:ignore SA1019 the test binary runs where it was built
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	b, err := cmd.CombinedOutput()
	require.NoError(tb, err, "go %v:\n%s", args, b)
	return string(b)
}
