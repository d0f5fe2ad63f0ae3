//go:build integration

package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/rabbitmq"
)

const (
	// history is the stream the tests read, declared before the daemons
	// start; counted is a quorum queue bound beside it: what they published.
	history = "history"
	counted = "history-counted"
	// replayed is how many events the daemons publish before any
	// consumer reads the stream.
	replayed = 1000
	// later is how many more one daemon publishes after cut.
	later = 50

	setupTimeout    = 3 * time.Minute
	consumerTimeout = time.Minute
	pollInterval    = 20 * time.Millisecond
)

var (
	rabbit *rabbitmq.Node
	// published is every event the daemons published, as counted got them.
	published []*messages.Event
	// cut is a whole second after the first run of the daemons ended and
	// before the second began.
	cut time.Time
)

func TestMain(m *testing.M) { rabbitmq.MainWith(m, &rabbit, setup) }

// setup runs two daemons (node-a.example, node-b.example) until they have
// published at least replayed events into the stream, and stops them;
// then, after cut, node-a.example again until it has published later
// more. Every event is in the stream and in counted.
func setup(n *rabbitmq.Node) error {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	os.Setenv("AMQP_URL", n.URLWithPassword())
	os.Setenv("AMQP_CA_FILE", n.CAFile)
	daemon, err := observerd(ctx, n.Dir)
	if err != nil {
		return err
	}
	conn, err := n.Dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	// As docs/consumers.md says: the stream exists before the daemons
	// publish.
	if err := declare(ch, "polar.events", history, 1<<30, "1D"); err != nil {
		return err
	}
	if err := rabbitmq.DeclareQuorum(ch, "polar.events", counted, "#"); err != nil {
		return err
	}
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer target.Close()

	if err := runDaemons(ctx, daemon, n, target.URL, ch, replayed, "node-a.example", "node-b.example"); err != nil {
		return err
	}
	cut = time.Now().Truncate(time.Second).Add(time.Second)
	if err := awaitTime(ctx, cut); err != nil {
		return err
	}
	if err := runDaemons(ctx, daemon, n, target.URL, ch, later, "node-a.example"); err != nil {
		return err
	}
	published, err = drain(ch)
	return err
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

// runDaemons runs a daemon per node, with five observers of target every
// 50 ms each, until counted holds at least more events than before, and
// stops them;
// each exits 0 once its last events are confirmed. A node's state
// directory is kept from one run to the next, and so is its sequence.
func runDaemons(ctx context.Context, daemon string, n *rabbitmq.Node, target string, ch *amqp.Channel, more int, nodes ...string) error {
	queued := func() (int, error) {
		q, err := ch.QueueDeclarePassive(counted, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
		return q.Messages, err
	}
	before, err := queued()
	if err != nil {
		return err
	}
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
	}()
	for _, name := range nodes {
		config, err := configure(filepath.Join(n.Dir, name), name, target, n)
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
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		now, err := queued()
		if err != nil {
			return err
		}
		if now-before >= more {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d events published: %w", now-before, more, ctx.Err())
		case <-tick.C:
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
	return nil
}

// configure writes the config and the policy of a daemon in dir.
func configure(dir, name, target string, n *rabbitmq.Node) (string, error) {
	policies := filepath.Join(dir, "policies")
	if err := os.MkdirAll(policies, 0o755); err != nil {
		return "", err
	}
	config := filepath.Join(dir, "observerd.yaml")
	cfg := fmt.Sprintf(`node: %s
policy_dir: %s
state_dir: %s
admin: {listen: "", socket: ""}
limits: {min_interval: 50ms, max_events_per_second: 1000}
broker:
  urls: [%q]
  password_file: %s
  tls: {ca_file: %s}
`, name, policies, filepath.Join(dir, "state"), n.URL(), n.PasswordFile, n.CAFile)
	observers := ""
	for i := range 5 {
		observers += fmt.Sprintf("    - {name: h%d, kind: http, interval: 50ms, timeout: 40ms, http: {path: /}}\n", i)
	}
	pol := fmt.Sprintf(`apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: web, url: %q}
  observers:
%s`, target, observers)
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		return "", err
	}
	return config, os.WriteFile(filepath.Join(policies, "web.yaml"), []byte(pol), 0o644)
}

// awaitTime returns once the clock has passed t.
func awaitTime(ctx context.Context, t time.Time) error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for !time.Now().After(t) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// drain reads every event of counted.
func drain(ch *amqp.Channel) ([]*messages.Event, error) {
	var evs []*messages.Event
	for {
		d, ok, err := ch.Get(counted, true)
		if err != nil || !ok {
			return evs, err
		}
		ev := &messages.Event{}
		if err := proto.Unmarshal(d.Body, ev); err != nil {
			return nil, err
		}
		evs = append(evs, ev)
	}
}

// span is what a consumer's report says of a node.
type span struct {
	events      int
	first, last uint64
}

var reportLine = regexp.MustCompile(`^(\S+): (\d+) events, sequences (\d+)\.\.(\d+)$`)

// consume runs the consumer with args until it has handled count events,
// and returns its report by node; any other line (a duplicate, a gap, an
// event out of order) fails the test.
func consume(t *testing.T, count int, args ...string) map[string]span {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), consumerTimeout)
	defer cancel()
	var out bytes.Buffer
	args = append([]string{"-stream", history, "-max-bytes", strconv.Itoa(1 << 30), "-max-age", "1D", "-count", strconv.Itoa(count)}, args...)
	require.NoError(t, run(ctx, args, &out))
	require.NoError(t, ctx.Err(), "the consumer did not handle %d events:\n%s", count, out.String())
	report := map[string]span{}
	for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		m := reportLine.FindStringSubmatch(line)
		require.NotNil(t, m, "unexpected line %q in:\n%s", line, out.String())
		events, _ := strconv.Atoi(m[2])
		first, _ := strconv.ParseUint(m[3], 10, 64)
		last, _ := strconv.ParseUint(m[4], 10, 64)
		report[m[1]] = span{events, first, last}
	}
	return report
}

