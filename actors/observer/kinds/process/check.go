package process

import (
	"context"
	"errors"
	"fmt"
	"io"
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

	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/messages"
)

// errNotRunning says that the process looked for is not there, as opposed
// to the daemon being unable to look.
var errNotRunning = errors.New("not running")

// check is one process observer's: the process found and measured once
// per turn.
//
// Reading /proc costs the service nothing (the kernel answers, the process
// is never asked), so it holds no slot of the policy's concurrency limit;
// it takes a token of its rate limit all the same, so that
// max_requests_per_second bounds the events of every kind.
type check struct {
	spec   *Section
	fs     procfs.FS
	access *kinds.TargetAccess
	// dirs are the allowed_pid_dirs a pid file must resolve inside.
	dirs []string
	// cmdLine reads a process's argv (procfs.Proc.CmdLine; tests count
	// the reads).
	cmdLine func(procfs.Proc) ([]string, error)
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

func newCheck(p *Section, s kinds.Setup) (kinds.Check, error) {
	procFS, err := procfs.NewDefaultFS()
	if err != nil {
		return nil, fmt.Errorf("open /proc: %w", err)
	}
	c := &check{spec: p, fs: procFS, access: s.Access, dirs: s.PIDDirs, cmdLine: procfs.Proc.CmdLine}
	return kinds.OneObservation(c.observe), nil
}

func (c *check) observe(ctx context.Context) *messages.Event {
	ev := messages.NewEvent(messages.TypeObservationProcess)
	obs := &messages.ProcessObservation{Name: c.spec.Name}
	ev.Data = &messages.Event_Process{Process: obs}

	if err := c.access.Token(ctx); err != nil {
		obs.Result, obs.Error = kinds.Failure(ctx, err)
		return ev
	}
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
		obs.Result, obs.Error = kinds.Failure(ctx, err)
	}
	return ev
}

// find returns the process and its status, by pid file or by name; obs
// gets the pid once a process of that pid is found. Until then the pid is
// only what a file holds: published or named in an error, it would tell
// a policy the content of any file in allowed_pid_dirs.
func (c *check) find(ctx context.Context, obs *messages.ProcessObservation) (procfs.Proc, procfs.ProcStat, error) {
	if c.spec.PIDFile == "" {
		return c.byName(ctx)
	}
	pid, err := c.readPID()
	if err != nil {
		return procfs.Proc{}, procfs.ProcStat{}, err
	}
	p, err := c.fs.Proc(pid)
	switch {
	case gone(err):
		return p, procfs.ProcStat{}, fmt.Errorf("find process of pid file %s: %w", c.spec.PIDFile, errNotRunning)
	case err != nil:
		// Its error names /proc/<pid>: only the errno.
		return p, procfs.ProcStat{}, fmt.Errorf("find process of pid file %s: %w", c.spec.PIDFile, kinds.Pathless(err))
	}
	obs.Pid = int32(pid)
	st, err := status(p)
	if err != nil {
		return p, st, fmt.Errorf("find process %d of pid file %s: %w", pid, c.spec.PIDFile, err)
	}
	return p, st, nil
}

// maxPIDFileBytes is what is read of a pid file at most: a pid and a
// newline take 8 bytes; a longer file is not a pid file, and is read no
// further.
const maxPIDFileBytes = 64

// readPID reads the pid of the pid file. The file is opened inside the
// allowed_pid_dirs entry that holds its path, through an os.Root:
// symlinks are followed, but one that leads outside that directory (the
// service writes its own pid directory, and could plant a link to the
// daemon's secrets) is refused. Only a regular file is read, at most
// maxPIDFileBytes of it, and what it holds never reaches an error: the
// observation is published.
func (c *check) readPID() (int, error) {
	path := c.spec.PIDFile
	dir, rel, ok := PIDDirOf(path, c.dirs)
	if !ok {
		return 0, fmt.Errorf("read pid file %s: not inside allowed_pid_dirs %v", path, c.dirs)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		// Its error names the entry: "open /run/web: no such file or directory".
		return 0, pidFileError(path, err)
	}
	defer root.Close()
	// O_NONBLOCK: opening a FIFO for reading would wait for a writer. A
	// regular file ignores it.
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return 0, pidFileError(path, rootError(dir, err))
	}
	defer f.Close()
	// Checked on the file opened, not on the path, which may have changed.
	st, err := f.Stat()
	if err != nil {
		return 0, pidFileError(path, err)
	}
	if !st.Mode().IsRegular() {
		return 0, fmt.Errorf("read pid file %s: not a regular file (%s)", path, fileType(st.Mode()))
	}
	var buf [maxPIDFileBytes + 1]byte
	n, err := io.ReadFull(f, buf[:])
	switch {
	case n > maxPIDFileBytes:
		return 0, fmt.Errorf("read pid file %s: not a pid (more than %d bytes)", path, maxPIDFileBytes)
	case err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF):
		return 0, pidFileError(path, err)
	}
	pid, err := strconv.ParseInt(strings.TrimSpace(string(buf[:n])), 10, 32)
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("read pid file %s: not a pid (%d bytes)", path, n)
	}
	return int(pid), nil
}

// rootError is an error of an os.Root at dir without the path relative to
// dir that it names: its errno, or that the path resolves outside dir,
// the one error of os.Root's own (every failure of the system comes with
// its errno).
func rootError(dir string, err error) error {
	err = kinds.Pathless(err)
	if _, ok := errors.AsType[syscall.Errno](err); !ok {
		return fmt.Errorf("resolves outside %s", dir)
	}
	return err
}

// pidFileError names the pid file in err. A file that is not there means
// that the service is not running.
func pidFileError(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read pid file %s: %w: %w", path, err, errNotRunning)
	}
	return fmt.Errorf("read pid file %s: %w", path, err)
}

// fileType names what a file that is not a regular file is.
func fileType(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m.IsDir():
		return "a directory"
	}
	return "mode " + m.String()
}

// byName finds the live processes called the configured name (see
// named), and returns the oldest: when a service forks workers under its
// own name, the oldest is the parent that the others come and go under.
func (c *check) byName(ctx context.Context) (procfs.Proc, procfs.ProcStat, error) {
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

// maxComm is how many bytes of a name the kernel keeps in comm.
const maxComm = 15

// named reports whether p is called the configured name. comm, which the
// kernel keeps of every process, decides a name of up to 15 bytes. A
// longer name is cut to 15 bytes in comm: only a process whose comm is
// that cut has its command line read, and is called the name when its
// argv[0]'s base name is the whole name. The command line is read from
// the process's memory: a process of any user can make that read hang
// (its memory map locked by a fault on a FUSE mount), so it is read of
// none but the few processes comm cannot tell apart.
func (c *check) named(p procfs.Proc, st procfs.ProcStat) bool {
	name := c.spec.Name
	switch {
	case len(name) <= maxComm:
		return st.Comm == name
	case st.Comm != name[:maxComm]:
		return false
	}
	argv, err := c.cmdLine(p)
	return err == nil && len(argv) > 0 && filepath.Base(argv[0]) == name
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
func (c *check) measure(obs *messages.ProcessObservation, p procfs.Proc, st procfs.ProcStat) error {
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
