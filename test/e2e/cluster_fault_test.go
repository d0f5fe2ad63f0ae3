//go:build integration

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/test/rabbitmq"
)

// Fault tests against a three-node cluster: a daemon streams 500 events
// per second into a quorum queue replicated on every node while nodes die,
// restart or lose their majority; afterwards an independent consumer drains
// the queue and every sequence must be there (stopAndCheck). The subtests
// share one cluster and leave it whole.

// outage is how long the connected node stays down in the first fault: long
// enough that a daemon waiting for it to return, as the first try on a
// cluster found, would deliver nothing meanwhile.
const outage = 60 * time.Second

// noQuorum is how long two of three nodes stay down in the third fault.
const noQuorum = 20 * time.Second

// poll is how often these tests read an admin endpoint: within the
// daemon's budget of 20 reads a second per endpoint.
const poll = 100 * time.Millisecond

func TestClusterFaults(t *testing.T) {
	c := startCluster(t)
	target := startObservable(t)
	streamOn := func(t *testing.T, opts ...daemonOption) (*daemon, *proc) {
		d := newDaemon(t, target, append([]daemonOption{withCluster(c), withLoad(10)}, opts...)...)
		d.declare(t)
		return d, d.start(t)
	}
	restart := func(t *testing.T, nodes ...int) {
		ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
		defer cancel()
		for _, i := range nodes {
			require.NoError(t, c.Restart(ctx, i))
		}
	}

	t.Run("the connected node SIGKILLed mid-stream and kept down", func(t *testing.T) {
		// The daemon declares its queue (broker.queues) on the node it
		// connects to, which RabbitMQ makes the queue's leader: the kill
		// takes the connection and the leader at once, as in the first try
		// on a cluster, whose reconnection was nacked until the node
		// returned.
		d := newDaemon(t, target, withCluster(c), withLoad(10))
		p := d.start(t)
		d.waitQueued(t, 500)
		i := connectedNode(t, c, d)
		before, err := d.scrape()
		require.NoError(t, err)
		killed := time.Now()
		require.NoError(t, c.Kill(i))

		// Delivery resumes on another node while this one stays down.
		var moved map[string]*dto.MetricFamily
		require.Eventually(t, func() bool {
			s := d.state(t)
			if !s.Broker.Connected || s.Broker.URL == c.Nodes[i].URL() {
				return false
			}
			moved, err = d.scrape()
			return err == nil
		}, outage, poll, "the daemon did not connect to another node while node %d was down", i+1)
		require.Eventually(t, func() bool {
			now, err := d.scrape()
			return err == nil && counterOf(now, "observerd_events_confirmed_total") > counterOf(moved, "observerd_events_confirmed_total")
		}, outage-time.Since(killed), poll, "no confirm while node %d was down", i+1)
		firstConfirm := time.Since(killed)
		queued := d.queued()
		d.waitQueued(t, queued+500)

		// The rest of the outage, events flowing.
		<-time.After(outage - time.Since(killed))
		after, err := d.scrape()
		require.NoError(t, err)
		restart(t, i)
		got := stopAndCheck(t, d, p, 1)

		published := counterOf(after, "observerd_events_published_total") - counterOf(before, "observerd_events_published_total")
		accepted := totalOf(after, "observerd_events_accepted_total") - totalOf(before, "observerd_events_accepted_total")
		nacked := counterOf(after, "observerd_events_nacked_total") - counterOf(before, "observerd_events_nacked_total")
		// A connection that only nacks is given up after 3 s; what it took
		// meanwhile is retried at most a few times: never a storm.
		assert.LessOrEqual(t, nacked, float64(10*window), "nacks during the outage")
		report(t, "cluster-kill", fmt.Sprintf("node %d SIGKILLed for %s at 500 events/s: first confirm %s after the kill; %d events, %d duplicates; "+
			"%.0f publications for %.0f events accepted during the outage (%.3f per event), %.0f nacked",
			i+1, outage, firstConfirm.Round(time.Millisecond), got.max, got.dups, published, accepted, published/max(accepted, 1), nacked))
	})

	t.Run("rolling restart of every node under load", func(t *testing.T) {
		d, p := streamOn(t)
		d.waitQueued(t, 500)
		ctx, cancel := context.WithTimeout(context.Background(), 3*clusterTimeout)
		defer cancel()
		start := time.Now()
		require.NoError(t, c.RollingRestart(ctx))
		took := time.Since(start)
		queued := d.queued()
		d.waitQueued(t, queued+500)
		got := stopAndCheck(t, d, p, len(c.Nodes))
		report(t, "cluster-rolling", fmt.Sprintf("rolling restart of %d nodes in %s under load: %d events, %d duplicates",
			len(c.Nodes), took.Round(time.Millisecond), got.max, got.dups))
	})

	t.Run("two of three nodes down: no quorum, then back", func(t *testing.T) {
		const maxBytes = 16 << 20
		d, p := streamOn(t, withOutbox("{max_bytes: 16MiB}"))
		d.waitQueued(t, 500)
		keep := connectedNode(t, c, d)
		var down []int
		for j := range c.Nodes {
			if j != keep {
				down = append(down, j)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
		defer cancel()
		stopped := time.Now()
		back := false
		t.Cleanup(func() {
			if !back { // the cluster is whole again for the next test
				restart(t, down...)
			}
		})
		for _, j := range down {
			require.NoError(t, c.Stop(ctx, j))
		}
		// Readiness fails while confirms cannot come, and says why.
		var reason string
		require.Eventually(t, func() bool {
			code, body := d.readyz()
			reason = body
			return code == 503 && (strings.Contains(body, "nacked") || strings.Contains(body, "has not confirmed"))
		}, noQuorum+wait, poll, "readiness did not fail without a quorum")
		largest, samples := 0.0, 0
		for time.Since(stopped) < noQuorum {
			if m, err := d.scrape(); err == nil {
				largest = max(largest, gaugeOf(m, "observerd_outbox_bytes"))
				samples++
			}
			<-time.After(poll)
		}
		require.Positive(t, samples, "no scrape of the outbox's size")
		assert.LessOrEqual(t, largest, float64(maxBytes), "the outbox stays within outbox.max_bytes")
		restart(t, down...)
		back = true
		require.Eventually(t, func() bool { code, _ := d.readyz(); return code == 200 }, wait, poll, "ready again with the quorum back")
		queued := d.queued()
		d.waitQueued(t, queued+500)
		got := stopAndCheck(t, d, p, 2)
		report(t, "cluster-quorum", fmt.Sprintf("2 of 3 nodes down for %s: readiness %q; outbox at most %.0f bytes; %d events, %d duplicates",
			noQuorum, reason, largest, got.max, got.dups))
	})

	t.Run("the daemon SIGKILLed while its node is down", func(t *testing.T) {
		d, p := streamOn(t)
		d.waitQueued(t, 300)
		i := connectedNode(t, c, d)
		require.NoError(t, c.Kill(i))
		t.Cleanup(func() {
			if t.Failed() {
				restart(t, i)
			}
		})
		p.signal(t, syscall.SIGKILL)
		require.Equal(t, -1, p.exitCode(t, wait))
		p = d.start(t)
		queued := d.queued()
		d.waitQueued(t, queued+500)
		restart(t, i)
		got := stopAndCheck(t, d, p, 2)
		report(t, "cluster-daemon-kill", fmt.Sprintf("node %d and then the daemon SIGKILLed: %d events, %d duplicates", i+1, got.max, got.dups))
	})
}

// connectedNode waits until the daemon is connected, and returns the index
// of its node in c.
func connectedNode(t *testing.T, c *rabbitmq.Cluster, d *daemon) int {
	t.Helper()
	at := -1
	require.Eventually(t, func() bool {
		s := d.state(t)
		for i, n := range c.Nodes {
			if s.Broker.Connected && s.Broker.URL == n.URL() {
				at = i
			}
		}
		return at >= 0
	}, wait, poll, "the daemon is not connected to a node of the cluster")
	return at
}

// totalOf sums a counter's series.
func totalOf(families map[string]*dto.MetricFamily, name string) float64 {
	sum := 0.0
	for _, m := range families[name].GetMetric() {
		sum += m.GetCounter().GetValue()
	}
	return sum
}

// report logs a measured figure, and appends it to $OBSERVERD_FIGURES when
// that is set (how the figures in docs/benchmarks.md were collected).
func report(t *testing.T, name, line string) {
	t.Helper()
	t.Log(line)
	if path := os.Getenv("OBSERVERD_FIGURES"); path != "" {
		f, err := os.OpenFile(filepath.Clean(path), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		require.NoError(t, err)
		defer f.Close()
		_, err = fmt.Fprintf(f, "%s %s: %s\n", time.Now().UTC().Format(time.RFC3339), name, line)
		require.NoError(t, err)
	}
}
