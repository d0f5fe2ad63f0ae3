// Command bench is `make bench`: it measures the broker actor
// (actors/broker: outbox with fsync group commit, publish over TLS,
// publisher confirms, delete) against plain baselines measured in the same
// run on the same machine, prints a table of figures and ratios, and writes
// it with a description of the machine into docs/benchmarks.md.
//
// It starts its own private RabbitMQ node with TLS (test/rabbitmq) and runs
// the broker actor inside this process, in a fresh actor system. Rows:
//
//  1. pipeline throughput: N events through the broker actor until the
//     outbox is empty (all confirmed), against a plain amqp091-go publisher
//     with the same window of deferred confirms, the same message shape and
//     its own quorum queue; each run alternated, the median reported;
//  2. outage recovery: a steady producer, the broker stopped for a while
//     and restarted; the time from Restart returning to an empty outbox,
//     against the raw publisher confirming as many events into an empty
//     broker;
//  3. memory: the RSS of this process sampled during a long outage at a
//     steady rate, against the RSS before the outage;
//  4. policy reload latency: bin/observerd running, 100 changed versions
//     of a policy renamed into its policy_dir, each timed from the rename
//     to the observer.started event of the new version (p50, p99), against
//     a bare fsnotify watcher seeing the same renames;
//  5. a burst of 1,000 in-place writes of a policy: the daemon's CPU until
//     the last version runs, against the writer's own CPU;
//  6. service overhead: bin/observable's throughput under a load generator
//     while bin/observerd observes it with all four built-in kinds, against
//     its throughput with the daemon frozen, in alternating segments; with
//     the daemon's CPU and RSS;
//  7. plugins, in this process: the plugin host's per-call overhead (an
//     empty observe), the example plugin status-threshold.wasm per call
//     against the built-in http kind doing the same (both through the
//     observer actor, and on the host alone against a plain GET + JSON
//     decode), the cold start of a Go plugin without and with the
//     compilation cache, the instantiate time and the RSS per warm
//     instance;
//  8. the control channel's round trip: `observerctl remote status` run
//     to every node's answer, p50 and p99, for 1 daemon and for 50 (each
//     with one observer; their RSS), against a raw amqp091-go RPC through
//     the same broker to as many responders in this process;
//  9. the fleet, on a three-node RabbitMQ cluster of its own: 100 real
//     bin/observerd processes (--fleet-daemons), five observers each of
//     one bin/observable, publishing into one quorum queue that one
//     consumer reads; end-to-end latency, the daemons' CPU and RSS, the
//     broker's CPU, memory and connections, one node SIGKILLed (how long
//     the daemons take to reconnect, and where they go) and restarted,
//     20 more daemons joining (--fleet-join), and every sequence checked; against as
//     many plain amqp091-go publishers with confirms in one process (this
//     program again, run as "fleet-publishers"), at the same rate;
//  10. thousands of observers in one daemon (manyobservers, scale.go):
//     10,000 http observers of bin/observable every 10 s, then 1,000 tcp
//     and 1,000 process observers more: RSS, CPU per observation, how
//     late the turns start and where in the interval, bin/observable's
//     throughput observed against alone;
//  11. the start of that daemon (startup): daemon.started to every
//     observer started and to the first observation;
//  12. one policy of the hundred changed while the others run
//     (reloadmany), timed as row 4, the others checked for restarts and
//     missed turns; rows 10 to 12 against the same observers as plain
//     goroutines in a process of their own (this program again, run as
//     "scale-observers");
//  13. CPU per observation: bin/observerd with 20 http observers every
//     200 ms, its CPU time per observation published, against a plain Go
//     loop doing the same GETs and publishing each result with a confirm,
//     in a process of its own (this program again, run as
//     "observation-loop");
//  14. the plugin fleet (pluginfleet): 1,000 observers of one stateless
//     plugin module in one daemon, their CPU per call and the daemon's
//     RSS, against the same checks as goroutines with net/http;
//
// and, for context, the outbox's fsync group commit: Append throughput
// with 1, 16 and 256 events per transaction.
//
// Nothing here asserts on time: these are measurements, not tests.
//
//	go run ./test/bench --quick            # about a minute
//	go run ./test/bench --out docs/benchmarks.md
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/polar/observerd/actors"
	_ "github.com/polar/observerd/actors/observer/kinds/all" // the observer kinds of the policies it parses and runs
	"github.com/polar/observerd/test/rabbitmq"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == scaleCommand {
		// The scale rows' baseline, in a process of its own.
		if err := runScaleObservers(ctx, os.Args[2:], os.Stdin, os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: %v\n", scaleCommand, err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == publishersCommand {
		// The fleet row's baseline, in a process of its own.
		if err := runPublishers(ctx, os.Args[2:], os.Stdin, os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: %v\n", publishersCommand, err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == loopCommand {
		// The CPU per observation row's baseline, in a process of its own.
		if err := runLoop(ctx, os.Args[2:], os.Stdin, os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: %v\n", loopCommand, err)
			os.Exit(1)
		}
		return
	}
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// config is what the flags set.
type config struct {
	quick     bool
	events    int
	runs      int
	window    int
	rate      int
	warmup    time.Duration
	outage    time.Duration
	memOutage time.Duration
	groupTime time.Duration
	loadTime  time.Duration
	pairs     int
	// overheadInterval is the overhead row's observers' interval.
	overheadInterval time.Duration
	pluginCalls      int // the plugins row's calls per side
	// fleetDaemons is the fleet row's first fleet (as many join later);
	// fleetWindow its measuring windows.
	fleetDaemons int
	fleetJoin    int
	fleetWindow  time.Duration
	// The scale rows: policies of 100 http observers, their interval, the
	// measuring window, the load pairs and the policy changes.
	scalePolicies int
	scaleInterval time.Duration
	scaleWindow   time.Duration
	scalePairs    int
	scaleReloads  int
	// perObsWindow is the CPU per observation row's window, per side.
	perObsWindow time.Duration
	out          string
	dir          string
	logLevel     string
	cpuProfile   string
	rows         map[string]bool
	rowsString   string
}

// Defaults are sized so that a full `make bench` takes about thirteen
// minutes on a 2-core machine, RabbitMQ's boots included (--rows runs
// fewer); --quick keeps the same shape with smaller numbers, in about
// four.
const (
	defaultEvents    = 20000
	quickEvents      = 3000
	defaultOutage    = 15 * time.Second
	quickOutage      = 5 * time.Second
	defaultMemOutage = 20 * time.Second
	quickMemOutage   = 10 * time.Second
	defaultGroupTime = 2 * time.Second
	quickGroupTime   = 500 * time.Millisecond
	defaultLoadTime  = time.Second
	quickLoadTime    = 500 * time.Millisecond
	defaultPairs     = 20
	quickPairs       = 6
	// The fleet row: a hundred daemons, then twenty join; --quick runs
	// twenty, then five join. The join is a fifth, not as many again:
	// two hundred daemons saturated this machine, and their phase
	// measured the machine, not the daemons.
	defaultFleetDaemons = 100
	quickFleetDaemons   = 20
	defaultFleetJoin    = 20
	quickFleetJoin      = 5
	defaultFleetWindow  = 10 * time.Second
	quickFleetWindow    = 5 * time.Second
	// The scale rows: 10,000 observers (--quick: 1,000).
	defaultScalePolicies = 100
	quickScalePolicies   = 10
	defaultScalePairs    = 6
	quickScalePairs      = 3
	quickScaleReloads    = 5
	defaultPerObsWindow  = 15 * time.Second
	quickPerObsWindow    = 10 * time.Second
)

var allRows = []string{"throughput", "outage", "memory", "reload", "overhead", "plugins", "control", "fleet", "manyobservers", "startup", "reloadmany", "perobservation", "pluginfleet", "groupcommit"}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&c.quick, "quick", false, "shorter runs (fewer events, shorter outages); explicit flags still win")
	fs.IntVar(&c.events, "events", defaultEvents, "events per throughput run (--quick: 3000)")
	fs.IntVar(&c.runs, "runs", 5, "throughput runs per side, alternated; the median is reported")
	fs.IntVar(&c.window, "window", 256, "confirm window of the broker actor and of the baseline publisher")
	fs.IntVar(&c.rate, "rate", 500, "events per second of the steady producer (outage and memory rows)")
	fs.DurationVar(&c.warmup, "warmup", 3*time.Second, "steady production before an outage starts")
	fs.DurationVar(&c.outage, "outage", defaultOutage, "how long the broker is down in the outage row (--quick: 5s)")
	fs.DurationVar(&c.memOutage, "mem-outage", defaultMemOutage, "how long the broker is down in the memory row (--quick: 10s)")
	fs.DurationVar(&c.groupTime, "group-time", defaultGroupTime, "time per group size in the group commit row (--quick: 500ms)")
	fs.DurationVar(&c.loadTime, "load-time", defaultLoadTime, "time per load segment in the overhead row (--quick: 500ms)")
	fs.IntVar(&c.pairs, "pairs", defaultPairs, "alone/observed segment pairs in the overhead row (--quick: 6)")
	fs.DurationVar(&c.overheadInterval, "overhead-interval", time.Second, "interval of the overhead row's five observers")
	fs.IntVar(&c.pluginCalls, "plugin-calls", defaultPluginCalls, "calls per side in the plugins row's per-call comparisons, the empty observe 10 times as many (--quick: 400)")
	fs.IntVar(&c.fleetDaemons, "fleet-daemons", defaultFleetDaemons, "daemons of the fleet row's first fleet (--quick: 20)")
	fs.IntVar(&c.fleetJoin, "fleet-join", defaultFleetJoin, "daemons that join the fleet after the node's restart (--quick: 5)")
	fs.DurationVar(&c.fleetWindow, "fleet-window", defaultFleetWindow, "measuring window of each phase of the fleet row (--quick: 5s)")
	fs.IntVar(&c.scalePolicies, "scale-policies", defaultScalePolicies, "policies of 100 http observers in rows 10 to 12, a tenth as many of tcp and of process observers in row 10 (--quick: 10)")
	fs.DurationVar(&c.scaleInterval, "scale-interval", 10*time.Second, "interval of the observers of rows 10 to 12")
	fs.DurationVar(&c.scaleWindow, "scale-window", 10*time.Second, "measuring window of row 10")
	fs.IntVar(&c.scalePairs, "scale-pairs", defaultScalePairs, "alone/observed segment pairs in row 10 (--quick: 3)")
	fs.IntVar(&c.scaleReloads, "scale-reloads", scaleReloads, "policy changes timed in row 12 (--quick: 5)")
	fs.DurationVar(&c.perObsWindow, "per-observation-window", defaultPerObsWindow, "measuring window of each side of the CPU per observation row (--quick: 10s)")
	fs.StringVar(&c.out, "out", "", "markdown file to write the results into (between its bench markers); empty: print only")
	fs.StringVar(&c.dir, "dir", "", "working directory for the node and the outboxes (default: a fresh temporary one, removed)")
	fs.StringVar(&c.logLevel, "log-level", "warn", "level of the broker actor's logs on stderr")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (go tool pprof) to this file")
	fs.StringVar(&c.rowsString, "rows", strings.Join(allRows, ","), "rows to run, comma separated: "+strings.Join(allRows, ", "))
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.quick {
		if !set["events"] {
			c.events = quickEvents
		}
		if !set["outage"] {
			c.outage = quickOutage
		}
		if !set["mem-outage"] {
			c.memOutage = quickMemOutage
		}
		if !set["group-time"] {
			c.groupTime = quickGroupTime
		}
		if !set["load-time"] {
			c.loadTime = quickLoadTime
		}
		if !set["pairs"] {
			c.pairs = quickPairs
		}
		if !set["plugin-calls"] {
			c.pluginCalls = quickPluginCalls
		}
		if !set["fleet-daemons"] {
			c.fleetDaemons = quickFleetDaemons
		}
		if !set["fleet-join"] {
			c.fleetJoin = quickFleetJoin
		}
		if !set["fleet-window"] {
			c.fleetWindow = quickFleetWindow
		}
		if !set["scale-policies"] {
			c.scalePolicies = quickScalePolicies
		}
		if !set["scale-pairs"] {
			c.scalePairs = quickScalePairs
		}
		if !set["scale-reloads"] {
			c.scaleReloads = quickScaleReloads
		}
		if !set["per-observation-window"] {
			c.perObsWindow = quickPerObsWindow
		}
	}
	c.rows = map[string]bool{}
	for r := range strings.SplitSeq(c.rowsString, ",") {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		known := false
		for _, a := range allRows {
			known = known || a == r
		}
		if !known {
			return c, fmt.Errorf("unknown row %q (known: %s)", r, strings.Join(allRows, ", "))
		}
		c.rows[r] = true
	}
	switch {
	case c.events < 1, c.runs < 1, c.window < 1, c.rate < 1, c.pairs < 1, c.pluginCalls < 1, c.fleetDaemons < 1:
		return c, errors.New("--events, --runs, --window, --rate, --pairs, --plugin-calls and --fleet-daemons must be positive")
	case c.scalePolicies < 1, c.scalePolicies > maxScaleObservers/scalePerPolicy/2, c.scalePairs < 1, c.scaleReloads < 1:
		return c, fmt.Errorf("--scale-policies (at most %d), --scale-pairs and --scale-reloads must be positive", maxScaleObservers/scalePerPolicy/2)
	case c.scaleInterval < time.Second, c.scaleWindow <= 0:
		return c, errors.New("--scale-interval must be at least 1s, --scale-window positive")
	case c.fleetJoin < 1, c.fleetDaemons+c.fleetJoin > maxFleetDaemons:
		return c, fmt.Errorf("--fleet-join must be positive, and --fleet-daemons plus --fleet-join at most %d", maxFleetDaemons)
	case c.outage <= 0, c.memOutage <= 0, c.groupTime <= 0, c.loadTime <= 0, c.overheadInterval <= 0, c.fleetWindow <= 0, c.perObsWindow <= 0:
		return c, errors.New("--outage, --mem-outage, --group-time, --load-time, --overhead-interval, --fleet-window and --per-observation-window must be positive")
	}
	return c, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	if err := bench(ctx, cfg, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}

// env is what every row needs.
type env struct {
	cfg      config
	node     *rabbitmq.Node
	sys      *actor.ActorSystem
	log      zerolog.Logger
	work     string // state dirs of the outboxes
	progress io.Writer
	// freshTxID is the bbolt transaction id of a freshly opened, empty
	// outbox, so that a run's write transactions can be counted.
	freshTxID int
	names     int
	// pinning places the processes the bench starts (overhead row).
	pinning pinning
}

func (e *env) say(format string, args ...any) {
	fmt.Fprintf(e.progress, "bench: "+format+"\n", args...)
}

// name returns a name unique in this run, so that no run ever sees the
// exchange, queue or actor of another.
func (e *env) name(kind string) string {
	e.names++
	return fmt.Sprintf("bench.%s.%d", kind, e.names)
}

func bench(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	began := time.Now()
	level, err := zerolog.ParseLevel(cfg.logLevel)
	if err != nil {
		return fmt.Errorf("parse --log-level: %w", err)
	}
	// Colours only for a terminal: make's output is often kept in a file.
	color := false
	if f, ok := stderr.(*os.File); ok {
		if st, err := f.Stat(); err == nil {
			color = st.Mode()&os.ModeCharDevice != 0
		}
	}
	log := zerolog.New(zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly, NoColor: !color}).
		Level(level).With().Timestamp().Logger()

	work := cfg.dir
	if work == "" {
		if work, err = os.MkdirTemp("", "observerd-bench-"); err != nil {
			return fmt.Errorf("create work dir: %w", err)
		}
		defer os.RemoveAll(work)
	} else if err := os.MkdirAll(work, 0o700); err != nil {
		return fmt.Errorf("create work dir: %w", err)
	}

	e := &env{cfg: cfg, log: log, work: work, progress: stderr}
	e.say("starting a private RabbitMQ node with TLS ...")
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	// The node's own directory stays inside work so that --dir keeps
	// everything of a run in one place.
	node, err := rabbitmq.Start(startCtx, rabbitmq.Options{Dir: work + "/rabbitmq"})
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		if err := node.Close(); err != nil {
			e.say("close rabbitmq: %v", err)
		}
	}()
	e.node = node
	e.sys = actors.NewSystem(log)
	defer e.sys.Shutdown()
	if e.freshTxID, err = freshTxID(work); err != nil {
		return err
	}

	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return fmt.Errorf("create cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("start cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	mach := describeMachine(ctx, node)
	res := &results{cfg: cfg, machine: mach}
	// In this order: group commit first, while nothing else runs (it
	// measures the disk alone).
	for _, row := range []struct {
		name, what string // what names it in an error
		on         bool
		run        func() error
	}{
		{"groupcommit", "group commit", cfg.rows["groupcommit"], func() (err error) {
			e.say("group commit: outbox Append with 1, 16 and 256 events per transaction")
			res.group, err = e.groupCommit(ctx)
			return err
		}},
		{"throughput", "throughput", cfg.rows["throughput"], func() (err error) { res.throughput, err = e.throughput(ctx); return err }},
		{"outage", "outage recovery", cfg.rows["outage"], func() (err error) { res.outage, err = e.outageRecovery(ctx); return err }},
		{"memory", "memory", cfg.rows["memory"], func() (err error) { res.memory, err = e.memory(ctx); return err }},
		{"reload", "reload", cfg.rows["reload"], func() (err error) { res.reload, err = e.reload(ctx); return err }},
		{"overhead", "overhead", cfg.rows["overhead"], func() (err error) { res.overhead, err = e.overhead(ctx); return err }},
		{"plugins", "plugins", cfg.rows["plugins"], func() (err error) { res.plugins, err = e.plugins(ctx); return err }},
		{"pluginfleet", "pluginfleet", cfg.rows["pluginfleet"], func() (err error) { res.pluginFleet, err = e.pluginFleet(ctx); return err }},
		{"control", "control", cfg.rows["control"], func() (err error) { res.control, err = e.control(ctx); return err }},
		{"fleet", "fleet", cfg.rows["fleet"], func() (err error) { res.fleet, err = e.fleet(ctx); return err }},
		{"manyobservers,startup,reloadmany", "scale", cfg.rows["manyobservers"] || cfg.rows["startup"] || cfg.rows["reloadmany"],
			func() (err error) { res.scale, err = e.scale(ctx); return err }},
		{"perobservation", "cpu per observation", cfg.rows["perobservation"], func() (err error) {
			res.perObservation, err = e.perObservation(ctx)
			return err
		}},
	} {
		if !row.on {
			continue
		}
		start := time.Now()
		if err := row.run(); err != nil {
			return fmt.Errorf("%s: %w", row.what, err)
		}
		res.rowTimes = append(res.rowTimes, rowTime{row.name, time.Since(start)})
		e.say("%s: %s", row.name, time.Since(start).Round(time.Second))
	}
	res.took = time.Since(began)
	res.machine.loadEnd = loadAvg()
	report := res.markdown()
	fmt.Fprintln(stdout, report)
	if cfg.out != "" {
		if err := writeDoc(cfg.out, report); err != nil {
			return err
		}
		e.say("wrote %s", cfg.out)
	}
	return nil
}
