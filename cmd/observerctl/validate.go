package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/polar/observerd/configs"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/wasm"
)

// validate is `policy validate FILE|DIR...`: the daemon's own validation,
// offline. Each problem is printed as file:line:col: message; the exit
// code is 1 on any problem.
func validate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("policy validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "daemon config `file` for allowed_targets and plugin_dir (default: the built-in defaults)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "usage: observerctl policy validate [--config FILE] FILE|DIR...")
		return exitUsage
	}
	cfg := configs.Default()
	if *configPath != "" {
		c, err := configs.Load(*configPath)
		if err != nil {
			for _, p := range yamldoc.ProblemsOf(err) {
				fmt.Fprintln(stderr, p.Error())
			}
			return exitProblems
		}
		cfg = c
	}
	env := cfg.PolicyEnv(nil)
	env.PluginDir = ""
	if *configPath != "" {
		// With the daemon's plugin_dir, modules are checked as the daemon
		// checks them: present, pinned sum, ABI v1 (compiled in memory).
		plugins, err := wasm.NewHost(context.Background(), wasm.HostOptions{})
		if err != nil {
			fmt.Fprintf(stderr, "observerctl policy validate: %v\n", err)
			return exitProblems
		}
		defer plugins.Close(context.Background())
		env.PluginDir, env.CheckPlugin = cfg.PluginDir, plugins.CheckFile
	}
	// Policy names must be unique across what is validated together, as
	// across policy_dir: the first one given keeps its name.
	var (
		problems []*yamldoc.Problem
		byName   = map[string]*policy.Policy{}
		usage    policy.Usage
	)
	for _, arg := range fs.Args() {
		var (
			ps  []*policy.Policy
			err error
		)
		if st, statErr := os.Stat(arg); statErr == nil && st.IsDir() {
			ps, err = policy.LoadDir(arg, env) // as the daemon reads policy_dir
		} else {
			var p *policy.Policy
			if p, err = policy.ParseFile(arg, env); p != nil {
				ps = []*policy.Policy{p}
			}
		}
		problems = append(problems, yamldoc.ProblemsOf(err)...)
		for _, p := range ps {
			if first, dup := byName[p.Metadata.Name]; dup {
				problems = append(problems, p.DuplicateOf(first))
				continue
			}
			// Together, as in one policy_dir: the daemon's totals.
			if prob := p.CheckTotals(usage, env.LimitsOf()); prob != nil {
				problems = append(problems, prob)
				continue
			}
			usage = usage.Add(policy.UsageOf(p))
			byName[p.Metadata.Name] = p
			fmt.Fprintf(stdout, "%s: ok (policy %s, revision %s)\n", p.File, p.Metadata.Name, p.Revision)
		}
	}
	for _, p := range problems {
		fmt.Fprintln(stderr, p.Error())
	}
	if len(problems) > 0 {
		return exitProblems
	}
	return exitOK
}
