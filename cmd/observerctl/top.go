package main

import (
	"bytes"
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/term"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/configs/yamldoc"
)

// top is `top`: a live view of one daemon, like vector top or htop. Every
// second it reads /v1/state and /metrics from the admin endpoints and
// redraws the screen within the terminal's size: the broker, the outbox,
// events a second, drops, and the observers, trouble first. q (or Ctrl-C)
// quits. When the daemon cannot be reached it says so, and keeps trying.
func top(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("top", flag.ContinueOnError)
	fs.SetOutput(stderr)
	admin := fs.String("admin", "", "admin `URL` of the daemon (default: admin.listen of --config, else of /etc/observerd/observerd.yaml, else http://127.0.0.1:9464)")
	socket := fs.String("socket", "", "read from the admin socket at `path` instead")
	configPath := fs.String("config", "", "daemon config `file` to take admin.listen from (admin.socket when admin.listen is empty)")
	every := fs.Duration("interval", time.Second, "how often to refresh")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 || *every < 100*time.Millisecond {
		fmt.Fprintln(stderr, "usage: observerctl top [--admin URL | --socket PATH | --config FILE] [--interval D >= 100ms]")
		return exitUsage
	}
	api, err := readAPI(*socket, *admin, *configPath)
	if err != nil {
		fmt.Fprintf(stderr, "observerctl top: %v\n", err)
		return exitProblems
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		fmt.Fprintln(stderr, "observerctl top: not a terminal (observerctl status prints the state once)")
		return exitUsage
	}
	old, err := term.MakeRaw(fd)
	if err != nil {
		fmt.Fprintf(stderr, "observerctl top: %v\n", err)
		return exitProblems
	}
	// The alternate screen, without a cursor: the shell's screen comes
	// back as it was when top ends.
	fmt.Fprint(stdout, "\x1b[?1049h\x1b[?25l")
	defer func() {
		fmt.Fprint(stdout, "\x1b[?25h\x1b[?1049l")
		_ = term.Restore(fd, old)
	}()

	quit := make(chan struct{})
	go func() {
		b := make([]byte, 1)
		for {
			if n, err := os.Stdin.Read(b); err != nil || (n == 1 && (b[0] == 'q' || b[0] == 'Q' || b[0] == 3)) {
				close(quit)
				return
			}
		}
	}()
	ticker := time.NewTicker(*every)
	defer ticker.Stop()
	var last *sample
	for {
		s := read(ctx, api)
		width, height, err := term.GetSize(int(os.Stdout.Fd()))
		if err != nil {
			width, height = 80, 24
		}
		var frame bytes.Buffer
		renderTop(&frame, newView(api.String(), s, last), width, height)
		// Home and draw over, clearing each line's end and the rest of
		// the screen: no flicker of a full clear.
		io.WriteString(stdout, "\x1b[H"+strings.ReplaceAll(frame.String(), "\n", "\x1b[K\r\n")+"\x1b[J")
		if s.err == nil {
			last = s
		}
		select {
		case <-ctx.Done():
			return exitOK
		case <-quit:
			return exitOK
		case <-ticker.C:
		}
	}
}

// sample is one reading of the daemon.
type sample struct {
	at    time.Time
	state *protocol.Snapshot
	// The counters and gauges of /metrics that top shows.
	accepted, dropped float64
	oldest            float64 // seconds; 0 when the outbox is empty
	err               error
}

// read takes a sample; a daemon that does not answer is a sample with err.
func read(ctx context.Context, api *adminAPI) *sample {
	s := &sample{at: time.Now()}
	if _, s.state, s.err = fetchState(ctx, api); s.err != nil {
		return s
	}
	_, body, err := api.do(ctx, http.MethodGet, "/metrics", http.StatusOK)
	if err != nil {
		s.err = err
		return s
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		s.err = fmt.Errorf("read /metrics from %s: %w", api, err)
		return s
	}
	s.accepted = sum(families["observerd_events_accepted_total"])
	s.dropped = sum(families["observerd_events_dropped_total"]) + sum(families["observerd_events_dropped_unaccepted_total"]) +
		sum(families["observerd_events_damaged_total"])
	s.oldest = sum(families["observerd_outbox_oldest_age_seconds"])
	return s
}

