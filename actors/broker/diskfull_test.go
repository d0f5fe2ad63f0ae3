package broker

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/test/actortest"
	"github.com/polar/observerd/test/tmpfs"
)

// statusLog records the pipeline's status reports and, with gate, whether
// the gate was closed at each report that said the outbox failed.
type statusLog struct {
	gate *protocol.Gate

	mu         sync.Mutex
	all        []protocol.BrokerStatus
	gateClosed []bool
}

func (l *statusLog) report(s protocol.BrokerStatus) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all = append(l.all, s)
	if s.OutboxError != "" {
		l.gateClosed = append(l.gateClosed, l.gate.Closed())
	}
}

// gateWhileFailing is whether the gate was closed at each report that the
// outbox failed.
func (l *statusLog) gateWhileFailing() []bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.gateClosed)
}

func (l *statusLog) outboxErrors() (ever bool, last string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.all {
		ever = ever || s.OutboxError != ""
		last = s.OutboxError
	}
	return ever, last
}

func TestDiskFullBoundsPendingAndReportsWhatItDropped(t *testing.T) {
	for _, tc := range []struct {
		name       string
		dropOldest bool
	}{{"drop_oldest", true}, {"block", false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tmpfs.Mount(t, dir, "16m")
			// 4 MiB: the pending bound is its quarter, 1 MiB; nothing is
			// dropped from the outbox itself.
			limit := Limit{MaxBytes: 4 << 20, DropOldest: tc.dropOldest}
			ob, err := OpenOutbox(filepath.Join(dir, "outbox"), OutboxOptions{Limit: limit, Node: "test.node"})
			require.NoError(t, err)
			defer ob.Close()
			gate := &protocol.Gate{}
			// No broker: everything stays in the outbox, to be counted.
			opts := &Options{Node: "test.node", Outbox: ob, URLs: []string{"amqp://observer@127.0.0.1:1/"},
				Credentials: StaticCredentials(nil, ""), ConfirmWindow: 16, Gate: gate, Log: actortest.Logger(t)}
			status := &statusLog{gate: gate}
			p := newPipeline(opts, ob, newMetrics(nil, opts.Log), status.report, dialAMQP(opts))
			p.start()
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				p.Close(ctx)
			}()

			free := tmpfs.Fill(t, dir)
			// Three times the pending bound: the outbox must grow, and
			// cannot.
			sent := events(3 * (1 << 20) / 60)
			for _, ev := range sent {
				p.Accept(ev, nil)
			}
			assert.LessOrEqual(t, p.intake.pendingBytes(), pendingLimit(limit), "pending is bounded")
			require.Eventually(t, func() bool { _, last := status.outboxErrors(); return last != "" }, within, 10*time.Millisecond,
				"readiness says the outbox cannot be written")
			_, reason := status.outboxErrors()
			assert.Contains(t, reason, "no space left on device")
			// The gate opens again with the first commit that succeeds,
			// which may come before free (space the failed commit left):
			// what counts is the gate when readiness said why.
			for _, closed := range status.gateWhileFailing() {
				assert.Equal(t, !tc.dropOldest, closed, "block closes the gate while the outbox cannot be written")
			}

			free()
			var stored []Record
			var accepted, dropped uint64
			require.Eventually(t, func() bool {
				if _, last := status.outboxErrors(); last != "" {
					return false
				}
				stored, err = ob.After(0, len(sent)+10)
				require.NoError(t, err)
				accepted, dropped = 0, 0
				for _, r := range stored {
					if o := r.Event.GetOutboxOverflow(); o != nil {
						dropped += o.GetDroppedEvents()
					} else {
						accepted++
					}
				}
				return accepted+dropped == uint64(len(sent))
			}, within, 10*time.Millisecond, "every event sent is accepted or reported dropped, once the outbox takes events again")
			assert.False(t, gate.Closed())
			assert.Positive(t, dropped)
			ids := map[string]bool{}
			policies := map[string]bool{}
			for i, r := range stored {
				require.Equal(t, uint64(i+1), r.Event.Sequence, "every accepted sequence, without a gap")
				ids[r.Event.Id] = true
				if o := r.Event.GetOutboxOverflow(); o != nil {
					policies[o.GetPolicy()] = true
					assert.Zero(t, o.GetFirstSequence(), "the dropped events had no sequence")
				}
			}
			// Until the file must grow, bbolt commits into pages it has
			// free: what is dropped while those commits succeed is
			// memory_full; once they fail, disk_full.
			assert.True(t, policies["disk_full"], "drops reported as disk_full: %v", policies)
			delete(policies, "disk_full")
			delete(policies, "memory_full")
			assert.Empty(t, policies, "no other reason")
			// drop_oldest keeps the newest, block refuses them.
			assert.Equal(t, tc.dropOldest, ids[sent[len(sent)-1].Id])
		})
	}
}

func TestStopWhileTheOutboxCannotBeWrittenDoesNotHang(t *testing.T) {
	// The commit loop's retries end with a stop even when the outbox never
	// becomes writable again: what was never accepted is dropped with a
	// log line.
	dir := t.TempDir()
	tmpfs.Mount(t, dir, "4m")
	ob, err := OpenOutbox(filepath.Join(dir, "outbox"), OutboxOptions{Limit: Limit{MaxBytes: 4 << 20}})
	require.NoError(t, err)
	defer ob.Close()
	opts := &Options{Outbox: ob, URLs: []string{"amqp://observer@127.0.0.1:1/"}, Credentials: StaticCredentials(nil, ""),
		ConfirmWindow: 16, Log: actortest.Logger(t)}
	status := &statusLog{}
	p := newPipeline(opts, ob, newMetrics(nil, opts.Log), status.report, dialAMQP(opts))
	p.start()
	tmpfs.Fill(t, dir)
	for _, ev := range events(20000) {
		p.Accept(ev, nil)
	}
	require.Eventually(t, func() bool { _, last := status.outboxErrors(); return last != "" }, within, 10*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { p.Close(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(within):
		t.Fatal("stop hangs while the outbox cannot be written")
	}
}

// within bounds the waits of the tests that need no broker.
const within = 20 * time.Second
