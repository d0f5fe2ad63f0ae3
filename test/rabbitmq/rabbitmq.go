// Package rabbitmq runs a private RabbitMQ node with TLS for the tests of
// observerd.
//
// Start generates a fresh PKI (a CA, a server certificate for localhost and
// 127.0.0.1/::1, a client certificate CN=observer for EXTERNAL auth, and an
// unrelated "untrusted" CA for negative tests), writes a rabbitmq.conf that
// accepts AMQPS only (no plaintext listener) on a free port of 127.0.0.1,
// and boots Debian's rabbitmq-server as an ordinary child process:
//
//   - the node has its own name (obsd-<random>@localhost), data and log
//     directories, Erlang cookie (HOME is the node directory), Erlang
//     distribution port and its own epmd on a private port, so it never
//     meets a system RabbitMQ, a system epmd or the node of another test
//     package running in parallel;
//   - it runs in its own process group, so Kill takes down the whole VM;
//   - it works as root and as an ordinary user: the Debian wrappers in
//     /usr/sbin (which `su rabbitmq` and write to /var/log/rabbitmq) are
//     not used, erl is started directly with what the upstream
//     rabbitmq-server script would pass, and rabbitmqctl is run from
//     /usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin;
//   - only rabbitmq_auth_mechanism_ssl is enabled (no management plugin)
//     and only the applications it and RabbitMQ need are on the code path,
//     which keeps a start to a few seconds.
//
// The user "observer" with a random password and full permissions on vhost
// "/" is created on the first boot of the node's database (default_user in
// rabbitmq.conf) and persists across Stop/Kill and Restart. A client
// certificate with CN=observer logs in as the same user over EXTERNAL.
//
// Stop is graceful, Kill is a crash (SIGKILL), Restart boots the same node
// again on the same port with the same data. Settings changed at run time
// through Ctl, such as `set_vm_memory_high_watermark 0` to raise a memory
// alarm, are not persistent: a Restart returns to the configured defaults,
// and a test that changes them must restore them for the tests after it.
//
// A package that needs a broker uses Main from its TestMain:
//
//	var node *rabbitmq.Node
//
//	func TestMain(m *testing.M) { rabbitmq.Main(m, &node) }
//
// StartCluster runs several such nodes as one RabbitMQ cluster
// (cluster.go). Whatever the harness started is also taken down when the
// test binary is interrupted (SIGINT, SIGTERM) in Main.
//
// A missing RabbitMQ installation fails the tests; it is never a skip.
package rabbitmq

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

const (
	// User is the broker user created for the tests; it is also the CN of
	// the client certificate.
	User = "observer"
	// Host is the name clients connect to; the server certificate is valid
	// for it (and for 127.0.0.1 and ::1).
	Host = "localhost"

	defaultStartTimeout = 60 * time.Second
	// stopTimeout bounds the graceful stop in Close before it kills.
	stopTimeout = 15 * time.Second
	// flushTimeout bounds the metadata sync before Kill.
	flushTimeout = 5 * time.Second
	// killTimeout bounds the wait for a SIGKILLed process to disappear.
	killTimeout = 30 * time.Second
	// pollInterval is how often readiness is probed while a node boots.
	pollInterval = 50 * time.Millisecond
	// dialTimeout bounds one TCP connect plus TLS and AMQP handshakes.
	dialTimeout = 10 * time.Second
)

// Options for Start. The zero value is fine.
type Options struct {
	// Dir holds certificates, config, database and logs. Empty: a fresh
	// os.MkdirTemp directory, removed by Close.
	Dir string
	// StartTimeout bounds how long Start and Restart wait for the node to
	// become ready; default 60s.
	StartTimeout time.Duration
}

