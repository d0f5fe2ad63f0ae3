//go:build integration

package e2e

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/rabbitmq"
)

// clusterTimeout bounds starting a cluster, and each wait for it to be
// whole again: a quarter of a minute on a loaded 2-core machine.
const clusterTimeout = 4 * time.Minute

// startCluster starts a three-node cluster for the test, closed when the
// test ends.
func startCluster(t *testing.T) *rabbitmq.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	start := time.Now()
	c, err := rabbitmq.StartCluster(ctx, rabbitmq.ClusterOptions{StartTimeout: clusterTimeout})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, c.Close()) })
	t.Logf("three-node cluster started in %s", time.Since(start).Round(time.Millisecond))
	return c
}

// withCluster points the daemon at every node of c (broker.urls in node
// order, the cluster's CA and password), and the test's own clients
// (declare, consume, queued, drain) at its first running node.
func withCluster(c *rabbitmq.Cluster) daemonOption {
	return func(dc *daemonConfig) {
		dc.urls = c.URLs()
		dc.password = c.PasswordFile
		dc.brokerTLS = fmt.Sprintf("{ca_file: %q}", c.CAFile)
		dc.broker = c
	}
}

// TestClusterNodesVerified: a daemon refuses a node that answers at
// another node's address (its certificate names its own address only)
// and goes on to the next URL; a daemon given only that address stays
// unready and says why. The quorum queue a daemon declares on the cluster
// has a member on every node.
func TestClusterNodesVerified(t *testing.T) {
	c := startCluster(t)
	first := c.Nodes[0]
	relay, err := rabbitmq.StartRelay(c.Nodes[1].Host, net.JoinHostPort(first.Host, strconv.Itoa(first.Port)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = relay.Close() })
	impostor := "amqps://observer@" + relay.Addr + "/"
	target := startObservable(t)

	d := newDaemon(t, target, withCluster(c), withURLs(impostor, c.URLs()[2]))
	events := d.consume(t)
	p := d.start(t)
	events.waitFor(t, messages.TypeObservationHTTP)
	assert.Contains(t, p.out.String(), `"url":"`+c.URLs()[2]+`","time"`)
	assert.NotContains(t, p.out.String(), `"url":"`+impostor+`","time"`)

	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	var names []string
	for _, n := range c.Nodes {
		names = append(names, n.Name())
	}
	slices.Sort(names)
	members, online, err := c.QueueMembers(ctx, d.queue)
	require.NoError(t, err)
	assert.Equal(t, names, members)
	assert.Equal(t, names, online)

	alone := newDaemon(t, target, withCluster(c), withURLs(impostor))
	alone.start(t)
	want := "x509: certificate is valid for " + c.Nodes[0].Host + ", not " + c.Nodes[1].Host
	require.Eventually(t, func() bool {
		code, body := alone.readyz()
		return code == 503 && strings.Contains(body, want)
	}, wait, tick, "the daemon did not refuse the node at another's address")
}
