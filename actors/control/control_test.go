package control

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	_ "github.com/polar/observerd/actors/observer/kinds/all"
	"github.com/polar/observerd/actors/policymanager"
	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/test/actortest"
)

type fixture struct {
	sys                        *actor.ActorSystem
	state, task, broker, polic *actortest.Recorder
	opts                       Options
	pid                        *actor.PID

	mu      sync.Mutex
	taskErr error
	owner   *protocol.Owner
}

func setup(t *testing.T, adjust ...func(*Options)) *fixture {
	t.Helper()
	sys, log := actortest.SystemAndLogger(t)
	f := &fixture{sys: sys, owner: &protocol.Owner{}}
	f.state = actortest.NewRecorder(t, sys, "state-manager")
	f.task = actortest.NewRecorder(t, sys, "task-manager")
	f.broker = actortest.NewRecorder(t, sys, "broker")
	f.polic = actortest.NewRecorder(t, sys, "policy-manager")
	f.state.Respond(func(msg any) any {
		if _, ok := msg.(*protocol.GetState); ok {
			return &protocol.Snapshot{Node: "web-1", PoliciesLoaded: true, Policies: []string{"web"}}
		}
		return nil
	})
	f.task.Respond(func(any) any {
		f.mu.Lock()
		defer f.mu.Unlock()
		return &protocol.CommandDone{Err: f.taskErr}
	})
	f.broker.Respond(func(any) any { return &protocol.OutboxSnapshot{Events: 3, LastSequence: 42} })
	f.polic.Respond(func(any) any {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.owner
	})
	allowed, err := targets.Parse([]string{"127.0.0.0/8"})
	require.NoError(t, err)
	dir := t.TempDir()
	f.opts = Options{
		Node: "web-1", Labels: []string{"web", "eu"},
		Allow: map[string][]string{
			"ops":      {"observe_now", "pause", "resume", "get_state"},
			"deployer": {"apply_policy", "remove_policy"},
		},
		Rate:    100,
		Window:  filepath.Join(dir, WindowFile),
		Central: filepath.Join(dir, "central-policies"),
		Env:     policy.Env{Allowed: allowed, Limits: actortest.Limits()},
		State:   f.state.PID, Task: f.task.PID, Broker: f.broker.PID, Policies: f.polic.PID,
		Log: log,
	}
	for _, adj := range adjust {
		adj(&f.opts)
	}
	f.start(t)
	return f
}

func (f *fixture) start(t *testing.T) {
	t.Helper()
	f.pid = f.sys.Root.Spawn(Props(f.opts))
	pid := f.pid
	t.Cleanup(func() { _ = f.sys.Root.StopFuture(pid).Wait() })
}

// send delivers body from user and returns the answer and whether the
// delivery was settled with it.
func (f *fixture) send(t *testing.T, user string, body []byte) *messages.Event {
	t.Helper()
	before := len(f.state.EventsOf(messages.TypeCommandResult))
	settled := make(chan *messages.Event, 1)
	f.sys.Root.Send(f.pid, &protocol.ControlDelivery{Body: body, UserID: user, ReplyTo: "amq.rabbitmq.reply-to.x",
		Settle: func(ev *messages.Event) { settled <- ev }})
	var emit *protocol.Emit
	require.Eventually(t, func() bool {
		var n int
		for _, m := range f.state.Messages() {
			if e, ok := m.(*protocol.Emit); ok && e.Event.Type == messages.TypeCommandResult {
				if n++; n > before {
					emit = e
					return true
				}
			}
		}
		return false
	}, actortest.Wait, 2*time.Millisecond, "no command.result")
	assert.Equal(t, protocol.ActorEmitter(protocol.Control), emit.From)
	// The broker calls Accepted once the answer is in the outbox: that
	// settles the delivery, with the answer.
	require.NotNil(t, emit.Accepted)
	emit.Accepted(emit.Event)
	assert.Same(t, emit.Event, <-settled)
	return emit.Event
}

