//go:build integration

package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/actortest"
	"github.com/polar/observerd/test/rabbitmq"
)

var (
	node *rabbitmq.Node
	bin  string // directory holding observerd and observable
)

const (
	wait = 30 * time.Second
	tick = 20 * time.Millisecond
)

func TestMain(m *testing.M) {
	bin = os.Getenv("OBSERVERD_BIN")
	if bin == "" {
		// `go test` on its own: build the binaries this test runs.
		dir, err := os.MkdirTemp("", "observerd-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer os.RemoveAll(dir)
		out, err := exec.Command("go", "build", "-o", dir+"/", "github.com/polar/observerd/cmd/observerd", "github.com/polar/observerd/cmd/observable",
			"github.com/polar/observerd/cmd/observerctl").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build binaries: %v\n%s", err, out)
			os.Exit(1)
		}
		// The example plugins (Go, C, Rust), as make build puts them in
		// bin/plugins: its rules are the one place that says how.
		if out, err := exec.Command("make", "-s", "-C", "../..", "plugins", "BIN="+dir).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build the example plugins (make plugins): %v\n%s", err, out)
			os.Exit(1)
		}
		bin = dir
	}
	rabbitmq.Main(m, &node)
}

func randomName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// adminAddr is a loopback address of its own for a daemon's admin
// listener: a random address of 127/8 (never 127.0.0.x) on observerd's
// default port. Why not a free port of 127.0.0.1 (freeAddr): released
// before the daemon binds it, it may be taken meanwhile, by another
// test's daemon or by an outgoing connection's ephemeral port, which are
// all on 127.0.0.1.
func adminAddr(t *testing.T) string {
	t.Helper()
	b := make([]byte, 3)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return fmt.Sprintf("127.%d.%d.%d:9464", 1+b[0]%254, b[1], 1+b[2]%254)
}

// freeAddr is a loopback address nothing listens on, as the test starts.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// proc is a child process whose output is kept for assertions.
type proc struct {
	cmd  *exec.Cmd
	out  *actortest.SyncBuffer
	done chan struct{}
	err  error
}

func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	return startCmd(t, exec.Command(filepath.Join(bin, name), args...))
}

// startCmd starts cmd, a binary set up as the test needs (its user, its
// environment), as start does.
func startCmd(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	name := filepath.Base(cmd.Path)
	p := &proc{cmd: cmd, out: &actortest.SyncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	require.NoError(t, p.cmd.Start())
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out.String())
		}
	})
	return p
}

// exitCode waits for the process to exit and returns its code.
func (p *proc) exitCode(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("process did not exit within %s; output:\n%s", within, p.out.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig))
}

// startObservable runs bin/observable on a free port and returns its URL.
func startObservable(t *testing.T) string {
	t.Helper()
	_, addr := runObservable(t, "127.0.0.1:0")
	return "http://" + addr
}

// runObservable starts bin/observable listening on listen (port 0: a free
// one) with extra flags, and returns it with the address it listens on.
func runObservable(t *testing.T, listen string, extra ...string) (*proc, string) {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	p := start(t, "observable", append([]string{"--listen", listen, "--ready-file", ready}, extra...)...)
	var addr []byte
	require.Eventually(t, func() bool {
		var err error
		addr, err = os.ReadFile(ready)
		return err == nil && len(addr) > 0
	}, wait, tick, "observable did not become ready")
	return p, strings.TrimSpace(string(addr))
}

// daemon is one observerd set-up: its files, its exchange and queue, and
// the broker they are on.
type daemon struct {
	dir, config, admin, socket, exchange, queue, node string
	broker                                            rabbit
}

// rabbit is where a daemon's queue is: the package's node, or a cluster.
type rabbit interface {
	Dial() (*amqp.Connection, error)
}

type daemonOption func(*daemonConfig)

type daemonConfig struct {
	broker    rabbit
	brokerTLS string // the broker.tls mapping
	auth      string
	admin     string
	urls      []string
	urlOrder  string // broker.url_order
	outbox    string // the outbox mapping
	observers string // the policy's observers list
	limits    string // the limits mapping
	extra     string // more top-level config keys, as YAML lines
	node      string // the node name; default e2e-node.example
	password  string // broker.password_file; default the harness user's
}

// withLogin logs in as another broker user than the harness's.
func withLogin(user, passwordFile string) daemonOption {
	return func(c *daemonConfig) {
		c.urls = []string{strings.Replace(node.URL(), "observer@", user+"@", 1)}
		c.password = passwordFile
	}
}

// withNode names the node.
func withNode(name string) daemonOption { return func(c *daemonConfig) { c.node = name } }

// withURLs sets broker.urls, tried in the order given (url_order: listed).
func withURLs(urls ...string) daemonOption {
	return func(c *daemonConfig) { c.urls, c.urlOrder = urls, "listed" }
}