// Node is a running (or stopped) private RabbitMQ node. Its methods are safe
// for concurrent use; lifecycle operations (Stop, Kill, Restart, Close) are
// serialised.
type Node struct {
	Dir      string
	Host     string // "localhost"; a cluster node's own loopback IP
	Port     int    // AMQPS (TLS) listener on Host's IP, stable across Restart
	User     string // "observer"
	Password string // random, per Start
	CAFile   string // PEM CA that signed the server and client certificates
	CertFile string // client certificate (CN=observer) PEM, for EXTERNAL auth
	KeyFile  string // client key PEM (0600)
	// PasswordFile (0600) holds Password, for the daemon config's
	// broker.password_file.
	PasswordFile string
	// UntrustedCAFile is a second CA that signed nothing the server uses:
	// a client trusting only it must fail verification.
	UntrustedCAFile string
	// UntrustedCertFile and UntrustedKeyFile are a client certificate
	// CN=observer signed by the untrusted CA: the server must reject it.
	UntrustedCertFile string
	UntrustedKeyFile  string

	name     string // Erlang node name, e.g. obsd-1a2b3c@localhost
	listen   string // the IP of the AMQPS listener
	distPort int
	epmdPort int
	env      []string
	in       install
	tempDir  bool
	timeout  time.Duration

	life   sync.Mutex // serialises Stop, Kill, Restart, Close
	mu     sync.Mutex // guards proc, epmd and closed
	proc   *process   // the node's VM, nil when not started
	epmd   *process   // nil for a cluster's node: the cluster owns it
	closed bool
}

// process is a child started by the harness and reaped by its own goroutine.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and was reaped
	err  error         // Wait's result, valid after done is closed
}