func command(mod func(*messages.Command)) *messages.Command {
	c := &messages.Command{
		Id: uuid.Must(uuid.NewV7()).String(), Issuer: "alice", IssuedAt: timestamppb.Now(),
		Target:    &messages.Command_Target{Selector: &messages.Command_Target_Node{Node: "web-1"}},
		Arguments: &messages.Command_Pause_{Pause: &messages.Command_Pause{Policy: "web", Observer: "health"}},
	}
	if mod != nil {
		mod(c)
	}
	return c
}

func body(t *testing.T, c *messages.Command) []byte {
	t.Helper()
	b, err := proto.Marshal(c)
	require.NoError(t, err)
	return b
}

func result(ev *messages.Event) *messages.CommandResult { return ev.GetCommandResult() }

func TestRefusals(t *testing.T) {
	expired := timestamppb.New(time.Now().Add(-time.Minute))
	tests := []struct {
		name string
		user string
		body func(t *testing.T) []byte
		code messages.ReturnCode
		want string
	}{
		{"too large", "ops", func(*testing.T) []byte { return make([]byte, maxBody+1) },
			messages.ReturnCode_RETURN_CODE_TOO_LARGE, "a command may have at most"},
		{"no user_id", "", func(t *testing.T) []byte { return body(t, command(nil)) },
			messages.ReturnCode_RETURN_CODE_NO_USER, "no user_id"},
		{"a user control.allow does not name", "mallory", func(t *testing.T) []byte { return body(t, command(nil)) },
			messages.ReturnCode_RETURN_CODE_NOT_ALLOWED, `broker user "mallory" may send no command to node web-1`},
		{"not protobuf", "ops", func(*testing.T) []byte { return []byte("\xff\xff\xffsecret text") },
			messages.ReturnCode_RETURN_CODE_MALFORMED, "the body is not a Command"},
		{"an id that is not a UUIDv7", "ops", func(t *testing.T) []byte {
			return body(t, command(func(c *messages.Command) { c.Id = uuid.NewString() }))
		}, messages.ReturnCode_RETURN_CODE_MALFORMED, "not a UUIDv7"},
		{"no target", "ops", func(t *testing.T) []byte { return body(t, command(func(c *messages.Command) { c.Target = nil })) },
			messages.ReturnCode_RETURN_CODE_MALFORMED, "no target"},
		{"expired", "ops", func(t *testing.T) []byte {
			return body(t, command(func(c *messages.Command) { c.ExpiresAt = expired }))
		},
			messages.ReturnCode_RETURN_CODE_EXPIRED, "expired at"},
		{"another node", "ops", func(t *testing.T) []byte {
			return body(t, command(func(c *messages.Command) {
				c.Target = &messages.Command_Target{Selector: &messages.Command_Target_Node{Node: "db-1"}}
			}))
		}, messages.ReturnCode_RETURN_CODE_WRONG_TARGET, "for node db-1, not for node web-1"},
		{"another group", "ops", func(t *testing.T) []byte {
			return body(t, command(func(c *messages.Command) {
				c.Target = &messages.Command_Target{Selector: &messages.Command_Target_Group{Group: "db"}}
			}))
		}, messages.ReturnCode_RETURN_CODE_WRONG_TARGET, "for group db"},
		{"no argument it knows", "ops", func(t *testing.T) []byte { return body(t, command(func(c *messages.Command) { c.Arguments = nil })) },
			messages.ReturnCode_RETURN_CODE_UNKNOWN_COMMAND, "no argument this daemon knows"},
		{"a command the user may not send", "ops", func(t *testing.T) []byte {
			return body(t, command(func(c *messages.Command) {
				c.Arguments = &messages.Command_RemovePolicy_{RemovePolicy: &messages.Command_RemovePolicy{Name: "web"}}
			}))
		}, messages.ReturnCode_RETURN_CODE_NOT_ALLOWED, `broker user "ops" may not send remove_policy`},
		{"an invalid observer name", "ops", func(t *testing.T) []byte {
			return body(t, command(func(c *messages.Command) {
				c.Arguments = &messages.Command_Pause_{Pause: &messages.Command_Pause{Policy: "../x", Observer: "h"}}
			}))
		}, messages.ReturnCode_RETURN_CODE_MALFORMED, "invalid policy or observer name"},
	}
	f := setup(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := f.send(t, tt.user, tt.body(t))
			res := result(ev)
			assert.Equal(t, tt.code, res.Code)
			assert.False(t, res.Ok)
			assert.Contains(t, res.Message, tt.want)
			assert.NotContains(t, res.Message, "secret text", "a refusal never quotes the body")
			assert.Equal(t, &messages.Caller{Channel: "amqp", User: tt.user}, res.Caller)
		})
	}
	assert.Empty(t, f.task.Messages(), "nothing refused reached the task-manager")
}

