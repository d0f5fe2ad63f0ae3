package broker

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/polar/observerd/messages"
)

// events are n new events of one encoded size (for a given sequence
// size): their time is a second ago with its nanoseconds fixed, so that the
// varint of the nanoseconds does not vary from one call to the next.
func events(n int) []*messages.Event {
	at := timestamppb.New(time.Now().Add(-time.Second).Truncate(time.Second).Add(500 * time.Millisecond))
	out := make([]*messages.Event, n)
	for i := range out {
		out[i] = messages.NewEvent(messages.TypeObservationHTTP)
		out[i].Time = proto.Clone(at).(*timestamppb.Timestamp)
	}
	return out
}

func TestOutboxAssignsSequencesThatSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	o, err := OpenOutbox(dir, OutboxOptions{})
	require.NoError(t, err)
	first := events(3)
	_, err = o.Append(first)
	require.NoError(t, err)
	for i, ev := range first {
		assert.Equal(t, uint64(i+1), ev.Sequence)
	}
	require.NoError(t, o.Delete([]uint64{1, 2, 3}))
	require.NoError(t, o.Close())

	o, err = OpenOutbox(dir, OutboxOptions{})
	require.NoError(t, err)
	defer o.Close()
	assert.Equal(t, OutboxStats{LastSequence: 3}, o.Stats(), "an empty outbox still remembers the last sequence")
	next := events(2)
	_, err = o.Append(next)
	require.NoError(t, err)
	assert.Equal(t, uint64(4), next[0].Sequence, "sequences are never reused")
	assert.Equal(t, uint64(5), next[1].Sequence)
}

func TestOutboxReplaysInOrderAndCountsExactly(t *testing.T) {
	o, err := OpenOutbox(t.TempDir(), OutboxOptions{})
	require.NoError(t, err)
	defer o.Close()
	evs := events(10)
	_, err = o.Append(evs)
	require.NoError(t, err)
	st := o.Stats()
	assert.Equal(t, 10, st.Events)
	assert.Positive(t, st.Bytes)

	got, err := o.After(0, 4)
	require.NoError(t, err)
	require.Len(t, got, 4)
	for i, r := range got {
		assert.Equal(t, evs[i].Id, r.Event.Id)
		assert.Equal(t, uint64(i+1), r.Event.Sequence)
		want, err := proto.Marshal(r.Event)
		require.NoError(t, err)
		assert.Equal(t, want, r.Raw, "the stored bytes are the event's encoding")
	}
	got, err = o.After(8, 100)
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.Equal(t, uint64(9), got[0].Event.Sequence)

	require.NoError(t, o.Delete([]uint64{2, 4, 4, 99}))
	assert.Equal(t, 8, o.Stats().Events, "deleting twice or deleting an absent event counts once")
	ev, err := o.Get(4)
	require.NoError(t, err)
	assert.Nil(t, ev)
	ev, err = o.Get(5)
	require.NoError(t, err)
	assert.Equal(t, evs[4].Id, ev.Event.Id)
}

func TestCommitAppendsAndDeletesInOneTransaction(t *testing.T) {
	o, err := OpenOutbox(t.TempDir(), OutboxOptions{})
	require.NoError(t, err)
	defer o.Close()
	_, err = o.Append(events(3))
	require.NoError(t, err)
	_, err = o.Commit(events(2), []uint64{1, 2})
	require.NoError(t, err)
	st := o.Stats()
	assert.Equal(t, 3, st.Events)
	assert.Equal(t, uint64(5), st.LastSequence)
	got, err := o.After(0, 10)
	require.NoError(t, err)
	require.Len(t, got, 3)
	assert.Equal(t, uint64(3), got[0].Event.Sequence)
}

func TestOutboxIsExclusive(t *testing.T) {
	dir := t.TempDir()
	o, err := OpenOutbox(dir, OutboxOptions{})
	require.NoError(t, err)
	defer o.Close()
	_, err = OpenOutbox(dir, OutboxOptions{})
	require.ErrorContains(t, err, "locked by another process")
}