// withOutbox sets the outbox mapping, e.g. "{max_bytes: 1MiB}".
func withOutbox(o string) daemonOption { return func(c *daemonConfig) { c.outbox = o } }

// withLoad makes the policy stream: n http observers every 20 ms, a few
// hundred events per second in all.
func withLoad(n int) daemonOption {
	return func(c *daemonConfig) {
		c.observers = ""
		for i := range n {
			c.observers += fmt.Sprintf("    - {name: h%d, kind: http, interval: 20ms, timeout: 15ms, http: {path: /healthz}}\n", i)
		}
	}
}

// withObservers sets the policy's observers list (YAML list items indented
// by four spaces).
func withObservers(list string) daemonOption { return func(c *daemonConfig) { c.observers = list } }

func withTLS(tls string) daemonOption { return func(c *daemonConfig) { c.brokerTLS = tls } }

// withLimits sets the daemon's limits mapping. The default lifts them
// far above what the tests ask for, so that only the tests of the limits
// meet them.
func withLimits(l string) daemonOption { return func(c *daemonConfig) { c.limits = l } }

// withConfig appends top-level keys (YAML lines) to the daemon's config.
func withConfig(extra string) daemonOption { return func(c *daemonConfig) { c.extra += extra } }
func withAdmin(a string) daemonOption      { return func(c *daemonConfig) { c.admin = a } }

// withExternalAuth logs in with the harness's client certificate (SASL
// EXTERNAL) instead of a password.
func withExternalAuth() daemonOption {
	return func(c *daemonConfig) {
		c.auth = "external"
		c.brokerTLS = fmt.Sprintf("{ca_file: %q, cert_file: %q, key_file: %q}", node.CAFile, node.CertFile, node.KeyFile)
	}
}

