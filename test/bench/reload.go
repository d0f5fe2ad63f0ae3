package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/procfs"
	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/configs"
	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
)

// reloadResult is rows 4 and 5: policy reload latency, and the CPU a burst
// of writes costs the daemon.
type reloadResult struct {
	latencies []time.Duration // rename -> observer.started of the new revision
	baseline  []time.Duration // rename -> fsnotify event, in this process
	burst     burstResult
}

type burstResult struct {
	writes   int
	took     time.Duration // first write -> observer.started of the last revision
	cpu      time.Duration // the daemon's CPU over took
	idleCPU  time.Duration // the daemon's CPU over as long a quiet period
	writeCPU time.Duration // this process's CPU writing the files
	applied  int           // policy.applied events the burst caused
}

// reloadChanges is how many policy changes row 4 times.
const reloadChanges = 100

// reloadPolicy is the bench policy: one http observer of target whose
// interval is the change from one version to the next.
func reloadPolicy(target string, interval time.Duration) string {
	return fmt.Sprintf(`apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: web, url: %q}
  observers:
    - {name: health, kind: http, interval: %s, timeout: 1s, http: {path: /healthz}}
`, target, interval)
}

// daemonNode is the node name of the daemons the bench runs one at a time.
const daemonNode = "bench"

// benchEnv is what the bench's policies are validated against: its
// daemon's lifted limits, and pidDirs its allowed_pid_dirs (nil: the
// default).
func benchEnv(allowed *targets.AllowList, pluginDir string, pidDirs []string) policy.Env {
	limits := policy.DefaultBounds()
	limits.MinInterval = yamldoc.Duration(10 * time.Millisecond)
	limits.MaxRequestsPerSecond, limits.MaxConcurrentRequests, limits.MaxEventsPerSecond = 1_000_000, 64, 1_000_000
	return policy.Env{Allowed: allowed, PluginDir: pluginDir, PIDDirs: pidDirs, Limits: &limits}
}

// daemonRun is bin/observerd running against the bench's node, with a
// queue of its policy and observer events.
type daemonRun struct {
	cmd     *exec.Cmd
	dir     string
	events  chan *messages.Event
	conn    *amqp.Connection
	applied int // policy.applied events seen so far
	// work is the bench's work directory, the daemon's allowed_pid_dirs.
	work string
}

// reload runs bin/observerd, renames 100 changed versions of a policy into
// its policy_dir one after the other, and times each from the rename to
// the observer.started event of the new version (the event's own time, so
// that publishing it is not counted). The baseline is the kernel's part: a
// bare fsnotify watcher in this process seeing the same kind of rename.
func (e *env) reload(ctx context.Context) (*reloadResult, error) {
	// The target is an address nothing listens on: what is timed ends with
	// the observer's start, before it observes anything.
	target := "http://127.0.0.1:9"
	d, err := e.startDaemon(ctx, reloadPolicy(target, time.Minute))
	if err != nil {
		return nil, err
	}
	defer d.close()
	if _, err := d.waitStarted(ctx, reloadPolicy(target, time.Minute)); err != nil {
		return nil, err
	}
	res := &reloadResult{}
	file := d.policyFile()
	rename := func(text string) (time.Time, error) {
		tmp := filepath.Join(filepath.Dir(file), ".web.yaml.tmp")
		if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
			return time.Time{}, fmt.Errorf("write policy: %w", err)
		}
		at := time.Now()
		return at, os.Rename(tmp, file)
	}
	e.say("reload: %d changes renamed into policy_dir, each timed to its observer's start", reloadChanges)
	for i := range reloadChanges {
		text := reloadPolicy(target, time.Minute+time.Duration(i+1)*time.Millisecond)
		at, err := rename(text)
		if err != nil {
			return nil, err
		}
		ev, err := d.waitStarted(ctx, text)
		if err != nil {
			return nil, err
		}
		res.latencies = append(res.latencies, ev.Time.AsTime().Sub(at))
	}
	if res.baseline, err = fsnotifyBaseline(e.work, reloadChanges); err != nil {
		return nil, err
	}
	e.say("reload: p50 %s, p99 %s (fsnotify alone: p50 %s, p99 %s)", percentile(res.latencies, 50), percentile(res.latencies, 99),
		percentile(res.baseline, 50), percentile(res.baseline, 99))
	if res.burst, err = d.burst(ctx, file, target); err != nil {
		return nil, err
	}
	e.say("reload: a burst of %d writes cost the daemon %s CPU (%s when idle over as long), %d policy.applied",
		res.burst.writes, res.burst.cpu, res.burst.idleCPU, res.burst.applied)
	return res, nil
}

