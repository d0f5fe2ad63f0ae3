package broker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestBackoffDoublesUpToItsCap(t *testing.T) {
	base := time.Second
	for _, tc := range []struct {
		attempt int
		want    time.Duration
	}{
		{0, time.Second}, {1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {5, 16 * time.Second},
		{6, maxRetryDelay}, {1000, maxRetryDelay},
	} {
		assert.Equal(t, tc.want, backoff(base, tc.attempt), "attempt %d", tc.attempt)
	}
}

func TestRetrySetBacksOffAndCountsEachKind(t *testing.T) {
	var r retrySet
	now := time.Unix(1000, 0)
	base := time.Second
	r.later(7, true, base, now)
	r.later(3, false, base, now)
	returned, nacked := r.waiting()
	assert.True(t, returned)
	assert.True(t, nacked)

	assert.Empty(t, r.due(now, 10), "nothing is due before its wait")
	at, ok := r.next()
	assert.True(t, ok)
	assert.Equal(t, now.Add(base), at)

	now = now.Add(base)
	assert.Equal(t, []uint64{3, 7}, r.due(now, 10), "the oldest first")
	assert.Empty(t, r.due(now.Add(time.Hour), 10), "published again: not due until it comes back")
	_, ok = r.next()
	assert.False(t, ok, "nothing waits while both are in flight")

	// 7 comes back nacked this time: it waits twice as long, and is now
	// counted as nacked.
	r.later(7, false, base, now)
	returned, nacked = r.waiting()
	assert.False(t, returned)
	assert.True(t, nacked)
	assert.Empty(t, r.due(now.Add(2*base-time.Millisecond), 10))
	assert.Equal(t, []uint64{7}, r.due(now.Add(2*base), 10))

	assert.True(t, r.remove(3))
	assert.False(t, r.remove(3))
	assert.True(t, r.remove(7))
	returned, nacked = r.waiting()
	assert.False(t, returned || nacked)

	r.later(1, true, base, now)
	r.later(2, true, base, now)
	r.later(3, true, base, now)
	assert.Equal(t, []uint64{1, 2}, r.due(now.Add(base), 2), "at most n")
	r.clear()
	returned, nacked = r.waiting()
	assert.False(t, returned || nacked)
	assert.Empty(t, r.due(now.Add(time.Hour), 10))
}

func TestRateLogSaysHowManySinceTheLastLine(t *testing.T) {
	var l rateLog
	now := time.Unix(1000, 0)
	assert.Zero(t, l.take(now, false), "nothing counted")
	l.add("observation.http.n1")
	assert.Equal(t, 1, l.take(now, false), "the first line at once")
	for range 5 {
		l.add("x")
	}
	assert.Zero(t, l.take(now.Add(logEvery-time.Millisecond), false), "not before logEvery")
	assert.Equal(t, "x", l.example)
	l.add("y")
	assert.Equal(t, 6, l.take(now.Add(logEvery), false))
	l.add("z")
	assert.Equal(t, 1, l.take(now.Add(logEvery), true), "the last count when the session ends")
}
