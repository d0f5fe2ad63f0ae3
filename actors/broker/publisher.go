package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/actors/restart"
	"github.com/polar/observerd/messages"
)

// publisher is the connection's owner. It dials (reconnecting with capped
// exponential backoff), then publishes what the outbox holds, in sequence
// order, with deferred confirms, at most ConfirmWindow unconfirmed, and
// settles the confirms in publish order: an ack of an event that was not
// returned goes to the committer (confirmed), which deletes the event; a
// nack or a return makes it go again later, backing off. A connection
// whose publications are all nacked for nackLimit is given up for the next
// node. Its goroutine alone holds its state: the link, the window, the
// retries, what it has not handed to the committer yet.
type publisher struct {
	o       *Options
	dial    dialer
	outbox  *Outbox
	status  *statusBoard
	metrics *metrics
	log     zerolog.Logger
	// confirmed goes to the committer; closed when the publisher ends.
	confirmed chan<- confirmed
	// retryDelay is how long a returned or nacked event first waits
	// (retryDelay); nackLimit how long all publications may be nacked
	// before the connection is given up (nackLimit); stallAfter how long a
	// confirm may be awaited before the status says so (confirmStall).
	retryDelay, nackLimit, stallAfter time.Duration
	// deliver hands a delivery of the control channel to the control
	// actor (set by the broker actor when Options.Control is).
	deliver func(*protocol.ControlDelivery)

	// connected is set while a session is open: a stop waits for the
	// outbox to drain only then.
	connected atomic.Bool
	cancel    context.CancelFunc
	done      chan struct{} // closed when the publisher ended

	// The goroutine's own:
	retries retrySet
	acked   []uint64 // confirmed, not handed to the committer yet
	repair  bool     // a read found damage, not told the committer yet
	// givenUp counts the connections given up in a row for their nacks;
	// the next dial waits longer after each (reconnect), until an ack.
	givenUp int
	// nacks and returns count what is logged at most every logEvery.
	nacks, returns rateLog
}

// retryDelay is how long a returned or nacked event first waits before it
// goes again; each time it is returned or nacked again the wait doubles,
// up to maxRetryDelay. Short enough that a binding added by an operator
// takes effect quickly, long enough that a missing binding or a queue that
// refuses (a nack) costs RabbitMQ little: make bench once measured a
// 2-second constant retry growing into 1.13 million nacked publications in
// 11 minutes.
const (
	retryDelay    = time.Second
	maxRetryDelay = 30 * time.Second
)

// nackLimit is how long every publication on a connection may be nacked
// before the connection is given up for the next node. A quorum queue
// whose leader moved nacks on the connection that knew the old one until
// its node returns, while a new connection is acked at once; a full queue
// (x-overflow: reject-publish) nacks on every connection, and then the
// growing reconnect backoff bounds the cost.
const nackLimit = 3 * time.Second

// confirmStall is how long a publication may wait for its confirm before
// readiness says that confirms do not come (a quorum queue without a
// majority holds them); a confirm takes milliseconds otherwise.
const confirmStall = 5 * time.Second

// damagedRead is how long the publisher waits to read again when the
// outbox file is damaged, unless the committer's repair comes first.
const damagedRead = time.Second

// reconnect paces reconnection attempts: capped exponential backoff with
// jitter from 100 ms to 5 s. The cap is lower than for restarts because a
// failed dial costs the broker little, and every second of delay after the
// broker is back is a second of events waiting (make bench measured up to
// 24 s of idle delay with a 30 s cap).
var reconnect = restart.Policy{MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second}

var (
	errConnectionClosed = errors.New("connection closed")
	errChannelClosed    = errors.New("channel closed")
	errNacked           = errors.New("every publication nacked")
)

