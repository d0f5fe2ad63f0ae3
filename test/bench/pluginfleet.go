package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/procfs"

	"github.com/polar/observerd/configs"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
)

// pluginFleetResult is the pluginfleet row: many observers of one plugin
// module in one daemon, against the same checks in a plain Go loop.
type pluginFleetResult struct {
	module    string
	observers int
	interval  time.Duration
	window    time.Duration
	started   time.Duration // policy written → every observer.started

	// The daemon over the window: the observations received, their
	// PluginPayload.call_duration (the plugin call, in the daemon), the
	// daemon's CPU, and its RSS at the end.
	observations int
	failed       int // observations whose result was RESULT_ERROR
	callDuration []time.Duration
	daemonCPU    time.Duration
	daemonRSS    uint64

	// The baseline over a window as long: as many goroutines, each with
	// a time.Ticker of the interval, a GET of the status with net/http,
	// its JSON decoded and /backlog looked up; the time of each check,
	// this process's CPU, and its RSS growth (after a GC) with them.
	checks        int
	checkDuration []time.Duration
	baseCPU       time.Duration
	baseRSS       int64
}

// The row's sizes: a thousand observers every 10 s (100 calls/s), or a
// hundred with --quick; the window is one interval: every observer once.
const (
	fleetPlugins      = 1000
	quickFleetPlugins = 100
	fleetPluginEvery  = 10 * time.Second
	fleetPluginWindow = fleetPluginEvery
	fleetPluginStart  = 60 * time.Second // bound on every observer's start
)

// fleetPolicy has n observers of module against target, every interval.
func fleetPolicy(target, module string, n int, interval time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: pluginfleet}
spec:
  target: {name: observable, url: %q}
  limits: {max_requests_per_second: 10000, max_concurrent_requests: 16}
  observers:
