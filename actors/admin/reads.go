package admin

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// The read endpoints are rate limited, each endpoint on each channel by a
// bucket of its own. A Prometheus scrape every 15 s and a health check
// every few seconds use well under one request a second of an endpoint:
// 20 a second with bursts of 40 leaves room for several scrapers and
// probes and a person running `watch observerctl status` at once, so that
// normal use is never refused. A local process flooding one endpoint gets
// 429 there while the scraper's /metrics and the probes' /readyz are
// still answered, and it costs the daemon at most 20 answers a second of
// that endpoint (a /v1/state of 1,000 observers is about 400 KB).
const (
	readRate  = rate.Limit(20)
	readBurst = 40
)

// readPaths are the read endpoints, each with its own buckets.
var readPaths = []string{"/healthz", "/readyz", "/v1/state", "/metrics"}

// readLimits are the buckets of the read endpoints, by channel and path.
func readLimits() map[channel]map[string]*rate.Limiter {
	out := map[channel]map[string]*rate.Limiter{}
	for _, ch := range []channel{overTCP, overUnix} {
		out[ch] = map[string]*rate.Limiter{}
		for _, path := range readPaths {
			out[ch][path] = rate.NewLimiter(readRate, readBurst)
		}
	}
	return out
}

// read serves a read endpoint on mux, within its bucket.
func (a *Actor) read(mux *http.ServeMux, ch channel, path string, h http.Handler) {
	bucket := a.shared.reads[ch][path]
	mux.Handle("GET "+path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !bucket.AllowN(a.opts.Now(), 1) {
			a.tooMany(w, ch, fmt.Sprintf("too many requests for %s: at most %g a second (bursts of %d); retry in a second",
				path, float64(readRate), readBurst))
			return
		}
		h.ServeHTTP(w, r)
	}))
}

// tooMany refuses a request over a rate limit. The connection is closed
// after the answer, so that a client that is refused gives its slot back
// (maxConns) and queues again behind the others.
func (a *Actor) tooMany(w http.ResponseWriter, ch channel, message string) {
	w.Header().Set("Retry-After", "1")
	w.Header().Set("Connection", "close")
	a.refuse(w, ch, http.StatusTooManyRequests, "rate limited", message)
}

// snapshotMaxAge is how old an answer of the state-manager (or of the
// broker) the read endpoints may serve: short against a probe's period,
// long enough that any number of clients cost at most four asks a second.
const snapshotMaxAge = 250 * time.Millisecond

// cached is an answer the read endpoints share. It is asked for at most
// once per snapshotMaxAge, and by one request at a time: the others that
// come meanwhile wait for that answer (as with singleflight), so that 64
// concurrent requests cost one ask, and a busy actor gets one ask, not
// one per client. A command forgets it, so that the next read shows what
// the command did.
type cached[T any] struct {
	ask func() (T, error)
	now func() time.Time

	mu   sync.Mutex
	last *answer[T] // nil before the first, and after forget
	// asking is the ask in flight, nil when none is.
	asking *flight[T]
}

type answer[T any] struct {
	val T
	err error
	at  time.Time // when the ask ended
}

// flight is an ask and the requests waiting for it.
type flight[T any] struct {
	answer[T]
	done chan struct{} // closed when answer is set
	// stale is set by forget: the answer may predate a command, so it is
	// given to those waiting, but not kept.
	stale bool
}

func newCached[T any](now func() time.Time, ask func() (T, error)) *cached[T] {
	return &cached[T]{ask: ask, now: now}
}

// get returns the last answer if it is recent enough, the answer of the
// ask in flight if there is one, or else asks.
func (c *cached[T]) get() (T, error) {
	c.mu.Lock()
	if l := c.last; l != nil && c.now().Sub(l.at) < snapshotMaxAge {
		c.mu.Unlock()
		return l.val, l.err
	}
	if f := c.asking; f != nil {
		c.mu.Unlock()
		// The answer waited for, however long the ask took: a waiter
		// that asked again would queue behind a slow actor once more.
		<-f.done
		return f.val, f.err
	}
	f := &flight[T]{done: make(chan struct{})}
	c.asking = f
	c.mu.Unlock()

	val, err := c.ask()
	c.mu.Lock()
	f.answer = answer[T]{val: val, err: err, at: c.now()}
	if !f.stale {
		c.last, c.asking = &f.answer, nil
	}
	c.mu.Unlock()
	close(f.done)
	return val, err
}

// forget drops the last answer and leaves the ask in flight, if any, to
// those already waiting for it: the next get asks afresh.
func (c *cached[T]) forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = nil
	if c.asking != nil {
		c.asking.stale = true
		c.asking = nil
	}
}
