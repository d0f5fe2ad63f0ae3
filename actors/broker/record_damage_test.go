package broker

import (
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/boltdamage"
)

// garbage is what a damaged value starts with: as a protobuf tag, its
// wire type is 7, which no decoder accepts.
var garbage = []byte{0xff, 0xff, 0xff}

// sequenceAt is the offset of the value of an encoded event's sequence
// field (a varint).
func sequenceAt(t *testing.T, raw []byte) int {
	t.Helper()
	for off := 0; off < len(raw); {
		num, typ, n := protowire.ConsumeTag(raw[off:])
		require.Positive(t, n)
		if num == 7 {
			return off + n
		}
		m := protowire.ConsumeFieldValue(num, typ, raw[off+n:])
		require.Positive(t, m)
		off += n + m
	}
	t.Fatal("no sequence field")
	return 0
}

// damage is how a test damages one stored record, really, in the file.
type damage func(t *testing.T, path string, raw []byte)

// undecodable writes garbage over the start of the value.
func undecodable(t *testing.T, path string, raw []byte) { boltdamage.Value(t, path, raw, 0, garbage) }

// otherSequence turns the value's sequence (a one-byte varint) into the
// next one: it decodes, but to an event that is not the key's.
func otherSequence(t *testing.T, path string, raw []byte) {
	at := sequenceAt(t, raw)
	require.Less(t, raw[at], byte(0x7f), "a one-byte varint")
	boltdamage.Value(t, path, raw, at, []byte{raw[at] + 1})
}

// damagedOutbox makes an outbox of n events in dir, closes it, damages
// the records of seqs in the file, and returns their stored sizes by
// sequence.
func damagedOutbox(t *testing.T, dir string, n int, how damage, seqs ...uint64) map[uint64]int {
	t.Helper()
	o, err := OpenOutbox(dir, OutboxOptions{})
	require.NoError(t, err)
	_, err = o.Append(events(n))
	require.NoError(t, err)
	stored, err := o.After(0, n)
	require.NoError(t, err)
	require.NoError(t, o.Close())
	sizes := map[uint64]int{}
	for _, s := range seqs {
		raw := stored[s-1].Raw
		sizes[s] = len(raw)
		how(t, filepath.Join(dir, "outbox.db"), raw)
	}
	return sizes
}

func sequencesOf(rs []Record) []uint64 {
	var out []uint64
	for _, r := range rs {
		out = append(out, r.Event.Sequence)
	}
	return out
}

func TestDamagedRecordIsLeftOutThenDeletedAndReturnedByCommit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		how     damage
		damaged []uint64
		// want are the ranges Commit returns, by sequences.
		want [][2]uint64
	}{
		{"one record that does not decode", undecodable, []uint64{2}, [][2]uint64{{2, 2}}},
		{"one record that decodes to another sequence", otherSequence, []uint64{2}, [][2]uint64{{2, 2}}},
		{"contiguous records: one range", undecodable, []uint64{2, 3}, [][2]uint64{{2, 3}}},
		{"records apart: two ranges", undecodable, []uint64{2, 4}, [][2]uint64{{2, 2}, {4, 4}}},
		{"the last record", undecodable, []uint64{5}, [][2]uint64{{5, 5}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			sizes := damagedOutbox(t, dir, 5, tc.how, tc.damaged...)
			var good []uint64
			for s := uint64(1); s <= 5; s++ {
				if sizes[s] == 0 {
					good = append(good, s)
				}
			}

			o, err := OpenOutbox(dir, OutboxOptions{})
			require.NoError(t, err, "bbolt has no checksum on data pages: the file opens")
			defer o.Close()
			before := o.Stats()
			assert.False(t, o.NeedsRepair(), "nothing read yet")
			for range 2 { // found again by every read until deleted
				got, err := o.After(0, 10)
				require.NoError(t, err, "a damaged record is no error of the read")
				assert.Equal(t, good, sequencesOf(got), "the damaged records are left out, the others are read")
			}
			first, err := o.After(0, 1)
			require.NoError(t, err)
			assert.Equal(t, good[:1], sequencesOf(first), "n counts the records returned")
			assert.True(t, o.NeedsRepair(), "the committer's next commit deletes them")

			// Neither Append nor Delete, whose callers report nothing,
			// takes them.
			dropped, err := o.Append(events(1))
			require.NoError(t, err)
			assert.Empty(t, dropped)
			require.NoError(t, o.Delete([]uint64{good[0]}))
			assert.True(t, o.NeedsRepair())

			dropped, err = o.Commit(nil, nil)
			require.NoError(t, err)
			var want []Dropped
			var bytes int64
			for _, r := range tc.want {
				d := Dropped{First: r[0], Last: r[1], Policy: "corrupt"}
				for s := r[0]; s <= r[1]; s++ {
					d.Events++
					d.Bytes += uint64(sizes[s])
				}
				bytes += int64(d.Bytes)
				want = append(want, d)
			}
			assert.Equal(t, want, dropped)
			assert.False(t, o.NeedsRepair())
			st := o.Stats()
			assert.Equal(t, len(good)-1+1, st.Events, "the good ones, less the one deleted, and the one appended")
			assert.Equal(t, before.LastSequence+1, st.LastSequence)

			dropped, err = o.Commit(nil, nil)
			require.NoError(t, err)
			assert.Empty(t, dropped, "deleted and returned once")

			// The counters are the file's.
			require.NoError(t, o.Close())
			o, err = OpenOutbox(dir, OutboxOptions{})
			require.NoError(t, err)
			assert.Equal(t, st, o.Stats())
			got, err := o.After(0, 10)
			require.NoError(t, err)
			assert.Equal(t, append(good[1:], 6), sequencesOf(got))
			assert.False(t, o.NeedsRepair())
		})
	}
}

