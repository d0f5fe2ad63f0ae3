//go:build integration

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/messages"
)

// fleet is daemons with the control channel enabled, and the broker users
// that command them.
type fleet struct {
	daemons             map[string]*daemon
	procs               map[string]*proc
	ops, deployer, mall string // broker users: allowed observer commands, allowed policies, allowed nothing
	burst               string // allowed get_state only: the rate test's
	label               string // the group of the first two nodes
	dir                 string
	target              string
}

// controlUser creates a broker user with a fresh password and writes an
// operator's config for observerctl remote logging in as it.
func (f *fleet) controlUser(t *testing.T, name string) string {
	t.Helper()
	user := randomName(name + "-")
	password := randomName("pw")
	require.NoError(t, node.AddUser(context.Background(), user, password))
	pwFile := filepath.Join(f.dir, user+".password")
	require.NoError(t, os.WriteFile(pwFile, []byte(password), 0o600))
	cfg := fmt.Sprintf("broker:\n  urls: [%q]\n  password_file: %s\n  tls: {ca_file: %q}\n",
		strings.Replace(node.URL(), "observer@", user+"@", 1), pwFile, node.CAFile)
	require.NoError(t, os.WriteFile(filepath.Join(f.dir, user+".yaml"), []byte(cfg), 0o600))
	return user
}

func setPermissions(t *testing.T, user, configure, write, read string) {
	t.Helper()
	_, err := node.Ctl(context.Background(), "set_permissions", "-p", "/", user, configure, write, read)
	require.NoError(t, err)
}

func (f *fleet) config(user string) string { return filepath.Join(f.dir, user+".yaml") }

// dial logs in as user.
func (f *fleet) dial(t *testing.T, user string) *amqp.Connection {
	t.Helper()
	pw, err := os.ReadFile(filepath.Join(f.dir, user+".password"))
	require.NoError(t, err)
	conn, err := amqp.DialTLS(strings.Replace(node.URL(), "observer@", user+":"+string(pw)+"@", 1), node.TLSConfig())
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

func newFleet(t *testing.T, names ...string) *fleet {
	t.Helper()
	f := &fleet{daemons: map[string]*daemon{}, procs: map[string]*proc{}, dir: t.TempDir(), label: randomName("web")}
	f.ops, f.deployer, f.mall, f.burst = f.controlUser(t, "ops"), f.controlUser(t, "deployer"), f.controlUser(t, "mallory"), f.controlUser(t, "burst")
	// Operators may write on polar.control and nothing else
	// (docs/control.md): direct reply-to needs no permission.
	for _, u := range []string{f.ops, f.deployer, f.mall, f.burst} {
		setPermissions(t, u, `^$`, `^polar\.control$`, `^$`)
	}
	f.target = startObservable(t)
	for i, name := range names {
		label := f.label
		if i >= 2 {
			label = randomName("db")
		}
		control := fmt.Sprintf(`labels: [%s]
control:
  enabled: true
  max_commands_per_second: 20
  allow:
    %s: [observe_now, pause, resume, get_state]
    %s: [apply_policy, remove_policy, get_state]
    %s: [get_state]
`, label, f.ops, f.deployer, f.burst)
		opts := []daemonOption{withNode(name), withConfig(control)}
		user := ""
		if i == 2 {
			// The last one logs in with the permissions docs/control.md
			// gives a daemon: its events, its control queue.
			user = f.controlUser(t, "daemon")
			opts = append(opts, withLogin(user, filepath.Join(f.dir, user+".password")))
		}
		d := newDaemon(t, f.target, opts...)
		f.daemons[name] = d
		if user != "" {
			q := regexp.QuoteMeta
			events, queue := q(d.exchange)+"|"+q(d.queue), q("polar.control."+name)
			setPermissions(t, user, "^("+events+`|polar\.control|`+queue+")$", "^("+events+"|"+queue+`|amq\.default)$`,
				"^("+q(d.exchange)+`|polar\.control|`+queue+")$")
		}
		d.declare(t)
	}
	t.Cleanup(func() {
		// The nodes' control queues outlive the daemons: delete them.
		conn, err := node.Dial()
		if err != nil {
			return
		}
		defer conn.Close()
		if ch, err := conn.Channel(); err == nil {
			for name := range f.daemons {
				_, _ = ch.QueueDelete("polar.control."+name, false, false, false)
			}
		}
	})
	for name, d := range f.daemons {
		f.procs[name] = d.start(t)
	}
	for name, d := range f.daemons {
		require.Eventually(t, func() bool { code, _ := d.readyz(); return code == http.StatusOK }, wait, tick, "%s not ready", name)
	}
	return f
}

// ctl runs observerctl and returns its exit code and output.
func ctl(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "observerctl"), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), out.String()
	}
	require.NoError(t, err, out.String())
	return 0, out.String()
}

