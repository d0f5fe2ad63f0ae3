package broker

import (
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/test/actortest"
)

// failNow makes the broker actor panic, for its supervisor to restart it.
type failNow struct{}

func failOnFailNow(next actor.ReceiverFunc) actor.ReceiverFunc {
	return func(c actor.ReceiverContext, env *actor.MessageEnvelope) {
		if _, ok := env.Message.(failNow); ok {
			panic("test: broker fails")
		}
		next(c, env)
	}
}

// fakeActor spawns the broker actor on ob, its connections the fake
// broker's, failing on failNow; the recorder gets its statuses.
func fakeActor(t *testing.T, ob *Outbox) (*actor.ActorSystem, *actor.PID, *fakeBroker, *actortest.Recorder, *protocol.Gate) {
	t.Helper()
	sys := actortest.System(t)
	state := actortest.NewRecorder(t, sys, "state")
	gate := &protocol.Gate{}
	a := New(Options{Node: "test.node", Outbox: ob, Exchange: "observerd", ConfirmWindow: 16, Gate: gate,
		DrainTimeout: within, State: state.PID, Log: actortest.Logger(t)})
	fake := newFakeBroker(t, 16)
	a.dial = fake.dial
	pid, err := sys.Root.SpawnNamed(props(a).Configure(actor.WithReceiverMiddleware(failOnFailNow)), "broker")
	require.NoError(t, err)
	return sys, pid, fake, state, gate
}

func outboxSnapshot(t *testing.T, sys *actor.ActorSystem, pid *actor.PID) *protocol.OutboxSnapshot {
	t.Helper()
	res, err := sys.Root.RequestFuture(pid, &protocol.GetOutboxStats{}, time.Second).Result()
	require.NoError(t, err)
	return res.(*protocol.OutboxSnapshot)
}

func TestActorHandsEventsInAnswersAndDrainsAtStop(t *testing.T) {
	ob := testOutbox(t, Limit{})
	sys, pid, fake, state, gate := fakeActor(t, ob)
	l := fake.next(t)
	actortest.WaitMessage(t, state, func(s *protocol.BrokerStatus) bool { return s.Connected })

	for _, ev := range events(3) {
		sys.Root.Send(pid, &protocol.Publish{Event: ev})
	}
	pubs := l.nextN(t, 3)
	assert.Equal(t, &protocol.OutboxSnapshot{Events: 3, Bytes: ob.Stats().Bytes, LastSequence: 3}, outboxSnapshot(t, sys, pid))

	sys.Root.Send(pid, &protocol.SetOutboxLimit{MaxBytes: 1})
	eventually(t, gate.Closed, "block, and full: the observers' gate closes")
	sys.Root.Send(pid, &protocol.SetOutboxLimit{MaxBytes: 1, DropOldest: true})
	eventually(t, func() bool { return !gate.Closed() }, "drop_oldest: open")

	// The stop waits for the outstanding confirms (DrainTimeout).
	stopped := sys.Root.PoisonFuture(pid)
	ackAll(pubs)
	require.NoError(t, stopped.Wait())
	assert.Zero(t, ob.Stats().Events, "confirmed during the stop, deleted")
	assert.True(t, l.isAborted(), "the connection is closed")
}

func TestActorRestartPublishesWhatWasUnconfirmedFirst(t *testing.T) {
	// The fault test "observerd killed mid-stream", within the process: a
	// new incarnation publishes what is in the outbox from the oldest.
	ob := testOutbox(t, Limit{})
	sys, pid, fake, _, _ := fakeActor(t, ob)
	l := fake.next(t)
	for _, ev := range events(3) {
		sys.Root.Send(pid, &protocol.Publish{Event: ev})
	}
	pubs := l.nextN(t, 3)
	pubs[0].ack()
	sys.Root.Send(pid, failNow{})

	again := fake.next(t)
	published := ackUntilEmpty(t, again, ob, 3)
	assert.Equal(t, []uint64{2, 3}, published[len(published)-2:], "the unconfirmed, in order")
	assert.True(t, l.isAborted(), "the old incarnation's connection is closed")
	require.NoError(t, sys.Root.PoisonFuture(pid).Wait())
}
