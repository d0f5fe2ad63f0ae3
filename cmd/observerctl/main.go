// Command observerctl is observerd's operator CLI.
//
//	observerctl status [--admin URL | --socket PATH | --config FILE] [--json]
//	observerctl pause|resume|observe [--socket PATH | --config FILE] POLICY/OBSERVER
//	observerctl tail --config observerd.yaml [--bind KEY]... [--queue NAME | --stream NAME [--from WHERE]] [--json]
//	observerctl plugin check [--target URL [--config JSON] [--calls N]] FILE.wasm
//	observerctl policy validate FILE...
//	observerctl policy schema
//
// status reads the daemon's loopback TCP endpoint; the observer commands
// go through its admin socket, found in the daemon's config.
//
// Exit codes: 0 success; 1 the command ran and found problems (invalid
// policies, a lost broker connection); 2 usage errors.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	_ "github.com/polar/observerd/actors/observer/kinds/all" // the kinds whose policies it validates and whose observations it prints
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
