package rabbitmq

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

const (
	// DefaultClusterNodes is the size of a cluster when ClusterOptions
	// does not say.
	DefaultClusterNodes = 3
	// maxClusterNodes bounds a cluster: every node is an Erlang VM of its
	// own, and each listens on a loopback address of its own.
	maxClusterNodes = 9
	// clusterPollInterval is how often cluster_status and list_queues are
	// asked: every call boots an Erlang VM for the CLI, about a second.
	clusterPollInterval = 200 * time.Millisecond
)

// ClusterOptions for StartCluster. The zero value is a cluster of
// DefaultClusterNodes nodes.
type ClusterOptions struct {
	// Nodes is the number of nodes, 1 to 9; 0 means DefaultClusterNodes.
	Nodes int
	// Dir holds the shared certificates, the epmd log and a directory per
	// node (node-1, node-2, ...). Empty: a fresh os.MkdirTemp directory,
	// removed by Close.
	Dir string
	// StartTimeout bounds each boot of a node, and each wait for the
	// cluster to be whole again (StartCluster, Restart, RollingRestart);
	// default 60s.
	StartTimeout time.Duration
}

// Cluster is a RabbitMQ cluster of private nodes on this machine. Each
// node is a Node as Start makes one (its own name, data directory, ports
// and TLS listener), with these differences:
//
//   - Nodes[i] listens on its own loopback address 127.0.0.(i+2), which is
//     its Host and the host of its URL, and its server certificate names
//     only that address and the DNS name rabbit-(i+1).cluster.test: a
//     client that verifies the server name tells the nodes apart;
//   - the nodes share the CA, the client certificates, the user and its
//     password, the Erlang cookie and one private epmd (which Close
//     stops);
//   - after all nodes have booted (in parallel), each node after the
//     first is joined to the first with `rabbitmqctl stop_app`,
//     `join_cluster` and `start_app`, and StartCluster returns once
//     cluster_status on every node lists every node as running.
//
// A quorum queue declared while all nodes run has a member on each
// (RabbitMQ's default membership). The methods that take a node take its
// index in Nodes; they are safe for concurrent use, the ones that change
// the cluster (Kill, Stop, Restart, RollingRestart, Close) being
// serialised.
type Cluster struct {
	Dir   string
	Nodes []*Node
	// User, Password, PasswordFile and CAFile are those of every node.
	User, Password, PasswordFile, CAFile string

	timeout time.Duration
	tempDir bool
	life    sync.Mutex // serialises Kill, Stop, Restart, RollingRestart and Close
	mu      sync.Mutex // guards epmd and closed
	epmd    *process
	closed  bool
}

