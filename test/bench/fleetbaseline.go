package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/polar/observerd/messages"
)

// The fleet row's baseline is as many plain amqp091-go publishers as the
// fleet has daemons, in one process of their own (this program again,
// run as publishersCommand) so that its CPU and RSS are measured as the
// daemons' are: each publisher has its own TLS connection to a node of
// the cluster (round the nodes), a channel with publisher confirms, and
// publishes an event shaped like an observation every 1/fleetRate s,
// waiting for its confirm: no actors, no outbox.
//
// The parent drives it on stdin, a line per size ("100", then "120");
// it answers "ready N" on stdout once N publishers are connected, and
// stops them all at the end of stdin.

// publishersCommand is the first argument that runs the bench as the
// baseline's process.
const publishersCommand = "fleet-publishers"

// runBaseline runs the baseline with n publishers, then all, a measuring
// window each.
func (f *fleetRun) runBaseline(ctx context.Context, n, all int) ([]fleetPhase, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the bench's executable: %w", err)
	}
	logPath := filepath.Join(f.dir, "baseline.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create baseline log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(self, publishersCommand, "--urls", strings.Join(f.c.URLs(), ","), "--ca-file", f.c.CAFile,
		"--password-file", f.c.PasswordFile, "--exchange", f.exchange, "--rate", strconv.Itoa(fleetRate))
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the baseline's publishers: %w", err)
	}
	failed := func(err error) error { return fmt.Errorf("%w\n%s", err, lastLines(logTail(logPath), 10)) }
	defer func() {
		// The end of stdin stops the publishers.
		_ = stdin.Close()
		stop := time.AfterFunc(30*time.Second, func() { _ = cmd.Process.Kill() })
		defer stop.Stop()
		_ = cmd.Wait()
	}()
	proc, err := procfs.NewProc(cmd.Process.Pid)
	if err != nil {
		return nil, fmt.Errorf("read the baseline's process: %w", err)
	}
	lines := bufio.NewScanner(stdout)
	var phases []fleetPhase
	for _, size := range []int{n, all} {
		f.say("baseline, %d amqp091-go publishers in one process, %s window", size, whole(f.e.cfg.fleetWindow))
		if _, err := fmt.Fprintf(stdin, "%d\n", size); err != nil {
			return nil, failed(fmt.Errorf("ask for %d publishers: %w", size, err))
		}
		if !lines.Scan() {
			return nil, failed(fmt.Errorf("the publishers' process ended before %d were ready", size))
		}
		if want := fmt.Sprintf("ready %d", size); lines.Text() != want {
			return nil, failed(fmt.Errorf("the publishers' process said %q, not %q", lines.Text(), want))
		}
		p, err := f.measure(ctx, []procfs.Proc{proc}, "baseline-", f.e.cfg.fleetWindow)
		if err != nil {
			return nil, failed(err)
		}
		p.clients = size
		phases = append(phases, p)
	}
	return phases, nil
}

// logTail is the end of a log file, its last 16 KiB at most ("" when
// unreadable).
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	buf := make([]byte, min(st.Size(), 16<<10))
	n, _ := f.ReadAt(buf, st.Size()-int64(len(buf)))
	return string(buf[:n])
}

// publishers is the baseline's process.
type publishers struct {
	urls     []string
	tls      *tls.Config
	password string
	exchange string
	interval time.Duration
}

// runPublishers is the baseline's process: publishers added as stdin
// asks, until stdin ends.
func runPublishers(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet(publishersCommand, flag.ContinueOnError)
	urls := fs.String("urls", "", "the nodes' AMQPS URLs, comma separated")
	caFile := fs.String("ca-file", "", "PEM CA of the nodes")
	passwordFile := fs.String("password-file", "", "file holding the password of the URLs' user")
	exchange := fs.String("exchange", "", "topic exchange to publish to")
	rate := fs.Int("rate", fleetRate, "events per second of each publisher")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *urls == "" || *exchange == "" || *rate < 1 {
		return errors.New("--urls, --exchange and a positive --rate are required")
	}
	tlsConf, password, err := readCredentials(*caFile, *passwordFile)
	if err != nil {
		return err
	}
	p := &publishers{urls: strings.Split(*urls, ","), tls: tlsConf,
		password: password, exchange: *exchange, interval: time.Second / time.Duration(*rate)}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = err
			cancel()
		}
	}
	lines := bufio.NewScanner(stdin)
	running := 0
	for lines.Scan() {
		want, err := strconv.Atoi(strings.TrimSpace(lines.Text()))
		if err != nil || want < running || want > 100_000 {
			fail(fmt.Errorf("want %q publishers: a number from %d to 100000", lines.Text(), running))
			break
		}
		ready := make(chan error, want-running)
		for i := running; i < want; i++ {
			wg.Go(func() {
				if err := p.publish(ctx, i, ready); err != nil {
					fail(err)
				}
			})
		}
		for range want - running {
			if err := <-ready; err != nil {
				fail(err)
			}
		}
		if ctx.Err() != nil {
			break
		}
		running = want
		fmt.Fprintf(stdout, "ready %d\n", want)
	}
	cancel()
	wg.Wait()
	return first
}

// publish is publisher i: it connects to node i (round the URLs), says
// so on ready, then publishes until ctx ends.
func (p *publishers) publish(ctx context.Context, i int, ready chan<- error) error {
	name := fmt.Sprintf("baseline-%03d", i+1)
	conn, ch, err := dialBaseline(name, p.urls[i%len(p.urls)], p.tls, p.password)
	if err != nil {
		ready <- err
		return nil
	}
	defer conn.Close()
	ready <- nil
	// Spread over the interval, as the daemons' observers are.
	if sleep(ctx, rand.N(p.interval)) != nil {
		return nil
	}
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	key := messages.RoutingKey(messages.TypeObservationHTTP, name)
	for seq := uint64(1); ; seq++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		ev := event(int(seq))
		ev.Node, ev.Source, ev.Sequence = name, messages.Source(name, "observer/web/health"), seq
		ev.Provenance[0].Node = name
		msg, err := publishing(ev)
		if err != nil {
			return err
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, p.exchange, key, true, false, msg)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s: publish: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-dc.Done():
		}
		if !dc.Acked() {
			return fmt.Errorf("%s: event %d nacked", name, seq)
		}
	}
}

// readCredentials reads a baseline process's CA and password files.
func readCredentials(caFile, passwordFile string) (*tls.Config, string, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, "", fmt.Errorf("read CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, "", errors.New("the CA file holds no PEM certificate")
	}
	password, err := os.ReadFile(passwordFile)
	if err != nil {
		return nil, "", fmt.Errorf("read password: %w", err)
	}
	return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, strings.TrimSpace(string(password)), nil
}

// dialBaseline opens a baseline process's connection named name to the
// AMQPS URL raw, as the daemon opens its own, and a channel on it with
// publisher confirms.
func dialBaseline(name, raw string, tlsConf *tls.Config, password string) (*amqp.Connection, *amqp.Channel, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: parse url: %w", name, err)
	}
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(name)
	conn, err := amqp.DialConfig(raw, amqp.Config{
		TLSClientConfig: tlsConf.Clone(),
		SASL:            []amqp.Authentication{&amqp.PlainAuth{Username: u.User.Username(), Password: password}},
		Heartbeat:       10 * time.Second,
		Dial:            amqp.DefaultDial(10 * time.Second),
		Properties:      props,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%s: dial %s: %w", name, raw, err)
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("%s: channel with confirms: %w", name, err)
	}
	return conn, ch, nil
}
