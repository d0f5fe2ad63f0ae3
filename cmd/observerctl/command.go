package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/polar/observerd/messages"
)

// command is `pause|resume|observe POLICY/OBSERVER`: an observer command
// through the daemon's admin socket (commands go nowhere else). Exit 0
// when it was carried out, 1 when the daemon refused it (with why) or
// could not be reached.
func command(ctx context.Context, name string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "`path` of the daemon's admin socket (default: admin.socket of --config, else of /etc/observerd/observerd.yaml, else /run/observerd/admin.sock)")
	configPath := fs.String("config", "", "daemon config `file` to take admin.socket from")
	// status and top read --admin, the read-only TCP endpoint: said so
	// here, since an operator naturally tries it.
	fs.Func("admin", "not for commands: the admin `URL` is read-only (status, top); commands go through the socket", func(string) error {
		return errors.New("commands go through the admin socket, not the read-only admin URL: use --socket PATH or --config FILE")
	})
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	policy, observer, ok := strings.Cut(fs.Arg(0), "/")
	if fs.NArg() != 1 || !ok || policy == "" || observer == "" || strings.Contains(observer, "/") {
		fmt.Fprintf(stderr, "usage: observerctl %s [--socket PATH | --config FILE] POLICY/OBSERVER\n", name)
		return exitUsage
	}
	api, err := commandAPI(*socket, *configPath)
	if err != nil {
		fmt.Fprintf(stderr, "observerctl %s: %v\n", name, err)
		return exitProblems
	}
	// The names are the daemon's to check: it refuses invalid ones with
	// why. Escaped, they stay one path segment each.
	path := fmt.Sprintf("/v1/observers/%s/%s/%s", url.PathEscape(policy), url.PathEscape(observer), name)
	_, body, err := api.do(ctx, http.MethodPost, path, http.StatusOK, http.StatusConflict)
	if err != nil {
		fmt.Fprintf(stderr, "observerctl %s %s/%s: %v\n", name, policy, observer, err)
		return exitProblems
	}
	var res messages.CommandResult
	if err := json.Unmarshal(body, &res); err != nil {
		fmt.Fprintf(stderr, "observerctl %s %s/%s: decode the answer of %s: %v\n", name, policy, observer, api, err)
		return exitProblems
	}
	if !res.Ok {
		fmt.Fprintf(stderr, "observerctl %s %s: %s\n", name, res.Target, res.Message)
		return exitProblems
	}
	fmt.Fprintf(stdout, "%s %s: done\n", name, res.Target)
	return exitOK
}