`, target)
	for i := range n {
		fmt.Fprintf(&b, "    - {name: t%04d, kind: wasm, interval: %s, wasm: {module: %s, config: {threshold: 100}}}\n", i, interval, module)
	}
	return b.String()
}

// pluginFleet is the pluginfleet row. It needs bin/observerd,
// bin/observable and bin/plugins/status-threshold.wasm (make build).
func (e *env) pluginFleet(ctx context.Context) (*pluginFleetResult, error) {
	res := &pluginFleetResult{module: "status-threshold.wasm", observers: fleetPlugins, interval: fleetPluginEvery, window: fleetPluginWindow}
	if e.cfg.quick {
		res.observers = quickFleetPlugins
	}
	module, err := filepath.Abs(filepath.Join("bin/plugins", res.module))
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", res.module, err)
	}
	svc, err := e.startObservable(ctx)
	if err != nil {
		return nil, err
	}
	defer svc.stop()
	target := svc.target

	text := fleetPolicy(target, res.module, res.observers, res.interval)
	p, err := policy.Parse("web.yaml", []byte(text), benchEnv(configs.Default().Targets(), filepath.Dir(module), nil))
	if err != nil {
		return nil, fmt.Errorf("parse pluginfleet policy: %w", err)
	}
	e.say("pluginfleet: %d observers of %s every %s in one observerd", res.observers, res.module, res.interval)
	began := time.Now()
	// The daemon's defaults bound the sum of the observers' memory_limit
	// (32 MiB each) at 512 MiB: observers that share instances do not
	// hold that much, but the bound counts each.
	d, err := e.launchDaemon(ctx, daemonSetup{
		policies: map[string]string{"web.yaml": text},
		limits:   fmt.Sprintf("max_observers: %d, max_plugin_memory: %dMiB, max_events_per_second_total: 100000", res.observers, res.observers*32),
		plugins:  []string{module},
	})
	if err != nil {
		return nil, err
	}
	defer d.close()
	daemon, err := procfs.NewProc(d.cmd.Process.Pid)
	if err != nil {
		return nil, fmt.Errorf("read observerd's /proc: %w", err)
	}

	// One reader of the daemon's events for the whole row: the consumer
	// must never wait on it.
	var (
		mu        sync.Mutex
		started   int
		measuring bool
	)
	allStarted := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for ev := range d.events {
			mu.Lock()
			switch {
			case ev.Type == messages.TypeObserverStarted && ev.Policy.GetRevision() == p.Revision:
				if started++; started == res.observers {
					close(allStarted)
				}
			case measuring && ev.GetPlugin() != nil:
				res.observations++
				if ev.GetPlugin().GetResult() == messages.Result_RESULT_ERROR {
					res.failed++
				}
				res.callDuration = append(res.callDuration, ev.GetPlugin().GetCallDuration().AsDuration())
			}
			mu.Unlock()
		}
	}()
	select {
	case <-allStarted:
	case <-time.After(fleetPluginStart):
		mu.Lock()
		defer mu.Unlock()
		return nil, fmt.Errorf("pluginfleet: %d of %d observers started within %s (see %s)", started, res.observers, fleetPluginStart,
			filepath.Join(d.dir, "observerd.log"))
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	res.started = time.Since(began)
	// Every observer's first call (its plugin made, its first instance)
	// falls in the first interval: the window starts after it.
	e.say("pluginfleet: all started in %s; one interval of warm-up, then %s measured", secs(res.started), whole(res.window))
	if err := sleep(ctx, res.interval); err != nil {
		return nil, err
	}
	before, err := daemon.Stat()
	if err != nil {
		return nil, fmt.Errorf("read observerd's stat: %w", err)
	}
	mu.Lock()
	measuring = true
	mu.Unlock()
	if err := sleep(ctx, res.window); err != nil {
		return nil, err
	}
	mu.Lock()
	measuring = false
	mu.Unlock()
	after, err := daemon.Stat()
	if err != nil {
		return nil, fmt.Errorf("read observerd's stat: %w", err)
	}
	res.daemonCPU, res.daemonRSS = cpuOf(after)-cpuOf(before), uint64(after.ResidentMemory())
	d.close()
	<-readerDone
	if res.observations == 0 {
		return nil, fmt.Errorf("pluginfleet: no observation in %s (see %s)", res.window, filepath.Join(d.dir, "observerd.log"))
	}

	e.say("pluginfleet: baseline, %d goroutines with a time.Ticker each, net/http and encoding/json, %s measured", res.observers, whole(res.window))
	if err := fleetBaseline(ctx, target+"/api/status", res); err != nil {
		return nil, err
	}
	e.say("pluginfleet: observerd %s CPU per observation (%d in %s), RSS %s; baseline %s per check, RSS %s",
		us(res.cpuPerObservation()), res.observations, whole(res.window), mib(res.daemonRSS), us(res.cpuPerCheck()), signedMiB(res.baseRSS))
	return res, nil
}

// fleetBaseline runs res.observers goroutines, each checking url every
// res.interval from a random phase, for a warm-up interval and then
// res.window, measured.
func fleetBaseline(ctx context.Context, url string, res *pluginFleetResult) error {
	client := &http.Client{
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16},
		Timeout:   fleetPluginEvery,
	}
	defer client.CloseIdleConnections()
	rssBefore, err := settledMem()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu        sync.Mutex
		measuring bool
		errs      []error
		wg        sync.WaitGroup
	)
	for i := range res.observers {
		// Spread as the daemon spreads its observers' first turns.
		phase := time.Duration(i) * res.interval / time.Duration(res.observers)
		wg.Go(func() {
			if sleep(ctx, phase) != nil {
				return
			}
			t := time.NewTicker(res.interval)
			defer t.Stop()
			for {
				start := time.Now()
				_, err := getBacklog(ctx, client, url)
				took := time.Since(start)
				mu.Lock()
				if err != nil && ctx.Err() == nil {
					errs = append(errs, err)
				}
				if measuring && err == nil {
					res.checks++
					res.checkDuration = append(res.checkDuration, took)
				}
				mu.Unlock()
				select {
				case <-t.C:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	if err := sleep(ctx, res.interval); err != nil {
		return err
	}
	cpuBefore := processCPU()
	mu.Lock()
	measuring = true
	mu.Unlock()
	if err := sleep(ctx, res.window); err != nil {
		return err
	}
	mu.Lock()
	measuring = false
	mu.Unlock()
	res.baseCPU = processCPU() - cpuBefore
	rssAfter, err := settledMem()
	if err != nil {
		return err
	}
	res.baseRSS = int64(rssAfter.rss) - int64(rssBefore.rss)
	cancel()
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("pluginfleet baseline: %d checks failed, the first: %w", len(errs), errs[0])
	}
	if res.checks == 0 {
		return errors.New("pluginfleet baseline: no check in the window")
	}
	return nil
}

// copyModule copies the plugin module at path into dir, mode 0644: the
// daemon refuses a module that group or others may write.
func copyModule(path, dir string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("copy plugin (run make build): %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, filepath.Base(path)), b, 0o644); err != nil {
		return fmt.Errorf("copy plugin: %w", err)
	}
	return nil
}

func (r *pluginFleetResult) cpuPerObservation() time.Duration {
	return r.daemonCPU / time.Duration(max(1, r.observations))
}

func (r *pluginFleetResult) cpuPerCheck() time.Duration {
	return r.baseCPU / time.Duration(max(1, r.checks))
}

// summary is the row's line of the summary table.
func (r *pluginFleetResult) summary(b *strings.Builder) {
	fmt.Fprintf(b, "| 14 | plugin fleet: %s observers of %s every %s in one observerd, %s measured | CPU %s per observation (%s observations), RSS %s (%s per observer) | %s per check (%s goroutines with a time.Ticker, net/http, encoding/json) | **%s** CPU per call plugin/baseline; RSS goal ≤ 500 MiB |\n",
		thousands(float64(r.observers)), r.module, whole(r.interval), whole(r.window), us(r.cpuPerObservation()), thousands(float64(r.observations)),
		mib(r.daemonRSS), mib(r.daemonRSS/uint64(r.observers)), us(r.cpuPerCheck()), thousands(float64(r.observers)),
		ratio(r.cpuPerObservation().Seconds(), r.cpuPerCheck().Seconds()))
}

// details is the row's section.
func (r *pluginFleetResult) details(b *strings.Builder) {
	b.WriteString("\n#### 14. Plugin fleet\n\n")
	fmt.Fprintf(b, "bin/observerd with one policy of %s wasm observers of %s (`{threshold: 100}`) every %s against bin/observable; all started %s after the policy was written; "+
		"one interval of warm-up, then %s measured. The baseline, after the daemon stopped: as many goroutines in this process, each with a time.Ticker of the interval "+
		"(phases spread over it), a GET of `/api/status` with one net/http client, its JSON decoded and `/backlog` looked up.\n\n",
		thousands(float64(r.observers)), r.module, whole(r.interval), secs(r.started), whole(r.window))
	b.WriteString("| | calls | CPU | CPU per call | call p50 / p99 | RSS |\n|---|---|---|---|---|---|\n")
	fmt.Fprintf(b, "| observerd, wasm kind | %s (%d unobservable) | %s | %s | %s / %s (the plugin call) | %s at the end |\n",
		thousands(float64(r.observations)), r.failed, ms(r.daemonCPU), us(r.cpuPerObservation()),
		us(percentile(r.callDuration, 50)), us(percentile(r.callDuration, 99)), mib(r.daemonRSS))
	fmt.Fprintf(b, "| baseline | %s | %s | %s | %s / %s (the check) | %s (growth of this process) |\n",
		thousands(float64(r.checks)), ms(r.baseCPU), us(r.cpuPerCheck()),
		us(percentile(r.checkDuration, 50)), us(percentile(r.checkDuration, 99)), signedMiB(r.baseRSS))
	fmt.Fprintf(b, "\nThe daemon's CPU per call is all it does per observation (the actor, the plugin call, its HTTP request, the event, its publication with confirms); "+
		"the baseline's is the check alone. Sorted call durations: %s.\n", durationSpread(r.callDuration))
}

// durationSpread is min, median and max of ds.
func durationSpread(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	return fmt.Sprintf("min %s, median %s, max %s", us(slices.Min(ds)), us(medianDuration(ds)), us(slices.Max(ds)))
}
