package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// controlResult is row 8: the command round trip, `observerctl remote
// status` to every answer, for one daemon and for a fleet.
type controlResult struct {
	fleets []controlFleet
}

type controlFleet struct {
	daemons  int
	ctl      []time.Duration // observerctl remote status, exec to exit with every answer
	baseline []time.Duration // a raw amqp091-go RPC to as many responders, in this process
	rss      uint64          // the daemons' mean VmRSS, answering
}

// controlRounds is how many round trips each side of a fleet is timed.
const controlRounds = 30

// controlFleetSize is the large fleet's daemons: at least 50, as the
// issue asks; each has one observer, so that it costs little but a real
// daemon's start.
const controlFleetSize = 50

// control starts 1, then controlFleetSize daemons with the control channel
// enabled, times `observerctl remote status` to every node's answer, and,
// as the baseline, a raw RPC through the same broker: one request on a
// topic exchange to as many in-process responders, each answering on
// direct reply-to.
func (e *env) control(ctx context.Context) (*controlResult, error) {
	res := &controlResult{}
	for _, n := range []int{1, controlFleetSize} {
		e.say("control: %d daemon(s), %d round trips of observerctl remote status, and of a raw RPC", n, controlRounds)
		f, err := e.controlFleet(ctx, n)
		if err != nil {
			return nil, err
		}
		res.fleets = append(res.fleets, f)
	}
	return res, nil
}

func (e *env) controlFleet(ctx context.Context, n int) (controlFleet, error) {
	f := controlFleet{daemons: n}
	label := e.name("fleet")
	label = strings.ReplaceAll(label, ".", "-")
	var nodes []string
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			_ = p.Wait()
		}
		e.deleteControlQueues(nodes)
	}()
	for i := range n {
		node := fmt.Sprintf("%s-%d", label, i)
		cmd, admin, err := e.startControlDaemon(node, label, daemonAdmin(controlAddrBlock, i))
		if err != nil {
			return f, err
		}
		procs = append(procs, cmd)
		nodes = append(nodes, node)
		if err := waitReady(ctx, admin, node); err != nil {
			return f, fmt.Errorf("daemon %s: %w", node, err)
		}
	}
	ctlBin, err := filepath.Abs("bin/observerctl")
	if err != nil {
		return f, err
	}
	opConfig := filepath.Join(e.work, label+"-operator.yaml")
	if err := os.WriteFile(opConfig, []byte(fmt.Sprintf("broker:\n  urls: [%q]\n  password_file: %s\n  tls: {ca_file: %q}\n",
		e.node.URL(), e.node.PasswordFile, e.node.CAFile)), 0o600); err != nil {
		return f, err
	}
	expected := strings.Join(nodes, ",")
	for range controlRounds {
		cmd := exec.CommandContext(ctx, ctlBin, "remote", "status", "--config", opConfig, "--group", label,
			"--nodes", expected, "--wait", "30s", "--json")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		began := time.Now()
		if err := cmd.Run(); err != nil {
			return f, fmt.Errorf("observerctl remote status: %w: %s", err, lastLines(out.String(), 5))
		}
		f.ctl = append(f.ctl, time.Since(began))
	}
	for _, p := range procs {
		kv, err := procKV(fmt.Sprintf("/proc/%d/status", p.Process.Pid))
		if err == nil {
			f.rss += kv["VmRSS"] << 10
		}
	}
	f.rss /= uint64(n)
	f.baseline, err = e.rawRPC(ctx, n)
	return f, err
}

// startControlDaemon starts bin/observerd as node, labelled label, with
// the control channel enabled for the bench's broker user, and one tcp
// observer; it returns the process and its admin address.
func (e *env) startControlDaemon(node, label, admin string) (*exec.Cmd, string, error) {
	bin, err := filepath.Abs("bin/observerd")
	if err != nil {
		return nil, "", err
	}
	dir, err := os.MkdirTemp(e.work, "control-")
	if err != nil {
		return nil, "", fmt.Errorf("create daemon dir: %w", err)
	}
	for _, sub := range []string{"policies", "plugins"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, "", fmt.Errorf("create daemon dir: %w", err)
		}
	}
	pol := `apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: port}
spec:
  target: {name: broker, url: "http://127.0.0.1:9"}
  observers:
    - {name: tcp, kind: tcp, interval: 10s, tcp: {}}
`
	if err := os.WriteFile(filepath.Join(dir, "policies", "port.yaml"), []byte(pol), 0o600); err != nil {
		return nil, "", err
	}
	cfg := fmt.Sprintf(`node: %s
labels: [%s]
policy_dir: %s
plugin_dir: %s
state_dir: %s
log: {level: warn, format: json}
admin: {listen: %q, socket: ""}
broker:
  urls: [%q]
  password_file: %s
  tls: {ca_file: %q}
  exchange: %s
  queues: [{name: %s.events, bindings: ["#"]}]
control:
  enabled: true
  max_commands_per_second: 100
  allow: {observer: [get_state]}
`, node, label, filepath.Join(dir, "policies"), filepath.Join(dir, "plugins"), filepath.Join(dir, "state"), admin,
		e.node.URL(), e.node.PasswordFile, e.node.CAFile, label, label)
	config := filepath.Join(dir, "observerd.yaml")
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		return nil, "", err
	}
	cmd := exec.Command(bin, "--config", config)
	logFile, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		return nil, "", err
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start observerd: %w", err)
	}
	return cmd, admin, nil
}