func (p *process) running() bool {
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Start generates certificates and config, starts the node, waits until it
// accepts TLS AMQP connections from the test user, and returns it. The
// caller must Close it.
func Start(ctx context.Context, opts Options) (_ *Node, err error) {
	in, err := findInstall()
	if err != nil {
		return nil, err
	}
	n := &Node{Host: Host, User: User, in: in, timeout: opts.StartTimeout, listen: "127.0.0.1"}
	if n.timeout <= 0 {
		n.timeout = defaultStartTimeout
	}
	if n.Dir, n.tempDir, err = makeDir(opts.Dir); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			// Close stops whatever got started and removes a temporary Dir.
			_ = n.Close()
		}
	}()

	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	n.Port, n.distPort, n.epmdPort = ports[0], ports[1], ports[2]
	// A fresh name per Start also means a fresh database: a Dir reused from
	// an earlier Start cannot carry over a user with an old password.
	n.name = "obsd-" + randomHex(6) + "@localhost"
	n.Password = randomHex(16)
	p, err := newPKI(n.Dir)
	if err != nil {
		return nil, err
	}
	if err := n.prepare(p, newCookie(), []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}); err != nil {
		return nil, err
	}
	epmd, err := startEpmd(ctx, n.in, n.path("log"), n.env, n.epmdPort, n.timeout)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.epmd = epmd
	n.mu.Unlock()
	n.life.Lock()
	defer n.life.Unlock()
	if err := n.boot(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// makeDir creates dir, or a fresh temporary directory when dir is empty
// (temp is then true, and the directory is removed on an interrupt).
func makeDir(dir string) (abs string, temp bool, err error) {
	if dir == "" {
		abs, err = os.MkdirTemp("", "observerd-rabbitmq-")
		if err != nil {
			return "", false, fmt.Errorf("create rabbitmq dir: %w", err)
		}
		registerTempDir(abs)
		return abs, true, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", false, fmt.Errorf("create rabbitmq dir: %w", err)
	}
	if abs, err = filepath.Abs(dir); err != nil {
		return "", false, fmt.Errorf("resolve rabbitmq dir: %w", err)
	}
	return abs, false, nil
}

// newCookie is an Erlang cookie: the nodes of a cluster share one.
func newCookie() string { return strings.ToUpper(randomHex(10)) }

// prepare writes everything the node reads at boot into n.Dir: its server
// certificate for dnsNames and ips, issued by p, the shared files of p,
// the cookie, the password and the config. The caller has set n's name,
// ports and password.
func (n *Node) prepare(p *pki, cookie string, dnsNames []string, ips []net.IP) error {
	c := p.files
	n.CAFile, n.CertFile, n.KeyFile = c.ca, c.clientCert, c.clientKey
	n.UntrustedCAFile, n.UntrustedCertFile, n.UntrustedKeyFile = c.untrustedCA, c.untrustedCert, c.untrustedKey
	serverCert, serverKey, err := p.serverCert(n.Dir, dnsNames, ips)
	if err != nil {
		return err
	}

	n.PasswordFile = filepath.Join(n.Dir, "password")
	if err := writeFile(n.PasswordFile, []byte(n.Password), 0o600); err != nil {
		return err
	}
	// Erlang refuses a cookie file that others can read.
	if err := writeFile(filepath.Join(n.Dir, ".erlang.cookie"), []byte(cookie), 0o400); err != nil {
		return err
	}
	// The config holds default_pass, hence 0600.
	if err := writeFile(n.path("rabbitmq.conf"), []byte(n.config(c.ca, serverCert, serverKey)), 0o600); err != nil {
		return err
	}
	if err := writeFile(n.path("enabled_plugins"), []byte("[rabbitmq_auth_mechanism_ssl].\n"), 0o644); err != nil {
		return err
	}
	// An empty env file keeps /etc/rabbitmq/rabbitmq-env.conf out.
	if err := writeFile(n.path("rabbitmq-env.conf"), nil, 0o644); err != nil {
		return err
	}
	for _, d := range []string{"mnesia", "log"} {
		if err := os.MkdirAll(n.path(d), 0o700); err != nil {
			return fmt.Errorf("create %s dir: %w", d, err)
		}
	}
	plugins := n.path("plugins")
	if err := linkPlugins(n.in.plugins, plugins); err != nil {
		// Slower but equivalent: boot with every bundled plugin on the path.
		plugins = n.in.plugins
	}
	n.env = n.environ(plugins)
	return nil
}

// config renders rabbitmq.conf.
func (n *Node) config(ca, serverCert, serverKey string) string {
	lines := []string{
		"# Generated by the observerd test harness (test/rabbitmq) on every Start.",
		// TLS only, on loopback only.
		"listeners.tcp = none",
		"listeners.ssl.default = " + net.JoinHostPort(n.listen, strconv.Itoa(n.Port)),
		"ssl_options.cacertfile = " + ca,
		"ssl_options.certfile = " + serverCert,
		"ssl_options.keyfile = " + serverKey,
		// Verify a client certificate when one is sent (EXTERNAL) but let
		// password clients in without one.
		"ssl_options.verify = verify_peer",
		"ssl_options.fail_if_no_peer_cert = false",
		// Erlang/OTP 25 supports TLS 1.3 and 1.2; nothing older is offered.
		"ssl_options.versions.1 = tlsv1.3",
		"ssl_options.versions.2 = tlsv1.2",
		"auth_mechanisms.1 = PLAIN",
		"auth_mechanisms.2 = EXTERNAL",
		"ssl_cert_login_from = common_name",
		// The test user logs in over loopback; guest is never created.
		"loopback_users = none",
		// Created only when the database is blank, i.e. on the first boot,
		// and kept by Restart like any other user.
		"default_vhost = /",
		"default_user = " + User,
		"default_pass = " + n.Password,
		"default_user_tags.administrator = true",
		"default_permissions.configure = .*",
		"default_permissions.read = .*",
		"default_permissions.write = .*",
		"log.console = false",
		"log.file.level = info",
		// A small test disk must not raise a disk alarm that blocks
		// publishers; tests that want one use set_disk_free_limit. The
		// memory watermark keeps its default (0.4) so that
		// `set_vm_memory_high_watermark 0` raises an alarm and a later
		// `set_vm_memory_high_watermark 0.4` clears it.
		"disk_free_limit.absolute = 10MB",
	}
	return strings.Join(lines, "\n") + "\n"
}

// environ builds the environment shared by the node and rabbitmqctl.
func (n *Node) environ(plugins string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		// Anything inherited here could point the node or the CLI at a
		// system installation, a system epmd or systemd.
		if k == "HOME" || k == "NOTIFY_SOCKET" || strings.HasPrefix(k, "RABBITMQ_") || strings.HasPrefix(k, "ERL_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"HOME="+n.Dir, // where Erlang finds .erlang.cookie
		"RABBITMQ_NODENAME="+n.name,
		"RABBITMQ_USE_LONGNAME=false",
		"RABBITMQ_MNESIA_BASE="+n.path("mnesia"),
		"RABBITMQ_LOG_BASE="+n.path("log"),
		"RABBITMQ_LOGS="+n.logFile(),
		"RABBITMQ_CONFIG_FILE="+n.path("rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE="+n.path("advanced.config"), // never written
		"RABBITMQ_CONF_ENV_FILE="+n.path("rabbitmq-env.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+n.path("enabled_plugins"),
		"RABBITMQ_PLUGINS_DIR="+plugins,
		"RABBITMQ_PID_FILE="+n.path("node.pid"),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(n.distPort),
		// rabbitmqctl's own distribution listener: any free port, rather
		// than the shared 35672-35682 range every CLI on the machine uses.
		"RABBITMQ_CTL_DIST_PORT_MIN=0",
		"RABBITMQ_CTL_DIST_PORT_MAX=0",
		"ERL_EPMD_PORT="+strconv.Itoa(n.epmdPort),
		"ERL_EPMD_ADDRESS=127.0.0.1",
		"ERL_LIBS="+plugins,
		"ERL_MAX_ETS_TABLES=50000",
		"ERL_MAX_PORTS=65536",
		"ERL_CRASH_DUMP="+n.path("log", "erl_crash.dump"),
	)
}

// serverArgs are what the upstream rabbitmq-server script passes to erl,
// minus its production tuning (allocator settings, scheduler binding, a
// larger process table, and +sbwt none: disabling scheduler busy-waiting
// alone makes a boot take 5 s instead of 3 s here, the boot being a long
// chain of short messages to the code server), plus:
//   - no epmd start, because the harness runs the node's epmd itself;
//   - distribution started by the VM itself, on loopback and the private
//     dist port: when it is already up, RabbitMQ's prelaunch skips booting
//     a throwaway Erlang VM just to make sure epmd runs (half a second).
func (n *Node) serverArgs() []string {
	dist := strconv.Itoa(n.distPort)
	return []string{
		"-sname", n.name,
		"-kernel", "inet_dist_listen_min", dist,
		"-kernel", "inet_dist_listen_max", dist,
		"-noinput",
		"-boot", "start_sasl",
		"-s", "rabbit", "boot",
		"+W", "w",
		"+B", "i",
		"-start_epmd", "false",
		"-syslog", "logger", "[]",
		"-syslog", "syslog_error_logger", "false",
		"-kernel", "prevent_overlapping_partitions", "false",
		"-kernel", "inet_dist_use_interface", "{127,0,0,1}",
	}
}

// startEpmd runs a private epmd on port in the foreground, owned by the
// harness for the life of the node (or cluster) that uses it, so no
// daemonised epmd outlives Close.
func startEpmd(ctx context.Context, in install, dir string, env []string, port int, timeout time.Duration) (*process, error) {
	cmd := exec.Command(in.epmd, "-port", strconv.Itoa(port), "-address", "127.0.0.1")
	cmd.Dir = dir
	cmd.Env = env
	logPath := filepath.Join(dir, "epmd.log")
	p, err := spawn(cmd, logPath)
	if err != nil {
		return nil, fmt.Errorf("start epmd: %w", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err = poll(ctx, p, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}, func(err error) error {
		return fmt.Errorf("wait for epmd on %s: %w\n%s", addr, err, tail(logPath, 20))
	})
	if err != nil {
		_ = killTree(p)
		return nil, err
	}
	return p, nil
}

// boot starts the node's VM and waits until it is ready. n.life is held.
func (n *Node) boot(ctx context.Context) error {
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	if closed {
		return errors.New("start rabbitmq node: node is closed")
	}
	cmd := exec.Command(n.in.erl, n.serverArgs()...)
	cmd.Dir = n.Dir
	cmd.Env = n.env
	p, err := spawn(cmd, n.consoleFile())
	if err != nil {
		return fmt.Errorf("start rabbitmq node %s: %w", n.name, err)
	}
	n.mu.Lock()
	n.proc = p
	n.mu.Unlock()
	return n.waitReady(ctx, p)
}

// spawn starts cmd in its own process group with output appended to
// logPath and reaps it in the background.
func spawn(cmd *exec.Cmd, logPath string) (*process, error) {
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", logPath, err)
	}
	// The child gets its own copy of the descriptor.
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own group: Kill signals the whole VM, and a Ctrl-C meant for
		// `go test` does not reach the node half-way through a test.
		Setpgid: true,
		// If the test binary dies without Close (timeout panic, SIGKILL),
		// the kernel takes the child with it instead of leaking it.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	registerChild(p)
	go func() {
		p.err = cmd.Wait()
		close(p.done)
		unregisterChild(p)
	}()
	return p, nil
}

// poll calls probe every pollInterval until it succeeds, p exits or ctx
// ends; fail wraps the reason.
func poll(ctx context.Context, p *process, probe func() error, fail func(error) error) error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		err := probe()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fail(fmt.Errorf("process exited (%v)", p.err))
		case <-ctx.Done():
			return fail(fmt.Errorf("%w (last probe: %v)", ctx.Err(), err))
		case <-tick.C:
		}
	}
}