// burst writes 1000 versions of the policy in place as fast as it can and
// measures the daemon's CPU until the last one runs, then its CPU over as
// long a quiet period for reference.
func (d *daemonRun) burst(ctx context.Context, file, target string) (burstResult, error) {
	proc, err := procfs.NewProc(d.cmd.Process.Pid)
	if err != nil {
		return burstResult{}, fmt.Errorf("read daemon process: %w", err)
	}
	cpu := func() (time.Duration, error) {
		st, err := proc.Stat()
		if err != nil {
			return 0, fmt.Errorf("read daemon cpu: %w", err)
		}
		return time.Duration(st.CPUTime() * float64(time.Second)), nil
	}
	r := burstResult{writes: 1000}
	before, err := cpu()
	if err != nil {
		return r, err
	}
	start, selfBefore := time.Now(), processCPU()
	var text string
	for i := range r.writes {
		text = reloadPolicy(target, 2*time.Minute+time.Duration(i)*time.Millisecond)
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			return r, fmt.Errorf("write policy: %w", err)
		}
	}
	r.writeCPU = processCPU() - selfBefore
	applied0 := d.applied
	if _, err := d.waitStarted(ctx, text); err != nil {
		return r, err
	}
	r.took = time.Since(start)
	r.applied = d.applied - applied0
	after, err := cpu()
	if err != nil {
		return r, err
	}
	r.cpu = after - before
	if err := sleep(ctx, r.took); err != nil {
		return r, err
	}
	idle, err := cpu()
	if err != nil {
		return r, err
	}
	r.idleCPU = idle - after
	return r, nil
}

// policyFile is where the daemon's policy is.
func (d *daemonRun) policyFile() string { return filepath.Join(d.dir, "policies", "web.yaml") }

// startDaemon runs bin/observerd against the node with policy (YAML) as
// its only policy, and consumes its events.
func (e *env) startDaemon(ctx context.Context, policy string) (*daemonRun, error) {
	return e.launchDaemon(ctx, daemonSetup{policies: map[string]string{"web.yaml": policy}})
}

// daemonSetup is what a bench daemon starts with: its policy files by
// name, and limits.* entries beside the bench's own (a YAML flow mapping's
// entries, "" for none).
type daemonSetup struct {
	policies map[string]string
	limits   string
	plugins  []string // modules copied into its plugin_dir before it starts
}

// launchDaemon runs bin/observerd against the node with setup's policies
// in its policy_dir, and consumes its events.
func (e *env) launchDaemon(ctx context.Context, setup daemonSetup) (*daemonRun, error) {
	bin, err := filepath.Abs("bin/observerd")
	if err != nil {
		return nil, fmt.Errorf("find bin/observerd: %w", err)
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("find bin/observerd (run make build): %w", err)
	}
	dir, err := os.MkdirTemp(e.work, "daemon-")
	if err != nil {
		return nil, fmt.Errorf("create daemon dir: %w", err)
	}
	name := e.name("reload")
	exchange, queue := name, name+".q"
	for _, sub := range []string{"policies", "plugins"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("create daemon dir: %w", err)
		}
	}
	// The overhead's service keeps its pid file under work.
	work, err := filepath.Abs(e.work)
	if err != nil {
		return nil, fmt.Errorf("find work dir: %w", err)
	}
	config := filepath.Join(dir, "observerd.yaml")
	cfg := fmt.Sprintf(`node: `+daemonNode+`
policy_dir: %s
plugin_dir: %s
state_dir: %s
log: {level: warn, format: json}
admin: {listen: "", socket: ""}
# The rows observe faster than the default limits allow, and the
# overhead row's process observer reads a pid file under the bench's
# work directory.
limits: {min_interval: 10ms, max_requests_per_second: 1000000, max_concurrent_requests: 64, max_events_per_second: 1000000%s}
allowed_pid_dirs: [%q]
broker:
  urls: [%q]
  password_file: %s
  tls: {ca_file: %q}
  exchange: %s
`, filepath.Join(dir, "policies"), filepath.Join(dir, "plugins"), filepath.Join(dir, "state"), extraLimits(setup.limits), work,
		e.node.URL(), e.node.PasswordFile, e.node.CAFile, exchange)
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("write daemon config: %w", err)
	}

	conn, err := e.dialRaw()
	if err != nil {
		return nil, err
	}
	d := &daemonRun{dir: dir, conn: conn, events: make(chan *messages.Event, 4096), work: work}
	ch, err := conn.Channel()
	if err != nil {
		d.close()
		return nil, fmt.Errorf("open channel: %w", err)
	}
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		d.close()
		return nil, fmt.Errorf("declare exchange: %w", err)
	}
	if _, err := ch.QueueDeclare(queue, false, true, true, false, nil); err != nil {
		d.close()
		return nil, fmt.Errorf("declare queue: %w", err)
	}
	// Every event is bound, so that none is returned unroutable and
	// retried: the broker's work stays what a deployment's would be.
	if err := ch.QueueBind(queue, "#", exchange, false, nil); err != nil {
		d.close()
		return nil, fmt.Errorf("bind queue: %w", err)
	}
	dels, err := ch.Consume(queue, "", true, true, false, false, nil)
	if err != nil {
		d.close()
		return nil, fmt.Errorf("consume: %w", err)
	}
	go func() {
		defer close(d.events)
		for del := range dels {
			ev := &messages.Event{}
			if proto.Unmarshal(del.Body, ev) == nil {
				d.events <- ev
			}
		}
	}()

	for _, m := range setup.plugins {
		if err := copyModule(m, filepath.Join(dir, "plugins")); err != nil {
			d.close()
			return nil, err
		}
	}
	for name, text := range setup.policies {
		if err := os.WriteFile(filepath.Join(dir, "policies", name), []byte(text), 0o644); err != nil {
			d.close()
			return nil, fmt.Errorf("write policy: %w", err)
		}
	}
	d.cmd = e.pinning.command(bin, "--config", config)
	logFile, err := os.Create(filepath.Join(dir, "observerd.log"))
	if err != nil {
		d.close()
		return nil, fmt.Errorf("create daemon log: %w", err)
	}
	d.cmd.Stdout, d.cmd.Stderr = logFile, logFile
	if err := d.cmd.Start(); err != nil {
		d.close()
		return nil, fmt.Errorf("start observerd: %w", err)
	}
	return d, nil
}

