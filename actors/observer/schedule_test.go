package observer_test

import (
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/observer"
	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/test/actortest"
)

func TestSlot(t *testing.T) {
	base := time.Unix(1_700_000_000, 0) // a multiple of 10 s
	for _, tc := range []struct {
		name  string
		t     time.Time
		phase time.Duration
		want  time.Time
	}{
		{"on the grid", base.Add(3 * time.Second), 3 * time.Second, base.Add(3 * time.Second)},
		{"before its place", base.Add(time.Second), 3 * time.Second, base.Add(3 * time.Second)},
		{"after its place", base.Add(3*time.Second + time.Nanosecond), 3 * time.Second, base.Add(13 * time.Second)},
		{"phase zero", base.Add(9 * time.Second), 0, base.Add(10 * time.Second)},
		{"before the epoch", time.Unix(-15, 0), 3 * time.Second, time.Unix(-7, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want.UnixNano(), observer.Slot(tc.t, 10*time.Second, tc.phase).UnixNano())
		})
	}
}

// TestPhasesSpread: the phases of 10,000 observers of equal interval, as
// the bench's policies name them, fill every hundredth of the interval
// with no more than twice the mean: no thundering herd at :00.
//
// So do the daemons of a fleet that run one policy against one service.
func TestPhasesSpread(t *testing.T) {
	const interval, bins = 10 * time.Second, 100
	for _, tc := range []struct {
		name string
		node func(i int) string
		path func(i int) string
	}{
		{"10,000 observers of one daemon", func(int) string { return "web-1" }, func(i int) string {
			return protocol.ObserverEmitter(fmt.Sprintf("scale-%03d", i/100), fmt.Sprintf("o%03d", i%100)).Path()
		}},
		{"one observer of 10,000 daemons", func(i int) string { return fmt.Sprintf("web-%d", i) }, func(int) string {
			return protocol.ObserverEmitter("web", "health").Path()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var count [bins]int
			for i := range 10_000 {
				ph := observer.Phase(tc.node(i), tc.path(i), interval)
				require.GreaterOrEqual(t, ph, time.Duration(0))
				require.Less(t, ph, interval)
				count[ph*bins/interval]++
			}
			for i, n := range count {
				assert.Positive(t, n, "bin %d", i)
				assert.LessOrEqual(t, n, 2*10_000/bins, "bin %d", i)
			}
		})
	}
}

// TestTurnsFollowTheGrid: every turn after the first is due at the
// observer's place in its interval, whole intervals after the one before,
// whatever its runs take.
func TestTurnsFollowTheGrid(t *testing.T) {
	f := setup(t)
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	const interval = 30 * time.Millisecond
	p := parse(t, srv.URL, "", "    - {name: check, kind: http, interval: 30ms, http: {}}\n")
	pid := f.start(t, p, "check")[0]
	phase := observer.Phase("", "observer/web/check", interval)

	var dues []time.Time
	for len(dues) < 5 {
		f.waitObservations(t, len(dues)+1)
		if s := f.stats(t, pid); !s.Next.IsZero() && (len(dues) == 0 || s.Next.After(dues[len(dues)-1])) {
			dues = append(dues, s.Next)
		}
	}
	for i, due := range dues {
		assert.Equal(t, due.UnixNano(), observer.Slot(due, interval, phase).UnixNano(), "turn %d off its place", i)
		if i > 0 {
			assert.Zero(t, due.Sub(dues[i-1])%interval, "turn %d not whole intervals after the one before", i)
		}
	}
}

// TestObserveNowKeepsTheSchedule: an ObserveNow before the first turn
// leaves it where it was.
func TestObserveNowKeepsTheSchedule(t *testing.T) {
	f := setup(t)
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	p := parse(t, srv.URL, "", "    - {name: check, kind: http, interval: 1h, http: {}}\n")
	pid := f.start(t, p, "check")[0]
	next := f.stats(t, pid).Next
	require.False(t, next.IsZero())
	f.sys.Root.Send(pid, &protocol.RunNow{})
	f.waitObservations(t, 1)
	require.Eventually(t, func() bool { return !f.stats(t, pid).Next.IsZero() }, actortest.Wait, time.Millisecond)
	assert.Equal(t, next.UnixNano(), f.stats(t, pid).Next.UnixNano())
}

// TestOverrunSkipsCoveredTurns: an asked-for run that lasts past the
// next turn skips it, counts it, and the turn after is back on the grid.
func TestOverrunSkipsCoveredTurns(t *testing.T) {
	f := setup(t)
	var requests atomic.Int64
	// The service answers the first turn, then never: each run after it
	// lasts its timeout.
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) > 1 {
			<-r.Context().Done()
		}
	})
	const interval = 2 * time.Second
	p := parse(t, srv.URL, "", "    - {name: check, kind: http, interval: 2s, timeout: 1900ms, http: {}}\n")
	pid := f.start(t, p, "check")[0]
	f.waitObservations(t, 1)
	next := f.stats(t, pid).Next
	require.False(t, next.IsZero())
	// Polls the clock: asked for a second before its turn, the run (1.9 s)
	// covers it.
	require.Eventually(t, func() bool { return time.Until(next) < interval/2 }, interval+actortest.Wait, time.Millisecond)
	f.sys.Root.Send(pid, &protocol.RunNow{})
	f.waitObservations(t, 2)
	require.Eventually(t, func() bool { return !f.stats(t, pid).Next.IsZero() }, actortest.Wait, time.Millisecond)
	s := f.stats(t, pid)
	assert.Equal(t, uint64(1), s.Skipped, "the turn the run covered")
	assert.Equal(t, next.Add(interval).UnixNano(), s.Next.UnixNano(), "the turn after it")
}
