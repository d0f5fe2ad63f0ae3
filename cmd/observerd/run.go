package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"

	"github.com/polar/observerd/actors"
	"github.com/polar/observerd/actors/admin"
	"github.com/polar/observerd/actors/broker"
	"github.com/polar/observerd/actors/control"
	"github.com/polar/observerd/actors/observer"
	"github.com/polar/observerd/actors/policymanager"
	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/actors/state"
	"github.com/polar/observerd/actors/supervisor"
	"github.com/polar/observerd/actors/task"
	"github.com/polar/observerd/configs"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/wasm"
)

// version is set by the build (-ldflags "-X main.version=...").
var version = "dev"

const (
	exitOK     = 0
	exitFailed = 1
	exitConfig = 2
	// exitStateDir: the outbox in state_dir cannot be used (permission,
	// I/O, locked by another daemon); the file is left as it is.
	exitStateDir = 3
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// Before anything else reads the environment, so that no child process
	// and no later reader sees the password.
	envPassword, scrubErr := takePasswordEnv("/proc/self")
	fs := flag.NewFlagSet("observerd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "/etc/observerd/observerd.yaml", "the daemon config `file`")
	check := fs.Bool("check-config", false, "validate the config, every policy and every referenced plugin, print each problem, and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "observerd: unexpected arguments %q (secrets and settings go in the config file)\n", fs.Args())
		return exitConfig
	}
	if *showVersion {
		fmt.Fprintln(stdout, "observerd", version)
		return exitOK
	}

	cfg, err := configs.Load(*configPath)
	if *check {
		return checkConfig(cfg, err, stdout, stderr)
	}
	if err != nil {
		printProblems(stderr, err)
		return exitConfig
	}
	log := newLogger(cfg, stderr)
	if scrubErr != nil {
		log.Warn().Err(scrubErr).Msgf("%s stays readable in /proc/%d/environ", configs.PasswordEnv, os.Getpid())
	}
	return daemon(ctx, cfg, *configPath, envPassword, log)
}

// checkConfig is --check-config: every problem of the config and of the
// policies, one per line, file:line first.
func checkConfig(cfg *configs.Config, cfgErr error, stdout, stderr io.Writer) int {
	if cfgErr != nil {
		printProblems(stderr, cfgErr)
	}
	if cfg == nil {
		return exitFailed // not even a config document: nothing else to check
	}
	// Policies are checked even when the config has problems, so that one
	// run lists everything; allowed_targets and plugin_dir are as written.
	// Modules are compiled in memory: a check writes nothing.
	plugins, err := wasm.NewHost(context.Background(), wasm.HostOptions{})
	if err != nil {
		fmt.Fprintf(stderr, "observerd --check-config: %v\n", err)
		return exitFailed
	}
	defer plugins.Close(context.Background())
	policies, err := policy.LoadDir(cfg.PolicyDir, policyEnv(cfg, plugins))
	if err != nil {
		printProblems(stderr, err)
	}
	if cfgErr != nil || err != nil {
		return exitFailed
	}
	fmt.Fprintf(stdout, "%s: ok (%d policies in %s)\n", cfg.File, len(policies), cfg.PolicyDir)
	return exitOK
}

func printProblems(w io.Writer, err error) {
	for _, p := range yamldoc.ProblemsOf(err) {
		fmt.Fprintln(w, p.Error())
	}
}

// policyEnv is what policies are validated against: allowed_targets,
// plugin_dir, and the plugin host's ABI check of every module.
func policyEnv(cfg *configs.Config, plugins *wasm.Host) policy.Env {
	return cfg.PolicyEnv(plugins.CheckFile)
}

func newLogger(cfg *configs.Config, stderr io.Writer) zerolog.Logger {
	var w io.Writer = stderr
	if cfg.Log.Format == "console" {
		w = zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.RFC3339}
	}
	setLevel(cfg.Log.Level)
	return zerolog.New(w).With().Timestamp().Str("node", cfg.Node).Logger()
}

// setLevel applies a level globally, which is what lets SIGHUP change it
// in every child logger at once.
func setLevel(level string) {
	l, err := zerolog.ParseLevel(level)
	if err != nil {
		l = zerolog.InfoLevel
	}
	zerolog.SetGlobalLevel(l)
}

