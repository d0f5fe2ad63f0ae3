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
	"syscall"
	"time"

	"github.com/prometheus/procfs"
)

// overheadResult is row 6: what observing costs the observed service.
type overheadResult struct {
	pairs []loadPair
	// The daemon over the observed segments: its CPU, and its RSS at the
	// end.
	daemonCPU  time.Duration
	daemonRSS  uint64
	observedIn time.Duration
	interval   time.Duration
}

// loadPair is one alone segment and one observed segment, back to back.
type loadPair struct{ alone, observed loadRun }

func (p loadPair) ratio() float64 { return p.observed.rate() / p.alone.rate() }

// loadRun is one timed segment of the load generator against
// bin/observable.
type loadRun struct {
	requests int64
	took     time.Duration
	// The service's CPU over the segment: near a full CPU, the service is
	// saturated and the segment measures what the daemon takes from it.
	serviceCPU time.Duration
}

func (l loadRun) rate() float64 { return float64(l.requests) / l.took.Seconds() }

func (l loadRun) serviceShare() float64 { return l.serviceCPU.Seconds() / l.took.Seconds() }

// loadWorkers is how many keep-alive connections the load generator keeps
// busy: enough to saturate bin/observable's CPU.
const loadWorkers = 8

// overheadPolicy observes target with all four built-in kinds, five
// observers every interval.
func overheadPolicy(target, pidFile string, interval time.Duration) string {
	return fmt.Sprintf(`apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: observable, url: %[1]q}
  limits: {max_requests_per_second: 50, max_concurrent_requests: 4}
  observers:
    - {name: health, kind: http, interval: %[3]s, http: {path: /healthz}}
    - {name: status, kind: http, interval: %[3]s, http: {path: /api/status, extract: [/status, /backlog]}}
    - {name: metrics, kind: prometheus, interval: %[3]s, prometheus: {path: /metrics}}
    - {name: port, kind: tcp, interval: %[3]s, tcp: {}}
    - {name: proc, kind: process, interval: %[3]s, process: {pid_file: %[2]q}}
`, target, pidFile, interval)
}

// overhead runs bin/observable under a load generator while bin/observerd
// observes it, in segments alternately with the daemon frozen (SIGSTOP:
// the service alone) and running (SIGCONT: observed), so that both sides
// see the same machine a second apart. The result is the ratio of the
// observed segments' requests per second to the alone segments'.
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
	svc, err := e.startObservable(ctx)
	if err != nil {
		return nil, err
	}
	defer svc.stop()
	target, pidFile := svc.target, svc.pidFile
	service, err := svc.proc()
	if err != nil {
		return nil, err
	}
	res := &overheadResult{interval: e.cfg.overheadInterval}
	policy := overheadPolicy(target, pidFile, res.interval)
	d, err := e.startDaemon(ctx, policy)
	if err != nil {
		return nil, err
	}
	defer d.close()
	for range 5 {
		if _, err := d.waitStarted(ctx, policy); err != nil {
			return nil, err
		}
	}
	daemon, err := procfs.NewProc(d.cmd.Process.Pid)
	if err != nil {
		return nil, fmt.Errorf("read daemon process: %w", err)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: loadWorkers, Proxy: nil}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	segment := func(observed bool) (loadRun, error) {
		sig := syscall.SIGSTOP
		if observed {
			sig = syscall.SIGCONT
		}
		if err := d.cmd.Process.Signal(sig); err != nil {
			return loadRun{}, fmt.Errorf("signal observerd: %w", err)
		}
		before, err := daemon.Stat()
		if err != nil {
			return loadRun{}, fmt.Errorf("read daemon cpu: %w", err)
		}
		r, err := measureLoad(ctx, client, target, service, e.cfg.loadTime)
		if err != nil || !observed {
			return r, err
		}
		after, err := daemon.Stat()
		if err != nil {
			return r, fmt.Errorf("read daemon cpu: %w", err)
		}
		res.daemonCPU += cpuOf(after) - cpuOf(before)
		res.daemonRSS = uint64(after.ResidentMemory())
		res.observedIn += r.took
		return r, nil
	}
	defer func() { _ = d.cmd.Process.Signal(syscall.SIGCONT) }() // a frozen daemon cannot stop
	e.say("overhead: a pair of %s segments to warm up (not counted), then %d pairs, alone (observerd frozen) and observed (every %s by five observers)",
		whole(e.cfg.loadTime), e.cfg.pairs, whole(res.interval))
	if res.pairs, err = segmentPairs(e.cfg.pairs, segment); err != nil {
		return nil, err
	}
	e.say("overhead: observed/alone %s; observerd %s of a core, RSS %s", ratio(sumRate(res.pairs, true), sumRate(res.pairs, false)),
		percent(res.daemonCPU.Seconds()/res.observedIn.Seconds()), mib(res.daemonRSS))
	return res, nil
}