func TestDamagedRecordConfirmedMeanwhileIsNoLoss(t *testing.T) {
	// Published before it was damaged, then confirmed: delivered, so the
	// commit that deletes it as confirmed does not report it.
	dir := t.TempDir()
	damagedOutbox(t, dir, 3, undecodable, 2)
	o, err := OpenOutbox(dir, OutboxOptions{})
	require.NoError(t, err)
	defer o.Close()
	_, err = o.After(0, 10)
	require.NoError(t, err)
	dropped, err := o.Commit(nil, []uint64{2})
	require.NoError(t, err)
	assert.Empty(t, dropped)
	assert.False(t, o.NeedsRepair())
	assert.Equal(t, 2, o.Stats().Events)
}

// logLines collects a logger's JSON lines.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, string(p))
	return len(p), nil
}

func (l *logLines) matching(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

func TestCommitterDeletesAndReportsDamagedRecords(t *testing.T) {
	dir := t.TempDir()
	sizes := damagedOutbox(t, dir, 6, undecodable, 2, 3, 5)
	ob, err := OpenOutbox(dir, OutboxOptions{Node: "test.node"})
	require.NoError(t, err)
	defer ob.Close()
	logs := &logLines{}
	opts := &Options{Node: "test.node", Outbox: ob, ConfirmWindow: 16, Log: zerolog.New(logs)}
	m := newMetrics(nil, opts.Log)
	// The fake broker holds every confirm: what the publisher reads (and
	// so finds damaged) stays in the outbox.
	fake := newFakeBroker(t, opts.ConfirmWindow)
	p := newPipeline(opts, ob, m, func(protocol.BrokerStatus) {}, fake.dial)
	p.start()
	defer stopNow(p)
	l := fake.next(t)
	assert.Equal(t, []uint64{1, 4, 6}, seqsOf(l.nextN(t, 3)), "the others are published")

	var reports []*messages.OutboxOverflow
	require.Eventually(t, func() bool {
		got, err := ob.After(0, 16)
		require.NoError(t, err)
		reports = nil
		for _, r := range got {
			if o := r.Event.GetOutboxOverflow(); o != nil {
				reports = append(reports, o)
			}
		}
		return len(reports) == 2
	}, within, 10*time.Millisecond, "a report per range, in the outbox")
	assert.Equal(t, "corrupt", reports[0].GetPolicy())
	assert.Equal(t, []uint64{2, 3, 2, uint64(sizes[2] + sizes[3])},
		[]uint64{reports[0].GetFirstSequence(), reports[0].GetLastSequence(), reports[0].GetDroppedEvents(), reports[0].GetDroppedBytes()})
	assert.Equal(t, "corrupt", reports[1].GetPolicy())
	assert.Equal(t, []uint64{5, 5, 1, uint64(sizes[5])},
		[]uint64{reports[1].GetFirstSequence(), reports[1].GetLastSequence(), reports[1].GetDroppedEvents(), reports[1].GetDroppedBytes()})
	got, err := ob.After(0, 16)
	require.NoError(t, err)
	assert.Equal(t, []uint64{1, 4, 6, 7, 8}, sequencesOf(got), "the others stay, the reports follow")
	assert.Equal(t, []uint64{7, 8}, seqsOf(l.nextN(t, 2)), "and the reports are published")
	fake.noMoreLinks(t)

	lines := logs.matching("outbox record damaged")
	require.Len(t, lines, 2, "logged once per range")
	assert.Contains(t, lines[0], `"level":"error"`)
	assert.Contains(t, lines[0], `"first_sequence":2,"last_sequence":3`)
	assert.Contains(t, lines[1], `"first_sequence":5,"last_sequence":5`)
	assert.Equal(t, 3.0, counterValue(t, m.damaged))
	assert.Zero(t, counterValue(t, m.dropped), "not drops to make room")
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, c.Write(&m))
	return m.GetCounter().GetValue()
}