// daemon runs the actor tree until ctx ends or the tree escalates.
func daemon(ctx context.Context, cfg *configs.Config, configPath, envPassword string, log zerolog.Logger) int {
	sys := actors.NewSystem(log)
	defer sys.Shutdown()
	pid := func(name string) *actor.PID { return supervisor.PID(sys, name) }
	actorLog := func(name string) zerolog.Logger { return log.With().Str("actor", name).Logger() }

	// Opened before the tree, so that a state_dir that cannot be used stops
	// the start with its reason (a damaged file is replaced, not an error);
	// closed after the tree stopped.
	outbox, err := broker.OpenOutbox(filepath.Join(cfg.StateDir, "outbox"), broker.OutboxOptions{
		Limit: broker.LimitOf(cfg.Outbox), Node: cfg.Node, Version: version, Log: actorLog(protocol.Broker),
	})
	if err != nil {
		log.Error().Err(err).Msg("observerd cannot start: state_dir unusable")
		return exitStateDir
	}
	defer func() {
		if err := outbox.Close(); err != nil {
			log.Error().Err(err).Msg("observerd stop")
		}
	}()
	gate := &protocol.Gate{}
	brokerOpts, err := broker.OptionsFrom(cfg, version, envPassword, outbox, pid(protocol.StateManager), gate, actorLog(protocol.Broker))
	if err != nil {
		log.Error().Err(err).Msg("observerd cannot start")
		return exitConfig
	}
	metrics := newRegistry()
	brokerOpts.Metrics = metrics
	// The central policies' cache: watched, and written, only while the
	// control channel is enabled.
	central := ""
	if cfg.Control.Enabled {
		central = filepath.Join(cfg.StateDir, "central-policies")
		if err := os.MkdirAll(central, 0o700); err != nil {
			log.Error().Err(err).Msg("observerd cannot start: state_dir unusable")
			return exitStateDir
		}
		brokerOpts.ControlActor = pid(protocol.Control)
	}
	actorNames := []string{protocol.Broker, protocol.StateManager, protocol.TaskManager, protocol.PolicyManager}
	if cfg.Control.Enabled {
		actorNames = append(actorNames, protocol.Control)
	}
	actorNames = append(actorNames, protocol.Admin)
	plugins, err := wasm.NewHost(ctx, wasm.HostOptions{
		CacheDir: filepath.Join(cfg.StateDir, "wasm-cache"), Metrics: metrics, Log: actorLog("plugin-host"),
	})
	if err != nil {
		log.Error().Err(err).Msg("observerd cannot start")
		return exitConfig
	}
	// Closed when daemon returns, which is after the tree has stopped
	// every plugin observer.
	defer plugins.Close(context.Background())
	children := []supervisor.Child{
		{Name: protocol.Broker, Props: broker.Props(brokerOpts)},
		{Name: protocol.StateManager, Props: state.Props(state.Options{
			Node: cfg.Node, Version: version, Broker: pid(protocol.Broker), Metrics: metrics, Log: actorLog(protocol.StateManager),
			Actors: actorNames,
			// Each policy's budget of observation events, and all policies'.
			EventsPerSecond: cfg.Limits.MaxEventsPerSecond, EventsPerSecondTotal: cfg.Limits.MaxEventsPerSecondTotal,
		})},
		// The task-manager alone decides what runs (the totals too); the
		// policy-manager tells it what the files ask for.
		{Name: protocol.TaskManager, Props: task.Props(task.Options{
			Node: cfg.Node, State: pid(protocol.StateManager), Allowed: cfg.Targets(), Limits: &cfg.Limits, Gate: gate,
			Plugins: plugins, PluginDir: cfg.PluginDir, Metrics: observer.NewMetrics(metrics), Log: actorLog(protocol.TaskManager),
			PIDDirs: cfg.AllowedPIDDirs, MaxResponse: cfg.Limits.MaxResponseBytes, MaxResponseTotal: cfg.Limits.MaxResponseBytesTotal,
		})},
		{Name: protocol.PolicyManager, Props: policymanager.Props(policymanager.Options{
			Dir: cfg.PolicyDir, Central: central, Env: policyEnv(cfg, plugins),
			Task: pid(protocol.TaskManager), Log: actorLog(protocol.PolicyManager),
		})},
	}
	if cfg.Control.Enabled {
		// After the managers it asks, before the admin.
		children = append(children, supervisor.Child{Name: protocol.Control, Props: control.Props(control.Options{
			Node: cfg.Node, Labels: cfg.Labels, Allow: cfg.Control.Allow, Rate: cfg.Control.MaxCommandsPerSecond,
			Window: control.WindowPath(cfg.StateDir), Central: central, Env: policyEnv(cfg, plugins),
			State: pid(protocol.StateManager), Task: pid(protocol.TaskManager), Broker: pid(protocol.Broker),
			Policies: pid(protocol.PolicyManager), Log: actorLog(protocol.Control),
		})})
	}
	children = append(children, []supervisor.Child{
		// Started even with admin.listen and admin.socket "", serving
		// nothing, so that a SIGHUP can give it an address. A changed
		// admin.socket or admin.socket_group needs a restart.
		{Name: protocol.Admin, Props: admin.Props(admin.Options{
			Listen: cfg.Admin.Listen, Socket: cfg.Admin.Socket, SocketGroup: cfg.Admin.SocketGroup,
			State: pid(protocol.StateManager), Broker: pid(protocol.Broker), Task: pid(protocol.TaskManager),
			Metrics: metrics, Log: actorLog(protocol.Admin),
		})},
	}...)

	exited := make(chan error, 1)
	sup, err := sys.Root.SpawnNamed(supervisor.Props(supervisor.Options{
		Version:  version,
		Children: children,
		Exit:     func(err error) { exited <- err },
		Log:      actorLog(protocol.Supervisor),
	}), protocol.Supervisor)
	if err != nil {
		log.Error().Err(err).Msg("observerd cannot start")
		return exitFailed
	}
	log.Info().Str("version", version).Str("config", configPath).Str("state_dir", cfg.StateDir).
		Strs("broker_urls", redacted(cfg.Broker.URLs)).Msg("observerd started")

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			reload(configPath, cfg, sys, log)
		case <-ctx.Done():
			// A second SIGTERM or SIGINT during the drain ends the process
			// at once, as an operator pressing Ctrl-C twice expects.
			signal.Reset(syscall.SIGTERM, syscall.SIGINT)
			log.Info().Msg("stopping: draining in-flight events")
			sys.Root.Stop(sup)
			return exitCode(<-exited, log)
		case err := <-exited:
			return exitCode(err, log)
		}
	}
}

