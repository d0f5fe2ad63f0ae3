package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/polar/observerd/messages"
)

// The CPU per observation row: bin/observerd with perObservers http
// observers every perInterval against bin/observable, its CPU time per
// observation published, against a plain Go loop doing the same GETs and
// publishing each result as one confirmed persistent message, in a process
// of its own (this program again, run as loopCommand) so that its CPU is
// read from /proc as the daemon's is. The two run one after the other,
// each alone, the daemon first.

// loopCommand is the first argument that runs the bench as the row's
// baseline process.
const loopCommand = "observation-loop"

const (
	perObservers = 20
	perInterval  = 200 * time.Millisecond
	// perWarmup runs before each side's window: the observers' first
	// requests, the connections' first publications.
	perWarmup = 3 * time.Second
)

// perObservationResult is the row's figures, one side each.
type perObservationResult struct {
	daemon, baseline perSide
}

// perSide is one side's window: its process's CPU and the observations
// published over it, counted as the row's consumer received them.
type perSide struct {
	cpu          time.Duration
	observations int64
	took         time.Duration
	rss          uint64
}

// perObservation is the side's CPU per observation, in microseconds.
func (s perSide) perObservation() float64 {
	if s.observations == 0 {
		return 0
	}
	return float64(s.cpu.Microseconds()) / float64(s.observations)
}

// perObservationPolicy is perObservers http observers of target's
// /healthz, every perInterval.
func perObservationPolicy(target string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: observable, url: %q}
  limits: {max_requests_per_second: %d, max_concurrent_requests: %d}
  observers:
