package broker

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/messages"
)

func events(n int) []*messages.Event {
	out := make([]*messages.Event, n)
	for i := range out {
		out[i] = messages.NewEvent(messages.TypeObservationHTTP)
	}
	return out
}

func TestOutboxAssignsSequencesThatSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	o, err := OpenOutbox(dir)
	require.NoError(t, err)
	first := events(3)
	require.NoError(t, o.Append(first))
	for i, ev := range first {
		assert.Equal(t, uint64(i+1), ev.Sequence)
	}
	require.NoError(t, o.Delete([]uint64{1, 2, 3}))
	require.NoError(t, o.Close())

	o, err = OpenOutbox(dir)
	require.NoError(t, err)
	defer o.Close()
	assert.Equal(t, OutboxStats{LastSequence: 3}, o.Stats(), "an empty outbox still remembers the last sequence")
	next := events(2)
	require.NoError(t, o.Append(next))
	assert.Equal(t, uint64(4), next[0].Sequence, "sequences are never reused")
	assert.Equal(t, uint64(5), next[1].Sequence)
}

func TestOutboxReplaysInOrderAndCountsExactly(t *testing.T) {
	o, err := OpenOutbox(t.TempDir())
	require.NoError(t, err)
	defer o.Close()
	evs := events(10)
	require.NoError(t, o.Append(evs))
	st := o.Stats()
	assert.Equal(t, 10, st.Events)
	assert.Positive(t, st.Bytes)

	got, err := o.After(0, 4)
	require.NoError(t, err)
	require.Len(t, got, 4)
	for i, ev := range got {
		assert.Equal(t, evs[i].Id, ev.Id)
		assert.Equal(t, uint64(i+1), ev.Sequence)
	}
	got, err = o.After(8, 100)
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.Equal(t, uint64(9), got[0].Sequence)

	require.NoError(t, o.Delete([]uint64{2, 4, 4, 99}))
	assert.Equal(t, 8, o.Stats().Events, "deleting twice or deleting an absent event counts once")
	ev, err := o.Get(4)
	require.NoError(t, err)
	assert.Nil(t, ev)
	ev, err = o.Get(5)
	require.NoError(t, err)
	assert.Equal(t, evs[4].Id, ev.Id)
}

func TestOutboxIsExclusive(t *testing.T) {
	dir := t.TempDir()
	o, err := OpenOutbox(dir)
	require.NoError(t, err)
	defer o.Close()
	_, err = OpenOutbox(dir)
	require.ErrorContains(t, err, "locked by another process")
}
