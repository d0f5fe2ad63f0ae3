//go:build integration

package rabbitmq

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/configs"
)

const (
	// clusterTimeout bounds one operation on the cluster: a start, a
	// restart of a node until the cluster is whole, a rolling restart.
	clusterTimeout = 4 * time.Minute
	// publishRate paces the load publisher: enough to have messages in
	// flight at every fault, little enough for a loaded 2-core machine.
	publishRate = 100
	// confirmTimeout bounds the wait for one confirm: a quorum queue that
	// lost its leader elects another within seconds.
	confirmTimeout = 30 * time.Second
	// noQuorumWindow is how long a publish must stay unconfirmed while
	// the queue has no majority.
	noQuorumWindow = 5 * time.Second
)

// TestCluster runs the cases on one three-node cluster, in order, because
// starting one costs a quarter of a minute on a loaded machine: each case
// leaves the cluster whole for the next, and the last one closes it.
func TestCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	start := time.Now()
	c, err := StartCluster(ctx, ClusterOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	t.Logf("three-node cluster started in %s", time.Since(start).Round(time.Millisecond))
	require.Len(t, c.Nodes, DefaultClusterNodes)

	for _, tc := range []struct {
		name string
		run  func(*testing.T, *Cluster)
	}{
		{"every node runs and sees the others", testClusterRunning},
		{"a quorum queue has a member on every node", testQuorumOnEveryNode},
		{"each node presents a certificate of its own", testNodeCertificates},
		{"kill and restart keep a quorum queue's messages", testKillRestart},
		{"a rolling restart keeps a quorum queue's messages", testRollingRestart},
		{"two nodes of three down: no confirm until they are back", testNoQuorum},
		{"close leaves nothing behind", testClusterClose},
	} {
		if !t.Run(tc.name, func(t *testing.T) { tc.run(t, c) }) {
			return // the cases after need the cluster this one left broken
		}
	}
}

func names(c *Cluster) []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Name())
	}
	slices.Sort(out)
	return out
}

func testClusterRunning(t *testing.T, c *Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	hosts, ports, dirs := map[string]bool{}, map[int]bool{}, map[string]bool{}
	for i, n := range c.Nodes {
		hosts[n.Host], ports[n.Port], dirs[n.Dir] = true, true, true
		assert.Equal(t, "127.0.0."+strconv.Itoa(i+2), n.Host)
		assert.Equal(t, "amqps://observer@"+n.Host+":"+strconv.Itoa(n.Port)+"/", c.URLs()[i])
		require.NoError(t, seesRunning(ctx, n, names(c)))
	}
	assert.Len(t, hosts, len(c.Nodes), "a host per node")
	assert.Len(t, ports, len(c.Nodes), "a port per node")
	assert.Len(t, dirs, len(c.Nodes), "a directory per node")
	assert.Len(t, slices.Compact(names(c)), len(c.Nodes), "a name per node")
}

func testQuorumOnEveryNode(t *testing.T, c *Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	// Declared through the second node, as a consumer connected anywhere
	// would.
	conn, err := c.Nodes[1].Dial()
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, DeclareQuorum(ch, "cluster.events", "cluster-members", "#"))
	members, online, err := c.QueueMembers(ctx, "cluster-members")
	require.NoError(t, err)
	assert.Equal(t, names(c), members)
	assert.Equal(t, names(c), online)
}