// remoteJSON runs observerctl remote with --json and returns the answers
// by node.
func remoteJSON(t *testing.T, args ...string) (int, map[string]map[string]any) {
	t.Helper()
	code, out := ctl(t, append([]string{"remote"}, append(args, "--json")...)...)
	answers := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var a map[string]any
		if json.Unmarshal([]byte(line), &a) == nil {
			answers[a["node"].(string)] = a
		}
	}
	return code, answers
}

// rpc publishes body to the control exchange with key as user (dial's
// connection), with props, and returns the answers that come back on
// direct reply-to within a second of the last, up to want.
func rpc(t *testing.T, conn *amqp.Connection, key string, body []byte, props amqp.Publishing, want int) []*messages.CommandResult {
	t.Helper()
	ch, err := conn.Channel()
	require.NoError(t, err)
	defer ch.Close()
	replies, err := ch.Consume("amq.rabbitmq.reply-to", "", true, true, false, false, nil)
	require.NoError(t, err)
	props.Body, props.ReplyTo = body, "amq.rabbitmq.reply-to"
	require.NoError(t, ch.PublishWithContext(context.Background(), "polar.control", key, false, false, props))
	var out []*messages.CommandResult
	deadline := time.After(wait)
	for len(out) < want {
		select {
		case d := <-replies:
			ev := &messages.Event{}
			require.NoError(t, proto.Unmarshal(d.Body, ev))
			out = append(out, ev.GetCommandResult())
		case <-deadline:
			t.Fatalf("%d of %d answers", len(out), want)
		}
	}
	return out
}

func newCommand(target string, mod func(*messages.Command)) *messages.Command {
	c := &messages.Command{Id: uuid.Must(uuid.NewV7()).String(), Issuer: "e2e", IssuedAt: timestamppb.Now(),
		Target:    &messages.Command_Target{Selector: &messages.Command_Target_Node{Node: target}},
		Arguments: &messages.Command_GetState_{GetState: &messages.Command_GetState{}}}
	if mod != nil {
		mod(c)
	}
	return c
}

func marshal(t *testing.T, c *messages.Command) []byte {
	t.Helper()
	b, err := proto.Marshal(c)
	require.NoError(t, err)
	return b
}

