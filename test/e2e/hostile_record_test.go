//go:build integration

package e2e

import (
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/broker"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/boltdamage"
)

// hostileRecordDamage (TestHostile/broker): one record of the outbox
// damaged under the daemon.
func hostileRecordDamage(t *testing.T) {
	t.Run("a damaged record is lost alone: reported, and delivery goes on", func(t *testing.T) {
		// The broker is unreachable: the events stay in the outbox.
		dead := "amqps://observer@localhost:" + portOf(t, freeAddr(t)) + "/"
		d := newDaemon(t, startObservable(t), withURLs(dead))
		d.declare(t)
		p := d.start(t)
		require.Eventually(t, func() bool {
			m, err := d.scrape()
			return err == nil && gaugeOf(m, "observerd_outbox_events") >= 10
		}, wait, tick)
		p.signal(t, syscall.SIGTERM)
		require.Equal(t, 0, p.exitCode(t, wait))

		// One record in the middle gets a stray write. bbolt has no
		// checksum on its data pages: the file opens as healthy.
		dir := filepath.Join(d.dir, "state", "outbox")
		ob, err := broker.OpenOutbox(dir, broker.OutboxOptions{})
		require.NoError(t, err)
		stored, err := ob.After(0, 1000)
		require.NoError(t, err)
		require.NoError(t, ob.Close())
		victim := stored[len(stored)/2]
		seq := victim.Event.Sequence
		boltdamage.Value(t, filepath.Join(dir, "outbox.db"), victim.Raw, 0, []byte{0xff, 0xff, 0xff})

		editConfig(t, d, dead, node.URL())
		p = d.start(t)
		d.waitQueued(t, len(stored)+5)
		p.signal(t, syscall.SIGTERM)
		require.Equal(t, 0, p.exitCode(t, wait))
		evs := d.drain(t)
		got := deliveryOf(evs)
		assert.Equal(t, []uint64{seq}, got.missing(), "every event but the damaged one arrives (of %d)", got.max)
		var reports []*messages.OutboxOverflow
		for _, ev := range evs {
			if o := ev.GetOutboxOverflow(); o != nil {
				reports = append(reports, o)
			}
		}
		require.Len(t, reports, 1)
		assert.Equal(t, "corrupt", reports[0].GetPolicy())
		assert.Equal(t, [4]uint64{seq, seq, 1, uint64(len(victim.Raw))}, [4]uint64{reports[0].GetFirstSequence(),
			reports[0].GetLastSequence(), reports[0].GetDroppedEvents(), reports[0].GetDroppedBytes()})
		assert.Equal(t, 1, p.logCount(`"message":"outbox record damaged`), "logged once")
		assert.Zero(t, p.logCount("broker connection failed"), "the connection has nothing to do with it")
	})
}
