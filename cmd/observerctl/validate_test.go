package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const goodPolicy = `apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: web, url: "http://127.0.0.1:8080"}
  observers:
    - {name: health, kind: http, interval: 5s, http: {path: /healthz}}
`

func TestPolicyValidate(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
		return path
	}
	good := write("good.yaml", goodPolicy)
	bad := write("bad.yaml", strings.Replace(goodPolicy, "interval: 5s", "interval: 0s", 1)+"bogus: 1\n")
	dup := write("dup.yaml", strings.Replace(goodPolicy, "8080", "9090", 1))
	offList := write("off.yaml", strings.Replace(strings.Replace(goodPolicy, "127.0.0.1", "10.0.0.1", 1), "name: web}", "name: off}", 1))
	write("d/a.yaml", strings.Replace(goodPolicy, "name: web}", "name: a}", 1))
	write("d/.hidden.yaml", "garbage: [")
	write("d/notes.txt", "not a policy")
	config := write("observerd.yaml", "allowed_targets: [\"10.0.0.0/8\"]\n")
	tight := write("tight.yaml", "limits: {max_observers: 1}\n")
	other := write("other.yaml", strings.Replace(goodPolicy, "name: web}", "name: other}", 1))

	tests := []struct {
		name       string
		args       []string
		code       int
		out, err   []string // lines expected, in order
		errContain string
	}{
		{name: "good", args: []string{good}, code: exitOK, out: []string{good + ": ok (policy web, revision "}},
		{name: "every problem with its position", args: []string{bad}, code: exitProblems, err: []string{
			bad + ":7:44: spec.observers[0].interval: must be at least 1s (limits.min_interval of the daemon config), got 0s",
			bad + ":8:1: bogus: unknown key",
		}},
		{name: "duplicate names across files", args: []string{good, dup}, code: exitProblems,
			out: []string{good + ": ok"}, err: []string{dup + `:3:18: metadata.name: the policy name is already used by ` + good + ":3"}},
		{name: "a directory is read as the daemon reads policy_dir", args: []string{filepath.Join(dir, "d")}, code: exitOK,
			out: []string{filepath.Join(dir, "d", "a.yaml") + ": ok (policy a, revision "}},
		{name: "targets off the default allow list", args: []string{offList}, code: exitProblems,
			errContain: "is not in allowed_targets"},
		{name: "the daemon config's allow list", args: []string{"--config", config, offList}, code: exitOK,
			out: []string{offList + ": ok (policy off, revision "}},
		{name: "the daemon's totals across the files given", args: []string{"--config", tight, good, other}, code: exitProblems,
			out: []string{good + ": ok"}, err: []string{other + ":7:5: spec.observers: the daemon runs at most 1 observers (limits.max_observers): this policy has 1, the other policies 1"}},
		{name: "missing file", args: []string{filepath.Join(dir, "nope.yaml")}, code: exitProblems,
			err: []string{filepath.Join(dir, "nope.yaml") + ": cannot read the file: no such file or directory"}},
		{name: "no file", args: nil, code: exitUsage, errContain: "usage: observerctl policy validate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"policy", "validate"}, tt.args...), &stdout, &stderr)
			assert.Equal(t, tt.code, code, "stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
			assertLines(t, tt.out, stdout.String())
			assertLines(t, tt.err, stderr.String())
			assert.Contains(t, stderr.String(), tt.errContain)
		})
	}
}

// assertLines checks that each line of got starts with the wanted one.
func assertLines(t *testing.T, want []string, got string) {
	t.Helper()
	if want == nil {
		return
	}
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	require.Len(t, lines, len(want), got)
	for i, w := range want {
		assert.True(t, strings.HasPrefix(lines[i], w), "line %d:\n got %s\nwant %s...", i+1, lines[i], w)
	}
}