`, target, 2*perObservers*int(time.Second/perInterval), perObservers)
	for i := range perObservers {
		fmt.Fprintf(&b, "    - {name: health-%02d, kind: http, interval: %s, http: {path: /healthz}}\n", i+1, perInterval)
	}
	return b.String()
}

// perObservation runs the row.
func (e *env) perObservation(ctx context.Context) (*perObservationResult, error) {
	svc, err := e.startObservable(ctx)
	if err != nil {
		return nil, err
	}
	defer svc.stop()
	target := svc.target
	res := &perObservationResult{}
	e.say("CPU per observation: observerd, %d http observers every %s, %s", perObservers, whole(perInterval), whole(e.cfg.perObsWindow))
	if res.daemon, err = e.perObservationDaemon(ctx, target); err != nil {
		return nil, err
	}
	e.say("CPU per observation: baseline, %d GETs every %s published with confirms, %s", perObservers, whole(perInterval), whole(e.cfg.perObsWindow))
	if res.baseline, err = e.perObservationBaseline(ctx, target); err != nil {
		return nil, err
	}
	e.say("CPU per observation: observerd %.0f µs, baseline %.0f µs (%s)", res.daemon.perObservation(), res.baseline.perObservation(),
		ratio(res.daemon.perObservation(), res.baseline.perObservation()))
	return res, nil
}

func (e *env) perObservationDaemon(ctx context.Context, target string) (perSide, error) {
	policy := perObservationPolicy(target)
	d, err := e.startDaemon(ctx, policy)
	if err != nil {
		return perSide{}, err
	}
	defer d.close()
	for range perObservers {
		if _, err := d.waitStarted(ctx, policy); err != nil {
			return perSide{}, err
		}
	}
	var seen atomic.Int64
	go func() {
		for ev := range d.events {
			if ev.Type == messages.TypeObservationHTTP {
				seen.Add(1)
			}
		}
	}()
	proc, err := procfs.NewProc(d.cmd.Process.Pid)
	if err != nil {
		return perSide{}, fmt.Errorf("read daemon process: %w", err)
	}
	return e.perWindow(ctx, proc, &seen)
}

// perWindow measures proc's CPU and the observations seen over the
// row's window, after perWarmup.
func (e *env) perWindow(ctx context.Context, proc procfs.Proc, seen *atomic.Int64) (perSide, error) {
	if err := sleep(ctx, perWarmup); err != nil {
		return perSide{}, err
	}
	before, err := proc.Stat()
	if err != nil {
		return perSide{}, fmt.Errorf("read cpu: %w", err)
	}
	n0, t0 := seen.Load(), time.Now()
	if err := sleep(ctx, e.cfg.perObsWindow); err != nil {
		return perSide{}, err
	}
	after, err := proc.Stat()
	if err != nil {
		return perSide{}, fmt.Errorf("read cpu: %w", err)
	}
	s := perSide{cpu: cpuOf(after) - cpuOf(before), observations: seen.Load() - n0, took: time.Since(t0), rss: uint64(after.ResidentMemory())}
	if s.observations == 0 {
		return s, errors.New("no observation was published in the window")
	}
	return s, nil
}

func (e *env) perObservationBaseline(ctx context.Context, target string) (perSide, error) {
	self, err := os.Executable()
	if err != nil {
		return perSide{}, fmt.Errorf("find the bench's executable: %w", err)
	}
	name := e.name("perobs")
	conn, err := e.dialRaw()
	if err != nil {
		return perSide{}, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return perSide{}, fmt.Errorf("open channel: %w", err)
	}
	// As the daemon's consumer (startDaemon): a transient queue bound "#".
	if err := ch.ExchangeDeclare(name, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return perSide{}, fmt.Errorf("declare exchange: %w", err)
	}
	defer func() { _ = ch.ExchangeDelete(name, false, false) }()
	if _, err := ch.QueueDeclare(name+".q", false, true, true, false, nil); err != nil {
		return perSide{}, fmt.Errorf("declare queue: %w", err)
	}
	if err := ch.QueueBind(name+".q", "#", name, false, nil); err != nil {
		return perSide{}, fmt.Errorf("bind queue: %w", err)
	}
	dels, err := ch.Consume(name+".q", "", true, true, false, false, nil)
	if err != nil {
		return perSide{}, fmt.Errorf("consume: %w", err)
	}
	var seen atomic.Int64
	go func() {
		for range dels {
			seen.Add(1)
		}
	}()

	logPath := filepath.Join(e.work, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return perSide{}, fmt.Errorf("create baseline log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(self, loopCommand, "--target", target+"/healthz", "--url", e.node.URL(), "--ca-file", e.node.CAFile,
		"--password-file", e.node.PasswordFile, "--exchange", name)
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return perSide{}, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return perSide{}, err
	}
	if err := cmd.Start(); err != nil {
		return perSide{}, fmt.Errorf("start the baseline's loop: %w", err)
	}
	defer func() {
		// The end of stdin stops the loop.
		_ = stdin.Close()
		stop := time.AfterFunc(30*time.Second, func() { _ = cmd.Process.Kill() })
		defer stop.Stop()
		_ = cmd.Wait()
	}()
	failed := func(err error) error { return fmt.Errorf("%w\n%s", err, lastLines(logTail(logPath), 10)) }
	if lines := bufio.NewScanner(stdout); !lines.Scan() || lines.Text() != "ready" {
		return perSide{}, failed(errors.New("the baseline's loop ended before it was ready"))
	}
	proc, err := procfs.NewProc(cmd.Process.Pid)
	if err != nil {
		return perSide{}, fmt.Errorf("read the baseline's process: %w", err)
	}
	s, err := e.perWindow(ctx, proc, &seen)
	if err != nil {
		return s, failed(err)
	}
	return s, nil
}

// runLoop is the baseline's process: perObservers goroutines, each a GET
// of the target every perInterval whose result it publishes as an
// observation.http event and waits for its confirm, on one connection and
// one channel (the daemon's broker has as many), until stdin ends.
func runLoop(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet(loopCommand, flag.ContinueOnError)
	target := fs.String("target", "", "URL to GET")
	rawURL := fs.String("url", "", "the node's AMQPS URL")
	caFile := fs.String("ca-file", "", "PEM CA of the node")
	passwordFile := fs.String("password-file", "", "file holding the password of the URL's user")
	exchange := fs.String("exchange", "", "topic exchange to publish to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *target == "" || *rawURL == "" || *exchange == "" {
		return errors.New("--target, --url and --exchange are required")
	}
	tlsConf, password, err := readCredentials(*caFile, *passwordFile)
	if err != nil {
		return err
	}
	conn, ch, err := dialBaseline(loopCommand, *rawURL, tlsConf, password)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		// The end of stdin stops the loop.
		_, _ = io.Copy(io.Discard, stdin)
		cancel()
	}()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: perObservers, Proxy: nil}, Timeout: 10 * time.Second}
	key := messages.RoutingKey(messages.TypeObservationHTTP, benchNode)
	var (
		seq   atomic.Uint64
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	fmt.Fprintln(stdout, "ready")
	for range perObservers {
		wg.Go(func() {
			if err := observeLoop(ctx, client, ch, *target, *exchange, key, &seq); err != nil {
				once.Do(func() { first = err })
				cancel()
			}
		})
	}
	wg.Wait()
	return first
}

// observeLoop is one of the baseline's observers.
func observeLoop(ctx context.Context, client *http.Client, ch *amqp.Channel, target, exchange, key string, seq *atomic.Uint64) error {
	tick := time.NewTicker(perInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		start := time.Now()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("get %s: %w", target, err)
		}
		n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("read %s: %w", target, err)
		}
		ev := event(0)
		ev.Sequence = seq.Add(1)
		h := ev.GetHttp()
		h.Url, h.StatusCode, h.BodyBytes, h.Latency, h.Values = target, int32(resp.StatusCode), n, durationpb.New(time.Since(start)), nil
		msg, err := publishing(ev)
		if err != nil {
			return err
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false, msg)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("publish: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-dc.Done():
		}
		if !dc.Acked() {
			return fmt.Errorf("event %d nacked", ev.Sequence)
		}
	}
}

// summary is the row's line in the summary table.
func (r *perObservationResult) summary(b *strings.Builder) {
	d, bl := r.daemon.perObservation(), r.baseline.perObservation()
	fmt.Fprintf(b, "| 13 | CPU per observation: %d http observers every %s, the process's CPU time over %s per observation published | %.0f µs (%s observations; RSS %s) | %.0f µs (a Go loop: GET, publish with a confirm; %s observations) | **%s** observerd/baseline (goal ≤ 1.5) |\n",
		perObservers, whole(perInterval), whole(r.daemon.took.Round(time.Second)), d, thousands(float64(r.daemon.observations)), mib(r.daemon.rss),
		bl, thousands(float64(r.baseline.observations)), ratio(d, bl))
}
