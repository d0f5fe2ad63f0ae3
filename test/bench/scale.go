package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/procfs"

	"github.com/polar/observerd/actors/observer"
	"github.com/polar/observerd/configs"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
)

// Rows 10 to 12 run thousands of observers in one bin/observerd: 100
// policies of 100 http observers of bin/observable every 10 s, then 10
// policies of 100 tcp and 10 of 100 process observers more. Row 10
// (manyobservers): RSS, CPU per observation, how late each turn starts
// (from the observations' own times: a turn is due at its observer's
// place in its interval, observer.Phase) and where in the interval the
// turns fall, and bin/observable's throughput under load while observed
// against its throughput with the daemon frozen. Row 11 (startup): the
// policy_dir is there when the daemon starts; daemon.started to the last
// observer.started and to the first observation. Row 12 (reloadmany): one
// policy of the hundred changed again and again while the others run,
// each change timed as row 4 does, and the other observers checked: none
// restarted, no turn missed. The baseline is the same observers as plain
// goroutines (scalebaseline.go) in a process of their own.

// scaleResult is rows 10 to 12.
type scaleResult struct {
	interval        time.Duration
	perPolicy       int
	http, tcp, proc int
	daemon          scaleSide
	baseline        scaleSide
	reload          *scaleReload
}

// scaleSide is one side's measurements.
type scaleSide struct {
	// ready is from the process's start to every observer running: for
	// the daemon, its last observer.started.
	ready time.Duration
	// The daemon only: daemon.started to the last observer.started and
	// to the first observation.
	allStarted, firstObservation time.Duration
	phases                       []scalePhase
	pairs                        []loadPair
}

// scalePhase is one measuring window.
type scalePhase struct {
	observers    int
	window       time.Duration
	late, offset []time.Duration
	cpu          time.Duration
	rss, hwm     uint64
}

// scaleReload is row 12.
type scaleReload struct {
	first, last []time.Duration // rename → first and last observer.started of the new revision
	fsnotify    []time.Duration
	// The other policies' observers over the changes: their observer.*
	// lifecycle events, and the turns due that no observation started.
	othersLifecycle, othersMissed, othersDue int
	took                                     time.Duration
}

const (
	scalePerPolicy   = 100
	scaleMixPolicies = 10 // of tcp, and as many of process observers
	scaleReloads     = 20
)

// scalePolicyText is policy name of n observers of kind against target;
// version changes the http observers' path (a new revision).
func scalePolicyText(name, kind, target, pidFile string, n, version int, interval time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: %s}
spec:
  target: {name: observable, url: %q}
  limits: {max_requests_per_second: 1000, max_concurrent_requests: 64}
  observers:
`, name, target)
	for i := range n {
		var section string
		switch kind {
		case "http":
			section = fmt.Sprintf("http: {path: \"/healthz?v=%d\"}", version)
		case "tcp":
			section = "tcp: {}"
		case "process":
			section = fmt.Sprintf("process: {pid_file: %q}", pidFile)
		}
		fmt.Fprintf(&b, "    - {name: %s, kind: %s, interval: %s, timeout: 5s, %s}\n", scaleObserverName(i), kind, interval, section)
	}
	return b.String()
}

// scalePolicySet is a set of scale policies: count of kind, named
// prefix-000….
type scalePolicySet struct {
	kind, prefix string
	count        int
}

func (s scalePolicySet) name(i int) string { return fmt.Sprintf("%s-%03d", s.prefix, i) }

// scaleRecorder keeps what the scale rows read of a daemon's events.
type scaleRecorder struct {
	mu sync.Mutex
	// obs are the observations' times (when each started) by observer
	// path; started the observer.started times by path, and revisions
	// the revision of each.
	obs           map[string][]time.Time
	started       map[string][]time.Time
	revisions     map[string]map[string]time.Time
	lifecycle     map[string][]time.Time // observer.stopped and .started by path
	daemonStarted time.Time
}

func newScaleRecorder(events <-chan *messages.Event) *scaleRecorder {
	r := &scaleRecorder{obs: map[string][]time.Time{}, started: map[string][]time.Time{},
		revisions: map[string]map[string]time.Time{}, lifecycle: map[string][]time.Time{}}
	go func() {
		for ev := range events {
			r.add(ev)
		}
	}()
	return r
}

func (r *scaleRecorder) add(ev *messages.Event) {
	path := ev.Source[strings.Index(ev.Source, "/observer/")+1:]
	at := ev.Time.AsTime()
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case ev.Type == messages.TypeDaemonStarted:
		r.daemonStarted = at
	case strings.HasPrefix(ev.Type, "observation."):
		r.obs[path] = append(r.obs[path], at)
	case ev.Type == messages.TypeObserverStarted:
		r.started[path] = append(r.started[path], at)
		r.lifecycle[path] = append(r.lifecycle[path], at)
		rev := ev.Policy.GetRevision()
		if r.revisions[rev] == nil {
			r.revisions[rev] = map[string]time.Time{}
		}
		r.revisions[rev][path] = at
	case strings.HasPrefix(ev.Type, "observer."):
		r.lifecycle[path] = append(r.lifecycle[path], at)
	}
}

// count is how many observers started, and how many observed, so far.
func (r *scaleRecorder) count() (started, observed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.started), len(r.obs)
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %s", what, timeout)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// lateness is how long after its observer's place in the interval a turn
// started at t.
func lateness(path string, t time.Time, interval time.Duration) time.Duration {
	due := observer.Slot(t, interval, observer.Phase(daemonNode, path, interval))
	if due.After(t) {
		due = due.Add(-interval)
	}
	return t.Sub(due)
}

// window is the turns that started in [from, to), how late and where in
// the interval.
func (r *scaleRecorder) window(from, to time.Time, interval time.Duration) (late, offset []time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for path, ts := range r.obs {
		for _, t := range ts {
			if !t.Before(from) && t.Before(to) {
				late = append(late, lateness(path, t, interval))
				offset = append(offset, time.Duration(t.UnixNano())%interval)
			}
		}
	}
	return late, offset
}

func (e *env) scaleConfig() (interval, window time.Duration, policies int) {
	return e.cfg.scaleInterval, e.cfg.scaleWindow, e.cfg.scalePolicies
}

// scale runs the rows asked for among 10 to 12, the daemon first, then
// the baseline.
func (e *env) scale(ctx context.Context) (*scaleResult, error) {
	interval, _, policies := e.scaleConfig()
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
	res := &scaleResult{interval: interval, perPolicy: scalePerPolicy, http: policies * scalePerPolicy}
	sets := []scalePolicySet{{"http", "scale", policies}}
	if e.cfg.rows["manyobservers"] {
		mix := max(1, policies*scaleMixPolicies/100)
		sets = append(sets, scalePolicySet{"tcp", "scale-tcp", mix}, scalePolicySet{"process", "scale-proc", mix})
		res.tcp, res.proc = mix*scalePerPolicy, mix*scalePerPolicy
	}
	run := &scaleRun{e: e, res: res, target: target, pidFile: pidFile, service: service, sets: sets}
	if err := run.daemon(ctx); err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	if err := run.baseline(ctx); err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	return res, nil
}

// scaleRun is one run of the scale rows.
type scaleRun struct {
	e               *env
	res             *scaleResult
	target, pidFile string
	service         procfs.Proc
	sets            []scalePolicySet
}

func (s *scaleRun) policies(set scalePolicySet, version int) map[string]string {
	out := map[string]string{}
	for i := range set.count {
		out[set.name(i)+".yaml"] = scalePolicyText(set.name(i), set.kind, s.target, s.pidFile, scalePerPolicy, version, s.res.interval)
	}
	return out
}

// daemon measures bin/observerd: its start with the http policies, a
// window, the service's throughput, the reloads, then the tcp and
// process policies added and a window more.
func (s *scaleRun) daemon(ctx context.Context) error {
	e, res := s.e, s.res
	interval, window, _ := e.scaleConfig()
	total := res.http + res.tcp + res.proc
	began := time.Now()
	d, err := e.launchDaemon(ctx, daemonSetup{policies: s.policies(s.sets[0], 0),
		limits: fmt.Sprintf("max_observers: %d, max_events_per_second_total: 1000000", total)})
	if err != nil {
		return err
	}
	defer d.close()
	rec := newScaleRecorder(d.events)
	proc, err := procfs.NewProc(d.cmd.Process.Pid)
	if err != nil {
		return fmt.Errorf("read daemon process: %w", err)
	}
	e.say("scale: observerd with %d http observers every %s", res.http, whole(interval))
	side := &res.daemon
	if err := waitFor(ctx, time.Minute, "every observer started", func() bool { n, _ := rec.count(); return n == res.http }); err != nil {
		return fmt.Errorf("%w (see %s)", err, filepath.Join(d.dir, "observerd.log"))
	}
	rec.mu.Lock()
	var last, first time.Time
	for _, ts := range rec.started {
		if ts[0].After(last) {
			last = ts[0]
		}
	}
	rec.mu.Unlock()
	if err := waitFor(ctx, interval+time.Minute, "a first observation", func() bool { _, n := rec.count(); return n > 0 }); err != nil {
		return err
	}
	rec.mu.Lock()
	for _, ts := range rec.obs {
		if first.IsZero() || ts[0].Before(first) {
			first = ts[0]
		}
	}
	side.ready, side.allStarted, side.firstObservation = last.Sub(began), last.Sub(rec.daemonStarted), first.Sub(rec.daemonStarted)
	rec.mu.Unlock()
	e.say("scale: every observer started %s after daemon.started (%s after exec), the first observation after %s",
		side.allStarted.Round(time.Millisecond), side.ready.Round(time.Millisecond), side.firstObservation.Round(time.Millisecond))
	if !e.cfg.rows["manyobservers"] && !e.cfg.rows["reloadmany"] {
		return nil
	}
	// Every observer's first turn is in the first tenth of an interval;
	// an interval after it, every one is on its grid.
	observedAll := func(n int) error {
		if err := waitFor(ctx, interval+time.Minute, "an observation of every observer", func() bool { _, o := rec.count(); return o >= n }); err != nil {
			return fmt.Errorf("%w (see %s)", err, filepath.Join(d.dir, "observerd.log"))
		}
		return sleep(ctx, interval)
	}
	if err := observedAll(res.http); err != nil {
		return err
	}
	if e.cfg.rows["manyobservers"] {
		p, err := s.daemonWindow(ctx, proc, rec, res.http, window)
		if err != nil {
			return err
		}
		side.phases = append(side.phases, p)
		if side.pairs, err = s.loadPairs(ctx, d.cmd.Process); err != nil {
			return err
		}
	}
	if e.cfg.rows["reloadmany"] {
		if res.reload, err = s.reloads(ctx, d, rec); err != nil {
			return err
		}
	}
	if len(s.sets) == 1 {
		return nil
	}
	for _, set := range s.sets[1:] {
		for name, text := range s.policies(set, 0) {
			if err := os.WriteFile(filepath.Join(d.dir, "policies", name), []byte(text), 0o644); err != nil {
				return fmt.Errorf("write policy: %w", err)
			}
		}
	}
	e.say("scale: %d tcp and %d process observers more", res.tcp, res.proc)
	if err := observedAll(total); err != nil {
		return err
	}
	p, err := s.daemonWindow(ctx, proc, rec, total, window)
	if err != nil {
		return err
	}
	side.phases = append(side.phases, p)
	return nil
}

// daemonWindow measures the daemon over window: its CPU, its RSS at the
// end, and the turns that started in it.
func (s *scaleRun) daemonWindow(ctx context.Context, proc procfs.Proc, rec *scaleRecorder, observers int, window time.Duration) (scalePhase, error) {
	p := scalePhase{observers: observers, window: window}
	before, err := proc.Stat()
	if err != nil {
		return p, fmt.Errorf("read daemon cpu: %w", err)
	}
	from := time.Now()
	if err := sleep(ctx, window); err != nil {
		return p, err
	}
	to := time.Now()
	after, err := proc.Stat()
	if err != nil {
		return p, fmt.Errorf("read daemon cpu: %w", err)
	}
	p.cpu = cpuOf(after) - cpuOf(before)
	if p.rss, p.hwm, err = procMemOf(proc); err != nil {
		return p, err
	}
	// The window's last observations are on their way through the
	// broker.
	if err := sleep(ctx, 2*time.Second); err != nil {
		return p, err
	}
	p.late, p.offset = rec.window(from, to, s.res.interval)
	s.e.say("scale: %d observers: %d turns, p99 %s late, CPU %s, RSS %s", observers, len(p.late),
		percentile(p.late, 99), p.cpu.Round(time.Millisecond), mib(p.rss))
	return p, nil
}

// procMemOf is a process's VmRSS and VmHWM.
func procMemOf(proc procfs.Proc) (rss, hwm uint64, err error) {
	st, err := proc.NewStatus()
	if err != nil {
		return 0, 0, fmt.Errorf("read process status: %w", err)
	}
	return st.VmRSS, st.VmHWM, nil
}

// loadPairs measures bin/observable's throughput under load with the
// observing process frozen and running, alternately, as row 6 does.
func (s *scaleRun) loadPairs(ctx context.Context, observing *os.Process) ([]loadPair, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: loadWorkers, Proxy: nil}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	defer func() { _ = observing.Signal(syscall.SIGCONT) }() // a frozen process cannot stop
	segment := func(observed bool) (loadRun, error) {
		sig := syscall.SIGSTOP
		if observed {
			sig = syscall.SIGCONT
		}
		if err := observing.Signal(sig); err != nil {
			return loadRun{}, fmt.Errorf("signal the observing process: %w", err)
		}
		return measureLoad(ctx, client, s.target, s.service, s.e.cfg.loadTime)
	}
	pairs, err := segmentPairs(s.e.cfg.scalePairs, segment)
	if err != nil {
		return nil, err
	}
	s.e.say("scale: bin/observable observed/alone %s", ratio(sumRate(pairs, true), sumRate(pairs, false)))
	return pairs, nil
}

// reloads renames changed versions of the first http policy into
// policy_dir one after the other, each timed to the first and the last
// observer.started of its new revision, and checks the other policies'
// observers over the changes.
func (s *scaleRun) reloads(ctx context.Context, d *daemonRun, rec *scaleRecorder) (*scaleReload, error) {
	e, set := s.e, s.sets[0]
	name := set.name(0)
	file := filepath.Join(d.dir, "policies", name+".yaml")
	tmp := filepath.Join(d.dir, "policies", "."+name+".yaml.tmp")
	r := &scaleReload{}
	n := e.cfg.scaleReloads
	e.say("scale: %d changes of %s (%d observers) while %d others run", n, name, scalePerPolicy, s.res.http-scalePerPolicy)
	began := time.Now()
	for i := range n {
		text := scalePolicyText(name, set.kind, s.target, s.pidFile, scalePerPolicy, i+1, s.res.interval)
		p, err := policy.Parse(name+".yaml", []byte(text), benchEnv(configs.Default().Targets(), "", []string{d.work}))
		if err != nil {
			return nil, fmt.Errorf("parse bench policy: %w", err)
		}
		if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
			return nil, fmt.Errorf("write policy: %w", err)
		}
		at := time.Now()
		if err := os.Rename(tmp, file); err != nil {
			return nil, fmt.Errorf("rename policy: %w", err)
		}
		var first, last time.Time
		if err := waitFor(ctx, 30*time.Second, "the new revision's observers started", func() bool {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			started := rec.revisions[p.Revision]
			if len(started) < scalePerPolicy {
				return false
			}
			for _, t := range started {
				if first.IsZero() || t.Before(first) {
					first = t
				}
				if t.After(last) {
					last = t
				}
			}
			return true
		}); err != nil {
			return nil, err
		}
		r.first, r.last = append(r.first, first.Sub(at)), append(r.last, last.Sub(at))
	}
	ended := time.Now()
	r.took = ended.Sub(began)
	if err := sleep(ctx, 2*time.Second); err != nil { // the last turns' events on their way
		return nil, err
	}
	interval := s.res.interval
	rec.mu.Lock()
	for i := 1; i < set.count; i++ {
		for o := range scalePerPolicy {
			path := "observer/" + set.name(i) + "/" + scaleObserverName(o)
			for _, t := range rec.lifecycle[path] {
				if !t.Before(began) && t.Before(ended) {
					r.othersLifecycle++
				}
			}
			// The turns due in [began, ended) against those that started.
			phase := observer.Phase(daemonNode, path, interval)
			for due := observer.Slot(began, interval, phase); due.Before(ended); due = due.Add(interval) {
				r.othersDue++
				seen := false
				for _, t := range rec.obs[path] {
					seen = seen || (!t.Before(due) && t.Before(due.Add(interval)))
				}
				if !seen {
					r.othersMissed++
				}
			}
		}
	}
	rec.mu.Unlock()
	var err error
	if r.fsnotify, err = fsnotifyBaseline(e.work, n); err != nil {
		return nil, err
	}
	e.say("scale: reload p99 %s to the first observer, %s to the last; others: %d lifecycle events, %d of %d turns missed",
		percentile(r.first, 99), percentile(r.last, 99), r.othersLifecycle, r.othersMissed, r.othersDue)
	return r, nil
}

// baseline runs the same observers as plain goroutines in a process of
// their own and measures it as the daemon.
func (s *scaleRun) baseline(ctx context.Context) error {
	e, res := s.e, s.res
	interval, window, _ := e.scaleConfig()
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the bench's executable: %w", err)
	}
	logPath := filepath.Join(e.work, "scale-baseline.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("create baseline log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(self, scaleCommand, "--target", s.target, "--pid-file", s.pidFile, "--interval", interval.String())
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	began := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the baseline: %w", err)
	}
	defer func() {
		_ = stdin.Close()
		_ = cmd.Process.Signal(syscall.SIGCONT)
		stop := time.AfterFunc(30*time.Second, func() { _ = cmd.Process.Kill() })
		defer stop.Stop()
		_ = cmd.Wait()
	}()
	proc, err := procfs.NewProc(cmd.Process.Pid)
	if err != nil {
		return fmt.Errorf("read the baseline's process: %w", err)
	}
	lines := bufio.NewScanner(stdout)
	lines.Buffer(nil, 256<<20)
	ask := func(line string) (string, error) {
		if _, err := fmt.Fprintln(stdin, line); err != nil {
			return "", fmt.Errorf("baseline: %w", err)
		}
		if !lines.Scan() {
			return "", fmt.Errorf("baseline ended: %w\n%s", errors.Join(lines.Err(), cmd.Wait()), lastLines(logTail(logPath), 10))
		}
		return lines.Text(), nil
	}
	start := func(sets []scalePolicySet, n int) error {
		for _, set := range sets {
			for i := range set.count {
				if _, err := fmt.Fprintf(stdin, "%s %s %d\n", set.kind, set.name(i), scalePerPolicy); err != nil {
					return fmt.Errorf("baseline: %w", err)
				}
			}
		}
		got, err := ask("sync")
		if err == nil && got != fmt.Sprintf("ready %d", n) {
			err = fmt.Errorf("baseline said %q, not ready %d", got, n)
		}
		return err
	}
	measure := func(observers int) (scalePhase, error) {
		p := scalePhase{observers: observers, window: window}
		// A full interval first: every observer has reached its place.
		if err := sleep(ctx, interval); err != nil {
			return p, err
		}
		if _, err := ask("report"); err != nil {
			return p, err
		}
		before, err := proc.Stat()
		if err != nil {
			return p, fmt.Errorf("read baseline cpu: %w", err)
		}
		if err := sleep(ctx, window); err != nil {
			return p, err
		}
		got, err := ask("report")
		if err != nil {
			return p, err
		}
		after, err := proc.Stat()
		if err != nil {
			return p, fmt.Errorf("read baseline cpu: %w", err)
		}
		p.cpu = cpuOf(after) - cpuOf(before)
		if p.rss, p.hwm, err = procMemOf(proc); err != nil {
			return p, err
		}
		var samples scaleSamples
		if err := json.Unmarshal([]byte(got), &samples); err != nil {
			return p, fmt.Errorf("decode baseline samples: %w", err)
		}
		p.late, p.offset = samples.Late, samples.Offset
		e.say("scale: baseline, %d observers: %d turns, p99 %s late, CPU %s, RSS %s", observers, len(p.late),
			percentile(p.late, 99), p.cpu.Round(time.Millisecond), mib(p.rss))
		return p, nil
	}
	side := &res.baseline
	e.say("scale: baseline, %d http observers as goroutines", res.http)
	if err := start(s.sets[:1], res.http); err != nil {
		return err
	}
	side.ready = time.Since(began)
	if !e.cfg.rows["manyobservers"] {
		return nil
	}
	p, err := measure(res.http)
	if err != nil {
		return err
	}
	side.phases = append(side.phases, p)
	if side.pairs, err = s.loadPairs(ctx, cmd.Process); err != nil {
		return err
	}
	total := res.http + res.tcp + res.proc
	if err := start(s.sets[1:], total); err != nil {
		return err
	}
	if p, err = measure(total); err != nil {
		return err
	}
	side.phases = append(side.phases, p)
	return nil
}