// segmentPairs runs a pair of segments to warm up, then n pairs of one
// segment alone and one observed. Which side goes first alternates, so
// that a drift of the machine does not always favour the same one.
func segmentPairs(n int, segment func(observed bool) (loadRun, error)) ([]loadPair, error) {
	var pairs []loadPair
	for i := range n + 1 {
		var p loadPair
		for _, observed := range []bool{i%2 == 1, i%2 == 0} {
			r, err := segment(observed)
			if err != nil {
				return nil, err
			}
			if observed {
				p.observed = r
			} else {
				p.alone = r
			}
		}
		if i > 0 { // the first pair warms up
			pairs = append(pairs, p)
		}
	}
	return pairs, nil
}

func cpuOf(st procfs.ProcStat) time.Duration {
	return time.Duration(st.CPUTime() * float64(time.Second))
}

// measureLoad runs the load generator for d and the service's CPU over it.
func measureLoad(ctx context.Context, client *http.Client, target string, service procfs.Proc, d time.Duration) (loadRun, error) {
	before, err := service.Stat()
	if err != nil {
		return loadRun{}, fmt.Errorf("read service cpu: %w", err)
	}
	r, err := generateLoad(ctx, client, target, d)
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
func generateLoad(ctx context.Context, client *http.Client, target string, d time.Duration) (loadRun, error) {
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

// observable is a running bin/observable: its URL and pid file.
type observable struct {
	cmd     *exec.Cmd
	target  string
	pidFile string
}

// stop interrupts it and waits for it to exit.
func (o *observable) stop() {
	_ = o.cmd.Process.Signal(os.Interrupt)
	_ = o.cmd.Wait()
}

// proc is its process, for its CPU time.
func (o *observable) proc() (procfs.Proc, error) {
	p, err := procfs.NewProc(o.cmd.Process.Pid)
	if err != nil {
		return p, fmt.Errorf("read service process: %w", err)
	}
	return p, nil
}

// startObservable runs bin/observable on a free port with a pid file;
// the caller stops it.
func (e *env) startObservable(ctx context.Context) (*observable, error) {
	bin, err := filepath.Abs("bin/observable")
	if err != nil {
		return nil, fmt.Errorf("find bin/observable: %w", err)
	}
	dir, err := os.MkdirTemp(e.work, "observable-")
	if err != nil {
		return nil, fmt.Errorf("create observable dir: %w", err)
	}
	ready, pidFile := filepath.Join(dir, "ready"), filepath.Join(dir, "observable.pid")
	cmd := e.pinning.command(bin, "--listen", "127.0.0.1:0", "--ready-file", ready, "--pid-file", pidFile)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start observable (run make build): %w", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		addr, err := os.ReadFile(ready)
		if err == nil && len(addr) > 0 {
			return &observable{cmd: cmd, target: "http://" + strings.TrimSpace(string(addr)), pidFile: pidFile}, nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return nil, errors.New("start observable: not ready within 10 s")
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return nil, err
		}
	}
}