func TestOutboxDropOldestDropsExactRangesAndSparesInflight(t *testing.T) {
	o, err := OpenOutbox(t.TempDir(), OutboxOptions{})
	require.NoError(t, err)
	evs := events(10)
	_, err = o.Append(evs)
	require.NoError(t, err)
	per := o.Stats().Bytes / 10 // events of one size
	require.NoError(t, o.Close())

	dir := t.TempDir()
	o, err = OpenOutbox(dir, OutboxOptions{Limit: Limit{MaxBytes: 6 * per, DropOldest: true}})
	require.NoError(t, err)
	defer o.Close()
	dropped, err := o.Append(events(6))
	require.NoError(t, err)
	assert.Empty(t, dropped, "at the limit, nothing dropped")

	// Sequence 2 is in flight: it is never dropped, so the drops are the
	// ranges around it.
	_, err = o.Claim([]Record{{Event: &messages.Event{Sequence: 2}}})
	require.NoError(t, err)
	dropped, err = o.Append(events(3))
	require.NoError(t, err)
	assert.Equal(t, []Dropped{
		{First: 1, Last: 1, Events: 1, Bytes: uint64(per), Policy: "drop_oldest"},
		{First: 3, Last: 4, Events: 2, Bytes: uint64(2 * per), Policy: "drop_oldest"},
	}, dropped)
	st := o.Stats()
	assert.Equal(t, 6, st.Events)
	assert.LessOrEqual(t, st.Bytes, 6*per)
	got, err := o.After(0, 100)
	require.NoError(t, err)
	var seqs []uint64
	for _, r := range got {
		seqs = append(seqs, r.Event.Sequence)
	}
	assert.Equal(t, []uint64{2, 5, 6, 7, 8, 9}, seqs)
}

func TestOutboxBlockKeepsEverythingAndSaysFull(t *testing.T) {
	o, err := OpenOutbox(t.TempDir(), OutboxOptions{Limit: Limit{MaxBytes: 1}})
	require.NoError(t, err)
	defer o.Close()
	assert.False(t, o.Full())
	dropped, err := o.Append(events(3))
	require.NoError(t, err)
	assert.Empty(t, dropped)
	assert.Equal(t, 3, o.Stats().Events)
	assert.True(t, o.Full())
	require.NoError(t, o.Delete([]uint64{1, 2, 3}))
	assert.False(t, o.Full())
}

func TestOutboxNeverDropsOverflowReports(t *testing.T) {
	o, err := OpenOutbox(t.TempDir(), OutboxOptions{Limit: Limit{MaxBytes: 1, DropOldest: true}})
	require.NoError(t, err)
	defer o.Close()
	report := messages.NewEvent(messages.TypeOutboxOverflow)
	_, err = o.Append([]*messages.Event{report})
	require.NoError(t, err)
	dropped, err := o.Append(events(2))
	require.NoError(t, err)
	require.NotEmpty(t, dropped)
	for _, d := range dropped {
		assert.NotContains(t, []uint64{d.First, d.Last}, report.Sequence)
	}
	ev, err := o.Get(report.Sequence)
	require.NoError(t, err)
	require.NotNil(t, ev, "the report stays")
}

func TestOutboxClaimLeavesOutWhatIsGone(t *testing.T) {
	o, err := OpenOutbox(t.TempDir(), OutboxOptions{})
	require.NoError(t, err)
	defer o.Close()
	evs := events(3)
	_, err = o.Append(evs)
	require.NoError(t, err)
	require.NoError(t, o.Delete([]uint64{2}))
	all, err := o.After(0, 10)
	require.NoError(t, err)
	all = append(all, Record{Event: evs[1]}) // deleted meanwhile
	kept, err := o.Claim(all)
	require.NoError(t, err)
	assert.Equal(t, []uint64{1, 3}, claimed(o))
	assert.Len(t, kept, 2)
}

// claimed are o's claimed sequences, in order.
func claimed(o *Outbox) []uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Sorted(maps.Keys(o.claimed))
}

