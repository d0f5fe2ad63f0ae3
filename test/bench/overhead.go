package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/procfs"
)

// overheadResult is row 6: what observing costs the observed service.
type overheadResult struct {
	observed, alone []loadRun
}

// loadRun is one timed run of the load generator against bin/observable.
type loadRun struct {
	requests int64
	took     time.Duration
	// The service's CPU over the run: near a full CPU, it is saturated
	// and the run measures what the daemon takes from it.
	serviceCPU time.Duration
	// Of the daemon, in the observed runs: its CPU over the run and its
	// RSS at the end.
	daemonCPU time.Duration
	daemonRSS uint64
}

func (l loadRun) rate() float64 { return float64(l.requests) / l.took.Seconds() }

// loadWorkers is how many keep-alive connections the load generator keeps
// busy: enough to saturate bin/observable on a small machine.
const loadWorkers = 8

// overheadPolicy observes target with all four built-in kinds at short
// intervals (24 observations a second in all).
func overheadPolicy(target, pidFile string) string {
	return fmt.Sprintf(`apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: observable, url: %q}
  limits: {max_requests_per_second: 50, max_concurrent_requests: 4}
  observers:
    - {name: health, kind: http, interval: 100ms, timeout: 50ms, http: {path: /healthz}}
    - {name: status, kind: http, interval: 250ms, timeout: 100ms, http: {path: /api/status, extract: [/status, /backlog]}}
    - {name: metrics, kind: prometheus, interval: 500ms, timeout: 200ms, prometheus: {path: /metrics}}
    - {name: port, kind: tcp, interval: 250ms, timeout: 100ms, tcp: {}}
    - {name: proc, kind: process, interval: 250ms, timeout: 100ms, process: {pid_file: %q}}
`, target, pidFile)
}

