package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/configs"
)

// statLine is a /proc/<pid>/stat line (as Linux 6 writes it) for the
// command comm, with env_start and env_end (fields 50 and 51) as given.
func statLine(comm, envStart, envEnd string) []byte {
	fields := strings.Fields("R 15592 15592 6110 0 -1 4194304 99 0 0 0 0 0 0 0 20 0 1 0 426091 3133440 390 " +
		"18446744073709551615 94419536396288 94419536416169 140730699016752 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 " +
		"94419536432176 94419536433792 94420447694848 140730699020978 140730699020998 X Y 0")
	fields[50-3], fields[51-3] = envStart, envEnd
	return []byte("15646 (" + comm + ") " + strings.Join(fields, " ") + "\n")
}

func TestEnvBlockParsesProcStat(t *testing.T) {
	for _, tc := range []struct {
		name       string
		stat       []byte
		start, end int64
		err        string
	}{
		{"plain", statLine("observerd", "140730699020998", "140730699022315"), 140730699020998, 140730699022315, ""},
		{"a command name with spaces and parentheses", statLine("a) b (c) 1 2 3", "1000", "2000"), 1000, 2000, ""},
		{"an empty block", statLine("observerd", "1000", "1000"), 1000, 1000, ""},
		{"no command name", []byte("15646 observerd R 1 2 3\n"), 0, 0, "no command name"},
		{"nothing", nil, 0, 0, "no command name"},
		{"too few fields", []byte("15646 (observerd) R 1 2 3\n"), 0, 0, "6 fields, env_end is field 51"},
		{"cut before env_end", bytes.TrimSuffix(statLine("observerd", "1000", "2000"), []byte(" 2000 0\n")), 0, 0,
			"50 fields, env_end is field 51"},
		{"env_start not a number", statLine("observerd", "secret-ish", "2000"), 0, 0, "env_start: invalid syntax"},
		{"env_end out of range", statLine("observerd", "1000", "99999999999999999999"), 0, 0, "env_end: value out of range"},
		{"env_start negative", statLine("observerd", "-1000", "2000"), 0, 0, "env_start is negative"},
		{"env_end before env_start", statLine("observerd", "2000", "1000"), 0, 0, "env_end - env_start is -1000 bytes, not within 0..8388608"},
		{"a block too large", statLine("observerd", "0", "8388609"), 0, 0, "env_end - env_start is 8388609 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start, end, err := envBlock(tc.stat)
			if tc.err == "" {
				require.NoError(t, err)
				assert.Equal(t, tc.start, start)
				assert.Equal(t, tc.end, end)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.err)
			assert.NotContains(t, err.Error(), "<nil>")
			assert.NotContains(t, err.Error(), "secret-ish", "nothing of the file is quoted")
		})
	}
}

func TestPasswordEnvIsScrubbedOnlyWhenSet(t *testing.T) {
	// A /proc directory whose mem cannot be opened: scrubbing fails, and
	// must not be tried when the variable was never set.
	proc := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(proc, "stat"), statLine("observerd", "1000", "2000"), 0o600))

	t.Setenv(configs.PasswordEnv, "") // restored after the test
	require.NoError(t, os.Unsetenv(configs.PasswordEnv))
	pw, err := takePasswordEnv(proc)
	assert.Empty(t, pw)
	require.NoError(t, err, "nothing to scrub, nothing to warn about")

	t.Setenv(configs.PasswordEnv, "s3cret")
	pw, err = takePasswordEnv(proc)
	assert.Equal(t, "s3cret", pw)
	require.ErrorContains(t, err, filepath.Join(proc, "mem"))
	_, set := os.LookupEnv(configs.PasswordEnv)
	assert.False(t, set)
}

// scrubChildEnv makes this test binary, run as a child, take the password
// from its environment and print its own /proc/self/environ.
const scrubChildEnv = "OBSERVERD_TEST_SCRUB_CHILD"

func init() {
	if os.Getenv(scrubChildEnv) != "" {
		if _, err := takePasswordEnv("/proc/self"); err != nil {
			fmt.Print("error: ", err)
			os.Exit(1)
		}
		environ, err := os.ReadFile("/proc/self/environ")
		if err != nil {
			fmt.Print("error: ", err)
			os.Exit(1)
		}
		os.Stdout.Write(environ)
		os.Exit(0)
	}
}

func TestPasswordEnvLeavesTheKernelsEnvironmentBlock(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), scrubChildEnv+"=1", configs.PasswordEnv+"=s3cret-in-env")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.NotContains(t, string(out), "s3cret-in-env")
	assert.NotContains(t, string(out), configs.PasswordEnv+"=")
	assert.Contains(t, string(out), scrubChildEnv+"=1", "the rest stays")
}