// waitReady waits until the TLS listener accepts an AMQP login of the test
// user and `rabbitmqctl await_startup` agrees the node has fully booted.
func (n *Node) waitReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	fail := func(err error) error {
		return fmt.Errorf("wait for rabbitmq node %s: %w\n%s", n.name, err, n.diagnostics())
	}
	// The AMQP probe is cheap; every rabbitmqctl call boots an Erlang VM,
	// so the CLI runs once, when the listener is already up.
	err := poll(ctx, p, func() error {
		c, err := amqp.DialConfig(n.URLWithPassword(), amqp.Config{
			TLSClientConfig: n.TLSConfig(),
			Dial:            amqp.DefaultDial(dialTimeout),
		})
		if err == nil {
			c.Close()
		}
		return err
	}, fail)
	if err != nil {
		return err
	}
	secs := 1
	if d, ok := ctx.Deadline(); ok {
		secs = max(1, int(time.Until(d)/time.Second))
	}
	if _, err := n.Ctl(ctx, "await_startup", "--timeout", strconv.Itoa(secs)); err != nil {
		return fail(err)
	}
	return nil
}

// URL is the AMQPS URL of the node without a password, as the daemon's
// config names the broker.
func (n *Node) URL() string {
	return fmt.Sprintf("amqps://%s@%s:%d/", n.User, n.Host, n.Port)
}

