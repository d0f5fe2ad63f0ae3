package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
)

const (
	exitOK       = 0
	exitProblems = 1
	exitUsage    = 2
)

const usage = `usage: observerctl COMMAND [ARGS]

commands:
  status [--admin URL | --socket PATH | --config FILE] [--json]
                          the daemon's actors, observers, broker and outbox (exit 1 when it is not ready)
  top [--admin URL | --socket PATH | --config FILE] [--interval D]
                          a live view of the daemon, refreshed every second, observers in trouble first (q quits)
  pause|resume|observe [--socket PATH | --config FILE] POLICY/OBSERVER
                          stop an observer until resumed; restart a paused or quarantined one; observe at once
                          (through the daemon's admin socket: as root or a member of its group)
  tail --config FILE [--bind KEY]... [--queue NAME | --stream NAME [--from WHERE]] [--json]
                          print the events published to RabbitMQ, flagging sequence gaps and duplicate ids
  remote pause|resume|observe POLICY/OBSERVER | status | apply FILE | remove NAME
         [--config FILE] [--url URL] [--node NODE | --group LABEL] [--nodes N1,N2] [--wait D] [--json]
                          command nodes over RabbitMQ (docs/control.md): one line per answering node, then the
                          silent ones of --nodes (exit 1 when a node refused, failed or stayed silent)
  plugin check [--target URL [--config JSON] [--calls N]] FILE.wasm
                          check a plugin against ABI v1 and, with --target, run observe calls in the sandbox
                          (exit 1 when a call fails or emits a record the daemon rejects)
  policy validate [--config FILE] FILE|DIR...
                          validate policies offline as the daemon does (file:line:col: message per problem)
  policy schema           print the JSON Schema of policy files, for editors (docs/policies.md)

Run "observerctl COMMAND --help" for a command's flags; they may come
before or after its arguments ("--" ends them).

Exit codes: 0 success; 1 a problem to report (a rejected policy, a daemon
not ready or not reachable, a broker that refused); 2 bad usage.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "status":
		return status(ctx, args[1:], stdout, stderr)
	case "top":
		return top(ctx, args[1:], stdout, stderr)
	case "pause", "resume", "observe":
		return command(ctx, args[0], args[1:], stdout, stderr)
	case "tail":
		return tail(ctx, args[1:], stdout, stderr)
	case "remote":
		return remote(ctx, args[1:], stdout, stderr)
	case "plugin":
		if len(args) > 1 && args[1] == "check" {
			return pluginCheck(ctx, args[2:], stdout, stderr)
		}
	case "policy":
		switch {
		case len(args) > 1 && args[1] == "validate":
			return validate(args[2:], stdout, stderr)
		case len(args) > 1 && args[1] == "schema":
			return policySchema(args[2:], stdout, stderr)
		}
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "observerctl: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// parseFlags parses a command's flags, before and after its arguments
// (`resume web/health --config FILE` as well); "--" ends the flags. When
// it should not go on, it says with which exit code: 0 after --help, 2
// for a bad flag.
func parseFlags(fs *flag.FlagSet, args []string) (int, bool) {
	var positional []string
	for {
		err := fs.Parse(args)
		switch {
		case errors.Is(err, flag.ErrHelp):
			return exitOK, false
		case err != nil:
			return exitUsage, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		positional, args = append(positional, rest[0]), rest[1:]
	}
	// Parsed again for fs.Args: the flags are set already.
	_ = fs.Parse(append([]string{"--"}, positional...))
	return 0, true
}
