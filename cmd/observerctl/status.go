package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/configs/yamldoc"
)

// status is `status`: the daemon's /v1/state as tables, or as JSON. Exit
// 0 when the daemon is ready, 1 when it is not or cannot be reached.
func status(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	admin := fs.String("admin", "", "admin `URL` of the daemon (default: admin.listen of --config, else of /etc/observerd/observerd.yaml, else http://127.0.0.1:9464)")
	socket := fs.String("socket", "", "read the state from the admin socket at `path` instead")
	configPath := fs.String("config", "", "daemon config `file` to take admin.listen from (admin.socket when admin.listen is empty)")
	asJSON := fs.Bool("json", false, "print the state as JSON, for scripts")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "observerctl status: unexpected arguments %v\n", fs.Args())
		return exitUsage
	}
	api, err := readAPI(*socket, *admin, *configPath)
	if err != nil {
		fmt.Fprintf(stderr, "observerctl status: %v\n", err)
		return exitProblems
	}
	raw, snap, err := fetchState(ctx, api)
	if err != nil {
		fmt.Fprintf(stderr, "observerctl status: %v\n", err)
		return exitProblems
	}
	if *asJSON {
		_, _ = stdout.Write(jsonSafe(raw))
	} else {
		printLines(stdout, func(w io.Writer) { renderStatus(w, snap, time.Now()) })
	}
	if ready, _ := snap.Ready(); !ready {
		return exitProblems
	}
	return exitOK
}

func fetchState(ctx context.Context, api *adminAPI) ([]byte, *protocol.Snapshot, error) {
	_, raw, err := api.do(ctx, http.MethodGet, "/v1/state", http.StatusOK)
	if err != nil {
		return nil, nil, err
	}
	var s protocol.Snapshot
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, nil, fmt.Errorf("decode /v1/state of %s: %w", api, err)
	}
	return raw, &s, nil
}

// renderStatus prints the snapshot as a summary and two tables, ages
// relative to now.
func renderStatus(w io.Writer, s *protocol.Snapshot, now time.Time) {
	fmt.Fprintf(w, "observerd %s on %s, up %s\n", s.Version, s.Node, age(now, s.Started))
	if ready, why := s.Ready(); ready {
		fmt.Fprintln(w, "ready:     yes")
	} else {
		fmt.Fprintf(w, "ready:     NO: %s\n", strings.Join(why, "; "))
	}
	b := s.Broker
	switch {
	case b.Connected:
		blocked := "no"
		if b.Blocked {
			blocked = "YES: " + b.LastError
		}
		fmt.Fprintf(w, "broker:    connected to %s since %s (%s ago); blocked: %s\n", b.URL, b.Since.Format(time.RFC3339), age(now, b.Since), blocked)
	case b.URL == "" && b.LastError == "":
		fmt.Fprintln(w, "broker:    not connected yet")
	case b.URL == "":
		// Every URL failed to dial: the error names them.
		fmt.Fprintf(w, "broker:    NOT connected: %s\n", b.LastError)
	default:
		fmt.Fprintf(w, "broker:    NOT connected (last tried %s): %s\n", b.URL, b.LastError)
	}
	if o := s.Outbox; o != nil {
		fmt.Fprintf(w, "outbox:    %d events, %s (last sequence %d)\n", o.Events, yamldoc.ByteSize(o.Bytes), o.LastSequence)
	} else {
		fmt.Fprintln(w, "outbox:    unknown (the broker did not answer)")
	}
	fmt.Fprintf(w, "policies:  %s", orNone(s.Policies))
	if len(s.Rejected) > 0 {
		fmt.Fprintf(w, "; REJECTED: %s", strings.Join(s.Rejected, ", "))
	}
	fmt.Fprintln(w)
	label := "rejected:"
	for _, file := range s.Rejected {
		if why, ok := s.Rejections[file]; ok {
			fmt.Fprintf(w, "%-10s %s\n", label, why)
			label = ""
		}
	}
	fmt.Fprintf(w, "events:    %d emitted\n\n", s.EventsEmitted)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ACTOR\tSTATUS\tFAILURES\tRESTARTS\tLAST ERROR")
	for _, a := range s.Actors {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", a.Path, a.Status, a.Failures, a.Restarts, a.LastError)
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "OBSERVER\tPOLICY\tKIND\tSTATE\tLAST RESULT\tAGE\tFAILING\tOBSERVATIONS\tSTATUS\tLAST ERROR")
	for _, o := range s.Observers {
		last := "-"
		if !o.LastTime.IsZero() {
			last = age(now, o.LastTime)
		}
		fmt.Fprintf(tw, "%s\t%s@%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", o.Path, o.Policy, o.Revision, o.Kind, o.State,
			o.LastResult, last, o.ConsecutiveFailures, o.Observations, o.Status, o.LastError)
	}
	_ = tw.Flush()
}

// age is how long ago t was, rounded for reading.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
