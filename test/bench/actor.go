package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/polar/observerd/actors/broker"
	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/configs"
	"github.com/polar/observerd/messages"
)

// benchNode is the node name the events carry; its dot ends up as "_" in
// the routing key, as for a real host name.
const benchNode = "bench.local"

// event returns an observation.http event shaped like the ones the http
// observer emits (envelope stamped by the state-manager, a small payload),
// so that the bytes on disk and on the wire are realistic.
func event(i int) *messages.Event {
	ev := messages.NewEvent(messages.TypeObservationHTTP)
	ev.Node = benchNode
	ev.Source = messages.Source(benchNode, "observer/web/health")
	ev.Subject = "web"
	ev.CorrelationId = "0190a5c2-7f1e-7b3a-9c4d-5e6f7a8b9c0d"
	ev.Policy = &messages.PolicyRef{Name: "web", Revision: "sha256:9f2c4e1a7b3d5f60"}
	ev.Provenance = []*messages.Hop{{Service: "observerd", Version: "bench", Node: benchNode, Time: ev.Time}}
	ev.Data = &messages.Event_Http{Http: &messages.HttpObservation{
		Url:        "http://127.0.0.1:8080/healthz",
		Method:     "GET",
		Result:     messages.Result_RESULT_OK,
		StatusCode: 200,
		Latency:    durationpb.New(time.Duration(1500+i%1000) * time.Microsecond),
		BodyBytes:  15,
		Values:     map[string]string{"/status": "ok"},
	}}
	return ev
}

// statusLog is the stand-in for the state-manager: it records the
// BrokerStatus notifications, which say when the actor (re)connected.
type statusLog struct {
	mu   sync.Mutex
	list []protocol.BrokerStatus
}

func (s *statusLog) receive(ctx actor.Context) {
	if st, ok := ctx.Message().(*protocol.BrokerStatus); ok {
		s.mu.Lock()
		s.list = append(s.list, *st)
		s.mu.Unlock()
	}
}

// connectedSince returns when the actor's first connection opened at or
// after t.
func (s *statusLog) connectedSince(t time.Time) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.list {
		if st.Connected && !st.Since.Before(t) {
			return st.Since, true
		}
	}
	return time.Time{}, false
}

func (s *statusLog) waitConnected(ctx context.Context, after time.Time, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		if at, ok := s.connectedSince(after); ok {
			return at, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("broker actor not connected within %s", timeout)
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return time.Time{}, err
		}
	}
}

// brokerRun is one broker actor with a fresh state dir, a fresh exchange
// and its own durable quorum queue bound "#".
type brokerRun struct {
	e        *env
	pid      *actor.PID
	statusID *actor.PID
	status   *statusLog
	exchange string
	queue    string
	stateDir string
	outbox   *broker.Outbox
	started  time.Time
}

func (e *env) startBroker(ctx context.Context, kind string) (*brokerRun, error) {
	name := e.name(kind)
	dir, err := os.MkdirTemp(e.work, "state-")
	if err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	b := &brokerRun{e: e, status: &statusLog{}, exchange: name, queue: name + ".q", stateDir: dir, started: time.Now()}
	if b.statusID, err = e.sys.Root.SpawnNamed(actor.PropsFromFunc(b.status.receive), name+".status"); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("spawn status recorder: %w", err)
	}
	if b.outbox, err = broker.OpenOutbox(filepath.Join(dir, "outbox"), broker.OutboxOptions{Node: benchNode}); err != nil {
		b.close()
		return nil, err
	}
	opts := broker.Options{
		Node:          benchNode,
		Outbox:        b.outbox,
		URLs:          []string{e.node.URL()},
		Credentials:   broker.StaticCredentials(e.node.TLSConfig(), e.node.Password),
		Exchange:      b.exchange,
		ConfirmWindow: e.cfg.window,
		Heartbeat:     10 * time.Second,
		Queues:        []configs.Queue{{Name: b.queue, Type: "quorum", Bindings: []string{"#"}}},
		DrainTimeout:  10 * time.Second,
		State:         b.statusID,
		Log:           e.log.With().Str("actor", name).Logger(),
	}
	if b.pid, err = e.sys.Root.SpawnNamed(broker.Props(opts), name); err != nil {
		b.pid = nil
		b.close()
		return nil, fmt.Errorf("spawn broker actor: %w", err)
	}
	// Measurements start connected: dialing and declaring is not what the
	// rows are about.
	if _, err := b.status.waitConnected(ctx, b.started, 30*time.Second); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (b *brokerRun) stats() (*protocol.OutboxSnapshot, error) {
	res, err := b.e.sys.Root.RequestFuture(b.pid, &protocol.GetOutboxStats{}, 10*time.Second).Result()
	if err != nil {
		return nil, fmt.Errorf("get outbox stats: %w", err)
	}
	st, ok := res.(*protocol.OutboxSnapshot)
	if !ok {
		return nil, fmt.Errorf("get outbox stats: unexpected answer %T", res)
	}
	return st, nil
}

