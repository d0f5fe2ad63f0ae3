//go:build integration

package e2e

import (
	"context"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Fault tests: a daemon streams a few hundred events per second from real
// observers while something fails for real; afterwards an independent
// consumer drains the bound queue and checks that every sequence from 1 to
// the last arrived, and that duplicates stay within what docs/delivery.md
// allows per failure: the confirm window (64 in these configs) and twice
// the acks that may await their deletion (256 each). Each test leaves the
// broker running.

const (
	window        = 64
	maxDuplicates = 2 * (window + 256)
)

// streaming starts bin/observable and a daemon under load, its queue
// declared first, and waits until n events were delivered.
func streaming(t *testing.T, opts ...daemonOption) (*daemon, *proc) {
	t.Helper()
	d := newDaemon(t, startObservable(t), append([]daemonOption{withLoad(10)}, opts...)...)
	d.declare(t)
	return d, d.start(t)
}

// waitQueued waits until the queue holds at least n events.
func (d *daemon) waitQueued(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return d.queued() >= n }, wait, 50*time.Millisecond, "fewer than %d events delivered", n)
}

// stopAndCheck stops the daemon cleanly, drains the queue and checks that
// nothing is missing and duplicates are bounded.
func stopAndCheck(t *testing.T, d *daemon, p *proc, failures int) delivery {
	t.Helper()
	p.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, p.exitCode(t, 30*time.Second), "SIGTERM drains and exits 0")
	got := deliveryOf(d.drain(t))
	require.Empty(t, got.missing(), "lost events (of %d)", got.max)
	assert.LessOrEqual(t, got.dups, maxDuplicates*failures, "duplicates beyond what a failure may repeat")
	t.Logf("%d events, %d duplicates, %d failures", got.max, got.dups, failures)
	return got
}

func restartNode(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, node.Restart(ctx))
}

// down waits until the daemon has seen the broker gone for a while: a few
// failed reconnects.
func down(t *testing.T, p *proc) {
	t.Helper()
	n := p.logCount("broker connection failed")
	require.Eventually(t, func() bool { return p.logCount("broker connection failed") >= n+3 }, wait, tick)
}

func TestFaultBrokerKilledMidStream(t *testing.T) {
	d, p := streaming(t)
	d.waitQueued(t, 500)
	require.NoError(t, node.Kill())
	down(t, p)
	restartNode(t)
	before := d.queued()
	d.waitQueued(t, before+500)
	stopAndCheck(t, d, p, 1)
}

func TestFaultDaemonKilledMidStream(t *testing.T) {
	d, p := streaming(t)
	d.waitQueued(t, 500)
	p.signal(t, syscall.SIGKILL)
	require.Equal(t, -1, p.exitCode(t, wait))
	p = d.start(t)
	before := d.queued()
	d.waitQueued(t, before+500)
	stopAndCheck(t, d, p, 1)
}

func TestFaultBrokerThenDaemonKilled(t *testing.T) {
	d, p := streaming(t)
	d.waitQueued(t, 300)
	require.NoError(t, node.Kill())
	down(t, p)
	p.signal(t, syscall.SIGKILL) // with events waiting in the outbox
	require.Equal(t, -1, p.exitCode(t, wait))
	restartNode(t)
	p = d.start(t)
	before := d.queued()
	d.waitQueued(t, before+500)
	stopAndCheck(t, d, p, 2)
}

func TestFaultFirstURLDead(t *testing.T) {
	dead := "amqps://observer@localhost:" + portOf(t, freeAddr(t)) + "/"
	d, p := streaming(t, withURLs(dead, node.URL()))
	d.waitQueued(t, 500)
	assert.Contains(t, p.out.String(), `"url":"`+node.URL()+`","time"`)
	stopAndCheck(t, d, p, 0)
}

func TestFaultBrokerUnreachableAtStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := newDaemon(t, startObservable(t), withLoad(10))
	d.declare(t)
	require.NoError(t, node.Stop(ctx))
	t.Cleanup(func() {
		if d.queued() < 0 {
			restartNode(t)
		}
	})
	p := d.start(t)
	down(t, p)
	var body string
	require.Eventually(t, func() bool {
		var code int
		code, body = d.readyz()
		return code == 503
	}, wait, tick)
	assert.Contains(t, body, "broker not connected")
	restartNode(t)
	require.Eventually(t, func() bool { code, _ := d.readyz(); return code == 200 }, wait, tick)
	d.waitQueued(t, 500)
	stopAndCheck(t, d, p, 0)
}

func TestFaultMemoryAlarm(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, p := streaming(t)
	d.waitQueued(t, 300)
	_, err := node.Ctl(ctx, "set_vm_memory_high_watermark", "0")
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = node.Ctl(context.Background(), "set_vm_memory_high_watermark", "0.4") })
	var body string
	require.Eventually(t, func() bool {
		var code int
		code, body = d.readyz()
		return code == 503
	}, wait, tick, "readyz says blocked")
	assert.Contains(t, body, "blocked")
	_, err = node.Ctl(ctx, "set_vm_memory_high_watermark", "0.4")
	require.NoError(t, err)
	require.Eventually(t, func() bool { code, _ := d.readyz(); return code == 200 }, wait, tick)
	before := d.queued()
	d.waitQueued(t, before+300)
	stopAndCheck(t, d, p, 0)
}

func TestFaultOutboxFullDropsExactlyWhatItReports(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, p := streaming(t, withOutbox("{max_bytes: 1MiB, when_full: drop_oldest}"))
	d.waitQueued(t, 100)
	require.NoError(t, node.Stop(ctx))
	require.Eventually(t, func() bool { return p.logCount("outbox full: oldest events dropped") > 0 }, time.Minute, tick)
	restartNode(t)
	// Stop once reconnected: the stop then drains the outbox, overflow
	// events included.
	require.Eventually(t, func() bool { code, _ := d.readyz(); return code == 200 }, time.Minute, tick)
	p.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, p.exitCode(t, 30*time.Second))
	got := deliveryOf(d.drain(t))
	require.NotEmpty(t, got.overflow, "outbox.overflow events arrived")
	reported := map[uint64]bool{}
	for _, r := range got.overflow {
		for s := r[0]; s <= r[1]; s++ {
			reported[s] = true
		}
	}
	missing := got.missing()
	var unreported []uint64
	for _, s := range missing {
		if !reported[s] {
			unreported = append(unreported, s)
		}
		delete(reported, s)
	}
	assert.Empty(t, unreported, "missing sequences no outbox.overflow reported (%d)", len(unreported))
	assert.Empty(t, reported, "sequences reported dropped that arrived anyway (%d)", len(reported))
	assert.NotEmpty(t, missing)
	t.Logf("%d events, %d dropped in %d outbox.overflow events", got.max, len(missing), len(got.overflow))
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	return port
}

// TestFaultStopWhileBlocked: a SIGTERM while a memory alarm blocks
// publishing stops within the drain deadline (a blocked connection must not
// hang the stop); the events still unconfirmed go at the next start.
func TestFaultStopWhileBlocked(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, p := streaming(t)
	d.waitQueued(t, 300)
	_, err := node.Ctl(ctx, "set_vm_memory_high_watermark", "0")
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = node.Ctl(context.Background(), "set_vm_memory_high_watermark", "0.4") })
	require.Eventually(t, func() bool { _, body := d.readyz(); return strings.Contains(body, "blocked") }, wait, tick)

	start := time.Now()
	p.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, p.exitCode(t, 20*time.Second))
	t.Logf("stopped in %s while blocked", time.Since(start).Round(time.Millisecond))

	_, err = node.Ctl(ctx, "set_vm_memory_high_watermark", "0.4")
	require.NoError(t, err)
	p = d.start(t)
	before := d.queued()
	d.waitQueued(t, before+300)
	stopAndCheck(t, d, p, 1)
}
