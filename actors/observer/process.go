package observer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
)

// errNotRunning says that the process looked for is not there, as opposed
// to the daemon being unable to look.
var errNotRunning = errors.New("not running")

// processCheck is the `process` kind: the observed service's process,
// found by its pid file or by its name, measured from /proc.
//
// It draws no token or slot from the policy's limits: those protect the
// service, and reading /proc costs the service nothing (the kernel
// answers, the process is never asked).
type processCheck struct {
	spec *policy.Process
	fs   procfs.FS
	// last is the process found by the previous observation that found
	// one: finding another one means the service restarted. Runs of one
	// observer never overlap, so it needs no lock.
	last *identity
}

// identity tells a process from a later one that reuses its pid.
type identity struct {
	pid   int
	start uint64 // clock ticks since boot
}

func newProcessCheck(s *Spec) (*processCheck, error) {
	p := s.Observer.Process
	if p == nil {
		return nil, errors.New("process observer without a process section")
	}
	procFS, err := procfs.NewDefaultFS()
	if err != nil {
		return nil, fmt.Errorf("open /proc: %w", err)
	}
	return &processCheck{spec: p, fs: procFS}, nil
}

func (c *processCheck) run(ctx context.Context) *messages.Event {
	ev := messages.NewEvent(messages.TypeObservationProcess)
	obs := &messages.ProcessObservation{Name: c.spec.Name}
	ev.Data = &messages.Event_Process{Process: obs}

	p, st, err := c.find(ctx, obs)
	if err == nil {
		err = c.measure(obs, p, st)
	}
	switch {
	case err == nil:
		obs.Result = messages.Result_RESULT_OK
	case errors.Is(err, errNotRunning):
		obs.Result, obs.Error = messages.Result_RESULT_FAILED, err.Error()
	default:
		obs.Result, obs.Error = failure(ctx, err)
	}
	return ev
}

// find returns the process and its status, by pid file or by name; obs
// gets the pid as soon as it is known.
func (c *processCheck) find(ctx context.Context, obs *messages.ProcessObservation) (procfs.Proc, procfs.ProcStat, error) {
	if c.spec.PIDFile == "" {
		return c.byName(ctx)
	}
	b, err := os.ReadFile(c.spec.PIDFile)
	if errors.Is(err, fs.ErrNotExist) {
		return procfs.Proc{}, procfs.ProcStat{}, fmt.Errorf("read pid file: %w: %w", err, errNotRunning)
	}
	if err != nil {
		return procfs.Proc{}, procfs.ProcStat{}, fmt.Errorf("read pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return procfs.Proc{}, procfs.ProcStat{}, fmt.Errorf("read pid file %s: %q is not a pid", c.spec.PIDFile, strings.TrimSpace(string(b)))
	}
	obs.Pid = int32(pid)
	p, err := c.fs.Proc(pid)
	var st procfs.ProcStat
	switch {
	case gone(err):
		err = errNotRunning
	case err == nil:
		st, err = status(p)
	}
	if err != nil {
		return p, st, fmt.Errorf("find process %d of pid file %s: %w", pid, c.spec.PIDFile, err)
	}
	return p, st, nil
}

// byName finds the live processes whose comm or argv[0]'s base name is
// the configured name, and returns the oldest: when a service forks
// workers under its own name, the oldest is the parent that the others
// come and go under.
func (c *processCheck) byName(ctx context.Context) (procfs.Proc, procfs.ProcStat, error) {
	procs, err := c.fs.AllProcs()
	if err != nil {
		return procfs.Proc{}, procfs.ProcStat{}, fmt.Errorf("list processes: %w", err)
	}
	var (
		best   procfs.Proc
		bestSt procfs.ProcStat
		found  bool
	)
	for _, p := range procs {
		if err := ctx.Err(); err != nil {
			return procfs.Proc{}, procfs.ProcStat{}, fmt.Errorf("find process named %s: %w", c.spec.Name, err)
		}
		st, err := status(p)
		if err != nil || !c.named(p, st) {
			continue // gone meanwhile, or another one
		}
		if !found || st.Starttime < bestSt.Starttime || (st.Starttime == bestSt.Starttime && p.PID < best.PID) {
			best, bestSt, found = p, st, true
		}
	}
	if !found {
		return procfs.Proc{}, procfs.ProcStat{}, fmt.Errorf("find process named %s: %w", c.spec.Name, errNotRunning)
	}
	return best, bestSt, nil
}

// named reports whether p is called the configured name: its comm (which
// the kernel truncates to 15 bytes) or the base name of its argv[0].
func (c *processCheck) named(p procfs.Proc, st procfs.ProcStat) bool {
	if st.Comm == c.spec.Name {
		return true
	}
	argv, err := p.CmdLine()
	return err == nil && len(argv) > 0 && filepath.Base(argv[0]) == c.spec.Name
}

// status reads p's status. A process that is gone, or exited and waits as
// a zombie for its parent to reap it (it holds nothing any more), is not
// running.
func status(p procfs.Proc) (procfs.ProcStat, error) {
	st, err := p.Stat()
	switch {
	case gone(err):
		return st, errNotRunning
	case err != nil:
		return st, fmt.Errorf("read status: %w", err)
	case st.State == "Z":
		return st, fmt.Errorf("exited: %w", errNotRunning)
	}
	return st, nil
}

// gone reports whether err says the process went away while being read.
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH)
}

// measure fills obs from p's status and remembers p for restart detection.
func (c *processCheck) measure(obs *messages.ProcessObservation, p procfs.Proc, st procfs.ProcStat) error {
	started, err := st.StartTime()
	if err != nil {
		return fmt.Errorf("read boot time: %w", err)
	}
	fds, err := p.FileDescriptorsLen()
	switch {
	case gone(err):
		return fmt.Errorf("count open fds of process %d: %w", p.PID, errNotRunning)
	case errors.Is(err, fs.ErrPermission):
		// A process of another user, without CAP_SYS_PTRACE: its fds are
		// not ours to see, but everything else is, so the observation
		// stands and says "unknown".
		fds = -1
	case err != nil:
		return fmt.Errorf("count open fds of process %d: %w", p.PID, err)
	}
	obs.Pid = int32(p.PID)
	obs.Name = st.Comm
	obs.CpuSeconds = st.CPUTime()
	obs.RssBytes = uint64(st.ResidentMemory())
	obs.OpenFds = int64(fds)
	obs.Threads = int64(st.NumThreads)
	// The kernel counts the start in clock ticks (10 ms): round to the
	// millisecond so that one process always has the same start time.
	obs.StartTime = timestamppb.New(time.UnixMilli(int64(math.Round(started * 1000))))

	id := identity{pid: p.PID, start: st.Starttime}
	obs.Restarted = c.last != nil && *c.last != id
	c.last = &id
	return nil
}
