//go:build integration

package e2e

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/messages"
)

// TestObserverctlTailStream: `observerctl tail --stream` prints what a
// stream kept of the daemon's events, from the first, from an offset and
// from a time, in order and without a gap. The daemon runs twice, a
// whole second apart, so that the time tells the runs apart.
func TestObserverctlTailStream(t *testing.T) {
	d := newDaemon(t, startObservable(t), withLoad(2))
	d.declare(t)
	stream := randomName("e2e-stream-")
	declareStream(t, d.exchange, stream)

	var published []*messages.Event
	run := func() uint64 {
		p := d.start(t)
		d.waitQueued(t, 30)
		p.signal(t, syscall.SIGTERM)
		require.Equal(t, 0, p.exitCode(t, wait), "SIGTERM drains and exits 0")
		published = append(published, d.drain(t)...)
		got := deliveryOf(published)
		require.Empty(t, got.missing())
		require.Zero(t, got.dups, "a duplicate would shift the offsets")
		return got.max
	}
	first := run()
	cut := time.Now().Truncate(time.Second).Add(time.Second)
	require.Eventually(t, func() bool { return time.Now().After(cut) }, 2*time.Second, tick)
	last := run()
	require.Greater(t, last, first)

	for _, tt := range []struct {
		from      string
		firstWant uint64
	}{
		{"first", 1},
		{"10", 11}, // offsets count from 0, and the stream holds this daemon's events only
		{cut.Format(time.RFC3339), first + 1},
	} {
		t.Run(tt.from, func(t *testing.T) {
			tail := start(t, "observerctl", "tail", "--config", d.config, "--stream", stream, "--from", tt.from)
			want := int(last - tt.firstWant + 1)
			require.Eventually(t, func() bool { return len(strings.Split(strings.TrimSpace(tail.out.String()), "\n")) >= want },
				wait, tick, "tail printed fewer than %d lines:\n%s", want, tail.out.String())
			tail.signal(t, syscall.SIGINT)
			require.Equal(t, 0, tail.exitCode(t, wait))

			var seqs []uint64
			for _, line := range strings.Split(strings.TrimSpace(tail.out.String()), "\n") {
				require.NotContains(t, line, "!!")
				fields := strings.Fields(line)
				require.GreaterOrEqual(t, len(fields), 3, "line %q", line)
				seq, err := strconv.ParseUint(fields[1], 10, 64)
				require.NoError(t, err, "line %q", line)
				seqs = append(seqs, seq)
			}
			var wantSeqs []uint64
			for s := tt.firstWant; s <= last; s++ {
				wantSeqs = append(wantSeqs, s)
			}
			assert.Equal(t, wantSeqs, seqs)
		})
	}
}

// declareStream declares a stream bound to every event of exchange, as
// docs/consumers.md does.
func declareStream(t *testing.T, exchange, stream string) {
	t.Helper()
	conn, err := node.Dial()
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil))
	_, err = ch.QueueDeclare(stream, true, false, false, false, amqp.Table{
		amqp.QueueTypeArg: amqp.QueueTypeStream, amqp.StreamMaxLenBytesArg: int64(64 << 20),
	})
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(stream, "#", exchange, false, nil))
}
