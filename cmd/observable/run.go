package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes of run.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// config is what the flags say.
type config struct {
	listen          string
	pidFile         string
	readyFile       string
	mode            mode
	latency         time.Duration
	flapPeriod      time.Duration
	shutdownTimeout time.Duration
	showVersion     bool
}

// parseFlags parses args into a config. It returns flag.ErrHelp for -h.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	cfg := config{mode: modeOK}
	fs := flag.NewFlagSet("observable", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:8080", "address to listen on; port 0 picks a free port")
	fs.StringVar(&cfg.pidFile, "pid-file", "", "write the PID to this file at start, remove it at exit")
	fs.StringVar(&cfg.readyFile, "ready-file", "", "write the actual listen address to this file once listening")
	fs.Func("mode", "initial mode: ok, fail, slow, flap or hang (default ok)", func(s string) error {
		m, err := parseMode(s)
		cfg.mode = m
		return err
	})
	fs.DurationVar(&cfg.latency, "latency", 0, "latency added to the observed endpoints (mode slow uses 2s while 0)")
	fs.DurationVar(&cfg.flapPeriod, "flap-period", 0, "in mode flap, alternate health every period; 0 alternates per request")
	fs.DurationVar(&cfg.shutdownTimeout, "shutdown-timeout", 5*time.Second, "how long a graceful stop waits for in-flight requests")
	fs.BoolVar(&cfg.showVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("parse flags: unexpected arguments %q", fs.Args())
	}
	if cfg.latency < 0 {
		return cfg, fmt.Errorf("parse flags: --latency %v is negative", cfg.latency)
	}
	if cfg.flapPeriod < 0 {
		return cfg, fmt.Errorf("parse flags: --flap-period %v is negative", cfg.flapPeriod)
	}
	if cfg.shutdownTimeout <= 0 {
		return cfg, fmt.Errorf("parse flags: --shutdown-timeout %v must be positive", cfg.shutdownTimeout)
	}
	return cfg, nil
}

// run is the whole program; main only wires signals and the exit code, so
// that tests run the service in-process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	if cfg.showVersion {
		fmt.Fprintln(stdout, version)
		return exitOK
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if err := serve(ctx, cfg, stdout, log); err != nil {
		log.Error("observable stopped", "err", err)
		return exitError
	}
	return exitOK
}

// serve runs the service until ctx is done, then stops it gracefully.
func serve(ctx context.Context, cfg config, stdout io.Writer, log *slog.Logger) (err error) {
	// A ready file left by an earlier run would send pollers to a dead
	// address before this run has bound its own.
	if cfg.readyFile != "" {
		if err := removeIfExists(cfg.readyFile); err != nil {
			return fmt.Errorf("remove stale ready file: %w", err)
		}
	}
	pid := strconv.Itoa(os.Getpid())
	if cfg.pidFile != "" {
		if err := writeFileAtomic(cfg.pidFile, pid+"\n"); err != nil {
			return fmt.Errorf("write pid file: %w", err)
		}
		defer func() {
			if rmErr := removeIfOurs(cfg.pidFile, pid); rmErr != nil {
				err = errors.Join(err, fmt.Errorf("remove pid file: %w", rmErr))
			}
		}()
	}

	svc := newService(cfg, log)
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.listen, err)
	}
	addr := ln.Addr().String()
	srv := &http.Server{
		Handler:           svc.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ConnState:         svc.connState,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	// From here the listener is owned by srv: every return path goes
	// through shutdown so that no goroutine outlives serve.
	if cfg.readyFile != "" {
		if err := writeFileAtomic(cfg.readyFile, addr); err != nil {
			return errors.Join(fmt.Errorf("write ready file: %w", err), shutdown(srv, svc, served, cfg.shutdownTimeout))
		}
		defer func() {
			if rmErr := removeIfExists(cfg.readyFile); rmErr != nil {
				err = errors.Join(err, fmt.Errorf("remove ready file: %w", rmErr))
			}
		}()
	}
	fmt.Fprintf(stdout, "listening on %s\n", addr)
	log.Info("observable started", "addr", addr, "pid", pid, "mode", cfg.mode, "latency", cfg.latency, "version", version)

	select {
	case err := <-served:
		// Serve returns only on a listener failure here: shutdown has not
		// been asked for yet.
		svc.close()
		return fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
	}
	log.Info("observable stopping", "timeout", cfg.shutdownTimeout)
	if err := shutdown(srv, svc, served, cfg.shutdownTimeout); err != nil {
		return err
	}
	log.Info("observable stopped")
	return nil
}

// shutdown releases hung requests, then drains the server within timeout,
// and closes it hard if the deadline passes.
func shutdown(srv *http.Server, svc *service, served <-chan error, timeout time.Duration) error {
	// http.Server.Shutdown waits for active requests but never cancels them,
	// so hung handlers must be told first or the deadline would always pass.
	svc.close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := srv.Shutdown(ctx)
	if err != nil {
		err = fmt.Errorf("shut down http server: %w", err)
		err = errors.Join(err, srv.Close())
	}
	if serveErr := <-served; serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, fmt.Errorf("serve http: %w", serveErr))
	}
	return err
}

// writeFileAtomic writes content to a temporary file beside path and renames
// it into place, so that a poller never reads a partial file.
func writeFileAtomic(path, content string) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	tmp := f.Name()
	_, err = f.WriteString(content)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// removeIfOurs removes the PID file only while it still holds our PID: a
// second instance started with the same file owns it now.
func removeIfOurs(path, pid string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(b)) != pid {
		return nil
	}
	return removeIfExists(path)
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
