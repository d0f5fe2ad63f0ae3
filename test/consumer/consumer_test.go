//go:build integration

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/actors/broker"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/rabbitmq"
)

// The queues of the consumers, each declared and bound by its consumer
// before the daemons start, so that each holds every event.
const (
	goQueue     = "consumer-go"         // Example
	pythonQueue = "consumer-python"     // TestPythonConsumer
	besideQueue = "consumer-go-reading" // the Go consumer in TestPythonConsumer
)

const (
	// setupTimeout bounds building the daemon, running two of them until
	// their observers changed state, and stopping them (8 s of drain at
	// most each).
	setupTimeout = 3 * time.Minute
	// consumerTimeout bounds one run of a consumer over a filled queue.
	consumerTimeout = time.Minute
	pollInterval    = 20 * time.Millisecond
)

var (
	rabbit *rabbitmq.Node
	// python is the directory of the classes that protoc generated.
	python string
	// daemonJSON are the bodies node-b.example published (broker.encoding:
	// json), for TestJSONRoundTripsThroughPython.
	daemonJSON [][]byte
)

func TestMain(m *testing.M) { rabbitmq.MainWith(m, &rabbit, setup) }

// setup fills the consumers' queues with what consumers of real daemons
// see: two daemons, one publishing protobuf and one JSON, each run until
// its observer has changed state and then stopped; one event of the first
// published again, as a daemon does when a confirm is lost; and the
// events of a third node whose outbox dropped a range while its broker was
// away (reported) and that lost one more (not reported).
func setup(n *rabbitmq.Node) error {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	os.Setenv("AMQP_URL", n.URLWithPassword())
	os.Setenv("AMQP_CA_FILE", n.CAFile)
	daemon, err := observerd(ctx, n.Dir)
	if err != nil {
		return err
	}
	if python, err = generatePython(ctx, n.Dir); err != nil {
		return err
	}
	// As docs/consumers.md says: each consumer runs once before the
	// daemons publish, to declare and bind its queue.
	for _, q := range []string{goQueue, besideQueue} {
		if err := run(ctx, []string{"-queue", q, "-drain"}, io.Discard); err != nil {
			return fmt.Errorf("declare %s: %w", q, err)
		}
	}
	if _, err := runPython(ctx, pythonQueue); err != nil {
		return fmt.Errorf("declare %s: %w", pythonQueue, err)
	}

	t, err := newTap(n)
	if err != nil {
		return err
	}
	defer t.close()
	if err := runDaemons(ctx, daemon, n, t); err != nil {
		return err
	}
	daemonJSON = t.bodies("application/json")
	first, ok := t.find(func(ev *messages.Event) bool { return ev.Node == "node-a.example" && ev.Sequence == 1 })
	if !ok {
		return errors.New("node-a.example's sequence 1 did not arrive")
	}
	again := []amqp.Publishing{{
		Headers: first.Headers, ContentType: first.ContentType, DeliveryMode: first.DeliveryMode,
		CorrelationId: first.CorrelationId, MessageId: first.MessageId, Timestamp: first.Timestamp,
		Type: first.Type, AppId: first.AppId, Body: first.Body,
	}}
	keys := []string{first.RoutingKey}
	for _, ev := range lossyNode() {
		body, err := proto.Marshal(ev)
		if err != nil {
			return err
		}
		again = append(again, broker.Publishing(ev, body, "application/protobuf"))
		keys = append(keys, messages.RoutingKey(ev.Type, ev.Node))
	}
	return t.publish(ctx, keys, again)
}

// observerd is the daemon binary: make test's, or one built here.
func observerd(ctx context.Context, dir string) (string, error) {
	if bin := os.Getenv("OBSERVERD_BIN"); bin != "" {
		return filepath.Join(bin, "observerd"), nil
	}
	out, err := exec.CommandContext(ctx, "go", "build", "-o", dir+"/", "github.com/polar/observerd/cmd/observerd").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build observerd: %w\n%s", err, out)
	}
	return filepath.Join(dir, "observerd"), nil
}

// generatePython runs protoc as docs/consumers.md does, into dir/gen.
func generatePython(ctx context.Context, dir string) (string, error) {
	gen := filepath.Join(dir, "gen")
	// protoc writes into a directory that exists, and makes none.
	if err := os.MkdirAll(gen, 0o755); err != nil {
		return "", err
	}
	protos, err := filepath.Glob("../../proto/polar/observer/v1/*.proto")
	if err != nil || len(protos) == 0 {
		return "", fmt.Errorf("find the .proto files: %v", protos)
	}
	args := append([]string{"-I", "../../proto", "-I", "/usr/include", "--python_out=" + gen}, protos...)
	if out, err := exec.CommandContext(ctx, "protoc", args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("protoc: %w\n%s", err, out)
	}
	return gen, nil
}

