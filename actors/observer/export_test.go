package observer

import (
	"context"

	"github.com/prometheus/procfs"

	"github.com/polar/observerd/policy"
)

// FindByName runs the process kind's search by name, calling read with
// the pid of each process whose command line it reads; it returns the
// pid of the process found.
func FindByName(ctx context.Context, name string, read func(pid int)) (int, error) {
	procFS, err := procfs.NewDefaultFS()
	if err != nil {
		return 0, err
	}
	c := &processCheck{spec: &policy.Process{Name: name}, fs: procFS, cmdLine: func(p procfs.Proc) ([]string, error) {
		read(p.PID)
		return p.CmdLine()
	}}
	p, _, err := c.byName(ctx)
	return p.PID, err
}