// Why does each daemon of the bench get an address of its own?
//
// A free port picked by the bench and released for the daemon can be
// taken by any other socket before the daemon binds it: one daemon of a
// hundred then stops (its admin listener fails), and the bench, polling
// that address, reads another daemon's state as if it were its own. A
// loopback address per daemon, with the daemons' default port, collides
// with nothing: ephemeral ports are above it, and nothing else binds
// these addresses.

// Blocks of 127.0.0.0/8 for the rows' daemons, apart from the RabbitMQ
// nodes' (127.0.0.x) and from each other.
const (
	controlAddrBlock = 2
	fleetAddrBlock   = 1
	// adminPort is the daemons' default admin port.
	adminPort = 9464
)

// daemonAdmin is the admin address of daemon i of a row's block.
func daemonAdmin(block, i int) string {
	return fmt.Sprintf("127.%d.%d.%d:%d", block, i/250, i%250+1, adminPort)
}

// waitReady waits until the daemon node at admin is ready (its broker
// connected, its policies loaded), and checks that it is the daemon
// answering there.
func waitReady(ctx context.Context, admin, node string) error {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return checkNode(ctx, admin, node)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return errors.New("not ready within a minute")
}

// checkNode reads the node name of the daemon at admin from its
// /v1/state.
func checkNode(ctx context.Context, admin, node string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/v1/state", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("read /v1/state: %w", err)
	}
	defer resp.Body.Close()
	var st struct {
		Node string `json:"node"`
	}
	// A /v1/state of a few observers is a few KB; 1 MiB is plenty.
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return fmt.Errorf("read /v1/state: %w", err)
	}
	if st.Node != node {
		return fmt.Errorf("%s answers as node %q", admin, st.Node)
	}
	return nil
}

// rawRPC is the baseline: n responders in this process, each consuming a
// queue of its own bound to a topic exchange, answering a request on its
// reply_to (direct reply-to); a client logs in, publishes a request and
// waits for every answer, controlRounds times (rawRound).
func (e *env) rawRPC(ctx context.Context, n int) ([]time.Duration, error) {
	conn, err := e.dialRaw()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	exchange := e.name("rpc")
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, false, true, false, false, nil); err != nil {
		return nil, err
	}
	for i := range n {
		rch, err := conn.Channel()
		if err != nil {
			return nil, err
		}
		q, err := rch.QueueDeclare("", false, true, true, false, nil)
		if err != nil {
			return nil, err
		}
		if err := rch.QueueBind(q.Name, "all", exchange, false, nil); err != nil {
			return nil, err
		}
		dels, err := rch.Consume(q.Name, "", false, true, false, false, nil)
		if err != nil {
			return nil, err
		}
		go func(i int) {
			for d := range dels {
				_ = rch.PublishWithContext(ctx, "", d.ReplyTo, false, false, amqp.Publishing{CorrelationId: d.CorrelationId, Body: []byte(fmt.Sprint(i))})
				_ = d.Ack(false)
			}
		}(i)
	}
	var out []time.Duration
	for round := range controlRounds {
		took, err := e.rawRound(ctx, exchange, fmt.Sprint(round), n)
		if err != nil {
			return nil, err
		}
		out = append(out, took)
	}
	return out, nil
}

// rawRound is one RPC of the baseline as observerctl makes it: a fresh
// TLS connection and login, a channel consuming direct reply-to, the
// request, every answer.
func (e *env) rawRound(ctx context.Context, exchange, id string, n int) (time.Duration, error) {
	began := time.Now()
	conn, err := e.dialRaw()
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	replies, err := ch.Consume("amq.rabbitmq.reply-to", "", true, true, false, false, nil)
	if err != nil {
		return 0, err
	}
	if err := ch.PublishWithContext(ctx, exchange, "all", false, false, amqp.Publishing{CorrelationId: id, ReplyTo: "amq.rabbitmq.reply-to"}); err != nil {
		return 0, err
	}
	for got := 0; got < n; {
		select {
		case d := <-replies:
			if d.CorrelationId == id {
				got++
			}
		case <-time.After(30 * time.Second):
			return 0, fmt.Errorf("raw RPC: %d of %d answers", got, n)
		}
	}
	return time.Since(began), nil
}

// deleteControlQueues deletes the fleet's control queues, which outlive
// its daemons.
func (e *env) deleteControlQueues(nodes []string) {
	conn, err := e.dialRaw()
	if err != nil {
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	for _, n := range nodes {
		_, _ = ch.QueueDelete("polar.control."+n, false, false, false)
	}
	if len(nodes) > 0 {
		// The fleet's events queue: the nodes' names are <label>-<i>.
		label := nodes[0][:strings.LastIndex(nodes[0], "-")]
		_, _ = ch.QueueDelete(label+".events", false, false, false)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
