package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/polar/observerd/policy"
)

// policySchema is `policy schema`: the JSON Schema of policy files, with
// the sections of the kinds this observerctl was built with, for editors
// that check YAML as it is typed.
func policySchema(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("policy schema", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: observerctl policy schema")
		return exitUsage
	}
	out, err := json.MarshalIndent(policy.Schema(), "", "  ")
	if err != nil {
		fmt.Fprintf(stderr, "observerctl policy schema: %v\n", err)
		return exitProblems
	}
	if _, err := fmt.Fprintf(stdout, "%s\n", out); err != nil {
		fmt.Fprintf(stderr, "observerctl policy schema: %v\n", err)
		return exitProblems
	}
	return exitOK
}