// waitDrained polls the outbox until it is empty and holds at least last
// sequences (so that events still on their way into the outbox count), and
// returns when it saw that.
func (b *brokerRun) waitDrained(ctx context.Context, last uint64, every, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := b.stats()
		if err != nil {
			return time.Time{}, err
		}
		if st.Events == 0 && st.LastSequence >= last {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("outbox not drained within %s: %d events left, last sequence %d of %d",
				timeout, st.Events, st.LastSequence, last)
		}
		if err := sleep(ctx, every); err != nil {
			return time.Time{}, err
		}
	}
}

// close stops the actor (which drains what is left, bounded by its
// DrainTimeout), deletes the queue and the exchange so that queue depth
// never carries over into the next run, and counts the outbox's write
// transactions before the state dir is removed.
func (b *brokerRun) close() (commits int) {
	if b.pid != nil {
		_ = b.e.sys.Root.PoisonFuture(b.pid).Wait()
	}
	_ = b.e.sys.Root.PoisonFuture(b.statusID).Wait()
	if b.outbox != nil {
		_ = b.outbox.Close()
	}
	if err := b.e.deleteTopology(b.exchange, b.queue); err != nil {
		b.e.say("%v", err)
	}
	if id, err := txID(filepath.Join(b.stateDir, "outbox", "outbox.db")); err == nil {
		commits = id - b.e.freshTxID
	}
	_ = os.RemoveAll(b.stateDir)
	return commits
}

// producer sends events to the broker actor at a steady rate.
type producer struct {
	sent atomic.Int64
	done chan struct{}
}

func (e *env) startProducer(ctx context.Context, pid *actor.PID, perSecond int) *producer {
	p := &producer{done: make(chan struct{})}
	// A burst of a tenth of a second keeps the rate steady without making
	// the producer's own scheduling jitter visible as a lower rate.
	lim := rate.NewLimiter(rate.Limit(perSecond), max(1, perSecond/10))
	go func() {
		defer close(p.done)
		for i := 0; ; i++ {
			if lim.Wait(ctx) != nil {
				return
			}
			e.sys.Root.Send(pid, &protocol.Publish{Event: event(i)})
			p.sent.Add(1)
		}
	}()
	return p
}

// stop stops the producer and returns how many events it sent.
func (p *producer) stop(cancel context.CancelFunc) int64 {
	cancel()
	<-p.done
	return p.sent.Load()
}

// freshTxID is the transaction id bbolt reports for a fresh outbox that
// OpenOutbox initialised, the zero from which a run's commits are counted.
func freshTxID(work string) (int, error) {
	dir, err := os.MkdirTemp(work, "fresh-")
	if err != nil {
		return 0, fmt.Errorf("create outbox dir: %w", err)
	}
	defer os.RemoveAll(dir)
	ob, err := broker.OpenOutbox(dir, broker.OutboxOptions{})
	if err != nil {
		return 0, err
	}
	if err := ob.Close(); err != nil {
		return 0, err
	}
	return txID(filepath.Join(dir, "outbox.db"))
}

// txID reads the id of the last committed write transaction of a closed
// bbolt file: every Append and every Delete of the outbox is one, each
// with its own fsyncs.
func txID(path string) (int, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	tx, err := db.Begin(false)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	defer func() { _ = tx.Rollback() }()
	return tx.ID(), nil
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
