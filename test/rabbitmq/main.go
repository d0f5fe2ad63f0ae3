package rabbitmq

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"
)

// mainStartTimeout bounds the whole Start in Main, certificates included;
// generous because parallel test packages boot their nodes at once.
const mainStartTimeout = 2 * time.Minute

// Main is for TestMain: it starts one node for the package, stores it in
// *node, runs the tests and closes the node. A missing RabbitMQ installation
// exits 1 with a hint; it is never a skip.
func Main(m *testing.M, node **Node) {
	os.Exit(runMain(m, node, nil))
}

// MainWith is Main that runs setup on the started node before the tests,
// for a package whose tests and examples all read what setup made (queues
// filled by a daemon): examples cannot share a fixture otherwise. A setup
// that fails fails the package.
func MainWith(m *testing.M, node **Node, setup func(*Node) error) {
	os.Exit(runMain(m, node, setup))
}

func runMain(m *testing.M, node **Node, setup func(*Node) error) int {
	cleanUpOnInterrupt()
	// testing.Verbose needs parsed flags; m.Run would parse them too late.
	if !flag.Parsed() {
		flag.Parse()
	}
	ctx, cancel := context.WithTimeout(context.Background(), mainStartTimeout)
	start := time.Now()
	n, err := Start(ctx, Options{})
	cancel()
	if errors.Is(err, ErrNotInstalled) {
		fmt.Fprintln(os.Stderr, ErrNotInstalled)
		return 1
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "start rabbitmq node: %v\n", err)
		return 1
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "rabbitmq node on %s started in %s\n", n.URL(), time.Since(start).Round(time.Millisecond))
	}
	*node = n
	if setup != nil {
		err = setup(n)
	}
	code := 1
	if err != nil {
		fmt.Fprintf(os.Stderr, "set up the tests: %v\n", err)
	} else {
		code = m.Run()
	}
	if err := n.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "close rabbitmq node: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}