// URLWithPassword is URL with the password in it, for raw amqp091 clients.
func (n *Node) URLWithPassword() string {
	u := url.URL{
		Scheme: "amqps",
		User:   url.UserPassword(n.User, n.Password),
		Host:   net.JoinHostPort(n.Host, strconv.Itoa(n.Port)),
		Path:   "/",
	}
	return u.String()
}

// TLSConfig returns a fresh client config trusting CAFile, for ServerName
// localhost, TLS 1.2 or later, without a client certificate.
func (n *Node) TLSConfig() *tls.Config {
	pool := x509.NewCertPool()
	if pem, err := os.ReadFile(n.CAFile); err == nil {
		pool.AppendCertsFromPEM(pem)
	}
	return &tls.Config{
		RootCAs:    pool,
		ServerName: n.Host,
		MinVersion: tls.VersionTLS12,
	}
}

// Dial opens an AMQP connection over TLS with password auth, for test
// publishers and consumers.
func (n *Node) Dial() (*amqp.Connection, error) {
	c, err := amqp.DialConfig(n.URLWithPassword(), amqp.Config{
		TLSClientConfig: n.TLSConfig(),
		Dial:            amqp.DefaultDial(dialTimeout),
	})
	if err != nil {
		return nil, fmt.Errorf("dial rabbitmq %s: %w", n.URL(), err)
	}
	return c, nil
}

