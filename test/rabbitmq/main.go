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
	os.Exit(runMain(m, node))
}

func runMain(m *testing.M, node **Node) int {
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
	code := m.Run()
	if err := n.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "close rabbitmq node: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}
