// Command observerd is the observer daemon: it observes the service beside
// it as its policies say and publishes every observation and every change
// of its own life to RabbitMQ over TLS.
//
//	observerd --config /etc/observerd/observerd.yaml
//	observerd --check-config --config observerd.yaml
//
// Exit codes: 0 after a clean stop (SIGTERM, SIGINT); 1 when an actor of
// the tree failed beyond its intensity (escalation), or --check-config found
// problems; 2 for an invalid configuration, unreadable TLS or password
// files, or bad usage; 3 when the outbox in state_dir cannot be used
// (permission, I/O, locked by another daemon: the file is left as it is,
// and the log names it). Signals: SIGTERM/SIGINT drain and stop; SIGHUP
// re-reads the config and applies log.level, outbox.max_bytes,
// outbox.when_full and admin.listen (other changes need a restart, and the
// log says which).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	_ "github.com/polar/observerd/actors/observer/kinds/all" // the observer kinds it parses and runs
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