func TestRateLimitPerUser(t *testing.T) {
	f := setup(t, func(o *Options) { o.Rate = 1 }) // bursts of 2
	var codes []messages.ReturnCode
	for range 3 {
		codes = append(codes, result(f.send(t, "ops", body(t, command(nil)))).Code)
	}
	assert.Equal(t, []messages.ReturnCode{messages.ReturnCode_RETURN_CODE_OK, messages.ReturnCode_RETURN_CODE_OK,
		messages.ReturnCode_RETURN_CODE_RATE_LIMITED}, codes)
	// Another user has a bucket of its own.
	cmd := command(func(c *messages.Command) {
		c.Arguments = &messages.Command_RemovePolicy_{RemovePolicy: &messages.Command_RemovePolicy{Name: "none"}}
	})
	assert.Equal(t, messages.ReturnCode_RETURN_CODE_NOT_FOUND, result(f.send(t, "deployer", body(t, cmd))).Code)
}

func TestFarOverTheRateIsAckedWithoutAnswer(t *testing.T) {
	f := setup(t, func(o *Options) { o.Rate = 1 }) // bursts of 2, and 2 refusals
	// Senders control.allow does not name share one bucket.
	var codes []messages.ReturnCode
	for _, user := range []string{"mallory", "", "eve", "mallory"} {
		codes = append(codes, result(f.send(t, user, body(t, command(nil)))).Code)
	}
	assert.Equal(t, []messages.ReturnCode{messages.ReturnCode_RETURN_CODE_NOT_ALLOWED, messages.ReturnCode_RETURN_CODE_NO_USER,
		messages.ReturnCode_RETURN_CODE_RATE_LIMITED, messages.ReturnCode_RETURN_CODE_RATE_LIMITED}, codes)

	// Beyond: settled (acked) with no answer, and nothing emitted.
	before := len(f.state.EventsOf(messages.TypeCommandResult))
	settled := make(chan *messages.Event, 1)
	f.sys.Root.Send(f.pid, &protocol.ControlDelivery{Body: body(t, command(nil)), UserID: "mallory",
		Settle: func(ev *messages.Event) { settled <- ev }})
	select {
	case ev := <-settled:
		assert.Nil(t, ev)
	case <-time.After(actortest.Wait):
		t.Fatal("not settled")
	}
	assert.Len(t, f.state.EventsOf(messages.TypeCommandResult), before)

	// A user control.allow names has a bucket of its own.
	assert.Equal(t, messages.ReturnCode_RETURN_CODE_OK, result(f.send(t, "ops", body(t, command(nil)))).Code)
}

func TestObserverCommandsGoToTheTaskManager(t *testing.T) {
	f := setup(t)
	group := &messages.Command_Target{Selector: &messages.Command_Target_Group{Group: "eu"}}
	for _, tc := range []struct {
		cmd  *messages.Command
		want any
		name string
	}{
		{command(func(c *messages.Command) {
			c.Target = group
		}), &protocol.Pause{Policy: "web", Observer: "health"}, "pause"},
		{command(func(c *messages.Command) {
			c.Target = &messages.Command_Target{Selector: &messages.Command_Target_All{All: true}}
			c.Arguments = &messages.Command_Resume_{Resume: &messages.Command_Resume{Policy: "web", Observer: "health"}}
		}), &protocol.Resume{Policy: "web", Observer: "health"}, "resume"},
		{command(func(c *messages.Command) {
			c.Arguments = &messages.Command_ObserveNow_{ObserveNow: &messages.Command_ObserveNow{Policy: "web", Observer: "health"}}
		}), &protocol.ObserveNow{Policy: "web", Observer: "health"}, "observe_now"},
	} {
		before := len(f.task.Messages())
		ev := f.send(t, "ops", body(t, tc.cmd))
		res := result(ev)
		assert.Equal(t, messages.ReturnCode_RETURN_CODE_OK, res.Code, tc.name)
		assert.True(t, res.Ok)
		assert.Equal(t, tc.name, res.Command)
		assert.Equal(t, "web/health", res.Target)
		assert.Equal(t, tc.want, f.task.Messages()[before], "the same message as the admin socket's")
		assert.Equal(t, tc.cmd.Id, ev.CorrelationId)
		assert.Equal(t, tc.cmd.Id, ev.CausationId)
		assert.True(t, proto.Equal(tc.cmd, res.Answered), "the result carries the command it answers")
	}

	f.mu.Lock()
	f.taskErr = errors.New("observer web/health is not paused")
	f.mu.Unlock()
	res := result(f.send(t, "ops", body(t, command(nil))))
	assert.Equal(t, messages.ReturnCode_RETURN_CODE_FAILED, res.Code)
	assert.Equal(t, "observer web/health is not paused", res.Message)
}