func (p *publisher) run(ctx context.Context) {
	defer close(p.done)
	defer func() {
		// The committer deletes what was confirmed until the very end.
		if out, m := p.toCommitter(true); out != nil {
			out <- m
		}
		close(p.confirmed)
	}()
	// A stop reports no status, but leaves no connection either.
	defer p.metrics.status(protocol.BrokerStatus{})
	for attempt := 1; ctx.Err() == nil; attempt++ {
		l, err := p.dial(ctx)
		url := ""
		if err == nil {
			attempt = 0
			url = l.URL()
			p.metrics.opened()
			p.log.Info().Str("url", url).Msg("broker connected")
			err = p.session(ctx, l)
		}
		if ctx.Err() != nil {
			return
		}
		p.status.connection(protocol.BrokerStatus{URL: url, Since: time.Now(), LastError: err.Error()})
		if errors.Is(err, errNacked) {
			p.givenUp++
		}
		delay := reconnect.Backoff(max(attempt, p.givenUp, 1))
		switch {
		case errors.Is(err, errCredentials):
			// An operator's mistake (a rotation half done, a mode too open),
			// not the network's: said as such, the secret never.
			p.log.Error().Err(err).Stringer("retry_in", delay).Msg("broker connection failed: credentials unreadable")
		case errors.Is(err, errNacked):
			p.log.Warn().Err(err).Str("url", url).Stringer("retry_in", delay).Msg("broker connection given up for the next node")
		default:
			p.log.Warn().Err(err).Stringer("retry_in", delay).Msg("broker connection failed")
		}
		if !p.pause(ctx, delay) {
			return
		}
	}
}

// pause waits d, handing the committer what the last session confirmed;
// false when ctx ended.
func (p *publisher) pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		out, m := p.toCommitter(true)
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case out <- m:
			p.handedOver()
		}
	}
}

// handOverEvery is how many acked events the publisher gathers before it
// hands them to the committer while confirms are outstanding: each hand
// over costs a commit, and a steady stream then deletes in large groups.
// With that many waiting, the publisher publishes nothing more until the
// committer took them: an acked event stays in the outbox until its
// deletion is committed, and goes again after a crash, so this bounds the
// duplicates of a failure (docs/delivery.md, "Limits") and the memory the
// acks take while the disk is slow.
const handOverEvery = 256

// toCommitter is the send case of a select that hands the committer what
// it must know: a nil channel when there is nothing to hand over yet. The
// acked events wait for handOverEvery of them unless all is set (nothing
// more is outstanding); a repair never waits.
func (p *publisher) toCommitter(all bool) (chan<- confirmed, confirmed) {
	if !p.repair && (len(p.acked) == 0 || !all && len(p.acked) < handOverEvery) {
		return nil, confirmed{}
	}
	return p.confirmed, confirmed{seqs: p.acked, repair: p.repair}
}

func (p *publisher) handedOver() { p.acked, p.repair = nil, false }

// handOverNow hands the committer what it must know if it is free to take
// it; otherwise that waits for the next chance, while publishing goes on.
func (p *publisher) handOverNow(all bool) {
	if out, m := p.toCommitter(all); out != nil {
		select {
		case out <- m:
			p.handedOver()
		default:
		}
	}
}

// session publishes over one link until it fails or ctx ends, and closes
// it. Every event still in the outbox is published again from the start:
// after a reconnect nothing tells which of the previous session's
// outstanding events were confirmed, so at most ConfirmWindow duplicates
// per failure.
func (p *publisher) session(ctx context.Context, l link) error {
	// A stop must end a Publish blocked on a socket that RabbitMQ stopped
	// reading (a resource alarm): ctx does not reach it.
	unwatch := context.AfterFunc(ctx, l.Abort)
	defer unwatch()
	if err := l.Open(); err != nil {
		l.Close()
		return err
	}
	var controlDone <-chan struct{}
	if p.o.Control != nil && p.deliver != nil {
		deliveries, err := l.Consume(p.o.Control)
		if err != nil {
			l.Close()
			return err
		}
		controlDone = p.consume(ctx, l, deliveries)
	}
	// Retries are moot: everything goes again from the start. The claims
	// are kept: an event published on a lost connection may have been
	// delivered, so it stays protected from drop_oldest until confirmed.
	p.retries.clear()
	p.status.retrying(p.retries.waiting())
	p.status.connection(protocol.BrokerStatus{Connected: true, URL: l.URL(), Since: time.Now()})

	s := &session{p: p, l: l, returned: map[string]bool{}, unblocked: make(chan struct{}, 1), controlDone: controlDone}
	// Blocking notifications are read by their own goroutine: amqp091-go
	// sends them from its reader goroutine, which would stall the whole
	// connection (heartbeats included) while nobody reads, and drops them
	// after 5 s; the session may be inside a Publish meanwhile.
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for b := range l.Blocked() {
			s.blocked.Store(b.Active)
			p.onBlocking(b, l.URL())
			if !b.Active {
				wake(s.unblocked)
			}
		}
	}()
	p.connected.Store(true)
	err := s.run(ctx)
	p.connected.Store(false)
	s.logTallies(true)
	if ctx.Err() != nil {
		// A stop closes the socket: a blocked connection would not close.
		l.Abort()
	}
	l.Close()
	// Closing the connection ends its notifications: a blocking report
	// never follows the report of the loss.
	<-watched
	if controlDone != nil {
		<-controlDone
	}
	return err
}