func extraLimits(entries string) string {
	if entries == "" {
		return ""
	}
	return ", " + entries
}

// waitStarted waits for the observer.started event of the policy text's
// revision.
func (d *daemonRun) waitStarted(ctx context.Context, text string) (*messages.Event, error) {
	p, err := policy.Parse("web.yaml", []byte(text), benchEnv(configs.Default().Targets(), "", []string{d.work}))
	if err != nil {
		return nil, fmt.Errorf("parse bench policy: %w", err)
	}
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-d.events:
			if !ok {
				return nil, errors.New("wait for observer.started: the consumer stopped")
			}
			if ev.Type == messages.TypePolicyApplied {
				d.applied++
			}
			if ev.Type == messages.TypeObserverStarted && ev.Policy.GetRevision() == p.Revision {
				return ev, nil
			}
		case <-timeout:
			return nil, fmt.Errorf("wait for observer.started of revision %s: timed out (see %s)", p.Revision, filepath.Join(d.dir, "observerd.log"))
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (d *daemonRun) close() {
	if d.cmd != nil && d.cmd.Process != nil {
		_ = d.cmd.Process.Signal(os.Interrupt)
		_ = d.cmd.Wait()
	}
	if d.conn != nil {
		_ = d.conn.Close()
	}
}

// fsnotifyBaseline times n renames into a watched directory to the
// watcher's event: the kernel's and fsnotify's share of a reload.
func fsnotifyBaseline(work string, n int) ([]time.Duration, error) {
	dir, err := os.MkdirTemp(work, "fsnotify-")
	if err != nil {
		return nil, fmt.Errorf("create baseline dir: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch baseline dir: %w", err)
	}
	defer w.Close()
	if err := w.Add(dir); err != nil {
		return nil, fmt.Errorf("watch baseline dir: %w", err)
	}
	file, tmp := filepath.Join(dir, "web.yaml"), filepath.Join(dir, ".web.yaml.tmp")
	out := make([]time.Duration, 0, n)
	for i := range n {
		if err := os.WriteFile(tmp, []byte(reloadPolicy("http://127.0.0.1:9", time.Duration(i+1)*time.Second)), 0o644); err != nil {
			return nil, fmt.Errorf("write baseline file: %w", err)
		}
		at := time.Now()
		if err := os.Rename(tmp, file); err != nil {
			return nil, fmt.Errorf("rename baseline file: %w", err)
		}
		for seen := false; !seen; {
			select {
			case ev := <-w.Events:
				seen = ev.Name == file && ev.Has(fsnotify.Create)
			case err := <-w.Errors:
				return nil, fmt.Errorf("baseline watcher: %w", err)
			case <-time.After(10 * time.Second):
				return nil, errors.New("baseline watcher: no event within 10 s")
			}
		}
		out = append(out, time.Since(at))
	}
	return out, nil
}

// percentile is the p-th percentile (nearest rank) of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100
	return s[max(0, rank-1)]
}

// ms renders a duration in milliseconds: two decimals below 1 ms, one
// above.
func ms(d time.Duration) string {
	f := float64(d.Microseconds()) / 1000
	if f < 1 {
		return fmt.Sprintf("%.2f ms", f)
	}
	return strings.TrimSuffix(fmt.Sprintf("%.1f", f), ".0") + " ms"
}
