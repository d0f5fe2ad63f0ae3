package admin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polar/observerd/messages"
)

// socketMode lets the daemon's user and the socket's group connect.
const socketMode = 0o660

// listenSocket listens on the unix socket at path, mode 0660, in group
// gid (-1 keeps the daemon's). Its directory is created if missing
// (0755) and must be writable by its owner only, root or the daemon's
// user, so that no one else can put something in the socket's place
// between the steps below. A stale socket there is replaced; a live one
// (another daemon's) or anything else is an error. The socket's file is
// removed when the listener closes.
func listenSocket(path string, gid int) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if err := ownDir(dir); err != nil {
		return nil, err
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	// Until the chmod the socket has the umask's mode: the peer check,
	// not the mode, is what guards that moment.
	err = os.Chmod(path, socketMode)
	// The daemon's own group needs no chown, which a seccomp filter
	// (systemd's ~@privileged) may forbid.
	if err == nil && gid >= 0 && gid != os.Getegid() {
		err = os.Lchown(path, -1, gid)
	}
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	return ln, nil
}

// ownDir creates dir if missing (0755, so that the socket's group can
// reach the socket) and checks that only its owner, root or the daemon's
// user, can write to it.
func ownDir(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		// MkdirAll's mode is filtered by the umask.
		if err := os.Chmod(dir, 0o755); err != nil {
			return err
		}
	}
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	switch {
	case !st.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	case !ok || (sys.Uid != 0 && int(sys.Uid) != os.Geteuid()):
		return fmt.Errorf("directory %s is not owned by root or the daemon's user: use a directory of the daemon's, like /run/observerd", dir)
	case st.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("directory %s is writable by other users (mode %04o): use a directory only the daemon's user can write to, like /run/observerd", dir, st.Mode().Perm())
	}
	return nil
}

// removeStale removes a socket at path that nothing serves.
func removeStale(path string) error {
	st, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case st.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("%s exists and is not a socket: move it away or set admin.socket to another path", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	switch {
	case err == nil:
		_ = c.Close()
		return fmt.Errorf("%s is in use: another process serves it (another observerd with the same admin.socket?)", path)
	case !errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("check whether %s is in use: %w", path, err)
	}
	return os.Remove(path)
}

// peer is the process at the other end of a socket connection, as the
// kernel recorded it at connect time (SO_PEERCRED), and whether it may
// use the socket, decided at its first request (the user look-up may be
// slow, and the accept loop must not wait for it).
type peer struct {
	cred *unix.Ucred // nil when it could not be read
	err  error       // why not

	once    sync.Once
	user    string
	refused error
}

type peerKey struct{}

// withPeer is the socket server's ConnContext: it reads the connection's
// peer credentials.
func withPeer(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, peerKey{}, readPeer(c))
}

func readPeer(c net.Conn) *peer {
	if lc, ok := c.(*limitedConn); ok {
		c = lc.Conn
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return &peer{err: fmt.Errorf("a %T has no peer credentials", c)}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return &peer{err: fmt.Errorf("read peer credentials: %w", err)}
	}
	p := &peer{}
	if err := raw.Control(func(fd uintptr) {
		p.cred, p.err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		p.err = err
	}
	if p.err != nil {
		p.cred, p.err = nil, fmt.Errorf("read peer credentials: %w", p.err)
	}
	return p
}

// peerOf is the request's peer; a request that did not come through the
// socket has none, which authorize refuses.
func peerOf(ctx context.Context) *peer {
	if p, ok := ctx.Value(peerKey{}).(*peer); ok {
		return p
	}
	return &peer{err: errors.New("the request has no peer credentials")}
}

// authorize says why the peer may not use the socket, nil when it may.
func (p *peer) authorize(a access) error {
	if p.err != nil {
		return p.err
	}
	p.once.Do(func() { p.user, p.refused = a.allow(p.cred.Uid, p.cred.Gid) })
	return p.refused
}

// caller is the peer as a command.result records it.
func (p *peer) caller() *messages.Caller {
	if p.cred == nil {
		return nil
	}
	return &messages.Caller{Channel: string(overUnix), Uid: int64(p.cred.Uid), Gid: int64(p.cred.Gid), Pid: int64(p.cred.Pid), User: p.user}
}

// access says who may use the socket: root, the daemon's own user, and
// the members of the socket's group (as their primary group, or as a
// supplementary group of the uid's user).
type access struct {
	self  int // the daemon's uid
	group int // the socket's gid
	// lookup returns a uid's user name and group ids (lookupUser, or a
	// table in tests).
	lookup func(uid int) (name string, gids []int, err error)
}

// allow returns the peer's user name ("" when the host does not know the
// uid) and why it may not use the socket, nil when it may.
func (a access) allow(uid, gid uint32) (string, error) {
	// An unknown uid has no name and no supplementary groups: its
	// credentials alone decide.
	name, gids, _ := a.lookup(int(uid))
	if uid == 0 || int(uid) == a.self || int(gid) == a.group || slices.Contains(gids, a.group) {
		return name, nil
	}
	return name, fmt.Errorf("uid %d may not use the admin socket: it is for root, the daemon's user and the members of group %d (admin.socket_group)", uid, a.group)
}

// lookupUser is a uid's user name and groups, from the host's user
// database.
func lookupUser(uid int) (string, []int, error) {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return "", nil, err
	}
	ids, err := u.GroupIds()
	gids := make([]int, 0, len(ids))
	for _, id := range ids {
		if gid, err := strconv.Atoi(id); err == nil {
			gids = append(gids, gid)
		}
	}
	return u.Username, gids, err
}
