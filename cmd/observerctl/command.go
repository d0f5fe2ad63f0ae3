package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/polar/observerd/messages"
)

// command is `pause|resume|observe POLICY/OBSERVER`: an observer command
// through the daemon's admin endpoint. Exit 0 when it was carried out, 1
// when the daemon refused it (with why) or could not be reached.
func command(ctx context.Context, name string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	admin := fs.String("admin", "", "admin `URL` of the daemon (default: admin.listen of --config, else of /etc/observerd/observerd.yaml, else http://127.0.0.1:9464)")
	configPath := fs.String("config", "", "daemon config `file` to take admin.listen from")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	policy, observer, ok := strings.Cut(fs.Arg(0), "/")
	if fs.NArg() != 1 || !ok || policy == "" || observer == "" || strings.Contains(observer, "/") {
		fmt.Fprintf(stderr, "usage: observerctl %s [--admin URL | --config FILE] POLICY/OBSERVER\n", name)
		return exitUsage
	}
	url, err := adminURL(*admin, *configPath)
	if err != nil {
		fmt.Fprintf(stderr, "observerctl %s: %v\n", name, err)
		return exitProblems
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	endpoint := fmt.Sprintf("%s/v1/observers/%s/%s/%s", url, policy, observer, name)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, nil)
	if err != nil {
		fmt.Fprintf(stderr, "observerctl %s: %v\n", name, err)
		return exitProblems
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "observerctl %s: ask %s: %v (is observerd running, with admin.listen there?)\n", name, url, err)
		return exitProblems
	}
	defer resp.Body.Close()
	var res messages.CommandResult
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&res); err != nil {
		fmt.Fprintf(stderr, "observerctl %s: %s: %s\n", name, endpoint, resp.Status)
		return exitProblems
	}
	if !res.Ok {
		fmt.Fprintf(stderr, "observerctl %s %s: %s\n", name, res.Target, res.Message)
		return exitProblems
	}
	fmt.Fprintf(stdout, "%s %s: done\n", name, res.Target)
	return exitOK
}
