package broker

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/actortest"
	"github.com/polar/observerd/test/tmpfs"
)

// brokerless starts a pipeline on ob with no broker to publish to (it
// dials a closed port): everything stays in the outbox, to be counted.
// setup runs before the pipeline's goroutines start. It is closed when the
// test ends.
func brokerless(t *testing.T, ob *Outbox, status func(protocol.BrokerStatus), setup func(*pipeline)) *pipeline {
	t.Helper()
	opts := &Options{Node: "test.node", Outbox: ob, URLs: []string{"amqp://observer@127.0.0.1:1/"},
		Credentials: StaticCredentials(nil, ""), ConfirmWindow: 16, Gate: &protocol.Gate{}, Log: actortest.Logger(t)}
	p := newPipeline(opts, ob, newMetrics(nil, opts.Log), status, dialAMQP(opts))
	if setup != nil {
		setup(p)
	}
	p.start()
	t.Cleanup(func() { closePipeline(p) })
	return p
}

// closePipeline stops p, unless it was stopped already.
func closePipeline(p *pipeline) {
	if p.intake.isClosed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.Close(ctx)
}

// tally reads the outbox: the events accepted, and the reports of losses
// by policy (their dropped_events summed).
func tally(t *testing.T, ob *Outbox) (accepted uint64, dropped map[string]uint64) {
	t.Helper()
	stored, err := ob.After(0, ob.Stats().Events+1)
	require.NoError(t, err)
	dropped = map[string]uint64{}
	for _, r := range stored {
		if o := r.Event.GetOutboxOverflow(); o != nil {
			dropped[o.GetPolicy()] += o.GetDroppedEvents()
		} else {
			accepted++
		}
	}
	return accepted, dropped
}

func TestBlockBoundsPendingWhileCommitsFail(t *testing.T) {
	// A failed commit puts its group back in front of what arrived during
	// the attempt: with when_full: block, the newest beyond the bound are
	// dropped (and reported), as Accept does, at every failed attempt.
	dir := t.TempDir()
	tmpfs.Mount(t, dir, "16m")
	limit := Limit{MaxBytes: 4 << 20} // block; pending bound 1 MiB
	ob, err := OpenOutbox(filepath.Join(dir, "outbox"), OutboxOptions{Limit: limit, Node: "test.node"})
	require.NoError(t, err)
	defer ob.Close()
	var failures atomic.Int64
	var worst atomic.Int64 // the largest pending seen after a failed commit
	status := &statusLog{}
	p := brokerless(t, ob, status.report, func(p *pipeline) {
		p.committer.failed = func() {
			if pending := p.intake.pendingBytes(); pending > worst.Load() {
				worst.Store(pending)
			}
			failures.Add(1)
		}
	})

	free := tmpfs.Fill(t, dir)
	// A stream of events during the failing commits (and the backoff
	// between them), until 5 have failed: 100+200+400+800 ms.
	var sent int
	for failures.Load() < 5 {
		sent++
		p.Accept(messages.NewEvent(messages.TypeObservationHTTP), nil)
	}
	_, reason := status.outboxErrors()
	require.Contains(t, reason, "no space left on device")
	free()
	require.Eventually(t, func() bool {
		if _, last := status.outboxErrors(); last != "" {
			return false
		}
		accepted, dropped := tally(t, ob)
		return accepted+dropped["disk_full"] == uint64(sent)
	}, within, 10*time.Millisecond, "every event sent is accepted or reported dropped")
	t.Logf("%d events sent, %d failed commits, pending at most %d bytes", sent, failures.Load(), worst.Load())
	assert.LessOrEqual(t, worst.Load(), pendingLimit(limit), "pending within its bound after every failed commit")
	_, dropped := tally(t, ob)
	assert.Positive(t, dropped["disk_full"])
	assert.Zero(t, dropped["memory_full"], "commits failed: the disk is why")
}