// StartCluster starts a cluster and waits until it is whole. The caller
// must Close it.
func StartCluster(ctx context.Context, opts ClusterOptions) (_ *Cluster, err error) {
	in, err := findInstall()
	if err != nil {
		return nil, err
	}
	size := cmp.Or(opts.Nodes, DefaultClusterNodes)
	if size < 1 || size > maxClusterNodes {
		return nil, fmt.Errorf("start rabbitmq cluster: %d nodes: want 1 to %d", size, maxClusterNodes)
	}
	c := &Cluster{User: User, Password: randomHex(16), timeout: opts.StartTimeout}
	if c.timeout <= 0 {
		c.timeout = defaultStartTimeout
	}
	if c.Dir, c.tempDir, err = makeDir(opts.Dir); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()

	p, err := newPKI(c.Dir)
	if err != nil {
		return nil, err
	}
	c.CAFile = p.files.ca
	// One call, so that all the ports differ: epmd's, then each node's
	// AMQPS and distribution ports.
	ports, err := freePorts(1 + 2*size)
	if err != nil {
		return nil, err
	}
	cookie, id := newCookie(), randomHex(4)
	for i := range size {
		host := "127.0.0." + strconv.Itoa(i+2)
		n := &Node{
			Dir: filepath.Join(c.Dir, "node-"+strconv.Itoa(i+1)), Host: host, listen: host,
			Port: ports[1+2*i], distPort: ports[2+2*i], epmdPort: ports[0],
			User: c.User, Password: c.Password, in: in, timeout: c.timeout,
			name: fmt.Sprintf("obsd-%s-%d@localhost", id, i+1),
		}
		if err := os.MkdirAll(n.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("create rabbitmq node dir: %w", err)
		}
		dns := fmt.Sprintf("rabbit-%d.cluster.test", i+1)
		if err := n.prepare(p, cookie, []string{dns}, []net.IP{net.ParseIP(host)}); err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	c.PasswordFile = c.Nodes[0].PasswordFile

	epmd, err := startEpmd(ctx, in, c.Dir, c.Nodes[0].env, ports[0], c.timeout)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.epmd = epmd
	c.mu.Unlock()

	c.life.Lock()
	defer c.life.Unlock()
	if err := c.each(func(n *Node) error {
		n.life.Lock()
		defer n.life.Unlock()
		return n.boot(ctx)
	}); err != nil {
		return nil, err
	}
	// One at a time: a node joins through the schema of every node
	// already in the cluster, so those must be running.
	first := c.Nodes[0].name
	// stop_app on all at once; but one join at a time: a node joins
	// through the schema of the nodes already in the cluster, and several
	// nodes starting at once into a cluster they are joining fail now and
	// then (mnesia does not start on one).
	if err := c.each(func(n *Node) error {
		if n == c.Nodes[0] {
			return nil
		}
		_, err := n.Ctl(ctx, "stop_app")
		return err
	}); err != nil {
		return nil, err
	}
	for _, n := range c.Nodes[1:] {
		for _, args := range [][]string{{"join_cluster", first}, {"start_app"}} {
			if _, err := n.Ctl(ctx, args...); err != nil {
				return nil, fmt.Errorf("join %s to %s: %w\n%s", n.name, first, err, n.diagnostics())
			}
		}
	}
	if err := c.awaitWhole(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// each runs f on every node in parallel and joins the errors.
func (c *Cluster) each(f func(*Node) error) error {
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		wg.Go(func() { errs[i] = f(n) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Name is the Erlang node name, as cluster_status and list_queues show it.
func (n *Node) Name() string { return n.name }

// running reports whether the node's VM runs (as far as the harness
// knows: it started it and has not stopped or killed it).
func (n *Node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc.running()
}

// URLs are the nodes' URLs (without the password), in order, for the
// daemon's broker.urls.
func (c *Cluster) URLs() []string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.URL()
	}
	return urls
}

// Dial connects to the first node that accepts, in order.
func (c *Cluster) Dial() (*amqp.Connection, error) {
	var errs []error
	for _, n := range c.Nodes {
		if !n.running() {
			continue
		}
		conn, err := n.Dial()
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("dial rabbitmq cluster: no node accepted: %w", errors.Join(errs...))
}

// Ctl runs rabbitmqctl against the first running node.
func (c *Cluster) Ctl(ctx context.Context, args ...string) (string, error) {
	for _, n := range c.Nodes {
		if n.running() {
			return n.Ctl(ctx, args...)
		}
	}
	return "", errors.New("run rabbitmqctl: no node of the cluster is running")
}

// Kill crashes node i (SIGKILL), as Node.Kill.
func (c *Cluster) Kill(i int) error {
	c.life.Lock()
	defer c.life.Unlock()
	return c.Nodes[i].Kill()
}

// Stop stops node i gracefully, as Node.Stop.
func (c *Cluster) Stop(ctx context.Context, i int) error {
	c.life.Lock()
	defer c.life.Unlock()
	return c.Nodes[i].Stop(ctx)
}

// Restart starts node i again (stopping it first if it runs) and waits
// until the running nodes are whole again (awaitWhole).
func (c *Cluster) Restart(ctx context.Context, i int) error {
	c.life.Lock()
	defer c.life.Unlock()
	if err := c.Nodes[i].Restart(ctx); err != nil {
		return err
	}
	return c.awaitWhole(ctx)
}

// RollingRestart restarts the nodes one at a time, as a broker upgrade
// does: it stops a node gracefully, starts it again, and waits until it is
// back in the cluster and every quorum queue and stream has all its
// members online again, before it stops the next one. So at most one
// node is away at any time, and a queue never loses its majority.
func (c *Cluster) RollingRestart(ctx context.Context) error {
	c.life.Lock()
	defer c.life.Unlock()
	if err := c.awaitWhole(ctx); err != nil {
		return err
	}
	for _, n := range c.Nodes {
		if err := n.Restart(ctx); err != nil {
			return err
		}
		if err := c.awaitWhole(ctx); err != nil {
			return err
		}
	}
	return nil
}

// QueueMembers returns the nodes that hold a replica of a quorum queue or
// a stream (members) and those whose replica runs (online), as
// `rabbitmqctl list_queues` reports them, sorted.
func (c *Cluster) QueueMembers(ctx context.Context, queue string) (members, online []string, err error) {
	queues, err := c.listQueues(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, q := range queues {
		if q.Name == queue {
			return q.Members, q.Online, nil
		}
	}
	return nil, nil, fmt.Errorf("queue %q not found", queue)
}

// queueInfo is a row of `rabbitmqctl list_queues name type members online`.
type queueInfo struct {
	Name    string   `json:"name"`
	Type    string   `json:"type"`
	Members []string `json:"members"`
	Online  []string `json:"online"`
}

func (c *Cluster) listQueues(ctx context.Context) ([]queueInfo, error) {
	out, err := c.Ctl(ctx, "list_queues", "name", "type", "members", "online", "--formatter", "json", "--quiet")
	if err != nil {
		return nil, err
	}
	var queues []queueInfo
	if err := json.Unmarshal([]byte(out), &queues); err != nil {
		return nil, fmt.Errorf("read list_queues: %w: %s", err, out)
	}
	for i := range queues {
		slices.Sort(queues[i].Members)
		slices.Sort(queues[i].Online)
	}
	return queues, nil
}

// awaitWhole waits, within the start timeout, until cluster_status on
// every running node lists every running node as running, and every
// member of a quorum queue or stream that is on a running node is online.
// Nodes the harness stopped or killed are left out: with two of three
// down, the one left is whole on its own. c.life is held.
func (c *Cluster) awaitWhole(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var up []*Node
	var want []string
	for _, n := range c.Nodes {
		if n.running() {
			up = append(up, n)
			want = append(want, n.name)
		}
	}
	slices.Sort(want)
	tick := time.NewTicker(clusterPollInterval)
	defer tick.Stop()
	for {
		err := c.whole(ctx, up, want)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the rabbitmq cluster: %w (last: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// whole is one check of awaitWhole: nil, or what is missing. The CLI
// calls run in parallel, each being mostly the boot of an Erlang VM.
func (c *Cluster) whole(ctx context.Context, up []*Node, want []string) error {
	errs := make([]error, len(up)+1)
	var wg sync.WaitGroup
	for i, n := range up {
		wg.Go(func() { errs[i] = seesRunning(ctx, n, want) })
	}
	wg.Go(func() {
		queues, err := c.listQueues(ctx)
		if err != nil {
			errs[len(up)] = err
			return
		}
		for _, q := range queues {
			if missing := without(intersect(q.Members, want), q.Online); len(missing) > 0 {
				errs[len(up)] = fmt.Errorf("%s queue %s: members %v not online", q.Type, q.Name, missing)
				return
			}
		}
	})
	wg.Wait()
	return errors.Join(errs...)
}

// seesRunning checks that cluster_status on n lists the nodes want as
// running.
func seesRunning(ctx context.Context, n *Node, want []string) error {
	out, err := n.Ctl(ctx, "cluster_status", "--formatter", "json", "--quiet")
	if err != nil {
		return err
	}
	var status struct {
		Running []string `json:"running_nodes"`
	}
	if err := json.Unmarshal([]byte(out), &status); err != nil {
		return fmt.Errorf("read cluster_status of %s: %w: %s", n.name, err, out)
	}
	if missing := without(want, status.Running); len(missing) > 0 {
		return fmt.Errorf("%s does not see %v running", n.name, missing)
	}
	return nil
}

// without is a less b.
func without(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}

// intersect is what a and b share.
func intersect(a, b []string) []string {
	var out []string
	for _, s := range a {
		if slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}

// Close kills every node (a cluster thrown away need not stop
// gracefully), stops the epmd, and removes Dir if StartCluster created
// it. It is safe to call twice.
func (c *Cluster) Close() error {
	c.life.Lock()
	defer c.life.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	epmd := c.epmd
	c.mu.Unlock()

	errs := []error{c.each(func(n *Node) error { return n.abort() })}
	if epmd.running() {
		if err := killTree(epmd); err != nil {
			errs = append(errs, fmt.Errorf("kill epmd: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if c.tempDir {
		return removeTempDir(c.Dir)
	}
	return nil
}

// abort closes the node by killing it, for Cluster.Close.
func (n *Node) abort() error {
	n.life.Lock()
	defer n.life.Unlock()
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	return n.kill()
}