// spans is what each node published, from first to last: setup checks
// that the daemons published every sequence once.
func spans(t *testing.T, evs []*messages.Event) map[string]span {
	t.Helper()
	out := map[string]span{}
	for _, ev := range evs {
		s, ok := out[ev.Node]
		if !ok {
			s.first, s.last = ev.Sequence, ev.Sequence-1
		}
		require.Equal(t, s.last+1, ev.Sequence, "%s published out of order, or twice", ev.Node)
		s.events++
		s.last = ev.Sequence
		out[ev.Node] = s
	}
	return out
}

func total(report map[string]span) int {
	n := 0
	for _, s := range report {
		n += s.events
	}
	return n
}

// TestReplayFromFirst: a consumer that starts after the daemons have
// published replays every event from the stream, each node's in order
// (sequence strictly increasing), without a gap or a duplicate.
func TestReplayFromFirst(t *testing.T) {
	want := spans(t, published)
	require.GreaterOrEqual(t, total(want), replayed+later)
	require.Len(t, want, 2)
	for node, s := range want {
		require.Equal(t, uint64(1), s.first, "%s's first event", node)
	}
	assert.Equal(t, want, consume(t, len(published), "-from", "first"))
}

// TestReplayFromTime: from a time, the stream starts with what was stored
// from that second on: the second run of node-a.example only.
func TestReplayFromTime(t *testing.T) {
	var before, after []*messages.Event
	for _, ev := range published {
		if ev.Time.AsTime().Before(cut) {
			before = append(before, ev)
		} else {
			after = append(after, ev)
		}
	}
	require.GreaterOrEqual(t, len(before), replayed)
	require.GreaterOrEqual(t, len(after), later)
	want := spans(t, after)
	require.Equal(t, []string{"node-a.example"}, slices.Sorted(maps.Keys(want)))
	assert.Equal(t, want, consume(t, len(after), "-from", cut.Format(time.RFC3339)))
}

// TestResumeAfterStoredOffset: a consumer that stores its offset and
// starts again continues after the last event it handled: the two runs
// read every event once between them.
func TestResumeAfterStoredOffset(t *testing.T) {
	const firstRun = 10
	file := filepath.Join(t.TempDir(), "offset")
	one := consume(t, firstRun, "-offset-file", file)
	require.Equal(t, firstRun, total(one))
	stored, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Equal(t, strconv.Itoa(firstRun-1)+"\n", string(stored), "offsets count from 0 in a new stream")

	two := consume(t, len(published)-firstRun, "-offset-file", file, "-from", "next")
	for node, all := range spans(t, published) {
		s1, in1 := one[node]
		s2 := two[node]
		assert.Equal(t, all.last, s2.last, node)
		if in1 {
			assert.Equal(t, s1.last+1, s2.first, "%s: the second run starts after the first", node)
		}
		assert.Equal(t, all.events, s1.events+s2.events, node)
	}
}
