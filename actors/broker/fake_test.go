package broker

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/messages"
)

// fakeBroker plays RabbitMQ behind the link seam, as amqp091-go shows it:
// a dial opens a fakeLink while the broker is up and fails while it is
// down; every publication waits for the test to ack, nack or return it; a
// connection can be blocked, or lost at any point.
type fakeBroker struct {
	t      testing.TB
	window int // the pipeline's ConfirmWindow: what its returns channel holds

	mu         sync.Mutex
	down       error // dials fail with it while set
	openErr    error // the next Open fails with it
	consumeErr error // the next Consume fails with it
	links      chan *fakeLink
}

func newFakeBroker(t testing.TB, window int) *fakeBroker {
	return &fakeBroker{t: t, window: window, links: make(chan *fakeLink, 64)}
}

// dial is the pipeline's dialer.
func (b *fakeBroker) dial(context.Context) (link, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down != nil {
		return nil, b.down
	}
	l := &fakeLink{
		t:          b.t,
		openErr:    b.openErr,
		consumeErr: b.consumeErr,
		control:    make(chan amqp.Delivery, 64),
		acks:       make(chan uint64, 64),
		replies:    make(chan fakeReply, 64),
		published:  make(chan *fakePub, 1<<14),
		returns:    make(chan amqp.Return, returnsBuffer(b.window)),
		blocked:    make(chan amqp.Blocking, 1),
		closed:     make(chan *amqp.Error, 1),
	}
	b.openErr, b.consumeErr = nil, nil
	select {
	case b.links <- l:
	default:
		b.t.Error("fake broker: more links than the test takes")
	}
	return l, nil
}

// setDown makes dials fail with err, or succeed again when err is nil.
func (b *fakeBroker) setDown(err error) {
	b.mu.Lock()
	b.down = err
	b.mu.Unlock()
}

// failOpen makes the next link's Open fail with err.
func (b *fakeBroker) failOpen(err error) {
	b.mu.Lock()
	b.openErr = err
	b.mu.Unlock()
}

// next waits for the next link the pipeline dials.
func (b *fakeBroker) next(t testing.TB) *fakeLink {
	t.Helper()
	select {
	case l := <-b.links:
		return l
	case <-time.After(within):
		t.Fatal("fake broker: no connection was dialed")
		return nil
	}
}

// noMoreLinks asserts that the pipeline dialed no other link.
func (b *fakeBroker) noMoreLinks(t testing.TB) {
	t.Helper()
	select {
	case <-b.links:
		t.Fatal("fake broker: the connection was dialed again")
	default:
	}
}

// fakeLink is one connection of the fake broker and its channel.
type fakeLink struct {
	t         testing.TB
	openErr   error
	published chan *fakePub
	returns   chan amqp.Return
	blocked   chan amqp.Blocking
	closed    chan *amqp.Error

	// The control channel: deliveries the test sends, the delivery tags
	// acked, the reply copies sent.
	consumeErr error
	consumed   *ControlOptions
	// controlClosed: the deliveries ended (l.mu).
	controlClosed bool
	control       chan amqp.Delivery
	acks          chan uint64
	replies       chan fakeReply

	mu          sync.Mutex
	opened      bool
	gone        bool          // closed, aborted or lost: no more publishing
	aborted     bool          // its socket was closed
	stuck       chan struct{} // while blocked: a Publish waits on it, as on a socket nobody reads
	outstanding map[*fakePub]bool
	most        int // the most publications outstanding at once
	publishes   int // Publish calls, failed ones included
}

func (l *fakeLink) URL() string { return "amqps://fake/" }

func (l *fakeLink) Open() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.openErr != nil {
		return l.openErr
	}
	l.opened = true
	l.outstanding = map[*fakePub]bool{}
	return nil
}