// overhead runs bin/observable under a load generator, alternately alone
// and observed by bin/observerd with every kind, and compares the
// service's throughput.
func (e *env) overhead(ctx context.Context) (*overheadResult, error) {
	nodePID, err := e.nodePID()
	if err != nil {
		return nil, err
	}
	e.pinning = newPinning()
	defer func() {
		e.pinning = pinning{}
		for _, pid := range []int{os.Getpid(), nodePID} {
			if err := unpin(pid); err != nil {
				e.say("overhead: %v", err)
			}
		}
	}()
	for _, pid := range []int{os.Getpid(), nodePID} {
		if err := e.pinning.pin(pid); err != nil {
			return nil, err
		}
	}
	svc, target, pidFile, err := e.startObservable(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		_ = svc.Process.Signal(os.Interrupt)
		_ = svc.Wait()
	}()
	service, err := procfs.NewProc(svc.Process.Pid)
	if err != nil {
		return nil, fmt.Errorf("read service process: %w", err)
	}
	load := func() (loadRun, error) { return measureLoad(ctx, target, service, e.cfg.loadTime) }
	res := &overheadResult{}
	e.say("overhead: warm-up, %s of load (not counted)", whole(e.cfg.loadTime))
	if _, err := load(); err != nil {
		return nil, err
	}
	for i := range e.cfg.runs {
		alone := func() error {
			r, err := load()
			if err != nil {
				return err
			}
			res.alone = append(res.alone, r)
			e.say("overhead %d/%d: alone    %.0f requests/s (service %s of a CPU)", i+1, e.cfg.runs, r.rate(), percent(r.serviceShare()))
			return nil
		}
		observed := func() error {
			r, err := e.observedLoad(ctx, target, pidFile, load)
			if err != nil {
				return err
			}
			res.observed = append(res.observed, r)
			e.say("overhead %d/%d: observed %.0f requests/s (service %s of a CPU; observerd: %s CPU, RSS %s)", i+1, e.cfg.runs, r.rate(),
				percent(r.serviceShare()), ms(r.daemonCPU), mib(r.daemonRSS))
			return nil
		}
		first, second := alone, observed
		if i%2 == 1 {
			first, second = observed, alone
		}
		if err := first(); err != nil {
			return nil, err
		}
		if err := second(); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// observedLoad starts the daemon, waits for its five observers, and runs
// the load while it observes.
func (e *env) observedLoad(ctx context.Context, target, pidFile string, load func() (loadRun, error)) (loadRun, error) {
	policy := overheadPolicy(target, pidFile)
	d, err := e.startDaemon(ctx, policy)
	if err != nil {
		return loadRun{}, err
	}
	defer d.close()
	for range 5 {
		if _, err := d.waitStarted(ctx, policy); err != nil {
			return loadRun{}, err
		}
	}
	proc, err := procfs.NewProc(d.cmd.Process.Pid)
	if err != nil {
		return loadRun{}, fmt.Errorf("read daemon process: %w", err)
	}
	before, err := proc.Stat()
	if err != nil {
		return loadRun{}, fmt.Errorf("read daemon cpu: %w", err)
	}
	r, err := load()
	if err != nil {
		return r, err
	}
	after, err := proc.Stat()
	if err != nil {
		return r, fmt.Errorf("read daemon cpu: %w", err)
	}
	r.daemonCPU = cpuOf(after) - cpuOf(before)
	r.daemonRSS = uint64(after.ResidentMemory())
	return r, nil
}

func cpuOf(st procfs.ProcStat) time.Duration {
	return time.Duration(st.CPUTime() * float64(time.Second))
}

func (l loadRun) serviceShare() float64 { return l.serviceCPU.Seconds() / l.took.Seconds() }

// measureLoad runs the load generator for d and the service's CPU over it.
func measureLoad(ctx context.Context, target string, service procfs.Proc, d time.Duration) (loadRun, error) {
	before, err := service.Stat()
	if err != nil {
		return loadRun{}, fmt.Errorf("read service cpu: %w", err)
	}
	r, err := generateLoad(ctx, target, d)
	if err != nil {
		return r, err
	}
	after, err := service.Stat()
	if err != nil {
		return r, fmt.Errorf("read service cpu: %w", err)
	}
	r.serviceCPU = cpuOf(after) - cpuOf(before)
	return r, nil
}

// generateLoad keeps loadWorkers keep-alive connections busy with GET
// /api/status for d and counts the answers.
func generateLoad(ctx context.Context, target string, d time.Duration) (loadRun, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: loadWorkers, Proxy: nil}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	lctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		n     atomic.Int64
		wg    sync.WaitGroup
		first error
		once  sync.Once
	)
	start := time.Now()
	for range loadWorkers {
		wg.Go(func() {
			for lctx.Err() == nil {
				req, _ := http.NewRequestWithContext(lctx, http.MethodGet, target+"/api/status", nil)
				resp, err := client.Do(req)
				if err != nil {
					if lctx.Err() == nil {
						once.Do(func() { first = err })
					}
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					n.Add(1)
				}
			}
		})
	}
	wg.Wait()
	r := loadRun{requests: n.Load(), took: time.Since(start)}
	if first != nil {
		return r, fmt.Errorf("load generator: %w", first)
	}
	return r, nil
}

// startObservable runs bin/observable on a free port with a pid file.
func (e *env) startObservable(ctx context.Context) (*exec.Cmd, string, string, error) {
	bin, err := filepath.Abs("bin/observable")
	if err != nil {
		return nil, "", "", fmt.Errorf("find bin/observable: %w", err)
	}
	dir, err := os.MkdirTemp(e.work, "observable-")
	if err != nil {
		return nil, "", "", fmt.Errorf("create observable dir: %w", err)
	}
	ready, pidFile := filepath.Join(dir, "ready"), filepath.Join(dir, "observable.pid")
	cmd := e.pinning.command(bin, "--listen", "127.0.0.1:0", "--ready-file", ready, "--pid-file", pidFile)
	if err := cmd.Start(); err != nil {
		return nil, "", "", fmt.Errorf("start observable (run make build): %w", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		addr, err := os.ReadFile(ready)
		if err == nil && len(addr) > 0 {
			return cmd, "http://" + strings.TrimSpace(string(addr)), pidFile, nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return nil, "", "", errors.New("start observable: not ready within 10 s")
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return nil, "", "", err
		}
	}
}