func (p *publisher) onBlocking(b amqp.Blocking, url string) {
	if b.Active {
		p.log.Warn().Str("reason", b.Reason).Msg("broker blocked publishing (resource alarm)")
	} else {
		p.log.Info().Msg("broker unblocked publishing")
	}
	p.status.connection(protocol.BrokerStatus{Connected: true, Blocked: b.Active, URL: url, Since: time.Now(), LastError: b.Reason})
}

// session is one link's publishing, in the publisher's goroutine.
type session struct {
	p *publisher
	l link
	// blocked is set, and unblocked woken, by the blocking notifications.
	blocked   atomic.Bool
	unblocked chan struct{}
	window    []sent          // published, unconfirmed, in publish order
	ready     []Record        // claimed, to publish as the window has room; at most a window
	cursor    uint64          // the highest sequence read from the outbox
	returned  map[string]bool // event ids returned, until their confirm is settled
	// readAfter holds reads back while the outbox file is damaged, until
	// the committer's repair appends its report, or then.
	readAfter time.Time
	// nackedSince is the first nack since the last ack, and nacked how
	// many came since: while set, only retries are published (a
	// connection that nacks gets no new events), and after nackLimit the
	// connection is given up.
	nackedSince time.Time
	nacked      int
	// stalled is set while the oldest publication has waited for its
	// confirm for confirmStall.
	stalled bool
	// controlDone is closed when the control channel's deliveries ended
	// (nil: no control channel).
	controlDone <-chan struct{}
}

// sent is one published, not yet confirmed event.
type sent struct {
	seq     uint64
	id      string
	confirm confirm
	at      time.Time // published, for the confirm latency
}

func (s *session) run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if err := s.settle(); err != nil {
			return err
		}
		if s.nacked > 0 && time.Since(s.nackedSince) >= s.p.nackLimit {
			return fmt.Errorf("%w for %s on %s (%d nacks, no ack)", errNacked, s.p.nackLimit, s.l.URL(), s.nacked)
		}
		s.watchConfirms()
		if !s.blocked.Load() {
			n, err := s.publish(ctx)
			if err != nil {
				return err
			}
			if n > 0 {
				continue
			}
		}
		// Nothing to publish now: wait for what changes that.
		var oldest <-chan struct{}
		if len(s.window) > 0 {
			oldest = s.window[0].confirm.Done()
		}
		out, m := s.p.toCommitter(len(s.window) == 0)
		timer.Reset(s.nextWake())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-s.l.Closed():
			return closedErr(e)
		case <-s.controlDone:
			return errControlClosed
		case <-oldest:
		case <-s.unblocked:
		case <-s.p.outbox.Appended():
			s.readAfter = time.Time{}
		case <-timer.C:
		case out <- m:
			s.p.handedOver()
		}
	}
}

// nextWake is how long until a retry is due, a damaged file may be read
// again, the nacks last too long, or a confirm is late; an hour when none.
func (s *session) nextWake() time.Duration {
	next := time.Hour
	if t, ok := s.p.retries.next(); ok {
		next = min(next, time.Until(t))
	}
	if !s.readAfter.IsZero() {
		next = min(next, time.Until(s.readAfter))
	}
	if s.nacked > 0 {
		next = min(next, time.Until(s.nackedSince.Add(s.p.nackLimit)))
	}
	if len(s.window) > 0 && !s.stalled {
		next = min(next, time.Until(s.window[0].at.Add(s.p.stallAfter)))
	}
	return max(next, time.Millisecond)
}

// watchConfirms tells the status board when the oldest publication has
// waited stallAfter for its confirm, and when that ends.
func (s *session) watchConfirms() {
	stalled := len(s.window) > 0 && time.Since(s.window[0].at) >= s.p.stallAfter
	if stalled != s.stalled {
		s.stalled = stalled
		s.p.status.stalled(stalled)
	}
}