// runPython runs consumer.py with -drain over queue, with Debian's
// Python (the one with python3-pika and python3-protobuf).
func runPython(ctx context.Context, queue string) (string, error) {
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", "consumer.py", "--queue", queue, "--drain")
	cmd.Env = append(os.Environ(), "PYTHONPATH="+python)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("consumer.py: %w\n%s", err, stderr.String())
	}
	return stdout.String(), nil
}

// runDaemons runs node-a.example (protobuf) and node-b.example (JSON)
// until the tap saw a state.changed of each, and stops them; each exits 0
// once its last events (observer.stopped) are confirmed.
func runDaemons(ctx context.Context, daemon string, n *rabbitmq.Node, t *tap) error {
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer target.Close()
	nodes := map[string]string{"node-a.example": "protobuf", "node-b.example": "json"}
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
	}()
	for name, encoding := range nodes {
		config, err := configure(filepath.Join(n.Dir, name), name, encoding, target.URL, n)
		if err != nil {
			return err
		}
		p := exec.CommandContext(ctx, daemon, "--config", config)
		out := &bytes.Buffer{}
		p.Stdout, p.Stderr = out, out
		if err := p.Start(); err != nil {
			return fmt.Errorf("start observerd: %w", err)
		}
		procs = append(procs, p)
	}
	for name := range nodes {
		if err := t.await(ctx, name, messages.TypeStateChanged); err != nil {
			return err
		}
	}
	for _, p := range procs {
		if err := p.Process.Signal(syscall.SIGTERM); err != nil {
			return err
		}
	}
	for _, p := range procs {
		if err := p.Wait(); err != nil {
			return fmt.Errorf("observerd: %w\n%s", err, p.Stdout)
		}
	}
	procs = nil
	for name := range nodes {
		if err := t.await(ctx, name, messages.TypeObserverStopped); err != nil {
			return err
		}
	}
	return nil
}

// configure writes the config and the policy of a daemon in dir.
func configure(dir, name, encoding, target string, n *rabbitmq.Node) (string, error) {
	policies := filepath.Join(dir, "policies")
	if err := os.MkdirAll(policies, 0o755); err != nil {
		return "", err
	}
	config := filepath.Join(dir, "observerd.yaml")
	cfg := fmt.Sprintf(`node: %s
policy_dir: %s
state_dir: %s
admin: {listen: "", socket: ""}
broker:
  urls: [%q]
  password_file: %s
  tls: {ca_file: %s}
  encoding: %s
`, name, policies, filepath.Join(dir, "state"), n.URL(), n.PasswordFile, n.CAFile, encoding)
	pol := fmt.Sprintf(`apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: web, url: %q}
  observers:
    - {name: health, kind: http, interval: 1s, http: {path: /}}
`, target)
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		return "", err
	}
	return config, os.WriteFile(filepath.Join(policies, "web.yaml"), []byte(pol), 0o644)
}

// lossyNode are the events of node-c.example, as its broker actor
// publishes them, after its outbox dropped 3 (reported by 5, an
// outbox.overflow) and 4 was lost.
func lossyNode() []*messages.Event {
	started := messages.NewEvent(messages.TypeDaemonStarted)
	started.Data = &messages.Event_Daemon{Daemon: &messages.DaemonLifecycle{Version: "test"}}
	applied := messages.NewEvent(messages.TypePolicyApplied)
	applied.Data = &messages.Event_PolicyOutcome{PolicyOutcome: &messages.PolicyOutcome{Name: "web", Added: []string{"health"}}}
	overflow := messages.NewEvent(messages.TypeOutboxOverflow)
	overflow.Data = &messages.Event_OutboxOverflow{OutboxOverflow: &messages.OutboxOverflow{
		FirstSequence: 3, LastSequence: 3, DroppedEvents: 1, DroppedBytes: 200, Policy: "drop_oldest",
	}}
	evs := []*messages.Event{started, applied, overflow}
	paths := []string{"supervisor", "policy-manager", "broker"}
	for i, seq := range []uint64{1, 2, 5} {
		messages.Stamp(evs[i], "node-c.example", "test", paths[i])
		evs[i].Sequence = seq
	}
	return evs
}

// tap is a queue of the test's own, bound to every event: what the
// consumers' queues hold, seen as it arrives.
type tap struct {
	conn *amqp.Connection
	ch   *amqp.Channel
	mu   sync.Mutex
	got  []amqp.Delivery
	evs  []*messages.Event
}