// Ctl runs rabbitmqctl against this node and returns its combined output.
func (n *Node) Ctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, n.in.ctl, append([]string{"-n", n.name}, args...)...)
	cmd.Dir = n.Dir
	cmd.Env = n.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("run rabbitmqctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// AddUser creates a user with full permissions on vhost "/": a test that
// changes a password does it on its own user, not on the one every other
// test logs in with.
func (n *Node) AddUser(ctx context.Context, user, password string) error {
	if _, err := n.Ctl(ctx, "add_user", user, password); err != nil {
		return err
	}
	_, err := n.Ctl(ctx, "set_permissions", "-p", "/", user, ".*", ".*", ".*")
	return err
}

// ChangePassword changes a user's password; open connections stay open.
func (n *Node) ChangePassword(ctx context.Context, user, password string) error {
	_, err := n.Ctl(ctx, "change_password", user, password)
	return err
}

// CloseConnections closes every connection of user, as an operator does
// to make clients log in again after a password change.
func (n *Node) CloseConnections(ctx context.Context, user string) error {
	_, err := n.Ctl(ctx, "close_all_user_connections", user, "closed by the test")
	return err
}

// Stop stops the node gracefully (SIGTERM, which RabbitMQ handles like
// `rabbitmqctl stop`) and waits until its processes are gone. Stopping a
// stopped node is a no-op.
func (n *Node) Stop(ctx context.Context) error {
	n.life.Lock()
	defer n.life.Unlock()
	return n.stop(ctx)
}

func (n *Node) stop(ctx context.Context) error {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if !p.running() {
		return nil
	}
	kids := descendants(p.cmd.Process.Pid)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop rabbitmq node %s: %w", n.name, err)
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return fmt.Errorf("stop rabbitmq node %s: %w", n.name, ctx.Err())
	}
	if err := waitGone(ctx, kids); err != nil {
		return fmt.Errorf("stop rabbitmq node %s: %w", n.name, err)
	}
	return nil
}

// Kill crashes the node: it SIGKILLs the node's process group (and the
// port helpers that left it, such as erl_child_setup) and waits until they
// are gone. The private epmd stays up for Restart. Killing a stopped node
// is a no-op.
//
// One thing is done before the kill: RabbitMQ keeps its metadata (queues,
// exchanges, bindings, users) in Mnesia, whose transaction log is written
// asynchronously, so a SIGKILL within a second or so of `queue.declare`
// loses the queue (2 in 10 times in this harness's own test). Kill
// therefore first syncs that log (best effort, bounded by flushTimeout), so
// that topology declared before Kill reliably survives, as it does on a
// broker that crashes any later than that. Messages are not affected: a
// confirmed persistent message is already on disk, anything else is lost as
// in any crash.
func (n *Node) Kill() error {
	n.life.Lock()
	defer n.life.Unlock()
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if !p.running() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	// A node too sick to answer is killed all the same.
	_, _ = n.Ctl(ctx, "eval", "mnesia:sync_log().")
	cancel()
	return n.kill()
}

