package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/messages"
)

// inflight is one published, not yet confirmed event of this session.
type inflight struct {
	seq uint64
	id  string
	dc  *amqp.DeferredConfirmation
	at  time.Time // published, for the confirm latency
}

// session publishes over one connection until it fails or ctx ends. Every
// event still in the outbox is published again from the start: after a
// reconnect nothing tells which of the previous session's outstanding
// events were confirmed, so at most ConfirmWindow duplicates per failure.
func (p *pipeline) session(ctx context.Context, conn *connection) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		return fmt.Errorf("enable publisher confirms: %w", err)
	}
	if err := declare(ch, p.o); err != nil {
		return err
	}
	// Buffered beyond what can be outstanding (the window, one in the
	// confirm loop's hands, one being published): amqp091-go delivers
	// returns from its reader goroutine, which must never wait on us, or
	// the acks the confirm loop waits for would never be read.
	returns := ch.NotifyReturn(make(chan amqp.Return, p.o.ConfirmWindow+2))
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	// Blocking notifications are read by their own goroutine: amqp091-go
	// sends them from its reader goroutine and would stall the whole
	// connection (heartbeats included) if nobody read.
	var blocked atomic.Bool
	unblocked := make(chan struct{}, 1)
	go func(notes <-chan amqp.Blocking) {
		for b := range notes {
			blocked.Store(b.Active)
			p.onBlocking(b, conn.url)
			if !b.Active {
				wake(unblocked)
			}
		}
	}(conn.NotifyBlocked(make(chan amqp.Blocking, 1)))

	// Retries are moot: everything goes again from the start. The in-flight
	// set is kept: an event published on a lost connection may have been
	// delivered, so it stays protected from drop_oldest until confirmed.
	p.mu.Lock()
	before := len(p.retries)
	clear(p.retries)
	p.unroutableChanged(before)
	p.mu.Unlock()
	p.setStatus(protocol.BrokerStatus{Connected: true, URL: conn.url, Since: time.Now()})

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	window := make(chan inflight, p.o.ConfirmWindow)
	confirmed := make(chan struct{})
	go func() {
		defer close(confirmed)
		p.confirmLoop(sctx, window, returns)
	}()
	defer func() { cancel(); <-confirmed }()

	var cursor uint64
	for {
		if blocked.Load() {
			// A blocked connection stops reading: publishing now would
			// block inside amqp091-go, beyond the reach of ctx.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case e := <-closed:
				return closedErr(e)
			case <-unblocked:
			}
			continue
		}
		batch, err := p.due()
		if err == nil && len(batch) == 0 {
			batch, err = p.outbox.After(cursor, p.o.ConfirmWindow)
		}
		if err == nil && p.outbox.NeedsRepair() {
			// The reads found damaged records and left them out: the
			// committer deletes and reports them.
			p.wakeCommitter()
		}
		if err == nil {
			batch, err = p.outbox.Claim(batch, p.markInflight)
		}
		if errors.Is(err, errDamaged) {
			// The committer replaces the file and wakes the publisher; the
			// connection has nothing to do with it and stays.
			p.wakeCommitter()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case e := <-closed:
				return closedErr(e)
			case <-p.publishWake:
			case <-time.After(time.Second):
			}
			continue
		}
		if err != nil {
			return err
		}
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case e := <-closed:
				return closedErr(e)
			case <-unblocked:
			case <-p.publishWake:
			case <-time.After(p.nextRetry()):
			}
			continue
		}
		for _, rec := range batch {
			ev := rec.Event
			msg, err := p.publishing(rec)
			if err != nil {
				return err
			}
			at := time.Now()
			dc, err := ch.PublishWithDeferredConfirmWithContext(sctx, p.o.Exchange,
				messages.RoutingKey(ev.Type, ev.Node), true, false, msg)
			if err != nil {
				return fmt.Errorf("publish event %d: %w", ev.Sequence, err)
			}
			p.metrics.published.Inc()
			select {
			case window <- inflight{seq: ev.Sequence, id: ev.Id, dc: dc, at: at}:
			case e := <-closed:
				return closedErr(e)
			case <-ctx.Done():
				return ctx.Err()
			}
			cursor = max(cursor, ev.Sequence)
		}
	}
}

// markInflight protects seq from drop_oldest while it is published and
// unconfirmed: an event that a consumer receives is never one that an
// outbox.overflow reports dropped.
func (p *pipeline) markInflight(seq uint64) {
	p.mu.Lock()
	p.inflight[seq] = true
	p.mu.Unlock()
}

