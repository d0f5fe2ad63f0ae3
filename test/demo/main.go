// Command demo is `make run`: it starts a private RabbitMQ node with TLS
// (test/rabbitmq), or with --cluster N (`make run CLUSTER=3`) a cluster of
// N such nodes whose every URL the daemon gets, the demo observable service on 127.0.0.1:8080 flapping
// every 20 s, observerd with the example policies of configs/policies, and
// `observerctl tail` printing every event as it arrives. Ctrl-C stops
// everything it started. The daemon also declares demo.events, bound to
// every event, which nothing reads (tail binds a queue of its own): a
// RabbitMQ policy keeps its newest 10,000 events, so that it does not grow
// for as long as the demo runs.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/polar/observerd/test/rabbitmq"
)

const (
	// demoQueue is the queue the daemon declares, bound to every event.
	demoQueue = "demo.events"
	// keptEvents is what demoQueue keeps: the newest, the oldest dropped.
	keptEvents = 10_000
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	bin := fs.String("bin", "bin", "directory of the built binaries")
	dir := fs.String("dir", ".run", "working directory for the broker, the config and the state")
	cluster := fs.Int("cluster", 0, "run a RabbitMQ cluster of this many nodes (1 to 9) instead of a single node")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := demo(ctx, *bin, *dir, *cluster, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}
	return 0
}

func demo(ctx context.Context, bin, dir string, cluster int, stdout, stderr io.Writer) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clean %s: %w", dir, err)
	}
	b, err := startBroker(ctx, filepath.Join(dir, "rabbitmq"), cluster, stderr)
	if err != nil {
		return err
	}
	defer b.Close()
	if err := bound(ctx, b.ctl, demoQueue, keptEvents); err != nil {
		return err
	}

	logs, err := os.Create(filepath.Join(dir, "observerd.log"))
	if err != nil {
		return err
	}
	defer logs.Close()

	observable := exec.Command(filepath.Join(bin, "observable"), "--listen", "127.0.0.1:8080", "--mode", "flap", "--flap-period", "20s",
		"--pid-file", filepath.Join(dir, "observable.pid"))
	observable.Stderr = logs
	if err := observable.Start(); err != nil {
		return fmt.Errorf("start observable: %w", err)
	}
	defer stopProcess(observable)

	policies, err := filepath.Abs("configs/policies")
	if err != nil {
		return err
	}
	// The example plugins that make build puts next to the binaries.
	plugins, err := filepath.Abs(filepath.Join(bin, "plugins"))
	if err != nil {
		return err
	}
	// The admin socket's path has at most 107 bytes: the working
	// directory may be deeper than that.
	sockets, err := os.MkdirTemp("", "observerd-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(sockets)
	config := filepath.Join(dir, "observerd.yaml")
	cfg := fmt.Sprintf(`# written by make run
node: demo
policy_dir: %s
plugin_dir: %s
state_dir: %s
log: {level: info, format: json}
admin: {listen: "127.0.0.1:9464", socket: %s}
# configs/policies/web.yaml observes the demo service's process by name.
allowed_process_names: [observable]
broker:
  urls: [%s]
  password_file: %s
  tls: {ca_file: %s}
  queues:
    - {name: %s, bindings: ["#"]}
`, policies, plugins, filepath.Join(dir, "state"), filepath.Join(sockets, "admin.sock"), quoted(b.urls), b.passwordFile, b.caFile, demoQueue)
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		return err
	}
	daemon := exec.Command(filepath.Join(bin, "observerd"), "--config", config)
	daemon.Stdout, daemon.Stderr = logs, logs
	if err := daemon.Start(); err != nil {
		return fmt.Errorf("start observerd: %w", err)
	}
	defer stopProcess(daemon)

	fmt.Fprintf(stderr, "demo: observerd running (logs: %s, admin: http://127.0.0.1:9464/readyz, commands: %s pause --config %s POLICY/OBSERVER); "+
		"the demo service flaps every 20 s; the queue %s keeps the newest %d events. Ctrl-C stops everything.\n\n",
		logs.Name(), filepath.Join(bin, "observerctl"), config, demoQueue, keptEvents)
	tail := exec.Command(filepath.Join(bin, "observerctl"), "tail", "--config", config)
	tail.Stdout, tail.Stderr = stdout, stderr
	if err := tail.Start(); err != nil {
		return fmt.Errorf("start observerctl tail: %w", err)
	}
	defer stopProcess(tail)

	exited := make(chan error, 1)
	go func() { exited <- daemon.Wait() }()
	select {
	case <-ctx.Done():
		fmt.Fprintln(stderr, "\ndemo: stopping ...")
		return nil
	case err := <-exited:
		return fmt.Errorf("observerd exited: %v (see %s)", err, logs.Name())
	}
}

// ctlFunc runs rabbitmqctl: Node.Ctl or Cluster.Ctl.
type ctlFunc func(ctx context.Context, args ...string) (string, error)

// broker is the demo's RabbitMQ: a node or a cluster.
type broker struct {
	urls                 []string
	passwordFile, caFile string
	ctl                  ctlFunc
	io.Closer
}

// startBroker starts a single node in dir, or a cluster of nodes nodes.
func startBroker(ctx context.Context, dir string, nodes int, stderr io.Writer) (*broker, error) {
	if nodes == 0 {
		fmt.Fprintln(stderr, "demo: starting RabbitMQ with TLS ...")
		n, err := rabbitmq.Start(ctx, rabbitmq.Options{Dir: dir})
		if err != nil {
			return nil, err
		}
		return &broker{urls: []string{n.URL()}, passwordFile: n.PasswordFile, caFile: n.CAFile, ctl: n.Ctl, Closer: n}, nil
	}
	fmt.Fprintf(stderr, "demo: starting a RabbitMQ cluster of %d nodes with TLS ...\n", nodes)
	c, err := rabbitmq.StartCluster(ctx, rabbitmq.ClusterOptions{Nodes: nodes, Dir: dir})
	if err != nil {
		return nil, err
	}
	for _, n := range c.Nodes {
		fmt.Fprintf(stderr, "demo: node %s at %s (logs: %s)\n", n.Name(), n.URL(), filepath.Join(n.Dir, "log"))
	}
	return &broker{urls: c.URLs(), passwordFile: c.PasswordFile, caFile: c.CAFile, ctl: c.Ctl, Closer: c}, nil
}

// quoted renders strings as the items of a YAML flow sequence.
func quoted(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// bound sets the RabbitMQ policy that keeps the newest keep messages of
// queue and drops the oldest: a policy rather than queue arguments, which
// the daemon's broker.queues does not set (and a queue cannot change).
func bound(ctx context.Context, ctl ctlFunc, queue string, keep int) error {
	definition := fmt.Sprintf(`{"max-length": %d, "overflow": "drop-head"}`, keep)
	if _, err := ctl(ctx, "set_policy", "--apply-to", "queues", queue, "^"+regexp.QuoteMeta(queue)+"$", definition); err != nil {
		return fmt.Errorf("bound queue %s: %w", queue, err)
	}
	return nil
}

// stopProcess asks a process to stop and kills it if it has not within 15 s.
func stopProcess(cmd *exec.Cmd) {
	if cmd.Process == nil || cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _, _ = cmd.Process.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
	}
}
