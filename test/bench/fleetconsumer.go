package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/rabbitmq"
)

// The fleet row's consumer reads every event of the fleet (and of the
// baseline's publishers) from the one quorum queue, as a consumer team
// would: it takes each event's latency from its `time` to its receipt,
// follows every node's sequence as test/consumer does (duplicates, gaps
// less the ranges that outbox.overflow reports), and notes when each node
// delivered again after a node of the cluster was killed.

const (
	// fleetPrefetch is the consumer's prefetch; it acknowledges every
	// fleetAckEvery deliveries at once.
	fleetPrefetch = 1000
	fleetAckEvery = 64
	// maxTrackedSequence bounds a node's sequence the consumer follows (a
	// bit each): far above what a run makes.
	maxTrackedSequence = 1 << 22
	// maxWindowSamples bounds the latencies a window keeps.
	maxWindowSamples = 1 << 20
)

// consumerWindow is what the consumer saw in one measuring window of the
// events whose node name has the window's prefix.
type consumerWindow struct {
	latencies []time.Duration
	bytes     int64
}

// seqRange is the sequences first to last.
type seqRange struct{ first, last uint64 }

// seqTrack is what the consumer knows of one node's sequence.
type seqTrack struct {
	seen    []bool // by sequence
	max     uint64
	dropped []seqRange // reported by outbox.overflow
	// beyond counts sequences above maxTrackedSequence, which are not
	// followed.
	beyond int
}

// add records seq; false for a duplicate.
func (t *seqTrack) add(seq uint64) bool {
	if seq == 0 || seq > maxTrackedSequence {
		t.beyond++
		return true
	}
	if need := int(seq) + 1; need > len(t.seen) {
		t.seen = append(t.seen, make([]bool, need-len(t.seen))...)
	}
	if t.seen[seq] {
		return false
	}
	t.seen[seq] = true
	t.max = max(t.max, seq)
	return true
}

// missing lists the sequences 1 to upto neither received nor reported
// dropped.
func (t *seqTrack) missing(upto uint64) []seqRange {
	var out []seqRange
	for s := uint64(1); s <= min(upto, maxTrackedSequence); s++ {
		if int(s) < len(t.seen) && t.seen[s] || t.wasDropped(s) {
			continue
		}
		if n := len(out); n > 0 && out[n-1].last == s-1 {
			out[n-1].last = s
		} else {
			out = append(out, seqRange{s, s})
		}
	}
	return out
}

func (t *seqTrack) wasDropped(seq uint64) bool {
	for _, r := range t.dropped {
		if seq >= r.first && seq <= r.last {
			return true
		}
	}
	return false
}

// fleetConsumer reads the queue on one node until closed, subscribing
// again if its channel or connection goes.
type fleetConsumer struct {
	node   *rabbitmq.Node
	queue  string
	cancel context.CancelFunc
	done   chan struct{}

	mu          sync.Mutex
	conn        *amqp.Connection
	nodes       map[string]*seqTrack
	duplicates  int
	undecodable int
	overflow    int
	received    int
	// prefix and window: the measuring window open, nil when none is.
	prefix string
	window *consumerWindow
	// resumeMark and resumed: for each node, the time from the mark to
	// the receipt of its first event made after the mark.
	resumeMark time.Time
	resumed    map[string]time.Duration
	lastErr    error
}

// startFleetConsumer subscribes to queue on node and reads it in the
// background.
func startFleetConsumer(ctx context.Context, node *rabbitmq.Node, queue string) (*fleetConsumer, error) {
	ctx, cancel := context.WithCancel(ctx)
	c := &fleetConsumer{node: node, queue: queue, cancel: cancel, done: make(chan struct{}),
		nodes: map[string]*seqTrack{}, resumed: map[string]time.Duration{}}
	dels, err := c.subscribe()
	if err != nil {
		cancel()
		return nil, err
	}
	go c.run(ctx, dels)
	return c, nil
}

func (c *fleetConsumer) subscribe() (<-chan amqp.Delivery, error) {
	conn, err := c.node.Dial()
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("consumer channel: %w", err)
	}
	if err := ch.Qos(fleetPrefetch, 0, false); err != nil {
		conn.Close()
		return nil, fmt.Errorf("consumer prefetch: %w", err)
	}
	dels, err := ch.Consume(c.queue, "", false, false, false, false, nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("consume %s: %w", c.queue, err)
	}
	c.mu.Lock()
	c.conn = conn
	c.mu.Unlock()
	return dels, nil
}