// state reads a daemon's /v1/state over its admin endpoint; empty while
// the daemon does not answer.
func (d *daemon) state(t *testing.T) *protocol.Snapshot {
	t.Helper()
	var s protocol.Snapshot
	resp, err := http.Get("http://" + d.admin + "/v1/state")
	if err != nil {
		return &s
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(&s)
	return &s
}

func revisionOf(s *protocol.Snapshot, pol string) string {
	for _, o := range s.Observers {
		if o.Policy == pol {
			return o.Revision
		}
	}
	return ""
}

func centralPolicy(name, interval string) string {
	return fmt.Sprintf(`apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: %s}
spec:
  target: {name: %s, url: "http://127.0.0.1:1"}
  observers:
    - {name: probe, kind: tcp, interval: %s, tcp: {}}
`, name, name, interval)
}

func TestControlChannel(t *testing.T) {
	n1, n2, n3 := randomName("ctl-a-"), randomName("ctl-b-"), randomName("ctl-c-")
	f := newFleet(t, n1, n2, n3)
	all := strings.Join([]string{n1, n2, n3}, ",")

	t.Run("status of every node, then of a group, in one table", func(t *testing.T) {
		code, out := ctl(t, "remote", "status", "--config", f.config(f.ops), "--nodes", all)
		require.Equal(t, 0, code, out)
		for _, n := range []string{n1, n2, n3} {
			assert.Regexp(t, n+`\s+true\s+connected\s+1\s+`, out)
		}
		assert.Contains(t, out, "3 answered, 0 silent")

		code, answers := remoteJSON(t, "status", "--config", f.config(f.ops), "--group", f.label, "--nodes", n1+","+n2)
		require.Equal(t, 0, code)
		assert.Len(t, answers, 2, "the group only")
		assert.Contains(t, answers, n1)
		assert.Contains(t, answers, n2)
		assert.Equal(t, n1, answers[n1]["output"].(map[string]any)["node"], "the output is /v1/state")
	})

	t.Run("observer commands", func(t *testing.T) {
		code, out := ctl(t, "remote", "pause", "web/health", "--config", f.config(f.ops), "--node", n1)
		require.Equal(t, 0, code, out)
		assert.Regexp(t, n1+`\s+ok`, out)
		require.Eventually(t, func() bool {
			for _, o := range f.daemons[n1].state(t).Observers {
				if o.Policy == "web" && o.Status == protocol.StatusPaused {
					return true
				}
			}
			return false
		}, wait, tick, "web/health paused on %s", n1)
		code, out = ctl(t, "remote", "resume", "web/health", "--config", f.config(f.ops), "--node", n1)
		require.Equal(t, 0, code, out)
		code, out = ctl(t, "remote", "resume", "web/health", "--config", f.config(f.ops), "--node", n1)
		assert.Equal(t, 1, code, "a second resume fails, as on the admin socket")
		assert.Regexp(t, n1+`\s+failed\s+resume: observer observer/web/health is neither paused nor quarantined`, out)
		code, out = ctl(t, "remote", "observe", "web/health", "--config", f.config(f.ops), "--nodes", all)
		require.Equal(t, 0, code, out)
		assert.Contains(t, out, "3 answered, 0 silent")
	})

	var firstRevision string
	t.Run("apply to a group, then a bad version that every node rejects", func(t *testing.T) {
		events := f.daemons[n1].consume(t)
		good := filepath.Join(t.TempDir(), "central.yaml")
		require.NoError(t, os.WriteFile(good, []byte(centralPolicy("central", "1s")), 0o644))
		code, out := ctl(t, "remote", "apply", good, "--config", f.config(f.deployer), "--group", f.label, "--nodes", n1+","+n2)
		require.Equal(t, 0, code, out)
		assert.Regexp(t, n1+`\s+applied`, out)
		assert.Regexp(t, n2+`\s+applied`, out)
		for _, n := range []string{n1, n2} {
			require.Eventually(t, func() bool { return revisionOf(f.daemons[n].state(t), "central") != "" }, wait, tick, "central runs on %s", n)
		}
		assert.Empty(t, revisionOf(f.daemons[n3].state(t), "central"), "not in the group")
		firstRevision = revisionOf(f.daemons[n1].state(t), "central")
		// The events say where the policy came from, and answer the
		// command through the outbox, correlated with it.
		require.Eventually(t, func() bool {
			for _, ev := range events.ofType(messages.TypePolicyApplied) {
				if out := ev.GetPolicyOutcome(); out.Name == "central" {
					return out.Origin == messages.PolicyOrigin_POLICY_ORIGIN_CENTRAL && out.Issuer == f.deployer
				}
			}
			return false
		}, wait, tick, "policy.applied of central, origin central, issuer %s", f.deployer)
		require.Eventually(t, func() bool {
			for _, ev := range events.ofType(messages.TypeCommandResult) {
				res := ev.GetCommandResult()
				if res.Answered.GetApplyPolicy().GetName() == "central" {
					return ev.CorrelationId == res.Answered.Id && ev.CausationId == res.Answered.Id &&
						res.Caller.GetUser() == f.deployer && res.Code == messages.ReturnCode_RETURN_CODE_OK
				}
			}
			return false
		}, wait, tick, "the command.result of the apply, in the outbox")

		bad := filepath.Join(t.TempDir(), "central.yaml")
		require.NoError(t, os.WriteFile(bad, []byte(strings.Replace(centralPolicy("central", "2s"), "interval: 2s", "interval: -2s", 1)), 0o644))
		code, out = ctl(t, "remote", "apply", bad, "--config", f.config(f.deployer), "--group", f.label, "--nodes", n1+","+n2)
		assert.Equal(t, 1, code, out)
		assert.Regexp(t, n1+`\s+rejected\s+.*central-policies/central.yaml:7:`, out)
		assert.Regexp(t, n2+`\s+rejected`, out)
		for _, n := range []string{n1, n2} {
			assert.Equal(t, firstRevision, revisionOf(f.daemons[n].state(t), "central"), "%s keeps its last good version", n)
		}

		// A name a local file holds.
		web := filepath.Join(t.TempDir(), "web.yaml")
		require.NoError(t, os.WriteFile(web, []byte(centralPolicy("web", "1s")), 0o644))
		code, answers := remoteJSON(t, "apply", web, "--config", f.config(f.deployer), "--node", n3)
		assert.Equal(t, 1, code)
		assert.Equal(t, "RETURN_CODE_NAME_CONFLICT", answers[n3]["code"])
		assert.Contains(t, answers[n3]["message"], "policies/web.yaml:3")
	})

	t.Run("every refusal", func(t *testing.T) {
		ops := f.dial(t, f.ops)
		key := "node." + n3
		ask := func(conn *amqp.Connection, body []byte, props amqp.Publishing) *messages.CommandResult {
			return rpc(t, conn, key, body, props, 1)[0]
		}
		for _, tc := range []struct {
			name  string
			conn  *amqp.Connection
			body  []byte
			props amqp.Publishing
			code  messages.ReturnCode
		}{
			{"no user_id", ops, marshal(t, newCommand(n3, nil)), amqp.Publishing{}, messages.ReturnCode_RETURN_CODE_NO_USER},
			{"a user not allowed", f.dial(t, f.mall), marshal(t, newCommand(n3, nil)), amqp.Publishing{UserId: f.mall}, messages.ReturnCode_RETURN_CODE_NOT_ALLOWED},
			{"a command the user may not send", ops, marshal(t, newCommand(n3, func(c *messages.Command) {
				c.Arguments = &messages.Command_RemovePolicy_{RemovePolicy: &messages.Command_RemovePolicy{Name: "web"}}
			})), amqp.Publishing{UserId: f.ops}, messages.ReturnCode_RETURN_CODE_NOT_ALLOWED},
			{"malformed", ops, []byte("not a command"), amqp.Publishing{UserId: f.ops}, messages.ReturnCode_RETURN_CODE_MALFORMED},
			{"expired", ops, marshal(t, newCommand(n3, func(c *messages.Command) { c.ExpiresAt = timestamppb.New(time.Now().Add(-time.Second)) })),
				amqp.Publishing{UserId: f.ops}, messages.ReturnCode_RETURN_CODE_EXPIRED},
			{"for another node", ops, marshal(t, newCommand(n1, nil)), amqp.Publishing{UserId: f.ops}, messages.ReturnCode_RETURN_CODE_WRONG_TARGET},
			{"too large", ops, make([]byte, 300<<10), amqp.Publishing{UserId: f.ops}, messages.ReturnCode_RETURN_CODE_TOO_LARGE},
			{"unknown command", ops, marshal(t, newCommand(n3, func(c *messages.Command) { c.Arguments = nil })),
				amqp.Publishing{UserId: f.ops}, messages.ReturnCode_RETURN_CODE_UNKNOWN_COMMAND},
		} {
			res := ask(tc.conn, tc.body, tc.props)
			assert.Equal(t, tc.code, res.Code, "%s: %s", tc.name, res.Message)
			assert.NotContains(t, res.Message, "not a command", "%s: the body is never quoted", tc.name)
		}

		// Over the rate: 20 a second, bursts of 40.
		burst := f.dial(t, f.burst)
		ch, err := burst.Channel()
		require.NoError(t, err)
		replies, err := ch.Consume("amq.rabbitmq.reply-to", "", true, true, false, false, nil)
		require.NoError(t, err)
		const sent = 60
		for range sent {
			require.NoError(t, ch.PublishWithContext(context.Background(), "polar.control", key, false, false, amqp.Publishing{
				UserId: f.burst, ReplyTo: "amq.rabbitmq.reply-to",
				Body: marshal(t, newCommand(n3, func(c *messages.Command) { c.Arguments = nil }))}))
		}
		limited := 0
		for i := range sent {
			select {
			case d := <-replies:
				ev := &messages.Event{}
				require.NoError(t, proto.Unmarshal(d.Body, ev))
				if ev.GetCommandResult().Code == messages.ReturnCode_RETURN_CODE_RATE_LIMITED {
					limited++
				}
			case <-time.After(wait):
				t.Fatalf("%d of %d answers", i, sent)
			}
		}
		assert.Positive(t, limited, "some commands over the rate")

		// Someone else's user_id: RabbitMQ closes the channel.
		ch, err = ops.Channel()
		require.NoError(t, err)
		closed := ch.NotifyClose(make(chan *amqp.Error, 1))
		require.NoError(t, ch.PublishWithContext(context.Background(), "polar.control", key, false, false,
			amqp.Publishing{UserId: f.deployer, Body: marshal(t, newCommand(n3, nil))}))
		select {
		case e := <-closed:
			require.NotNil(t, e)
			assert.Equal(t, amqp.PreconditionFailed, e.Code, e.Reason)
		case <-time.After(wait):
			t.Fatal("a forged user_id was not refused")
		}
		// observerctl says so too.
		code, out := ctl(t, "remote", "status", "--config", f.config(f.ops), "--user", f.deployer, "--node", n3)
		assert.Equal(t, 1, code)
		assert.Contains(t, out, "PRECONDITION_FAILED")
	})

	t.Run("a redelivered command is answered twice and done once", func(t *testing.T) {
		code, out := ctl(t, "remote", "pause", "web/health", "--config", f.config(f.ops), "--node", n3)
		require.Equal(t, 0, code, out)
		ops := f.dial(t, f.ops)
		cmd := marshal(t, newCommand(n3, func(c *messages.Command) {
			c.Arguments = &messages.Command_Resume_{Resume: &messages.Command_Resume{Policy: "web", Observer: "health"}}
		}))
		first := rpc(t, ops, "node."+n3, cmd, amqp.Publishing{UserId: f.ops}, 1)[0]
		require.Equal(t, messages.ReturnCode_RETURN_CODE_OK, first.Code, first.Message)
		assert.False(t, first.Repeat)
		second := rpc(t, ops, "node."+n3, cmd, amqp.Publishing{UserId: f.ops}, 1)[0]
		assert.True(t, second.Repeat)
		assert.Equal(t, messages.ReturnCode_RETURN_CODE_OK, second.Code, "the first answer again: a second resume would have failed")
	})

	t.Run("remove", func(t *testing.T) {
		code, out := ctl(t, "remote", "remove", "central", "--config", f.config(f.deployer), "--node", n2)
		require.Equal(t, 0, code, out)
		require.Eventually(t, func() bool { return revisionOf(f.daemons[n2].state(t), "central") == "" }, wait, tick, "central removed from %s", n2)
		code, answers := remoteJSON(t, "remove", "central", "--config", f.config(f.deployer), "--node", n2)
		assert.Equal(t, 1, code)
		assert.Equal(t, "RETURN_CODE_NOT_FOUND", answers[n2]["code"])
	})

	t.Run("the cache runs after a restart with the broker down", func(t *testing.T) {
		d := f.daemons[n1]
		require.NoError(t, node.Stop(context.Background()))
		t.Cleanup(func() { require.NoError(t, node.Restart(context.Background())) })
		f.procs[n1].signal(t, syscall.SIGTERM)
		require.Equal(t, 0, f.procs[n1].exitCode(t, wait))
		f.procs[n1] = d.start(t)
		require.Eventually(t, func() bool {
			s := d.state(t)
			return !s.Broker.Connected && revisionOf(s, "central") == firstRevision
		}, wait, tick, "the cached central policy runs without a broker")
		require.Eventually(t, func() bool {
			for _, o := range d.state(t).Observers {
				if o.Policy == "central" && o.Observations > 0 {
					return true
				}
			}
			return false
		}, wait, tick, "its observers observe")
	})
}