func (l *fakeLink) Publish(_ context.Context, exchange, key string, msg amqp.Publishing) (confirm, error) {
	l.mu.Lock()
	l.publishes++
	for l.stuck != nil && !l.gone {
		stuck := l.stuck
		l.mu.Unlock()
		<-stuck
		l.mu.Lock()
	}
	defer l.mu.Unlock()
	if l.gone {
		return nil, amqp.ErrClosed
	}
	seq, err := strconv.ParseUint(msg.Headers["cloudEvents:sequence"].(string), 10, 64)
	if err != nil {
		l.t.Errorf("fake link: publication without a sequence: %v", err)
		return nil, err
	}
	p := &fakePub{l: l, seq: seq, key: key, exchange: exchange, msg: msg, done: make(chan struct{})}
	l.outstanding[p] = true
	l.most = max(l.most, len(l.outstanding))
	select {
	case l.published <- p:
	default:
		l.t.Error("fake link: more publications than the test takes")
	}
	return p, nil
}

func (l *fakeLink) Consume(c *ControlOptions) (<-chan amqp.Delivery, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.consumeErr != nil {
		return nil, l.consumeErr
	}
	l.consumed = c
	return l.control, nil
}

func (l *fakeLink) Reply(_ context.Context, to string, msg amqp.Publishing) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gone {
		return amqp.ErrClosed
	}
	l.replies <- fakeReply{to: to, msg: msg}
	return nil
}

// fakeReply is a reply copy the control channel sent.
type fakeReply struct {
	to  string
	msg amqp.Publishing
}

// deliver sends a command to the control channel as RabbitMQ would, with
// delivery tag tag.
func (l *fakeLink) deliver(tag uint64, userID, replyTo string, body []byte) {
	l.control <- amqp.Delivery{Acknowledger: fakeAcker{l}, DeliveryTag: tag, UserId: userID, ReplyTo: replyTo, Body: body}
}

// loseControl closes the control channel alone, as a channel error does.
func (l *fakeLink) loseControl() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.controlClosed = true
	close(l.control)
}

// fakeAcker records the acks of the control channel's deliveries.
type fakeAcker struct{ l *fakeLink }

func (a fakeAcker) Ack(tag uint64, _ bool) error {
	a.l.mu.Lock()
	defer a.l.mu.Unlock()
	if a.l.gone {
		return amqp.ErrClosed
	}
	a.l.acks <- tag
	return nil
}

func (a fakeAcker) Nack(uint64, bool, bool) error {
	a.l.t.Error("fake link: a control delivery was nacked")
	return nil
}

func (a fakeAcker) Reject(uint64, bool) error {
	a.l.t.Error("fake link: a control delivery was rejected")
	return nil
}

func (l *fakeLink) Returns() <-chan amqp.Return   { return l.returns }
func (l *fakeLink) Blocked() <-chan amqp.Blocking { return l.blocked }
func (l *fakeLink) Closed() <-chan *amqp.Error    { return l.closed }
func (l *fakeLink) Close()                        { l.shutdown(nil) }

func (l *fakeLink) Abort() {
	l.mu.Lock()
	l.aborted = true
	l.mu.Unlock()
	l.shutdown(&amqp.Error{Code: amqp.FrameError, Reason: "use of closed network connection"})
}

// lose loses the connection with err, as amqp091-go shows it: the error
// to the close listeners first, then the returns channel closed, every
// outstanding confirm nacked, the blocking channel closed.
func (l *fakeLink) lose(err *amqp.Error) { l.shutdown(err) }

func (l *fakeLink) shutdown(err *amqp.Error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gone {
		return
	}
	l.gone = true
	if l.stuck != nil {
		close(l.stuck)
		l.stuck = nil
	}
	if err != nil {
		l.closed <- err
	}
	close(l.returns)
	if l.consumed != nil && !l.controlClosed {
		l.controlClosed = true
		close(l.control)
	}
	for p := range l.outstanding {
		p.settle(false)
	}
	clear(l.outstanding)
	close(l.blocked)
	close(l.closed)
}

// block raises a resource alarm: the notification, and a socket that
// RabbitMQ no longer reads (a Publish waits until unblock or the socket
// is closed).
func (l *fakeLink) block(reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stuck == nil {
		l.stuck = make(chan struct{})
	}
	l.notify(amqp.Blocking{Active: true, Reason: reason})
}

// stall makes RabbitMQ stop reading the socket before its notification
// says so: a Publish then waits inside, until unblock or the socket is
// closed.
func (l *fakeLink) stall() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stuck == nil {
		l.stuck = make(chan struct{})
	}
}