func (n *Node) kill() error {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if !p.running() {
		return nil
	}
	if err := killTree(p); err != nil {
		return fmt.Errorf("kill rabbitmq node %s: %w", n.name, err)
	}
	return nil
}

// killTree SIGKILLs p's process group and p's descendants (which may have
// moved to groups of their own) and waits until all are gone.
func killTree(p *process) error {
	pid := p.cmd.Process.Pid
	kids := descendants(pid)
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), killTimeout)
	defer cancel()
	select {
	case <-p.done:
	case <-ctx.Done():
		return fmt.Errorf("wait for pid %d: %w", pid, ctx.Err())
	}
	return waitGone(ctx, kids)
}

// Restart starts the node again after Stop or Kill: same name, port,
// database, certificates and user. A running node is stopped first.
func (n *Node) Restart(ctx context.Context) error {
	n.life.Lock()
	defer n.life.Unlock()
	if err := n.stop(ctx); err != nil {
		return err
	}
	return n.boot(ctx)
}

// Close stops the node (killing it if a graceful stop fails), stops its
// epmd and removes Dir if Start created it. It is safe to call twice.
func (n *Node) Close() error {
	n.life.Lock()
	defer n.life.Unlock()
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	epmd := n.epmd
	n.mu.Unlock()

	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := n.stop(ctx); err != nil {
		if err := n.kill(); err != nil {
			errs = append(errs, err)
		}
	}
	if epmd.running() {
		if err := killTree(epmd); err != nil {
			errs = append(errs, fmt.Errorf("kill epmd: %w", err))
		}
	}
	if n.tempDir && len(errs) == 0 {
		if err := removeTempDir(n.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// LogTail returns the last lines of the node's log (or, before the node
// has set up logging, of its console output), for failure messages.
func (n *Node) LogTail(lines int) string {
	if s := tail(n.logFile(), lines); s != "" {
		return s
	}
	return tail(n.consoleFile(), lines)
}

// diagnostics is what a failed start reports: both the log and the console,
// because config errors only ever reach the console.
func (n *Node) diagnostics() string {
	return fmt.Sprintf("--- %s (tail)\n%s\n--- %s (tail)\n%s",
		n.logFile(), tail(n.logFile(), 40), n.consoleFile(), tail(n.consoleFile(), 20))
}

func (n *Node) path(elem ...string) string {
	return filepath.Join(append([]string{n.Dir}, elem...)...)
}

func (n *Node) logFile() string     { return n.path("log", "node.log") }
func (n *Node) consoleFile() string { return n.path("log", "console.log") }

// tail returns the last lines of a file, reading at most its last 256 KiB.
func tail(path string, lines int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const window = 256 << 10
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(0, st.Size()-window)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(string(buf), "\n"), "\n")
	if lines > 0 && len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// freePorts reserves k distinct free TCP ports on 127.0.0.1 (a port free
// there is free on the other loopback addresses too, unless someone binds
// exactly one of those). They are released before use, so another process
// could take one in between; holding all k at once at least keeps them
// distinct from each other.
func freePorts(k int) ([]int, error) {
	var ports []int
	for range k {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomHex(nbytes int) string {
	b := make([]byte, nbytes)
	// crypto/rand.Read never fails on Linux (and panics where it could).
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// DeclareQuorum declares, as the daemon's broker.queues does, the durable
// topic exchange and a durable quorum queue bound to it with each of
// bindings, so that the queue keeps every event from the first one. On a
// Cluster the queue gets a member on every running node: RabbitMQ's
// default membership, as when the daemon declares it.
func DeclareQuorum(ch *amqp.Channel, exchange, queue string, bindings ...string) error {
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", exchange, err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}); err != nil {
		return fmt.Errorf("declare queue %s: %w", queue, err)
	}
	for _, b := range bindings {
		if err := ch.QueueBind(queue, b, exchange, false, nil); err != nil {
			return fmt.Errorf("bind %s to %s: %w", queue, b, err)
		}
	}
	return nil
}