func TestGetStateAnswersTheSnapshotOfV1State(t *testing.T) {
	f := setup(t)
	res := result(f.send(t, "ops", body(t, command(func(c *messages.Command) {
		c.Arguments = &messages.Command_GetState_{GetState: &messages.Command_GetState{}}
	}))))
	require.Equal(t, messages.ReturnCode_RETURN_CODE_OK, res.Code, res.Message)
	var s protocol.Snapshot
	require.NoError(t, json.Unmarshal(res.Output, &s))
	assert.Equal(t, "web-1", s.Node)
	assert.Equal(t, []string{"web"}, s.Policies)
	assert.Equal(t, &protocol.OutboxSnapshot{Events: 3, LastSequence: 42}, s.Outbox)
}

const webPolicy = `apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: web, url: "http://127.0.0.1:8080"}
  observers:
    - {name: health, kind: http, interval: 5s, http: {path: /healthz}}
`

func apply(name, doc string) *messages.Command {
	return command(func(c *messages.Command) {
		c.Arguments = &messages.Command_ApplyPolicy_{ApplyPolicy: &messages.Command_ApplyPolicy{Name: name, Document: []byte(doc)}}
	})
}

func TestApplyAndRemovePolicy(t *testing.T) {
	f := setup(t)
	file := policymanager.CentralFile(f.opts.Central, "web")

	res := result(f.send(t, "deployer", body(t, apply("web", webPolicy))))
	require.Equal(t, messages.ReturnCode_RETURN_CODE_OK, res.Code, res.Message)
	assert.Contains(t, res.Message, "cached as "+file)
	assert.Nil(t, res.Answered.GetApplyPolicy().GetDocument(), "the document is not echoed")
	got, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Equal(t, webPolicy, string(got), "cached as it was sent")
	assert.Equal(t, &protocol.PolicyOwner{Name: "web"}, f.polic.Messages()[0])

	// Invalid: problems as a policy file's, file:line first; the cache
	// keeps the last good version.
	bad := strings.Replace(webPolicy, "interval: 5s", "interval: -5s", 1)
	res = result(f.send(t, "deployer", body(t, apply("web", bad))))
	assert.Equal(t, messages.ReturnCode_RETURN_CODE_INVALID_POLICY, res.Code)
	assert.True(t, strings.HasPrefix(res.Message, file+":7:"), res.Message)
	got, err = os.ReadFile(file)
	require.NoError(t, err)
	assert.Equal(t, webPolicy, string(got), "last good version kept")

	res = result(f.send(t, "deployer", body(t, apply("other", webPolicy))))
	assert.Equal(t, messages.ReturnCode_RETURN_CODE_INVALID_POLICY, res.Code)
	assert.Contains(t, res.Message, `the document names policy "web", the command "other"`)

	res = result(f.send(t, "deployer", body(t, apply("web", strings.Repeat("#", policy.MaxFileSize+1)))))
	assert.Equal(t, messages.ReturnCode_RETURN_CODE_TOO_LARGE, res.Code)

	// A name a local file holds.
	f.mu.Lock()
	f.owner = &protocol.Owner{File: "/etc/observerd/policies.d/web.yaml", Line: 3}
	f.mu.Unlock()
	res = result(f.send(t, "deployer", body(t, apply("web", webPolicy))))
	assert.Equal(t, messages.ReturnCode_RETURN_CODE_NAME_CONFLICT, res.Code)
	assert.Equal(t, "policy web is the local file /etc/observerd/policies.d/web.yaml:3's; the central policy "+file+" is refused", res.Message)

	remove := command(func(c *messages.Command) {
		c.Arguments = &messages.Command_RemovePolicy_{RemovePolicy: &messages.Command_RemovePolicy{Name: "web"}}
	})
	res = result(f.send(t, "deployer", body(t, remove)))
	assert.Equal(t, messages.ReturnCode_RETURN_CODE_OK, res.Code, res.Message)
	assert.NoFileExists(t, file)
	res = result(f.send(t, "deployer", body(t, command(func(c *messages.Command) {
		c.Arguments = &messages.Command_RemovePolicy_{RemovePolicy: &messages.Command_RemovePolicy{Name: "web"}}
	}))))
	assert.Equal(t, messages.ReturnCode_RETURN_CODE_NOT_FOUND, res.Code)
}