func TestSlowCommitsReportMemoryFull(t *testing.T) {
	// Commits that succeed but do not keep up (held here by the outbox's
	// writer lock, as a slow fsync holds it): what pending cannot hold is
	// dropped and reported as memory_full, not as a full disk.
	for _, tc := range []struct {
		name       string
		dropOldest bool
	}{{"drop_oldest", true}, {"block", false}} {
		t.Run(tc.name, func(t *testing.T) {
			limit := Limit{MaxBytes: 4 << 20, DropOldest: tc.dropOldest}
			ob, err := OpenOutbox(t.TempDir(), OutboxOptions{Limit: limit, Node: "test.node"})
			require.NoError(t, err)
			defer ob.Close()
			status := &statusLog{}
			p := brokerless(t, ob, status.report, nil)

			ob.mu.Lock()
			sent := events(3 * (1 << 20) / 60) // three times the bound
			for _, ev := range sent {
				p.Accept(ev, nil)
			}
			ob.mu.Unlock()
			require.Eventually(t, func() bool {
				accepted, dropped := tally(t, ob)
				return accepted+dropped["memory_full"] == uint64(len(sent))
			}, within, 10*time.Millisecond, "every event sent is accepted or reported dropped as memory_full")
			accepted, dropped := tally(t, ob)
			t.Logf("%d accepted, %d dropped", accepted, dropped["memory_full"])
			assert.Positive(t, dropped["memory_full"])
			assert.Equal(t, map[string]uint64{"memory_full": dropped["memory_full"]}, dropped, "no other policy")
			ever, _ := status.outboxErrors()
			assert.False(t, ever, "the outbox was writable all along")
		})
	}
}

func TestDropsReportedByATimerRunningAtStopAreNotLost(t *testing.T) {
	// The report timer comes due while a commit is held up and a stop
	// begins: whichever the committer takes first, the drops must reach
	// the outbox, once.
	ob, err := OpenOutbox(t.TempDir(), OutboxOptions{Node: "test.node"})
	require.NoError(t, err)
	defer ob.Close()
	// A commit held up (as by a slow fsync) from the first event on.
	ob.mu.Lock()
	p := brokerless(t, ob, func(protocol.BrokerStatus) {}, func(p *pipeline) {
		p.committer.drops = []Dropped{{First: 1, Last: 3, Events: 3, Bytes: 300, Policy: "drop_oldest"}}
		p.committer.reportDelay = time.Nanosecond
		p.Accept(events(1)[0], nil)
	})

	closed := make(chan struct{})
	go func() { closePipeline(p); close(closed) }()
	require.Eventually(t, p.intake.isClosed, within, time.Millisecond)
	ob.mu.Unlock()
	select {
	case <-closed:
	case <-time.After(within):
		t.Fatal("stop hangs")
	}

	stored, err := ob.After(0, 10)
	require.NoError(t, err)
	var reports []*messages.OutboxOverflow
	for _, r := range stored {
		if o := r.Event.GetOutboxOverflow(); o != nil {
			reports = append(reports, o)
		}
	}
	require.Len(t, reports, 1, "the drops are reported once")
	assert.Equal(t, "drop_oldest", reports[0].GetPolicy())
	assert.Equal(t, uint64(1), reports[0].GetFirstSequence())
	assert.Equal(t, uint64(3), reports[0].GetLastSequence())
}