// settle settles the confirms that have come, in publish order. RabbitMQ
// sends basic.return before the basic.ack of an unroutable mandatory
// message, and amqp091-go hands the return over before it reads the ack:
// once a confirm is done, its return, if any, is in the returns channel.
func (s *session) settle() error {
	n := 0
	for n < len(s.window) && isDone(s.window[n].confirm) {
		if err := s.takeReturns(); err != nil {
			return err
		}
		s.settleOne(s.window[n])
		n++
	}
	if n > 0 {
		s.window = slices.Delete(s.window, 0, n)
		s.p.handOverNow(len(s.window) == 0)
		s.logTallies(false)
	}
	return nil
}

// logTallies logs the nacks and returns counted since their last lines,
// when logEvery has passed, or at once when final (the session ends).
func (s *session) logTallies(final bool) {
	now := time.Now()
	if n := s.p.nacks.take(now, final); n > 0 {
		s.p.log.Warn().Str("url", s.l.URL()).Int("nacked", n).
			Msg("events nacked by RabbitMQ, kept in the outbox and retried")
	}
	if n := s.p.returns.take(now, final); n > 0 {
		s.p.log.Warn().Str("url", s.l.URL()).Int("returned", n).Str("routing_key", s.p.returns.example).
			Msg("events returned unroutable (no queue bound to their routing key), kept in the outbox and retried")
	}
}

func isDone(c confirm) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

// takeReturns takes the returns that have come.
func (s *session) takeReturns() error {
	for {
		select {
		case r, ok := <-s.l.Returns():
			if !ok {
				// The channel is gone (amqp091-go closes it): what is
				// unconfirmed goes again on the next connection.
				return s.lost()
			}
			s.returned[r.MessageId] = true
			s.p.returns.add(r.RoutingKey)
		default:
			return nil
		}
	}
}

// lost is the error of a channel that closed: the connection's, which
// amqp091-go notifies before it closes the channels, or the channel's own.
func (s *session) lost() error {
	select {
	case e := <-s.l.Closed():
		return closedErr(e)
	default:
		return errChannelClosed
	}
}

// settleOne settles one confirm. Only an ack of an event not returned ends
// its claim, once the committer deleted it: amqp091-go also nacks every
// outstanding confirm when the connection closes, and such an event may
// well have been delivered.
func (s *session) settleOne(it sent) {
	returned := s.returned[it.id]
	delete(s.returned, it.id)
	ack := it.confirm.Acked()
	s.p.metrics.settle(ack, returned, time.Since(it.at))
	if ack {
		// RabbitMQ answers on this connection: a return is routing's
		// verdict, not the connection's.
		s.nacked, s.nackedSince, s.p.givenUp = 0, time.Time{}, 0
	} else if !returned {
		if s.nacked == 0 {
			s.nackedSince = time.Now()
		}
		s.nacked++
		s.p.nacks.add("")
	}
	if ack && !returned {
		s.p.acked = append(s.p.acked, it.seq)
		if s.p.retries.remove(it.seq) {
			s.p.status.retrying(s.p.retries.waiting())
		}
		return
	}
	s.p.retryLater(it.seq, returned)
}

// retryLater makes seq go again later, backing off. A returned event was
// certainly not delivered: it loses its claim (else an outbox of
// unroutable events would outgrow its bound); a nacked one may have been,
// and keeps it.
func (p *publisher) retryLater(seq uint64, returned bool) {
	if returned {
		p.outbox.Release(seq)
	}
	p.retries.later(seq, returned, p.retryDelay, time.Now())
	p.status.retrying(p.retries.waiting())
}

