//go:build integration

package main

import (
	"context"
	"fmt"
	"os"
)

// The Go consumer reads what two daemons published (consumer_test.go):
// node-a.example's first event twice, as after a lost confirm; and
// node-c.example's events with 3 dropped by its outbox and reported by an
// outbox.overflow, and 4 lost. When it has read them all, it prints each
// observer's state and each node's losses.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), consumerTimeout)
	defer cancel()
	if err := run(ctx, []string{"-queue", goQueue, "-drain"}, os.Stdout); err != nil {
		fmt.Println(err)
	}
	// Output:
	// duplicate node-a.example 1
	// gap node-c.example 3..4
	// dropped node-c.example 3..3 (drop_oldest)
	// observerd://node-a.example/observer/web/health stopped
	// observerd://node-b.example/observer/web/health stopped
	// node-a.example (application/protobuf): no loss
	// node-b.example (application/json): no loss
	// node-c.example (application/protobuf): lost 4..4
}
