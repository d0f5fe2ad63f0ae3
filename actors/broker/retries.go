package broker

import (
	"slices"
	"time"
)

// retrySet holds the events that RabbitMQ returned or nacked until they
// are acked: each waits, doubling its wait each time it comes back, then
// goes again. It counts what waits of each kind, for the status.
type retrySet struct {
	m                map[uint64]retry
	returned, nacked int
}

// retry is one event's place in the retry set.
type retry struct {
	at       time.Time // due; meaningless while published
	attempts int       // returned or nacked this many times in a row
	returned bool      // returned unroutable, else nacked
	inFlight bool      // published again, its confirm awaited
}

// maxDoublings bounds the shift of backoff well before it overflows.
const maxDoublings = 16

// backoff is the wait before an event's attempt-th retry: base, doubled
// after each attempt, at most maxRetryDelay.
func backoff(base time.Duration, attempt int) time.Duration {
	return min(base<<min(max(attempt-1, 0), maxDoublings), maxRetryDelay)
}

func (r *retrySet) count(e retry, d int) {
	if e.returned {
		r.returned += d
	} else {
		r.nacked += d
	}
}

// later makes seq wait before it goes again, returned or nacked.
func (r *retrySet) later(seq uint64, returned bool, base time.Duration, now time.Time) {
	if r.m == nil {
		r.m = map[uint64]retry{}
	}
	e, ok := r.m[seq]
	if ok {
		r.count(e, -1)
	}
	e.attempts++
	e.returned, e.inFlight = returned, false
	e.at = now.Add(backoff(base, e.attempts))
	r.m[seq] = e
	r.count(e, 1)
}

// remove forgets seq (acked, or dropped while it waited); false when it
// was not waiting.
func (r *retrySet) remove(seq uint64) bool {
	e, ok := r.m[seq]
	if ok {
		r.count(e, -1)
		delete(r.m, seq)
	}
	return ok
}

// clear forgets every retry: a new connection publishes everything again.
func (r *retrySet) clear() {
	clear(r.m)
	r.returned, r.nacked = 0, 0
}

// waiting tells whether returned and nacked events wait.
func (r *retrySet) waiting() (returned, nacked bool) { return r.returned > 0, r.nacked > 0 }

// next is when the first waiting event is due; false when none waits.
func (r *retrySet) next() (time.Time, bool) {
	var first time.Time
	for _, e := range r.m {
		if !e.inFlight && (first.IsZero() || e.at.Before(first)) {
			first = e.at
		}
	}
	return first, !first.IsZero()
}

// due marks up to n events due at now as published again, and returns
// them, the oldest first.
func (r *retrySet) due(now time.Time, n int) []uint64 {
	var seqs []uint64
	for s, e := range r.m {
		if !e.inFlight && !e.at.After(now) {
			seqs = append(seqs, s)
		}
	}
	slices.Sort(seqs)
	seqs = seqs[:min(len(seqs), n)]
	for _, s := range seqs {
		e := r.m[s]
		e.inFlight = true
		r.m[s] = e
	}
	return seqs
}

// logEvery is how often at most a nack or return line is logged: each
// says how many came since the last.
const logEvery = 10 * time.Second

// rateLog counts what happens too often to log each time.
type rateLog struct {
	n       int
	last    time.Time // when the last line was logged
	example string    // of the first counted since the last line
}

func (t *rateLog) add(example string) {
	if t.n == 0 {
		t.example = example
	}
	t.n++
}

// take returns the count to log now, and starts counting again: 0 while
// the last line is younger than logEvery, unless final.
func (t *rateLog) take(now time.Time, final bool) int {
	if t.n == 0 || !final && now.Sub(t.last) < logEvery {
		return 0
	}
	n := t.n
	t.n, t.last = 0, now
	return n
}
