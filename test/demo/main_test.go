//go:build integration

package main

import (
	"context"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/test/rabbitmq"
)

var node *rabbitmq.Node

func TestMain(m *testing.M) { rabbitmq.Main(m, &node) }

// TestDemoQueueIsBounded: with the policy the demo sets, its queue,
// declared as the daemon declares it, keeps the newest keptEvents
// messages of more: the oldest are dropped.
func TestDemoQueueIsBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, bound(ctx, node.Ctl, demoQueue, keptEvents))
	conn, err := node.Dial()
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, rabbitmq.DeclareQuorum(ch, "polar.events", demoQueue, "#"))
	require.NoError(t, ch.Confirm(false))

	const beyond = 10
	confirms := make([]*amqp.DeferredConfirmation, 0, keptEvents+beyond)
	for i := range keptEvents + beyond {
		c, err := ch.PublishWithDeferredConfirmWithContext(ctx, "polar.events", "demo", false, false, amqp.Publishing{Body: []byte(strconv.Itoa(i))})
		require.NoError(t, err)
		confirms = append(confirms, c)
	}
	for _, c := range confirms {
		ok, err := c.WaitContext(ctx)
		require.NoError(t, err)
		require.True(t, ok, "nacked")
	}

	q, err := ch.QueueDeclarePassive(demoQueue, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
	require.NoError(t, err)
	assert.Equal(t, keptEvents, q.Messages)
	head, ok, err := ch.Get(demoQueue, true)
	require.NoError(t, err)
	require.True(t, ok, "the queue is empty")
	assert.Equal(t, strconv.Itoa(beyond), string(head.Body), "the oldest were dropped")
}