// unblock clears the alarm.
func (l *fakeLink) unblock() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stuck != nil {
		close(l.stuck)
		l.stuck = nil
	}
	l.notify(amqp.Blocking{Active: false})
}

// notify sends a blocking notification as amqp091-go does: waiting for the
// reader, then giving up after 5 s (the publisher must read at once).
func (l *fakeLink) notify(b amqp.Blocking) {
	if l.gone {
		return
	}
	select {
	case l.blocked <- b:
	case <-time.After(5 * time.Second):
		l.t.Error("fake link: nobody read the blocking notification: amqp091-go would drop it")
	}
}

// next waits for the next publication.
func (l *fakeLink) next(t testing.TB) *fakePub {
	t.Helper()
	select {
	case p := <-l.published:
		return p
	case <-time.After(within):
		t.Fatal("fake link: nothing was published")
		return nil
	}
}

// nextN waits for the next n publications.
func (l *fakeLink) nextN(t testing.TB, n int) []*fakePub {
	t.Helper()
	out := make([]*fakePub, n)
	for i := range out {
		out[i] = l.next(t)
	}
	return out
}

// quiet asserts that nothing more was published so far.
func (l *fakeLink) quiet(t testing.TB) {
	t.Helper()
	select {
	case p := <-l.published:
		t.Fatalf("fake link: sequence %d was published", p.seq)
	default:
	}
}

// stats are the link's Publish calls and the most outstanding at once.
func (l *fakeLink) stats() (publishes, most int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.publishes, l.most
}

func (l *fakeLink) isGone() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gone
}

func (l *fakeLink) isAborted() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.aborted
}

// fakePub is one publication and its deferred confirm.
type fakePub struct {
	l        *fakeLink
	seq      uint64
	exchange string
	key      string
	msg      amqp.Publishing

	done  chan struct{}
	acked bool // written before done is closed
}

func (p *fakePub) Done() <-chan struct{} { return p.done }
func (p *fakePub) Acked() bool           { return p.acked }

// settle resolves the confirm; l.mu held.
func (p *fakePub) settle(ack bool) {
	if !p.l.outstanding[p] {
		p.l.t.Errorf("fake link: sequence %d settled twice", p.seq)
		return
	}
	delete(p.l.outstanding, p)
	p.acked = ack
	close(p.done)
}

func (p *fakePub) ack()  { p.answer(true, false, true) }
func (p *fakePub) nack() { p.answer(false, false, true) }

// ret returns the publication unroutable, then acks it, as RabbitMQ does
// for a mandatory message that no queue takes.
func (p *fakePub) ret() { p.answer(true, true, true) }

// returnOnly returns the publication, its ack still to come (ack).
func (p *fakePub) returnOnly() { p.answer(false, true, false) }

// answer returns the publication, and settles its confirm. amqp091-go
// would wait for a full returns channel, then drop the return: the test
// fails instead.
func (p *fakePub) answer(ack, returned, settle bool) {
	l := p.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gone {
		return // nacked already
	}
	if returned {
		select {
		case l.returns <- amqp.Return{MessageId: p.msg.MessageId, RoutingKey: p.key, ReplyText: "NO_ROUTE"}:
		default:
			l.t.Errorf("fake link: the returns channel is full (%d): amqp091-go would wait, then drop the return", cap(l.returns))
		}
	}
	if settle {
		p.settle(ack)
	}
}

// ackOutstanding acks every publication not settled yet.
func (l *fakeLink) ackOutstanding() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p := range l.outstanding {
		p.settle(true)
	}
}

// event decodes the publication's body (protobuf).
func (p *fakePub) event(t testing.TB) *messages.Event {
	t.Helper()
	ev := &messages.Event{}
	require.NoError(t, proto.Unmarshal(p.msg.Body, ev))
	return ev
}

// ackAll acks pubs.
func ackAll(pubs []*fakePub) {
	for _, p := range pubs {
		p.ack()
	}
}

// seqsOf are the publications' sequences.
func seqsOf(pubs []*fakePub) []uint64 {
	out := make([]uint64, len(pubs))
	for i, p := range pubs {
		out[i] = p.seq
	}
	return out
}

var errRefused = errors.New("dial tcp 127.0.0.1:5671: connect: connection refused")