// sum adds a family's counters or gauges over their labels.
func sum(f *dto.MetricFamily) float64 {
	var total float64
	for _, m := range f.GetMetric() {
		total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return total
}

// view is what one frame shows.
type view struct {
	where     string
	now       time.Time
	s         *sample
	perSecond float64 // events accepted a second since the last sample; -1 unknown
	observers []observerRow
}

type observerRow struct {
	protocol.ObserverSnapshot
	rate float64 // observations a second since the last sample; -1 unknown
}

func newView(where string, s, last *sample) view {
	v := view{where: where, now: s.at, s: s, perSecond: -1}
	if s.err != nil {
		return v
	}
	elapsed := 0.0
	if last != nil {
		elapsed = s.at.Sub(last.at).Seconds()
	}
	if elapsed > 0 {
		v.perSecond = (s.accepted - last.accepted) / elapsed
	}
	before := map[string]uint64{}
	if last != nil {
		for _, o := range last.state.Observers {
			before[o.Path] = o.Observations
		}
	}
	for _, o := range s.state.Observers {
		row := observerRow{ObserverSnapshot: o, rate: -1}
		if n, ok := before[o.Path]; ok && elapsed > 0 && o.Observations >= n {
			row.rate = float64(o.Observations-n) / elapsed
		}
		v.observers = append(v.observers, row)
	}
	slices.SortStableFunc(v.observers, func(a, b observerRow) int {
		return cmp.Or(cmp.Compare(trouble(a.ObserverSnapshot), trouble(b.ObserverSnapshot)), strings.Compare(a.Path, b.Path))
	})
	return v
}

// trouble orders observers for an operator: what needs a hand first.
func trouble(o protocol.ObserverSnapshot) int {
	switch {
	case o.Status == protocol.StatusQuarantined:
		return 0
	case o.Status == protocol.StatusRestarting:
		return 1
	case o.State == "down":
		return 2
	case o.State == "degraded":
		return 3
	case o.ConsecutiveFailures > 0:
		return 4
	case o.Status == protocol.StatusPaused:
		return 5
	case o.State == "unknown":
		return 6
	}
	return 7
}

// renderTop draws a frame of at most height lines of at most width
// columns: what does not fit is cut, the observers' list first.
func renderTop(w io.Writer, v view, width, height int) {
	lines := topLines(v)
	if len(lines) > height {
		lines = lines[:max(height-1, 0)]
		lines = append(lines, "…")
	}
	for _, l := range lines {
		fmt.Fprintln(w, clip(strings.TrimRight(printable(l), " "), width))
	}
}

func topLines(v view) []string {
	s := v.s
	head := fmt.Sprintf("observerctl top — %s — %s — q quits", v.where, v.now.Format(time.TimeOnly))
	if s.err != nil {
		return []string{head, "", "cannot read the daemon: " + s.err.Error(), "", "trying again every refresh"}
	}
	st := s.state
	ready := "ready"
	if ok, why := st.Ready(); !ok {
		ready = "NOT READY: " + strings.Join(why, "; ")
	}
	lines := []string{
		head,
		fmt.Sprintf("observerd %s on %s, up %s; %s", st.Version, st.Node, age(v.now, st.Started), ready),
	}
	b := st.Broker
	switch {
	case b.Connected && b.Blocked:
		lines = append(lines, fmt.Sprintf("broker  connected to %s, BLOCKED: %s", b.URL, b.LastError))
	case b.Connected:
		lines = append(lines, fmt.Sprintf("broker  connected to %s for %s", b.URL, age(v.now, b.Since)))
	case b.URL == "" && b.LastError == "":
		lines = append(lines, "broker  not connected yet")
	case b.URL == "":
		lines = append(lines, "broker  NOT connected: "+b.LastError)
	default:
		lines = append(lines, fmt.Sprintf("broker  NOT connected (%s): %s", b.URL, b.LastError))
	}
	outbox := "outbox  unknown (the broker did not answer)"
	if o := st.Outbox; o != nil {
		outbox = fmt.Sprintf("outbox  %d events, %s, oldest %s; last sequence %d", o.Events, yamldoc.ByteSize(o.Bytes),
			(time.Duration(s.oldest) * time.Second).String(), o.LastSequence)
	}
	lines = append(lines, outbox)
	rate := "-"
	if v.perSecond >= 0 {
		rate = fmt.Sprintf("%.1f", v.perSecond)
	}
	lines = append(lines, fmt.Sprintf("events  %s/s accepted; %d emitted since start; dropped %.0f", rate, st.EventsEmitted, s.dropped), "")
	lines = append(lines, fmt.Sprintf("%-32s %-11s %-8s %-8s %6s %7s %6s %5s  %s", "OBSERVER", "STATUS", "STATE", "LAST", "AGE", "LATENCY", "RATE/s", "FAIL", "LAST ERROR"))
	for _, o := range v.observers {
		last, result := "-", "-"
		if !o.LastTime.IsZero() {
			last, result = age(v.now, o.LastTime), o.LastResult
		}
		r := "-"
		if o.rate >= 0 {
			r = fmt.Sprintf("%.1f", o.rate)
		}
		lines = append(lines, fmt.Sprintf("%-32s %-11s %-8s %-8s %6s %7s %6s %5d  %s", o.Path, o.Status, o.State, result, last,
			latency(o.LastLatency), r, o.ConsecutiveFailures, o.LastError))
	}
	if len(v.observers) == 0 {
		lines = append(lines, "(no observers)")
	}
	return lines
}

// latency shows seconds as a duration of three significant digits or so:
// 850µs, 12.3ms, 1.25s; "-" for none.
func latency(seconds float64) string {
	d := time.Duration(seconds * float64(time.Second))
	switch {
	case d <= 0:
		return "-"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < 100*time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}

// clip cuts a line to width columns (runes; the escaped text is ASCII
// where it is not printable).
func clip(s string, width int) string {
	if width <= 0 {
		return ""
	}
	r := []rune(s)
	if len(r) <= width {
		return s
	}
	return string(r[:width-1]) + "…"
}