func newTap(n *rabbitmq.Node) (*tap, error) {
	conn, err := n.Dial()
	if err != nil {
		return nil, err
	}
	t := &tap{conn: conn}
	if t.ch, err = conn.Channel(); err != nil {
		conn.Close()
		return nil, err
	}
	q, err := t.ch.QueueDeclare("", false, true, true, false, nil)
	if err == nil {
		err = t.ch.ExchangeDeclare("polar.events", amqp.ExchangeTopic, true, false, false, false, nil)
	}
	if err == nil {
		err = t.ch.QueueBind(q.Name, "#", "polar.events", false, nil)
	}
	var deliveries <-chan amqp.Delivery
	if err == nil {
		deliveries, err = t.ch.Consume(q.Name, "", true, true, false, false, nil)
	}
	if err == nil {
		err = t.ch.Confirm(false)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("tap: %w", err)
	}
	go func() {
		for d := range deliveries {
			ev, err := decode(d)
			if err != nil {
				ev = &messages.Event{}
			}
			t.mu.Lock()
			t.got, t.evs = append(t.got, d), append(t.evs, ev)
			t.mu.Unlock()
		}
	}()
	return t, nil
}

func (t *tap) close() { t.conn.Close() }

// find returns the first delivery whose event matches.
func (t *tap) find(match func(*messages.Event) bool) (amqp.Delivery, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, ev := range t.evs {
		if match(ev) {
			return t.got[i], true
		}
	}
	return amqp.Delivery{}, false
}

// bodies returns the bodies of the deliveries of contentType.
func (t *tap) bodies(contentType string) [][]byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out [][]byte
	for _, d := range t.got {
		if d.ContentType == contentType {
			out = append(out, d.Body)
		}
	}
	return out
}

// await polls until an event of typ from node arrived.
func (t *tap) await(ctx context.Context, node, typ string) error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if _, ok := t.find(func(ev *messages.Event) bool { return ev.Node == node && ev.Type == typ }); ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no %s from %s: %w", typ, node, ctx.Err())
		case <-tick.C:
		}
	}
}

// publish publishes msgs with their routing keys and waits for the
// broker's confirms: then every queue bound to them holds them.
func (t *tap) publish(ctx context.Context, keys []string, msgs []amqp.Publishing) error {
	for i, msg := range msgs {
		conf, err := t.ch.PublishWithDeferredConfirmWithContext(ctx, "polar.events", keys[i], false, false, msg)
		if err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		if ok, err := conf.WaitContext(ctx); !ok || err != nil {
			return fmt.Errorf("publish %s: not confirmed: %v", keys[i], err)
		}
	}
	return nil
}

// TestPythonConsumer: consumer.py, run with Debian's Python on classes
// generated by protoc, prints what the Go consumer prints (which Example
// holds to its output) for the same events.
func TestPythonConsumer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), consumerTimeout)
	defer cancel()
	var want bytes.Buffer
	require.NoError(t, run(ctx, []string{"-queue", besideQueue, "-drain"}, &want))
	got, err := runPython(ctx, pythonQueue)
	require.NoError(t, err)
	assert.Contains(t, want.String(), "node-b.example (application/json)", "the Go consumer read the daemons' events")
	assert.Equal(t, want.String(), got)
}

// TestConsumerPermissions: the permissions that configs/rabbitmq grants a
// consumer of its own queue are enough for the Go consumer to declare,
// bind and read it.
func TestConsumerPermissions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), consumerTimeout)
	defer cancel()
	readme, err := os.ReadFile("../../configs/rabbitmq/README.md")
	require.NoError(t, err)
	const grant = "rabbitmqctl set_permissions -p / audit "
	_, line, ok := strings.Cut(string(readme), "\n"+grant)
	require.True(t, ok, "configs/rabbitmq/README.md grants user audit nothing")
	line, _, _ = strings.Cut(line, "\n")
	perms := strings.Fields(line)
	require.Len(t, perms, 3, "configure, write and read")
	require.NoError(t, rabbit.AddUser(ctx, "audit", "audit-secret"))
	args := []string{"set_permissions", "-p", "/", "audit"}
	for _, p := range perms {
		args = append(args, strings.Trim(p, "'"))
	}
	_, err = rabbit.Ctl(ctx, args...)
	require.NoError(t, err)

	u, err := url.Parse(rabbit.URLWithPassword())
	require.NoError(t, err)
	u.User = url.UserPassword("audit", "audit-secret")
	t.Setenv("AMQP_URL", u.String())
	var out bytes.Buffer
	require.NoError(t, run(ctx, []string{"-queue", "audit", "-drain"}, &out))
	assert.Empty(t, out.String(), "a new queue holds nothing")
	_, err = rabbit.Ctl(ctx, "set_permissions", "-p", "/", "audit", "^$", "^audit$", "^(audit|polar\\.events)$")
	require.NoError(t, err)
	assert.ErrorContains(t, run(ctx, []string{"-queue", "audit", "-drain"}, &out), "ACCESS_REFUSED", "without configure, declaring fails")
}