func TestLossesAreReportedByAStopThatFindsTheDiskWritable(t *testing.T) {
	// Events dropped from memory while the disk was full, then a stop
	// whose last try of the commit succeeds: the stop must report them
	// (a stop used to take the report for a late event and drop it).
	dir := t.TempDir()
	tmpfs.Mount(t, dir, "16m")
	limit := Limit{MaxBytes: 4 << 20, DropOldest: true} // pending bound 1 MiB
	ob, err := OpenOutbox(filepath.Join(dir, "outbox"), OutboxOptions{Limit: limit, Node: "test.node"})
	require.NoError(t, err)
	defer ob.Close()
	var failures atomic.Int64
	failed, release := make(chan struct{}), make(chan struct{})
	p := brokerless(t, ob, func(protocol.BrokerStatus) {}, func(p *pipeline) {
		p.committer.failed = func() {
			if failures.Add(1) == 2 {
				close(failed) // and wait, in the committer, for the stop to begin
				<-release
			}
		}
	})

	free := tmpfs.Fill(t, dir)
	sent := events(3 * (1 << 20) / 60) // three times the bound
	for _, ev := range sent {
		p.Accept(ev, nil)
	}
	select {
	case <-failed:
	case <-time.After(within):
		t.Fatal("the commits did not fail")
	}
	free()
	closed := make(chan struct{})
	go func() { closePipeline(p); close(closed) }()
	require.Eventually(t, p.intake.isClosed, within, time.Millisecond)
	close(release)
	select {
	case <-closed:
	case <-time.After(within):
		t.Fatal("stop hangs")
	}

	accepted, dropped := tally(t, ob)
	t.Logf("%d accepted, %v dropped", accepted, dropped)
	assert.Positive(t, dropped["disk_full"], "the loss is reported")
	assert.Equal(t, uint64(len(sent)), accepted+dropped["disk_full"]+dropped["memory_full"], "every event accepted or reported")
}

// lastTxID is the id of ob's last write transaction.
func lastTxID(t *testing.T, ob *Outbox) int {
	t.Helper()
	var id int
	require.NoError(t, ob.view(func(tx *bolt.Tx) error {
		id = tx.ID()
		return nil
	}))
	return id
}

// lingering starts a pipeline whose commits of few events linger an hour,
// hands it one event, and returns once the committer has seen it, with
// the id of the outbox's last write transaction before that event.
func lingering(t *testing.T) (*pipeline, *Outbox, int) {
	t.Helper()
	ob := testOutbox(t, Limit{})
	p, fake, _ := faked(t, ob, func(p *pipeline, _ *fakeBroker) { p.committer.linger = time.Hour })
	fake.next(t)
	before := lastTxID(t, ob)
	accept(p, 1)
	eventually(t, func() bool { return len(p.committer.work) == 0 }, "the committer took its wake")
	return p, ob, before
}

func TestFewEventsLingerForOneCommitUntilEnoughWait(t *testing.T) {
	// At a low rate every event paid a transaction and an fsync of its
	// own: the first now waits for more, and enough of them are committed
	// at once, however long the linger.
	p, ob, before := lingering(t)
	accept(p, lingerEnough-1)
	eventually(t, func() bool { return ob.Stats().LastSequence == lingerEnough }, "enough events are committed without waiting out the linger")
	assert.Equal(t, 1, lastTxID(t, ob)-before, "in one transaction")
}

func TestAStopCommitsTheEventsThatLinger(t *testing.T) {
	p, ob, _ := lingering(t)
	stopNow(p)
	assert.Equal(t, uint64(1), ob.Stats().LastSequence, "accepted at the stop, not lost")
	assert.Equal(t, 1, ob.Stats().Events)
}