// newRegistry is the daemon's own registry, not the global default one: the
// actors register into what they are given, so that tests can run several
// daemons' actor trees in one process. It carries the Go runtime's and the
// process's metrics.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func exitCode(err error, log zerolog.Logger) int {
	if err != nil {
		log.Error().Err(err).Msg("observerd stopped after an escalation")
		return exitFailed
	}
	log.Info().Msg("observerd stopped")
	return exitOK
}

// reload re-reads the config on SIGHUP and applies what can change live:
// the log level, the outbox's bound and the admin address. Every other
// changed setting is named as needing a restart.
func reload(path string, running *configs.Config, sys *actor.ActorSystem, log zerolog.Logger) {
	cfg, err := configs.Load(path)
	if err != nil {
		var lines []string
		for _, p := range yamldoc.ProblemsOf(err) {
			lines = append(lines, p.Error())
		}
		log.Error().Strs("problems", lines).Msg("SIGHUP: config invalid, nothing changed")
		return
	}
	var applied, restart []string
	for _, key := range running.Changes(cfg) {
		switch key {
		case "log.level":
			setLevel(cfg.Log.Level)
			running.Log.Level = cfg.Log.Level
		case "admin.listen":
			// Applied only when the admin could listen there: the log says
			// so, and the next SIGHUP tries again.
			res, err := sys.Root.RequestFuture(supervisor.PID(sys, protocol.Admin), &protocol.Listen{Addr: cfg.Admin.Listen}, 5*time.Second).Result()
			if l, ok := res.(*protocol.Listened); err != nil || !ok || l.Err != nil {
				restart = append(restart, key)
				continue
			}
			running.Admin.Listen = cfg.Admin.Listen
		case "outbox.max_bytes", "outbox.when_full":
			if running.Outbox != cfg.Outbox {
				running.Outbox = cfg.Outbox
				sys.Root.Send(supervisor.PID(sys, protocol.Broker), &protocol.SetOutboxLimit{MaxBytes: int64(cfg.Outbox.MaxBytes), DropOldest: cfg.Outbox.WhenFull != "block"})
			}
		default:
			restart = append(restart, key)
			continue
		}
		applied = append(applied, key)
	}
	e := log.Info()
	if len(restart) > 0 {
		e = log.Warn().Strs("need_restart", restart)
	}
	e.Strs("applied", applied).Str("level", running.Log.Level).Msg("SIGHUP: config re-read")
}

func redacted(urls []string) []string {
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i] = configs.RedactURL(u)
	}
	return out
}