func (c *fleetConsumer) run(ctx context.Context, dels <-chan amqp.Delivery) {
	defer close(c.done)
	for {
		n := 0
		for d := range dels {
			c.handle(d)
			if n++; n%fleetAckEvery == 0 {
				_ = d.Ack(true)
			}
		}
		// The channel went (a cancel, a lost connection): what was not
		// acknowledged comes again, and counts as duplicates.
		c.mu.Lock()
		_ = c.conn.Close()
		c.mu.Unlock()
		for {
			if sleep(ctx, 200*time.Millisecond) != nil {
				return
			}
			var err error
			if dels, err = c.subscribe(); err == nil {
				break
			}
			c.mu.Lock()
			c.lastErr = err
			c.mu.Unlock()
		}
		if ctx.Err() != nil {
			// close read the connection before this one was made.
			c.mu.Lock()
			_ = c.conn.Close()
			c.mu.Unlock()
			return
		}
	}
}

func (c *fleetConsumer) handle(d amqp.Delivery) {
	now := time.Now()
	ev := &messages.Event{}
	err := proto.Unmarshal(d.Body, ev)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.undecodable++
		return
	}
	t := c.nodes[ev.Node]
	if t == nil {
		t = &seqTrack{}
		c.nodes[ev.Node] = t
	}
	if !t.add(ev.Sequence) {
		c.duplicates++
		return
	}
	c.received++
	if o := ev.GetOutboxOverflow(); o.GetFirstSequence() > 0 {
		t.dropped = append(t.dropped, seqRange{o.FirstSequence, o.LastSequence})
		c.overflow += int(o.LastSequence - o.FirstSequence + 1)
	}
	made := ev.GetTime().AsTime()
	if w := c.window; w != nil && strings.HasPrefix(ev.Node, c.prefix) && len(w.latencies) < maxWindowSamples {
		w.latencies = append(w.latencies, now.Sub(made))
		w.bytes += int64(len(d.Body))
	}
	if !c.resumeMark.IsZero() && made.After(c.resumeMark) {
		if _, ok := c.resumed[ev.Node]; !ok {
			c.resumed[ev.Node] = now.Sub(c.resumeMark)
		}
	}
}

// open opens a measuring window for the events of the nodes named
// prefix...
func (c *fleetConsumer) open(prefix string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prefix, c.window = prefix, &consumerWindow{}
}

// shut closes the window and returns what it saw.
func (c *fleetConsumer) shut() consumerWindow {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.window
	c.window = nil
	return *w
}

// markResume starts noting each node's first event made after t.
func (c *fleetConsumer) markResume(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resumeMark = t
	clear(c.resumed)
}

func (c *fleetConsumer) resumedAfter() map[string]time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.resumed)
}

// caughtUp reports whether every node of last has been read up to its
// last sequence.
func (c *fleetConsumer) caughtUp(last map[string]uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, seq := range last {
		t := c.nodes[name]
		if t == nil {
			if seq > 0 {
				return false
			}
			continue
		}
		if len(t.missing(seq)) > 0 {
			return false
		}
	}
	return true
}

// loss counts, for every node, the sequences missing from 1 to the
// highest it received or the one last says was confirmed.
func (c *fleetConsumer) loss(last map[string]uint64) fleetLoss {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := fleetLoss{duplicates: c.duplicates, overflow: c.overflow, events: c.received}
	names := slices.Collect(maps.Keys(c.nodes))
	for name := range last {
		if c.nodes[name] == nil {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	l.nodes = len(names)
	for _, name := range names {
		t := c.nodes[name]
		if t == nil {
			t = &seqTrack{}
		}
		for _, r := range t.missing(max(t.max, last[name])) {
			l.lost += int(r.last - r.first + 1)
			if len(l.lostNodes) < 10 {
				l.lostNodes = append(l.lostNodes, fmt.Sprintf("%s %d..%d", name, r.first, r.last))
			}
		}
		if t.beyond > 0 && len(l.lostNodes) < 10 {
			l.lostNodes = append(l.lostNodes, fmt.Sprintf("%s: %d sequences not followed (0 or above %d)", name, t.beyond, maxTrackedSequence))
		}
	}
	if c.undecodable > 0 {
		l.lostNodes = append(l.lostNodes, fmt.Sprintf("%d undecodable messages", c.undecodable))
	}
	if c.lastErr != nil {
		l.lostNodes = append(l.lostNodes, fmt.Sprintf("the consumer subscribed again after: %v", c.lastErr))
	}
	return l
}

// close stops reading.
func (c *fleetConsumer) close() {
	c.cancel()
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
	<-c.done
}
