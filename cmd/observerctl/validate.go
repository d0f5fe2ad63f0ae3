package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/polar/observerd/configs"
	"github.com/polar/observerd/policy"
)

// validate is `policy validate`: the daemon's own validation, offline.
func validate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("policy validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "daemon config `file` for allowed_targets and plugin_dir (default: the built-in defaults)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "usage: observerctl policy validate [--config FILE] FILE...")
		return exitUsage
	}
	cfg := configs.Default()
	if *configPath != "" {
		c, err := configs.Load(*configPath)
		if err != nil {
			for _, p := range configs.ProblemsOf(err) {
				fmt.Fprintln(stderr, p.Error())
			}
			return exitProblems
		}
		cfg = c
	}
	env := policy.Env{Allowed: cfg.Targets(), PluginDir: cfg.PluginDir}
	if *configPath == "" {
		env.PluginDir = "" // no daemon config: plugin presence is not checked
	}
	code := exitOK
	for _, file := range fs.Args() {
		data, err := os.ReadFile(file)
		if err == nil {
			var p *policy.Policy
			if p, err = policy.Parse(file, data, env); err == nil {
				fmt.Fprintf(stdout, "%s: ok (policy %s, revision %s)\n", file, p.Metadata.Name, p.Revision)
				continue
			}
		}
		for _, p := range configs.ProblemsOf(err) {
			fmt.Fprintln(stderr, p.Error())
		}
		code = exitProblems
	}
	return code
}
