package process

import (
	"context"
	"os/exec"
	"testing"

	"github.com/prometheus/procfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/test/proctest"
)

// findByName runs the search by name, calling read with the pid of each
// process whose command line it reads; it returns the pid of the process
// found.
func findByName(ctx context.Context, name string, read func(pid int)) (int, error) {
	procFS, err := procfs.NewDefaultFS()
	if err != nil {
		return 0, err
	}
	c := &check{spec: &Section{Name: name}, fs: procFS, cmdLine: func(p procfs.Proc) ([]string, error) {
		read(p.PID)
		return p.CmdLine()
	}}
	p, _, err := c.byName(ctx)
	return p.PID, err
}

// TestProcessByNameReadsFewCommandLines: comm decides a name of up to 15
// bytes; only a process whose comm is the first 15 bytes of a longer name
// has its command line read (a read that a process can make hang), to
// tell it by argv[0]. A process whose argv[0] alone is the name is not
// found by a name comm decides.
func TestProcessByNameReadsFewCommandLines(t *testing.T) {
	// Random in its first 15 bytes: no other process on the machine
	// (other tests' included) has that comm.
	long := proctest.UniqueName("svc-") + "-long-service"
	tests := []struct {
		name string
		// start starts the processes and returns the name looked for.
		start func(t *testing.T) (name string, started []*proctest.Child)
		found int // index in started of the process found; -1: none
		read  []int
	}{
		{"a short name by comm", func(t *testing.T) (string, []*proctest.Child) {
			name := proctest.UniqueName("svc-")
			return name, []*proctest.Child{proctest.Spawn(t, proctest.Program(t, name), "600")}
		}, 0, nil},
		{"a short name of no process", func(*testing.T) (string, []*proctest.Child) {
			return proctest.UniqueName("svc-"), nil
		}, -1, nil},
		{"a short name in argv[0] only", func(t *testing.T) (string, []*proctest.Child) {
			name := proctest.UniqueName("svc-")
			return name, []*proctest.Child{proctest.Start(t, &exec.Cmd{Path: proctest.Program(t, proctest.UniqueName("other-")), Args: []string{name, "600"}})}
		}, -1, nil},
		{"a long name by argv[0]", func(t *testing.T) (string, []*proctest.Child) {
			return long, []*proctest.Child{proctest.Spawn(t, proctest.Program(t, long), "600")}
		}, 0, []int{0}},
		{"a long name whose first 15 bytes another one shares", func(t *testing.T) (string, []*proctest.Child) {
			other := proctest.Spawn(t, proctest.Program(t, long[:15]+"-other"), "600")
			return long, []*proctest.Child{other}
		}, -1, []int{0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name, started := tc.start(t)
			var read []int
			pid, err := findByName(context.Background(), name, func(pid int) { read = append(read, pid) })
			if tc.found < 0 {
				require.ErrorContains(t, err, "not running")
			} else {
				require.NoError(t, err)
				assert.Equal(t, int(started[tc.found].PID()), pid)
			}
			want := []int{}
			for _, i := range tc.read {
				want = append(want, int(started[i].PID()))
			}
			assert.ElementsMatch(t, want, read, "the command lines read")
		})
	}
}
