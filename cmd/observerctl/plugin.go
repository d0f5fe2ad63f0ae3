package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/wasm"
)

// maxCalls bounds plugin check --calls: enough to see a plugin's state
// carried over many calls, few enough that a slow plugin ends the check
// within minutes (each call is within --timeout).
const maxCalls = 100

// pluginCheck is `plugin check FILE.wasm`: the host's ABI check of a module
// (exports, imports, version), and with --target observe calls in the
// sandbox (--calls, the state carried from one to the next), printing what
// the plugin emitted and logged. Any failure of a call, an invalid emit
// included, exits 1 with the reason.
func pluginCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("plugin check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("target", "", "run observe calls against this target `URL` (http_request may reach only its host)")
	config := fs.String("config", "{}", "the observer's wasm.config, as `JSON`")
	observer := fs.String("observer", "check", "the observer `name` passed to the plugin")
	timeout := fs.Duration("timeout", wasm.DefaultTimeout, "deadline of each call")
	calls := fs.Int("calls", 1, fmt.Sprintf("with --target, run `N` calls in a row (at most %d), the plugin's state carried from one to the next as in the daemon", maxCalls))
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: observerctl plugin check [--target URL [--config JSON] [--calls N]] FILE.wasm")
		return exitUsage
	}
	if *calls < 1 || *calls > maxCalls {
		fmt.Fprintf(stderr, "observerctl plugin check: --calls must be between 1 and %d, got %d\n", maxCalls, *calls)
		return exitUsage
	}
	var u *url.URL
	if *target != "" {
		var err error
		u, err = url.Parse(*target)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			fmt.Fprintf(stderr, "observerctl plugin check: --target must be an absolute http(s) URL, got %q\n", *target)
			return exitUsage
		}
	}
	file := fs.Arg(0)
	log := zerolog.New(zerolog.ConsoleWriter{Out: stderr, NoColor: true, TimeFormat: time.TimeOnly}).With().Timestamp().Logger()
	host, err := wasm.NewHost(ctx, wasm.HostOptions{Log: log})
	if err != nil {
		fmt.Fprintf(stderr, "observerctl plugin check: %v\n", err)
		return exitProblems
	}
	defer host.Close(ctx)
	var p *wasm.Plugin
	if u != nil {
		// Made before the check, which then finds the module compiled and
		// held: it is compiled once.
		p, err = host.NewPlugin(ctx, wasm.PluginSpec{
			Path: file, Observer: *observer, Target: wasm.Target{Name: u.Host, URL: *target},
			ConfigJSON: []byte(*config), Timeout: *timeout, HTTP: onlyHost{host: u.Host}, Log: log,
		})
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", file, err)
			return exitProblems
		}
		defer p.Close(ctx)
	}
	info, err := host.Check(ctx, file, 0)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", file, err)
		return exitProblems
	}
	fmt.Fprintf(stdout, "%s: ABI v%d, %d bytes, sha256 %s\n  imports: %s\n  exports: %s\n", file, info.ABIVersion, info.Size, info.SHA256,
		strings.Join(info.Imports, ", "), strings.Join(info.Exports, ", "))
	if p == nil {
		return exitOK
	}
	for i := 1; i <= *calls; i++ {
		start := time.Now()
		obs, err := p.Observe(ctx, start)
		took := time.Since(start).Round(time.Microsecond)
		if *calls == 1 {
			fmt.Fprintf(stdout, "observe against %s: %d observations in %s\n", *target, len(obs), took)
		} else {
			fmt.Fprintf(stdout, "call %d of %d against %s: %d observations in %s\n", i, *calls, *target, len(obs), took)
		}
		printLines(stdout, func(w io.Writer) {
			for _, o := range obs {
				printObservation(w, o)
			}
		})
		if err != nil {
			fmt.Fprintf(stderr, "%s: call %d: %v\n", file, i, err)
			return exitProblems
		}
	}
	return exitOK
}

// printObservation writes what the plugin emitted, for printLines, which
// makes the plugin's text safe for the terminal.
func printObservation(w io.Writer, o *messages.PluginObservation) {
	typ := messages.TypeObservationPlugin
	if o.TypeSuffix != "" {
		typ += "." + o.TypeSuffix
	}
	result := "ok (none set)"
	if o.Result != messages.Result_RESULT_UNSPECIFIED {
		result = kinds.ResultName(o.Result)
	}
	fmt.Fprintf(w, "- %s severity=%s result=%s subject=%q schema=%q labels=%v\n", typ, severity(o.Severity), result, o.Subject, o.Schema, o.Labels)
	if o.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", o.Error)
	}
	fmt.Fprintf(w, "  payload: %s\n", payloadText(o.Payload))
}

// payloadText shows a payload as text when it is (made safe for the
// terminal: a plugin is not trusted), else by its size.
func payloadText(b []byte) string {
	if !utf8.Valid(b) {
		return fmt.Sprintf("(%d bytes of binary)", len(b))
	}
	return printable(string(b))
}

// onlyHost lets a checked plugin reach its target's host and nothing else,
// redirects included, with no rate limit (one call).
type onlyHost struct{ host string }

func (o onlyHost) Do(req *http.Request) (*http.Response, error) {
	client := http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return client.Do(req)
}

func (o onlyHost) Allowed(u *url.URL) error {
	if u.Host != o.host {
		return fmt.Errorf("%s is not the target %s", u.Host, o.host)
	}
	return nil
}
