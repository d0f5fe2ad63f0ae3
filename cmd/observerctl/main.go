// Command observerctl is observerd's operator CLI.
//
//	observerctl tail --config observerd.yaml [--bind KEY]... [--queue NAME] [--json]
//	observerctl policy validate FILE...
//
// Exit codes: 0 success; 1 the command ran and found problems (invalid
// policies, a lost broker connection); 2 usage errors.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