func closedErr(e *amqp.Error) error {
	if e == nil {
		return errConnectionClosed
	}
	return fmt.Errorf("%w: %v", errConnectionClosed, e)
}

func (p *pipeline) onBlocking(b amqp.Blocking, url string) {
	if b.Active {
		p.log.Warn().Str("reason", b.Reason).Msg("broker blocked publishing (resource alarm)")
	} else {
		p.log.Info().Msg("broker unblocked publishing")
	}
	p.setStatus(protocol.BrokerStatus{Connected: true, Blocked: b.Active, URL: url, Since: time.Now(), LastError: b.Reason})
}

// confirmLoop waits for confirms in publish order. A return arrives before
// the ack of the same message (RabbitMQ sends basic.return first, and
// amqp091-go hands it over before it reads the ack), so draining returns
// when an ack is seen is enough to know whether it was routed.
func (p *pipeline) confirmLoop(ctx context.Context, window <-chan inflight, returns <-chan amqp.Return) {
	returned := map[string]bool{}
	var acked []uint64
	flush := func() {
		if len(acked) > 0 {
			p.deleteLater(acked)
			acked = nil
		}
	}
	defer flush()
	for {
		var it inflight
		select {
		case it = <-window:
		case <-ctx.Done():
			return
		}
		select {
		case <-it.dc.Done():
		case <-ctx.Done():
			return
		}
		for drained := false; !drained; {
			select {
			case r, ok := <-returns:
				if !ok {
					// The connection is gone (amqp091-go closes the
					// channel): what is unconfirmed goes again on the
					// next one.
					return
				}
				returned[r.MessageId] = true
				p.log.Warn().Str("event", r.MessageId).Str("routing_key", r.RoutingKey).Str("reason", r.ReplyText).
					Msg("event returned unroutable, kept in the outbox and retried")
			default:
				drained = true
			}
		}
		// Only an ack, once the event is deleted, ends its protection from
		// drop_oldest: amqp091-go also nacks every outstanding confirm
		// when the connection closes, and such an event may well have
		// been delivered.
		ack := it.dc.Acked()
		p.metrics.settle(ack, returned[it.id], time.Since(it.at))
		if ack && !returned[it.id] {
			acked = append(acked, it.seq)
		} else {
			p.retryLater(it.seq, returned[it.id])
			delete(returned, it.id)
		}
		if len(window) == 0 || len(acked) >= 256 {
			flush()
		}
	}
}

// retryDelay is how long a returned or nacked event waits before it goes
// again: long enough not to spin on a missing binding, short enough that a
// binding added by an operator takes effect quickly.
const retryDelay = 2 * time.Second

// A returned event was certainly not delivered: it loses its protection
// from drop_oldest (else an outbox of unroutable events would outgrow its
// bound); a nacked one may have been, and keeps it.
func (p *pipeline) retryLater(seq uint64, returned bool) {
	p.mu.Lock()
	if returned {
		delete(p.inflight, seq)
	}
	before := len(p.retries)
	p.retries[seq] = time.Now().Add(retryDelay)
	p.unroutableChanged(before)
	p.mu.Unlock()
	// The publisher may be waiting with a timer computed before this retry
	// existed: wake it to compute again.
	wake(p.publishWake)
}

// due returns the retried events whose time has come.
func (p *pipeline) due() ([]Record, error) {
	now := time.Now()
	var seqs []uint64
	p.mu.Lock()
	for s, t := range p.retries {
		if !t.After(now) {
			seqs = append(seqs, s)
			// Counted as unroutable until acked; published again now, so
			// not due again unless returned again (retryLater).
			p.retries[s] = now.Add(time.Hour)
		}
	}
	p.mu.Unlock()
	var out []Record
	var gone []uint64
	for _, s := range seqs {
		r, err := p.outbox.Get(s)
		if err != nil {
			return nil, err
		}
		if r == nil {
			gone = append(gone, s) // dropped (drop_oldest) while it waited
			continue
		}
		out = append(out, *r)
	}
	p.deleted(gone)
	return out, nil
}

// nextRetry is how long until the earliest retry is due (an hour when none).
func (p *pipeline) nextRetry() time.Duration {
	next := time.Hour
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.retries {
		next = min(next, time.Until(t))
	}
	return max(next, time.Millisecond)
}

// publishing is the AMQP message for a stored record: its stored bytes as
// the body, or protojson with broker.encoding: json.
func (p *pipeline) publishing(rec Record) (amqp.Publishing, error) {
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
// and CloudEvents binary-mode headers of docs/consumers.md. It is
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
			"cloudEvents:sequence":    strconv.FormatUint(ev.Sequence, 10),
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