// publish publishes claimed records while the window has room, and
// returns how many it published. When none is left it reads the next ones
// at once, also with the window full: a read may wait for a commit's
// fsync, better spent while the confirms are awaited than once they came.
func (s *session) publish(ctx context.Context) (int, error) {
	for len(s.ready) == 0 && !time.Now().Before(s.readAfter) {
		more, err := s.read()
		if errors.Is(err, errDamaged) {
			// The committer replaces the file, and its report wakes the
			// publisher; the connection has nothing to do with it and
			// stays.
			s.p.repair = true
			s.readAfter = time.Now().Add(damagedRead)
			break
		}
		if err != nil {
			return 0, err
		}
		if !more {
			break
		}
	}
	n := 0
	for len(s.ready) > 0 && len(s.window) < s.p.o.ConfirmWindow && len(s.p.acked) < handOverEvery && !s.blocked.Load() {
		rec := s.ready[0]
		s.ready[0] = Record{}
		s.ready = s.ready[1:]
		ev := rec.Event
		msg, err := s.p.publishing(rec)
		if err != nil {
			return n, err
		}
		at := time.Now()
		c, err := s.l.Publish(ctx, s.p.o.Exchange, messages.RoutingKey(ev.Type, ev.Node), msg)
		if err != nil {
			select {
			case e := <-s.l.Closed():
				return n, closedErr(e) // the cause, which amqp091-go notified first
			default:
				return n, fmt.Errorf("publish event %d: %w", ev.Sequence, err)
			}
		}
		s.p.metrics.published.Inc()
		s.window = append(s.window, sent{seq: ev.Sequence, id: ev.Id, confirm: c, at: at})
		n++
	}
	return n, nil
}

// read claims the next records to publish: the retries that are due, or
// else up to ConfirmWindow records after the cursor, which moves past
// them. more is false when there was nothing to read: what was read may
// all be gone (dropped) by the time it is claimed.
func (s *session) read() (more bool, err error) {
	batch, err := s.p.due(s.p.o.ConfirmWindow)
	if err == nil && len(batch) == 0 && s.nacked == 0 {
		batch, err = s.p.outbox.After(s.cursor, s.p.o.ConfirmWindow)
		if n := len(batch); n > 0 {
			s.cursor = batch[n-1].Event.Sequence
		}
	}
	if err == nil && s.p.outbox.NeedsRepair() {
		// The reads found damaged records and left them out: the
		// committer deletes and reports them.
		s.p.repair = true
	}
	more = len(batch) > 0
	if err == nil {
		batch, err = s.p.outbox.Claim(batch)
	}
	s.ready = batch
	return more, err
}

// due returns up to n retried events whose time has come, the oldest
// first. They stay in the retry set, counted as waiting until acked, but
// are not due again unless returned or nacked again.
func (p *publisher) due(n int) ([]Record, error) {
	seqs := p.retries.due(time.Now(), n)
	var out []Record
	for _, s := range seqs {
		r, err := p.outbox.Get(s)
		if err != nil {
			return nil, err
		}
		if r == nil {
			p.retries.remove(s) // dropped (drop_oldest) while it waited
			continue
		}
		out = append(out, *r)
	}
	p.status.retrying(p.retries.waiting())
	return out, nil
}

func closedErr(e *amqp.Error) error {
	if e == nil {
		return errConnectionClosed
	}
	return fmt.Errorf("%w: %v", errConnectionClosed, e)
}

// publishing is the AMQP message for a stored record: its stored bytes as
// the body, or protojson with broker.encoding: json.
func (p *publisher) publishing(rec Record) (amqp.Publishing, error) {
	if !p.o.JSON {
		return Publishing(rec.Event, rec.Raw, "application/protobuf"), nil
	}
	body, err := protojson.Marshal(rec.Event)
	if err != nil {
		return amqp.Publishing{}, fmt.Errorf("encode event %d: %w", rec.Event.Sequence, err)
	}
	return Publishing(rec.Event, body, "application/json"), nil
}

// Publishing maps an event with its encoded body onto the AMQP properties
// and CloudEvents binary-mode headers of docs/events.md. It is
// exported so that a baseline (test/bench) sends exactly what the broker
// sends.
func Publishing(ev *messages.Event, body []byte, contentType string) amqp.Publishing {
	t := ev.GetTime().AsTime()
	return amqp.Publishing{
		Headers: amqp.Table{
			"cloudEvents:specversion": "1.0",
			"cloudEvents:id":          ev.Id,
			"cloudEvents:source":      ev.Source,
			"cloudEvents:type":        ev.Type,
			"cloudEvents:time":        t.Format(time.RFC3339Nano),
			"cloudEvents:subject":     ev.Subject,
			"cloudEvents:sequence":    messages.CloudEventsSequence(ev.Sequence),
			"cloudEvents:dataschema":  messages.DataSchema,
		},
		ContentType:   contentType,
		DeliveryMode:  amqp.Persistent,
		CorrelationId: ev.CorrelationId,
		MessageId:     ev.Id,
		Timestamp:     t,
		Type:          ev.Type,
		AppId:         "observerd",
		Body:          body,
	}
}