func testNodeCertificates(t *testing.T, c *Cluster) {
	// The daemon's TLS settings with only the CA: the name verified is
	// each URL's host, as the daemon dials (a clone per dial).
	b := configs.Broker{TLS: configs.TLS{CAFile: c.CAFile, MinVersion: "1.2"}}
	daemonTLS, err := b.ClientTLS()
	require.NoError(t, err)
	for i, n := range c.Nodes {
		conn, err := amqp.DialConfig(n.URLWithPassword(), amqp.Config{TLSClientConfig: daemonTLS.Clone()})
		require.NoError(t, err, "node %d", i)
		cert := conn.ConnectionState().PeerCertificates[0]
		conn.Close()
		assert.Equal(t, []string{"rabbit-" + strconv.Itoa(i+1) + ".cluster.test"}, cert.DNSNames)
		require.Len(t, cert.IPAddresses, 1)
		assert.Equal(t, n.Host, cert.IPAddresses[0].String())

		// The next node's address, answered by this node: its
		// certificate does not name that address.
		other := c.Nodes[(i+1)%len(c.Nodes)]
		relay, err := StartRelay(other.Host, net.JoinHostPort(n.Host, strconv.Itoa(n.Port)))
		require.NoError(t, err)
		t.Cleanup(func() { _ = relay.Close() })
		u := "amqps://" + c.User + ":" + c.Password + "@" + relay.Addr + "/"
		_, err = amqp.DialConfig(u, amqp.Config{TLSClientConfig: daemonTLS.Clone(), Dial: amqp.DefaultDial(opTimeout)})
		var hostname x509.HostnameError
		require.ErrorAs(t, err, &hostname, "node %d posing as node %d: want a hostname error, got %v", i, (i+1)%len(c.Nodes), err)
		assert.Equal(t, other.Host, hostname.Host)
	}
}

func testKillRestart(t *testing.T, c *Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	p := startPublisher(t, c, "cluster-kill")
	p.awaitMore(t, 10)
	// The first node is the one the publisher is connected to.
	require.NoError(t, c.Kill(0))
	require.False(t, c.Nodes[0].running())
	killed := time.Now()
	p.awaitMore(t, 1) // on another node
	t.Logf("first confirm %s after the kill", time.Since(killed).Round(time.Millisecond))
	require.NoError(t, c.Restart(ctx, 0))
	p.awaitMore(t, 10)
	p.stop()
	p.check(t)
}

func testRollingRestart(t *testing.T, c *Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	p := startPublisher(t, c, "cluster-rolling")
	p.awaitMore(t, 10)
	start := time.Now()
	require.NoError(t, c.RollingRestart(ctx))
	t.Logf("rolling restart of %d nodes took %s", len(c.Nodes), time.Since(start).Round(time.Millisecond))
	p.awaitMore(t, 10)
	p.stop()
	p.check(t)
}

func testNoQuorum(t *testing.T, c *Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	const queue = "cluster-no-quorum"
	conn, err := c.Nodes[0].Dial()
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, DeclareQuorum(ch, "cluster.events", queue))
	require.NoError(t, ch.Confirm(false))
	publish := func(body string) *amqp.DeferredConfirmation {
		conf, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(body)})
		require.NoError(t, err)
		return conf
	}
	before := publish("before")
	ok, err := before.WaitContext(ctx)
	require.NoError(t, err)
	require.True(t, ok, "nacked with the whole cluster up")

	require.NoError(t, c.Stop(ctx, 1))
	require.NoError(t, c.Stop(ctx, 2))
	during := publish("during")
	select {
	case <-during.Done():
		assert.False(t, during.Acked(), "acked without a majority")
	case <-time.After(noQuorumWindow):
		// Held: the queue can commit nothing.
	}

	require.NoError(t, c.Restart(ctx, 1))
	require.NoError(t, c.Restart(ctx, 2))
	select {
	case <-during.Done():
		t.Logf("the publish while two nodes were down: acked %v", during.Acked())
	default:
		t.Log("the publish while two nodes were down: still unconfirmed")
	}
	after := publish("after")
	ok, err = after.WaitContext(ctx)
	require.NoError(t, err)
	require.True(t, ok, "nacked with the whole cluster back")
	members, online, err := c.QueueMembers(ctx, queue)
	require.NoError(t, err)
	assert.Equal(t, names(c), members)
	assert.Equal(t, names(c), online)

	// What was confirmed is kept; "during" only if it was.
	want := []string{"before", "after"}
	if during.Acked() {
		want = []string{"before", "during", "after"}
	}
	got := drain(t, ch, queue)
	if !during.Acked() {
		got = slices.DeleteFunc(got, func(s string) bool { return s == "during" })
	}
	assert.Equal(t, want, got)
}