func TestRedeliveryIsAnsweredAgainWithoutActingTwice(t *testing.T) {
	f := setup(t)
	cmd := body(t, command(nil))
	first := result(f.send(t, "ops", cmd))
	assert.False(t, first.Repeat)
	second := result(f.send(t, "ops", cmd))
	assert.True(t, second.Repeat)
	assert.Equal(t, first.Code, second.Code)
	assert.Equal(t, first.Message, second.Message)
	assert.Len(t, f.task.Messages(), 1, "acted once")

	// The window outlives the actor: a restarted daemon answers too.
	require.NoError(t, f.sys.Root.StopFuture(f.pid).Wait())
	f.start(t)
	third := result(f.send(t, "ops", cmd))
	assert.True(t, third.Repeat)
	assert.Len(t, f.task.Messages(), 1, "acted once")

	// A refusal is answered again the same way.
	expired := body(t, command(func(c *messages.Command) { c.ExpiresAt = timestamppb.New(time.Now().Add(-time.Second)) }))
	assert.False(t, result(f.send(t, "ops", expired)).Repeat)
	again := result(f.send(t, "ops", expired))
	assert.True(t, again.Repeat)
	assert.Equal(t, messages.ReturnCode_RETURN_CODE_EXPIRED, again.Code)
}

func TestWindowIsBounded(t *testing.T) {
	w, err := openWindow(filepath.Join(t.TempDir(), WindowFile), 3, time.Hour)
	require.NoError(t, err)
	defer w.close()
	now := time.Now()
	ids := make([]string, 5)
	for i := range ids {
		ids[i] = uuid.Must(uuid.NewV7()).String()
		require.NoError(t, w.put(ids[i], &messages.CommandResult{Message: ids[i]}, now.Add(time.Duration(i)*time.Second)))
	}
	assert.Equal(t, 3, w.n)
	assert.Nil(t, w.get(ids[0]), "the oldest beyond the count go")
	assert.Nil(t, w.get(ids[1]))
	assert.Equal(t, ids[4], w.get(ids[4]).Message)
	// Put again: not counted twice.
	require.NoError(t, w.put(ids[4], &messages.CommandResult{Message: "again"}, now.Add(5*time.Second)))
	assert.Equal(t, 3, w.n)
	// Too old: gone at the next put.
	require.NoError(t, w.put(uuid.Must(uuid.NewV7()).String(), &messages.CommandResult{}, now.Add(2*time.Hour)))
	assert.Equal(t, 1, w.n)
	assert.Nil(t, w.get(ids[4]))
}

func TestAPanicIsAnAnswerNotACrash(t *testing.T) {
	a := New(Options{Allow: map[string][]string{"ops": {"pause"}}, Log: actortest.Logger(t)})
	// No window: handling panics.
	res, _ := a.handleSafely(actortest.System(t).Root, &protocol.ControlDelivery{UserID: "ops", Body: body(t, command(nil))})
	assert.Equal(t, messages.ReturnCode_RETURN_CODE_INTERNAL, res.Code)
	assert.Contains(t, res.Message, "the daemon failed handling the command")
}