// newDaemon writes a config and a policy directory. The policy observes
// target every 200 ms.
func newDaemon(t *testing.T, target string, opts ...daemonOption) *daemon {
	t.Helper()
	d := &daemon{dir: t.TempDir(), exchange: randomName("e2e.x."), queue: randomName("e2e-q-"), node: "e2e-node.example"}
	c := daemonConfig{
		broker: node, password: node.PasswordFile,
		brokerTLS: fmt.Sprintf("{ca_file: %q}", node.CAFile), auth: "plain", admin: adminAddr(t),
		urls: []string{node.URL()}, urlOrder: "spread", outbox: "{}",
		limits:    "{min_interval: 10ms, max_requests_per_second: 10000, max_concurrent_requests: 64, max_events_per_second: 100000}",
		observers: "    - {name: health, kind: http, interval: 200ms, timeout: 150ms, http: {path: /healthz, expect_status: [200]}}\n",
	}
	for _, o := range opts {
		o(&c)
	}
	if c.node != "" {
		d.node = c.node
	}
	d.admin, d.broker = c.admin, c.broker
	// A unix socket's path has at most 107 bytes: t.TempDir() is too long.
	sockDir, err := os.MkdirTemp("", "od")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	d.socket = filepath.Join(sockDir, "admin.sock")
	require.NoError(t, os.MkdirAll(filepath.Join(d.dir, "policies"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(d.dir, "plugins"), 0o755))
	d.config = filepath.Join(d.dir, "observerd.yaml")
	cfg := fmt.Sprintf(`node: %s
policy_dir: %s
plugin_dir: %s
state_dir: %s
log: {level: debug, format: json}
admin: {listen: %q, socket: %q}
outbox: %s
limits: %s
broker:
  urls: %s
  url_order: %s
  auth: %s
  password_file: %s
  tls: %s
  exchange: %s
  confirm_window: 64
  queues:
    - {name: %s, bindings: ["#"]}
%s`, d.node, filepath.Join(d.dir, "policies"), filepath.Join(d.dir, "plugins"), filepath.Join(d.dir, "state"),
		c.admin, d.socket, c.outbox, c.limits, yamlList(c.urls), c.urlOrder, c.auth, c.password, c.brokerTLS, d.exchange, d.queue, c.extra)
	require.NoError(t, os.WriteFile(d.config, []byte(cfg), 0o600))
	if target != "" {
		pol := fmt.Sprintf(`apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: web, url: %q}
  limits: {max_requests_per_second: 2000, max_concurrent_requests: 8}
  observers:
%s`, target, c.observers)
		require.NoError(t, os.WriteFile(filepath.Join(d.dir, "policies", "web.yaml"), []byte(pol), 0o644))
	}
	return d
}

func (d *daemon) start(t *testing.T) *proc {
	t.Helper()
	return start(t, "observerd", "--config", d.config)
}

// readyz returns /readyz's status code and body ("" when unreachable).
func (d *daemon) readyz() (int, string) {
	resp, err := http.Get("http://" + d.admin + "/readyz")
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

// consumer is an independent consumer of the daemon's queue.
type consumer struct {
	mu         sync.Mutex
	deliveries []amqp.Delivery
	events     []*messages.Event
}

// consume declares the daemon's queue (as the daemon will: durable quorum,
// bound to everything) and collects what arrives until the test ends.
func (d *daemon) consume(t *testing.T) *consumer {
	t.Helper()
	return d.consumeBound(t, d.queue, "#")
}

// consumeBound declares queue, bound to the daemon's exchange by binding,
// and collects what arrives until the test ends.
func (d *daemon) consumeBound(t *testing.T, queue, binding string) *consumer {
	t.Helper()
	conn, err := d.broker.Dial()
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, rabbitmq.DeclareQuorum(ch, d.exchange, queue, binding))
	dels, err := ch.Consume(queue, "", true, false, false, false, nil)
	require.NoError(t, err)
	c := &consumer{}
	go func() {
		for del := range dels {
			ev := &messages.Event{}
			if proto.Unmarshal(del.Body, ev) != nil {
				ev = nil
			}
			c.mu.Lock()
			c.deliveries = append(c.deliveries, del)
			c.events = append(c.events, ev)
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *consumer) snapshot() ([]amqp.Delivery, []*messages.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]amqp.Delivery(nil), c.deliveries...), append([]*messages.Event(nil), c.events...)
}

// waitFor waits until an event of type typ arrived and returns it with
// its delivery.
func (c *consumer) waitFor(t *testing.T, typ string) (amqp.Delivery, *messages.Event) {
	t.Helper()
	var del amqp.Delivery
	var ev *messages.Event
	require.Eventually(t, func() bool {
		ds, evs := c.snapshot()
		for i, e := range evs {
			if e != nil && e.Type == typ {
				del, ev = ds[i], e
				return true
			}
		}
		return false
	}, wait, tick, "no %s event arrived", typ)
	return del, ev
}

func (c *consumer) ofType(typ string) []*messages.Event {
	_, evs := c.snapshot()
	var out []*messages.Event
	for _, e := range evs {
		if e != nil && e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// freeAddrHeld returns a loopback address that stays taken until the test
// ends.
func freeAddrHeld(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

func yamlList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// declare declares the daemon's queue (as the daemon will) so that it
// keeps every event from the first one, without consuming.
func (d *daemon) declare(t *testing.T) {
	t.Helper()
	conn, err := d.broker.Dial()
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, rabbitmq.DeclareQuorum(ch, d.exchange, d.queue, "#"))
}

// queued returns how many events wait in the daemon's queue (-1 while the
// broker cannot say).
func (d *daemon) queued() int {
	conn, err := d.broker.Dial()
	if err != nil {
		return -1
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return -1
	}
	q, err := ch.QueueDeclarePassive(d.queue, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
	if err != nil {
		return -1
	}
	return q.Messages
}

// drain consumes every event in the daemon's queue.
func (d *daemon) drain(t *testing.T) []*messages.Event {
	t.Helper()
	n := d.queued()
	require.GreaterOrEqual(t, n, 0)
	conn, err := d.broker.Dial()
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.Qos(1000, 0, false))
	dels, err := ch.Consume(d.queue, "", true, false, false, false, nil)
	require.NoError(t, err)
	out := make([]*messages.Event, 0, n)
	timeout := time.After(wait)
	for len(out) < n {
		select {
		case del := <-dels:
			ev := &messages.Event{}
			require.NoError(t, proto.Unmarshal(del.Body, ev))
			out = append(out, ev)
		case <-timeout:
			t.Fatalf("drained %d of %d events", len(out), n)
		}
	}
	return out
}

// delivery is what a consumer saw: every sequence, how often.
type delivery struct {
	seen     map[uint64]int
	max      uint64
	dups     int
	overflow [][2]uint64 // ranges reported by outbox.overflow
}

func deliveryOf(evs []*messages.Event) delivery {
	d := delivery{seen: map[uint64]int{}}
	for _, ev := range evs {
		d.seen[ev.Sequence]++
		if d.seen[ev.Sequence] > 1 {
			d.dups++
		}
		d.max = max(d.max, ev.Sequence)
		if o := ev.GetOutboxOverflow(); o != nil && d.seen[ev.Sequence] == 1 {
			d.overflow = append(d.overflow, [2]uint64{o.FirstSequence, o.LastSequence})
		}
	}
	return d
}

// missing returns the sequences in 1..max that never arrived.
func (d delivery) missing() []uint64 {
	var out []uint64
	for s := uint64(1); s <= d.max; s++ {
		if d.seen[s] == 0 {
			out = append(out, s)
		}
	}
	return out
}

// logCount counts occurrences of s in the process output.
func (p *proc) logCount(s string) int { return strings.Count(p.out.String(), s) }