func TestOutboxClaimLastsUntilDeletedOrReleased(t *testing.T) {
	o, err := OpenOutbox(t.TempDir(), OutboxOptions{})
	require.NoError(t, err)
	_, err = o.Append(events(10))
	require.NoError(t, err)
	per := o.Stats().Bytes / 10 // events of about one size
	require.NoError(t, o.Close())

	o, err = OpenOutbox(t.TempDir(), OutboxOptions{Limit: Limit{MaxBytes: 4*per + per/2, DropOldest: true}})
	require.NoError(t, err)
	defer o.Close()
	_, err = o.Append(events(4))
	require.NoError(t, err)
	all, err := o.After(0, 10)
	require.NoError(t, err)
	_, err = o.Claim(all)
	require.NoError(t, err)

	ranges := func(ds []Dropped) (out [][2]uint64) {
		for _, d := range ds {
			out = append(out, [2]uint64{d.First, d.Last})
		}
		return out
	}
	dropped, err := o.Append(events(1))
	require.NoError(t, err)
	assert.Equal(t, [][2]uint64{{5, 5}}, ranges(dropped), "every older record is claimed: the newest goes")
	require.NoError(t, o.Delete([]uint64{1}))
	o.Release(2)
	assert.Equal(t, []uint64{3, 4}, claimed(o), "deleted and released: no longer claimed")
	dropped, err = o.Append(events(2))
	require.NoError(t, err)
	assert.Equal(t, [][2]uint64{{2, 2}}, ranges(dropped), "the released record goes first")
	assert.Equal(t, []uint64{3, 4}, claimed(o))

	require.NoError(t, o.AppendReports(events(2)))
	assert.Equal(t, 6, o.Stats().Events, "reports at stop make no room")

	select {
	case <-o.Appended():
	default:
		t.Fatal("an append wakes the publisher")
	}
	require.NoError(t, o.Delete([]uint64{3}))
	select {
	case <-o.Appended():
		t.Fatal("a delete adds nothing to read")
	default:
	}
}

func TestOutboxSetLimitAppliesAtTheNextCommit(t *testing.T) {
	o, err := OpenOutbox(t.TempDir(), OutboxOptions{Limit: Limit{MaxBytes: 1 << 20}})
	require.NoError(t, err)
	defer o.Close()
	_, err = o.Append(events(4))
	require.NoError(t, err)
	per := o.Stats().Bytes / 4
	assert.False(t, o.Full())

	// Blocking at a bound already passed: full, nothing dropped.
	o.SetLimit(Limit{MaxBytes: 2 * per})
	assert.Equal(t, Limit{MaxBytes: 2 * per}, o.Limit())
	assert.True(t, o.Full())

	// drop_oldest at that bound: a delete drops nothing (nobody would
	// report it), the next append drops down to the bound.
	o.SetLimit(Limit{MaxBytes: 2 * per, DropOldest: true})
	require.NoError(t, o.Delete([]uint64{4}))
	assert.Equal(t, 3, o.Stats().Events, "a delete is not a drop")
	dropped, err := o.Append(events(1))
	require.NoError(t, err)
	assert.Equal(t, []Dropped{{First: 1, Last: 2, Events: 2, Bytes: uint64(2 * per), Policy: "drop_oldest"}}, dropped)
	assert.Equal(t, 2, o.Stats().Events)
}

// BenchmarkCommit is one group commit of 1 or 64 events, as the committer
// makes them, and BenchmarkWriteSeqFile one reservation of a block of
// sequences: its cost per commit is the latter divided by the commits a
// block lasts (reserveBlock / group size), the figures in docs/delivery.md.
func BenchmarkCommit(b *testing.B) {
	for _, group := range []int{1, 64} {
		b.Run(fmt.Sprintf("group=%d", group), func(b *testing.B) {
			o, err := OpenOutbox(b.TempDir(), OutboxOptions{})
			require.NoError(b, err)
			defer o.Close()
			evs := events(group)
			var seq uint64
			for b.Loop() {
				_, err := o.Commit(evs, []uint64{seq})
				require.NoError(b, err)
				seq = evs[0].Sequence
			}
		})
	}
}

func BenchmarkWriteSeqFile(b *testing.B) {
	dir := b.TempDir()
	for b.Loop() {
		require.NoError(b, writeSeqFile(dir, seqFile{floor: 1, last: 1, ceiling: reserveBlock}))
	}
}

func TestOutboxClosedStaysClosed(t *testing.T) {
	dir := t.TempDir()
	o, err := OpenOutbox(dir, OutboxOptions{})
	require.NoError(t, err)
	require.NoError(t, o.Close())
	_, err = o.Append(events(1))
	require.ErrorIs(t, err, errOutboxClosed, "not a missing file to create again")
	assert.False(t, o.NeedsRepair())
}