func TestAReconnectWhileDeletesLingerPublishesEveryEventAgain(t *testing.T) {
	// The first connection's acks of 20 events linger in the committer
	// (fewer than lingerEnough deletes, an hour) or still wait in the
	// publisher when the connection is lost: the next connection
	// publishes the 20 again, as the outbox still holds them, and the
	// next commit of enough events takes their deletes along.
	ob := testOutbox(t, Limit{})
	p, fake, _ := faked(t, ob, func(p *pipeline, _ *fakeBroker) { p.committer.linger, p.committer.deleteLinger = 0, time.Hour })
	first := fake.next(t)
	accept(p, 20)
	eventually(t, func() bool { return ob.Stats().LastSequence == 20 }, "all 20 committed: no commit of events takes the deletes along")
	ackAll(first.nextN(t, 16))
	ackAll(first.nextN(t, 4))
	first.lose(&amqp.Error{Code: 320, Reason: "CONNECTION_FORCED"})
	second := fake.next(t)
	again := second.nextN(t, 16)
	ackAll(again)
	again = append(again, second.nextN(t, 4)...)
	ackAll(again[16:])
	assert.Equal(t, seqRange(1, 20), seqsOf(again), "every event again, in order")
	assert.Equal(t, uint64(20), ob.Stats().LastSequence)
	accept(p, lingerEnough)
	var next []*fakePub
	for len(next) < lingerEnough {
		pub := second.next(t)
		pub.ack()
		next = append(next, pub)
	}
	assert.Equal(t, seqRange(21, 20+lingerEnough), seqsOf(next))
	eventually(t, func() bool { s := storedSeqs(t, ob); return len(s) == 0 || s[0] > 20 }, "the first 20 deleted with the events committed next")
}

func TestAReconnectWhileEventsLingerPublishesThemOnTheNextConnection(t *testing.T) {
	// Events linger (not committed, not accepted) while the connection is
	// lost and the next one opens: once committed they go on the new one.
	ob := testOutbox(t, Limit{})
	p, fake, _ := faked(t, ob, func(p *pipeline, _ *fakeBroker) { p.committer.linger = time.Hour })
	first := fake.next(t)
	accept(p, 1)
	eventually(t, func() bool { return len(p.committer.work) == 0 }, "the committer took its wake")
	first.lose(&amqp.Error{Code: 320, Reason: "CONNECTION_FORCED"})
	second := fake.next(t)
	first.quiet(t)
	assert.Zero(t, ob.Stats().LastSequence, "still lingering")
	accept(p, lingerEnough-1)
	assert.Equal(t, seqRange(1, lingerEnough), ackUntilEmpty(t, second, ob, lingerEnough))
}

func TestReconnectsUnderASteadyStreamLoseNothing(t *testing.T) {
	// The lingers at their real lengths, a stream of events at a low rate
	// (an event every 2 ms: commits linger), and the connection lost after
	// a few publications each time, some of them acked and some not:
	// every sequence is acked in the end and the outbox empties, whatever
	// the interleaving of a linger, a commit, an fsync and a reconnect.
	ob := testOutbox(t, Limit{})
	p, fake, _ := faked(t, ob, nil)
	const total = 300
	go func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for range total {
			<-tick.C
			if p.intake.isClosed() {
				return
			}
			accept(p, 1)
		}
	}()
	rng := rand.New(rand.NewPCG(1, 2))
	acked := map[uint64]bool{}
	deadline := time.After(within)
	links := 0
	for l := fake.next(t); ; l = fake.next(t) {
		links++
		// The link lives for a few publications, or until none comes for
		// 20 ms (a window held by an unconfirmed one, or nothing left).
		for keep := 1 + rng.IntN(60); keep > 0; keep-- {
			select {
			case pub := <-l.published:
				if rng.IntN(16) > 0 { // one in sixteen stays unconfirmed at the loss
					pub.ack()
					acked[pub.seq] = true
				}
				continue
			case <-time.After(20 * time.Millisecond):
			case <-deadline:
				t.Fatalf("after %d connections the outbox holds %v; %d of %d acked", links, storedSeqs(t, ob), len(acked), total)
			}
			break
		}
		if st := ob.Stats(); st.LastSequence == total && st.Events == 0 {
			break
		}
		l.lose(&amqp.Error{Code: 320, Reason: "CONNECTION_FORCED"})
	}
	t.Logf("%d connections", links)
	for s := uint64(1); s <= total; s++ {
		assert.True(t, acked[s], "sequence %d acked", s)
	}
}

// seqRange is from..to.
func seqRange(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}
