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

	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/wasm"
)

// pluginCheck is `plugin check FILE.wasm`: the host's ABI check of a module
// (exports, imports, version), and with --target one observe call in the
// sandbox, printing what the plugin emitted and logged.
func pluginCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("plugin check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("target", "", "run one observe call against this target `URL` (http_request may reach only its host)")
	config := fs.String("config", "{}", "the observer's wasm.config, as `JSON`")
	observer := fs.String("observer", "check", "the observer `name` passed to the plugin")
	timeout := fs.Duration("timeout", wasm.DefaultTimeout, "deadline of the call")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: observerctl plugin check [--target URL] [--config JSON] FILE.wasm")
		return exitUsage
	}
	file := fs.Arg(0)
	log := zerolog.New(zerolog.ConsoleWriter{Out: stderr, NoColor: true, TimeFormat: time.TimeOnly}).With().Timestamp().Logger()
	host, err := wasm.NewHost(ctx, wasm.HostOptions{Log: log})
	if err != nil {
		fmt.Fprintf(stderr, "observerctl plugin check: %v\n", err)
		return exitProblems
	}
	defer host.Close(ctx)
	info, err := host.Check(ctx, file, 0)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", file, err)
		return exitProblems
	}
	fmt.Fprintf(stdout, "%s: ABI v%d, %d bytes, sha256 %s\n  imports: %s\n  exports: %s\n", file, info.ABIVersion, info.Size, info.SHA256,
		strings.Join(info.Imports, ", "), strings.Join(info.Exports, ", "))
	if *target == "" {
		return exitOK
	}
	u, err := url.Parse(*target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(stderr, "observerctl plugin check: --target must be an absolute http(s) URL, got %q\n", *target)
		return exitUsage
	}
	p, err := host.NewPlugin(ctx, wasm.PluginSpec{
		Path: file, Observer: *observer, Target: wasm.Target{Name: u.Host, URL: *target},
		ConfigJSON: []byte(*config), Timeout: *timeout, HTTP: onlyHost{host: u.Host}, Log: log.With().Str("plugin", info.Path).Logger(),
	})
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", file, err)
		return exitProblems
	}
	defer p.Close(ctx)
	start := time.Now()
	obs, err := p.Observe(ctx, start)
	fmt.Fprintf(stdout, "observe against %s: %d observations in %s\n", *target, len(obs), time.Since(start).Round(time.Microsecond))
	for _, o := range obs {
		printObservation(stdout, o)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", file, err)
		return exitProblems
	}
	return exitOK
}

func printObservation(w io.Writer, o *messages.PluginObservation) {
	typ := messages.TypeObservationPlugin
	if o.TypeSuffix != "" {
		typ += "." + o.TypeSuffix
	}
	fmt.Fprintf(w, "- %s severity=%s subject=%q schema=%q labels=%v\n  payload: %s\n", typ,
		strings.ToLower(strings.TrimPrefix(o.Severity.String(), "SEVERITY_")), o.Subject, o.Schema, o.Labels, payloadText(o.Payload))
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
