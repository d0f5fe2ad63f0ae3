package admin

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/test/actortest"
)

// asker is an ask that a test answers: each call announces itself on
// asked and returns what the test sends on answers.
type asker struct {
	asked   chan int
	answers chan int
	mu      sync.Mutex
	calls   int
}

func newAsker() *asker { return &asker{asked: make(chan int, 8), answers: make(chan int)} }

func (a *asker) ask() (int, error) {
	a.mu.Lock()
	a.calls++
	n := a.calls
	a.mu.Unlock()
	a.asked <- n
	return <-a.answers, nil
}

// TestCachedForgetDuringAnAsk: a command that ends while an ask is in
// flight leaves that answer to the requests waiting for it, and the next
// request asks afresh instead of joining an ask that may predate the
// command.
func TestCachedForgetDuringAnAsk(t *testing.T) {
	clock := actortest.NewClock()
	a := newAsker()
	c := newCached(clock.Now, a.ask)
	get := func() <-chan int {
		out := make(chan int, 1)
		go func() {
			v, err := c.get()
			assert.NoError(t, err)
			out <- v
		}()
		return out
	}
	receive := func(ch <-chan int) int {
		select {
		case v := <-ch:
			return v
		case <-time.After(actortest.Wait):
			require.FailNow(t, "nothing received")
			return 0
		}
	}

	first := get()
	require.Equal(t, 1, receive(a.asked))
	c.forget()
	second := get()
	require.Equal(t, 2, receive(a.asked), "a request after forget asks afresh")
	a.answers <- 10 // the first ask's answer
	assert.Equal(t, 10, receive(first))
	a.answers <- 20
	assert.Equal(t, 20, receive(second))

	// The answer kept is the one asked after forget, never the stale one.
	v, err := c.get()
	require.NoError(t, err)
	assert.Equal(t, 20, v)
	clock.Advance(snapshotMaxAge)
	third := get()
	require.Equal(t, 3, receive(a.asked), "an answer snapshotMaxAge old is asked again")
	a.answers <- 30
	assert.Equal(t, 30, receive(third))
}