func testClusterClose(t *testing.T, c *Cluster) {
	var pids []int
	for _, n := range c.Nodes {
		pid := n.proc.cmd.Process.Pid
		pids = append(append(pids, pid), descendants(pid)...)
	}
	pids = append(pids, c.epmd.cmd.Process.Pid)
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "Close twice is fine")
	for _, pid := range pids {
		assert.False(t, alive(pid), "pid %d survived Close", pid)
	}
	_, err := os.Stat(c.Dir)
	assert.True(t, os.IsNotExist(err), "temporary dir %s not removed", c.Dir)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	assert.Error(t, c.Restart(ctx, 0), "a closed cluster cannot restart a node")
}

// drain reads every message of queue, in order.
func drain(t *testing.T, ch *amqp.Channel, queue string) []string {
	t.Helper()
	var out []string
	for {
		msg, ok, err := ch.Get(queue, true)
		require.NoError(t, err)
		if !ok {
			return out
		}
		out = append(out, string(msg.Body))
	}
}

// publisher publishes numbered persistent messages to a quorum queue, with
// confirms, through whichever node of the cluster accepts, reconnecting
// when its node goes away; it records which numbers were acked.
type publisher struct {
	c     *Cluster
	queue string
	quit  chan struct{}
	done  chan struct{}

	mu    sync.Mutex
	acked []int
	sent  int
}

func startPublisher(t *testing.T, c *Cluster, queue string) *publisher {
	t.Helper()
	conn, err := c.Dial()
	require.NoError(t, err)
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, DeclareQuorum(ch, "cluster.events", queue))
	conn.Close()
	p := &publisher{c: c, queue: queue, quit: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	t.Cleanup(p.stop)
	return p
}

func (p *publisher) run() {
	defer close(p.done)
	pace := time.NewTicker(time.Second / publishRate)
	defer pace.Stop()
	for {
		select {
		case <-p.quit:
			return
		case <-pace.C:
		}
		if err := p.session(pace.C); err == nil {
			return
		}
	}
}

// session publishes on one connection until it fails (non-nil) or the
// publisher is stopped (nil).
func (p *publisher) session(pace <-chan time.Time) error {
	conn, err := p.c.Dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if err := ch.Confirm(false); err != nil {
		return err
	}
	for {
		p.mu.Lock()
		p.sent++
		seq := p.sent
		p.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), confirmTimeout)
		conf, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", p.queue, true, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(strconv.Itoa(seq))})
		var ok bool
		if err == nil {
			ok, err = conf.WaitContext(ctx)
		}
		cancel()
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("nacked or channel closed")
		}
		p.mu.Lock()
		p.acked = append(p.acked, seq)
		p.mu.Unlock()
		select {
		case <-p.quit:
			return nil
		case <-pace:
		}
	}
}

func (p *publisher) stop() {
	select {
	case <-p.quit:
	default:
		close(p.quit)
	}
	<-p.done
}

func (p *publisher) ackedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acked)
}

// awaitMore waits until n more messages than now are acked.
func (p *publisher) awaitMore(t *testing.T, n int) {
	t.Helper()
	want := p.ackedCount() + n
	require.Eventually(t, func() bool { return p.ackedCount() >= want }, clusterTimeout, tick,
		"the publisher got no %d more confirms", n)
}

// check reads the queue: every acked message is there; a message sent
// but not acked may be there too (published, its confirm lost).
func (p *publisher) check(t *testing.T) {
	t.Helper()
	conn, err := p.c.Dial()
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	got := map[int]int{}
	for _, body := range drain(t, ch, p.queue) {
		n, err := strconv.Atoi(body)
		require.NoError(t, err)
		got[n]++
	}
	var lost []int
	for _, n := range p.acked {
		if got[n] == 0 {
			lost = append(lost, n)
		}
	}
	assert.Empty(t, lost, "acked but not in the queue")
	t.Logf("%d acked of %d sent, %d in the queue", len(p.acked), p.sent, len(got))
}
