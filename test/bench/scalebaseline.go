package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/polar/observerd/actors/observer"
	"github.com/polar/observerd/actors/protocol"
)

// The scale rows' baseline is the same observers as the daemon's, with
// the same paths and so the same places in their interval, as plain
// goroutines with a time.Ticker each, net/http, net.Dial and a read of
// /proc: no actors, no events, no broker. It runs in a process of its own
// (this program again, run as scaleCommand) so that its CPU and RSS are
// measured as the daemon's are.
//
// The parent drives it on stdin, a line at a time:
//
//	<kind> <policy> <observers>   start observers o000… of kind http, tcp or process
//	sync                          answered "ready N" once N observers run
//	report                        answered with a JSON scaleSamples line: the turns since the last report
//
// and stops it with the end of stdin.

// scaleCommand is the first argument that runs the bench as the scale
// rows' baseline process.
const scaleCommand = "scale-observers"

// scaleSamples is what the baseline reports of its turns: how late each
// started after its ticker's tick was due, and where in the interval it
// started.
type scaleSamples struct {
	Late   []time.Duration `json:"late"`
	Offset []time.Duration `json:"offset"`
}

// maxScaleObservers bounds what the baseline's stdin may start.
const maxScaleObservers = 100_000

func runScaleObservers(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet(scaleCommand, flag.ContinueOnError)
	target := fs.String("target", "", "base URL of bin/observable")
	pidFile := fs.String("pid-file", "", "pid file of bin/observable, for the process observers")
	interval := fs.Duration("interval", 10*time.Second, "interval of every observer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *target == "" || *pidFile == "" || *interval <= 0 {
		return errors.New("--target, --pid-file and a positive --interval are needed")
	}
	addr := strings.TrimPrefix(*target, "http://")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, Proxy: nil}, Timeout: *interval / 2}
	var (
		mu      sync.Mutex
		samples scaleSamples
		wg      sync.WaitGroup
		running int
	)
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		wg.Wait()
	}()
	observe := map[string]func(context.Context) error{
		"http": func(ctx context.Context) error {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, *target+"/healthz", nil)
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			return resp.Body.Close()
		},
		"tcp": func(ctx context.Context) error {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return err
			}
			return c.Close()
		},
		"process": func(context.Context) error {
			b, err := os.ReadFile(*pidFile)
			if err != nil {
				return err
			}
			_, err = os.ReadFile("/proc/" + strings.TrimSpace(string(b)) + "/stat")
			return err
		},
	}
	start := func(kind, path string) {
		wg.Go(func() {
			// The first turn at the observer's place, as the daemon's.
			first := observer.Slot(time.Now(), *interval, observer.Phase(daemonNode, path, *interval))
			if sleep(ctx, time.Until(first)) != nil {
				return
			}
			// Due from now on: the ticker ticks an interval after it is
			// made, and after each tick.
			due := time.Now()
			t := time.NewTicker(*interval)
			defer t.Stop()
			for {
				now := time.Now()
				mu.Lock()
				samples.Late = append(samples.Late, now.Sub(due))
				samples.Offset = append(samples.Offset, time.Duration(now.UnixNano())%*interval)
				mu.Unlock()
				octx, done := context.WithTimeout(ctx, *interval/2)
				_ = observe[kind](octx) // its result is not what is measured
				done()
				select {
				case <-ctx.Done():
					return
				case tick := <-t.C:
					// A tick dropped while the observation ran is a turn
					// skipped: the next one is due at the tick.
					due = due.Add(tick.Sub(due) / *interval * *interval)
				}
			}
		})
	}
	lines := bufio.NewScanner(stdin)
	for lines.Scan() {
		f := strings.Fields(lines.Text())
		switch {
		case len(f) == 1 && f[0] == "sync":
			fmt.Fprintf(stdout, "ready %d\n", running)
		case len(f) == 1 && f[0] == "report":
			mu.Lock()
			b, err := json.Marshal(samples)
			samples = scaleSamples{}
			mu.Unlock()
			if err != nil {
				return fmt.Errorf("encode samples: %w", err)
			}
			fmt.Fprintf(stdout, "%s\n", b)
		case len(f) == 3 && observe[f[0]] != nil:
			n, err := strconv.Atoi(f[2])
			if err != nil || n < 1 || running+n > maxScaleObservers {
				return fmt.Errorf("bad observer count in %q (at most %d in all)", lines.Text(), maxScaleObservers)
			}
			for i := range n {
				start(f[0], protocol.ObserverEmitter(f[1], scaleObserverName(i)).Path())
			}
			running += n
		default:
			return fmt.Errorf("unknown command %q", lines.Text())
		}
	}
	return lines.Err()
}

// scaleObserverName is the name of a scale policy's i-th observer.
func scaleObserverName(i int) string { return fmt.Sprintf("o%03d", i) }
