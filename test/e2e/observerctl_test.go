//go:build integration

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/messages"
)

// TestObserverctlStatus: status shows every observer of the running
// daemon, its JSON is the daemon's state, and its exit code says whether
// the daemon is ready.
func TestObserverctlStatus(t *testing.T) {
	target := startObservable(t)
	d := newDaemon(t, target, withObservers(`    - {name: health, kind: http, interval: 200ms, http: {path: /healthz}}
    - {name: port, kind: tcp, interval: 200ms, tcp: {}}
`))
	c := d.consume(t)
	d.start(t)
	admin := "http://" + d.admin

	var out string
	require.Eventually(t, func() bool {
		p := start(t, "observerctl", "status", "--admin", admin)
		code := p.exitCode(t, wait)
		out = p.out.String()
		return code == 0 && strings.Contains(out, "observer/web/port") && strings.Contains(out, "observer/web/health  web@")
	}, wait, 100*time.Millisecond, "status never showed a ready daemon with both observers")
	assert.Regexp(t, `^observerd \S+ on e2e-node.example, up `, out)
	for _, want := range []string{"ready:     yes", "broker:    connected to amqps://observer@localhost:",
		"outbox:", "policies:  web", "task-manager", "policy-manager", "observer/web/health", "observer/web/port"} {
		assert.Contains(t, out, want)
	}

	p := start(t, "observerctl", "status", "--admin", admin, "--json")
	require.Equal(t, 0, p.exitCode(t, wait))
	var s protocol.Snapshot
	require.NoError(t, json.Unmarshal([]byte(p.out.String()), &s), p.out.String())
	assert.Equal(t, "e2e-node.example", s.Node)
	var paths []string
	for _, o := range s.Observers {
		paths = append(paths, o.Path)
		assert.Equal(t, "web", o.Policy)
		assert.NotEmpty(t, o.Revision)
	}
	assert.ElementsMatch(t, []string{"observer/web/health", "observer/web/port"}, paths)
	require.NotNil(t, s.Outbox, "the admin asked the broker")
	assert.Positive(t, s.Outbox.LastSequence)

	// Observer commands, through the admin socket of the daemon's config:
	// carried out (0) or refused with why (1), each a command.result event.
	run := func(args ...string) (int, string) {
		where := []string{"--config", d.config}
		if args[0] == "status" {
			where = []string{"--admin", admin}
		}
		p := start(t, "observerctl", append(args[:1:1], append(where, args[1:]...)...)...)
		code := p.exitCode(t, wait)
		return code, p.out.String()
	}
	code, out := run("pause", "web/port")
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, "pause web/port: done")
	code, out = run("status")
	assert.Equal(t, 0, code, out)
	assert.Regexp(t, `observer/web/port .* paused`, out)
	code, out = run("resume", "web/port")
	assert.Equal(t, 0, code, out)
	code, out = run("resume", "web/port")
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "observer observer/web/port is neither paused nor quarantined")
	code, out = run("observe", "web/health")
	assert.Equal(t, 0, code, out)
	code, out = run("pause", "web/nope")
	assert.Equal(t, 1, code)
	assert.Contains(t, out, `policy "web" has no observer "nope"`)
	code, _ = run("pause", "web")
	assert.Equal(t, 2, code, "POLICY/OBSERVER is required")
	require.Eventually(t, func() bool { return len(c.ofType(messages.TypeCommandResult)) == 5 }, wait, tick)
	var results []string
	for _, ev := range c.ofType(messages.TypeCommandResult) {
		r := ev.GetCommandResult()
		results = append(results, fmt.Sprintf("%s %s %t", r.Command, r.Target, r.Ok))
		assert.Equal(t, "observerd://e2e-node.example/admin", ev.Source)
	}
	assert.Equal(t, []string{"pause web/port true", "resume web/port true", "resume web/port false", "observe web/health true", "pause web/nope false"}, results)

	// Not reachable: 1; bad usage: 2.
	p = start(t, "observerctl", "status", "--admin", "http://"+freeAddr(t))
	assert.Equal(t, 1, p.exitCode(t, wait))
	assert.Contains(t, p.out.String(), "is observerd running")
	p = start(t, "observerctl", "bogus")
	assert.Equal(t, 2, p.exitCode(t, wait))
}

// TestObserverctlTail: tail prints the daemon's events decoded, and flags
// a gap in a node's sequences and a duplicate id injected into the
// exchange.
func TestObserverctlTail(t *testing.T) {
	target := startObservable(t)
	d := newDaemon(t, target)
	d.declare(t)
	d.start(t)
	tail := start(t, "observerctl", "tail", "--config", d.config)
	require.Eventually(t, func() bool { return strings.Contains(tail.out.String(), "observation.http") }, wait, tick,
		"tail printed no observation")
	assert.Contains(t, tail.out.String(), "e2e-node.example")

	conn, err := node.Dial()
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	inject := func(ev *messages.Event) {
		body, err := proto.Marshal(ev)
		require.NoError(t, err)
		require.NoError(t, ch.PublishWithContext(context.Background(), d.exchange, messages.RoutingKey(ev.Type, ev.Node), false, false,
			amqp.Publishing{ContentType: "application/protobuf", Body: body}))
	}
	first := messages.NewEvent(messages.TypeObservationHTTP)
	first.Node, first.Sequence = "inject.example", 1
	gap := messages.NewEvent(messages.TypeObservationHTTP)
	gap.Node, gap.Sequence = "inject.example", 4
	inject(first)
	inject(gap)
	inject(first)
	require.Eventually(t, func() bool {
		out := tail.out.String()
		return strings.Contains(out, "!! gap on inject.example: sequences 2..3 missing") &&
			strings.Contains(out, "!! duplicate id "+first.Id+" (sequence 1)")
	}, wait, tick, "tail did not flag the gap and the duplicate:\n%s", tail.out.String())
	assert.NotContains(t, tail.out.String(), "!! gap on e2e-node.example", "the daemon's own sequences have no gap")

	tail.signal(t, syscall.SIGINT)
	assert.Equal(t, 0, tail.exitCode(t, wait))
}
