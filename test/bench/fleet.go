package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
	amqp "github.com/rabbitmq/amqp091-go"
	"golang.org/x/sync/errgroup"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/test/rabbitmq"
)

// fleetResult is row 9: a fleet of real daemons on a three-node cluster,
// against as many plain publishers in one process.
type fleetResult struct {
	daemons   int // the first fleet; as many join later
	window    time.Duration
	limits    fleetLimits
	clusterUp time.Duration
	idle      fleetPhase   // the cluster with its queue and consumer, no client
	baseline  []fleetPhase // plain publishers: daemons, then 2 × daemons
	before    fleetPhase   // the cluster once the baseline has gone, before the daemons
	fleet     []fleetPhase // daemons, then 2 × daemons
	// restarted is the first fleet once the killed node is back, the
	// reference of what the daemons that join then cost.
	restarted fleetPhase
	started   []time.Duration
	kill      fleetKill
	loss      fleetLoss
	took      time.Duration
}

// fleetPhase is what a measuring window saw: the clients' processes, the
// broker's, the connections and the consumer's latencies.
type fleetPhase struct {
	clients int
	took    time.Duration
	// clientCPU and clientRSS sum the clients' processes (the daemons, or
	// the baseline's one process).
	clientCPU time.Duration
	clientRSS uint64
	// brokerCPU and brokerRSS sum the running RabbitMQ nodes' VMs;
	// brokerMemory is erlang:memory(total) summed over the nodes, what
	// RabbitMQ's memory watermark is compared with.
	brokerCPU    time.Duration
	brokerRSS    uint64
	brokerMemory uint64
	// connections and channels are the clients' own, as
	// `rabbitmqctl list_connections` lists them, by node.
	connections map[string]int
	channels    int
	window      consumerWindow
}

func (p fleetPhase) perClient(v float64) float64 {
	if p.clients == 0 {
		return 0
	}
	return v / float64(p.clients)
}

// cpuShare is a CPU time over the phase's window as a share of one core.
func (p fleetPhase) cpuShare(d time.Duration) float64 { return d.Seconds() / p.took.Seconds() }

func (p fleetPhase) connectionCount() int {
	n := 0
	for _, c := range p.connections {
		n += c
	}
	return n
}

// fleetKill is the SIGKILL of one node under the fleet.
type fleetKill struct {
	node  int    // its index
	name  string // its Erlang name
	onIt  int    // daemons connected to it at the kill
	total int    // daemons running
	// onItFirst is, for each daemon that was on it, the time from the
	// kill to its first connection to another node; onItTook to its last
	// one, when it gave that up (publications all nacked for 3 s) and
	// moved again within the settle period; othersTook is the last for
	// the daemons elsewhere that changed connection too.
	onItFirst  []time.Duration
	onItTook   []time.Duration
	othersTook []time.Duration
	// stranded counts the daemons on it that had not reconnected by the
	// deadline.
	stranded int
	// resumed is, for each daemon that was on it, the time from the kill
	// to the consumer's receipt of its first event made after the kill.
	resumed []time.Duration
	// before, after and rejoined count the daemons' connections by node
	// (their own /v1/state): at the kill, once they had settled, and
	// after the node was back.
	before, after, rejoined map[string]int
	restartTook             time.Duration
	maxOutbox               int // the most events one daemon held during it
}

// fleetLoss is the check of every sequence at the end.
type fleetLoss struct {
	nodes      int
	events     int
	lost       int
	lostNodes  []string // "node a..b", at most a few
	duplicates int
	overflow   int // events the daemons reported dropped (outbox.overflow)
	// drained is how long the daemons' outboxes took to empty once their
	// observations stopped.
	drained time.Duration
}

// fleetLimits are the machine's limits the row checked (and raised).
type fleetLimits struct {
	noFile     uint64
	noFileNeed uint64
	ports      int
	portsNeed  int
}

const (
	// maxFleetDaemons bounds the fleet (--fleet-daemons and --fleet-join
	// together): each daemon is some 25 MiB and a few descriptors and
	// ports.
	maxFleetDaemons = 1000
	// fleetInterval is the observers' interval: five observers, five
	// events a second per daemon.
	fleetInterval = time.Second
	// fleetRate is the baseline publishers' events per second each, the
	// daemons' rate.
	fleetRate = 5
	// fleetKillNode is the node SIGKILLed. The queue is declared through
	// it, so its leader is there: the worst case, an election under load.
	fleetKillNode = 0
	// fleetConsumerNode is where the consumer reads, a node that stays up.
	fleetConsumerNode = 1
	// fleetStartBatch is how many daemons start at once: a start is a TLS
	// handshake and an outbox fsync, and 2 cores are shared with three
	// RabbitMQ nodes.
	fleetStartBatch = 10
	// fleetWarmup passes between a change of the fleet and a window.
	fleetWarmup = 3 * time.Second
	// fleetIdle is the window of the idle cluster (rates only).
	fleetIdle = 5 * time.Second
	// fleetSettle is how long reconnections are followed after the last
	// daemon of the killed node reconnected: more than the 3 s after
	// which a daemon gives up a connection whose publications are all
	// nacked, so that a second move is seen.
	fleetSettle = 6 * time.Second
	// fleetReconnectWait bounds the wait for the daemons of the killed
	// node, and fleetDrainWait the final wait for the consumer to read
	// every event the daemons had accepted.
	fleetReconnectWait = 90 * time.Second
	fleetDrainWait     = 3 * time.Minute
	// fleetClusterTimeout bounds the cluster's boot and each wait for it
	// to be whole, on a loaded 2-core machine.
	fleetClusterTimeout = 3 * time.Minute
	// fleetPollEvery is how often the daemons' /v1/state are read while
	// they reconnect (their snapshot is at most 250 ms old; the broker
	// status's since is exact).
	fleetPollEvery = 200 * time.Millisecond
	// fleetCtlTimeout bounds a rabbitmqctl call: the boot of an Erlang
	// VM, slow on a machine that 200 daemons and three nodes load.
	fleetCtlTimeout = 2 * time.Minute
	// fleetPolls bounds the /v1/state reads in flight.
	fleetPolls = 32
)

// fleetRun is the row's state while it runs.
type fleetRun struct {
	e        *env
	c        *rabbitmq.Cluster
	dir      string
	exchange string
	queue    string
	target   string
	pidFile  string
	bin      string
	client   *http.Client
	consumer *fleetConsumer
	daemons  []*fleetDaemon
	began    time.Time
}

// fleetDaemon is one bin/observerd of the fleet.
type fleetDaemon struct {
	name  string
	admin string
	cmd   *exec.Cmd
	proc  procfs.Proc
	dir   string
}

// fleet is row 9. On a fresh three-node cluster with one quorum queue
// bound `#` and one consumer: the baseline's publishers (daemons of them,
// then as many as the whole fleet) in one process, then the fleet of daemons, one
// node SIGKILLed and restarted, --fleet-join daemons joining, and every
// sequence checked.
func (e *env) fleet(ctx context.Context) (*fleetResult, error) {
	began := time.Now()
	n, all := e.cfg.fleetDaemons, e.cfg.fleetDaemons+e.cfg.fleetJoin
	res := &fleetResult{daemons: n, window: e.cfg.fleetWindow}
	var err error
	if res.limits, err = checkFleetLimits(all); err != nil {
		return nil, err
	}
	bin, err := filepath.Abs("bin/observerd")
	if err != nil {
		return nil, fmt.Errorf("find bin/observerd: %w", err)
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("find bin/observerd (run make build): %w", err)
	}
	f := &fleetRun{e: e, dir: filepath.Join(e.work, "fleet"), bin: bin, began: began,
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}}}
	defer f.client.CloseIdleConnections()
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return nil, fmt.Errorf("create fleet dir: %w", err)
	}

	f.say("starting a three-node RabbitMQ cluster ...")
	startCtx, cancel := context.WithTimeout(ctx, fleetClusterTimeout)
	f.c, err = rabbitmq.StartCluster(startCtx, rabbitmq.ClusterOptions{Dir: filepath.Join(f.dir, "cluster"), StartTimeout: fleetClusterTimeout})
	cancel()
	if err != nil {
		return nil, err
	}
	res.clusterUp = time.Since(began)
	defer func() {
		if err := f.c.Close(); err != nil {
			f.say("close the cluster: %v", err)
		}
	}()
	defer f.stopDaemons()

	f.exchange = e.name("fleet")
	f.queue = f.exchange + ".all"
	if err := f.declare(); err != nil {
		return nil, err
	}
	if f.consumer, err = startFleetConsumer(ctx, f.c.Nodes[fleetConsumerNode], f.queue); err != nil {
		return nil, err
	}
	defer f.consumer.close()
	svc, err := e.startObservable(ctx)
	if err != nil {
		return nil, err
	}
	defer svc.stop()
	f.target, f.pidFile = svc.target, svc.pidFile

	f.say("the idle cluster, %s", whole(fleetIdle))
	if res.idle, err = f.measure(ctx, nil, "", fleetIdle); err != nil {
		return nil, err
	}
	if res.baseline, err = f.runBaseline(ctx, n, all); err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	f.say("the cluster once the baseline has gone, %s", whole(fleetIdle))
	if res.before, err = f.measure(ctx, nil, "", fleetIdle); err != nil {
		return nil, err
	}

	for _, size := range []int{n, all} {
		if size > n {
			// While it runs: the others join a fleet that has just lost
			// and regained a node.
			if res.kill, err = f.killNode(ctx); err != nil {
				return nil, fmt.Errorf("kill a node: %w", err)
			}
			f.say("%d daemons with the node back, %s", n, whole(fleetIdle))
			if res.restarted, err = f.measure(ctx, f.daemonProcs(), "fleet-", fleetIdle); err != nil {
				return nil, err
			}
		}
		f.say("starting daemons %d to %d, %d at a time", len(f.daemons)+1, size, fleetStartBatch)
		t := time.Now()
		if err := f.startDaemons(ctx, len(f.daemons), size); err != nil {
			return nil, err
		}
		res.started = append(res.started, time.Since(t))
		f.say("%d daemons, %s window", size, whole(res.window))
		phase, err := f.measure(ctx, f.daemonProcs(), "fleet-", res.window)
		if err != nil {
			return nil, err
		}
		res.fleet = append(res.fleet, phase)
		f.say("%d daemons: %s events/s, latency p50 %s, p99 %s; daemons %s of a core, broker %s", size, thousands(phase.window.rate(phase.took)),
			ms(percentile(phase.window.latencies, 50)), ms(percentile(phase.window.latencies, 99)),
			percent(phase.cpuShare(phase.clientCPU)), percent(phase.cpuShare(phase.brokerCPU)))
	}
	f.say("every sequence checked, up to the last each daemon accepted")
	if res.loss, err = f.checkLoss(ctx); err != nil {
		return nil, err
	}
	res.took = time.Since(began)
	return res, nil
}

// say reports progress, with the time into the row.
func (f *fleetRun) say(format string, args ...any) {
	f.e.say("fleet [%s]: "+format, append([]any{time.Since(f.began).Round(time.Second)}, args...)...)
}

// declare declares the exchange and the quorum queue bound `#` through
// the node that will be killed, so that the queue's leader is there.
func (f *fleetRun) declare() error {
	conn, err := f.c.Nodes[fleetKillNode].Dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	return rabbitmq.DeclareQuorum(ch, f.exchange, f.queue, "#")
}

// measure waits fleetWarmup, then samples the clients' processes, the
// broker's and the consumer over window; prefix names the clients'
// events (their node names) for the latencies.
func (f *fleetRun) measure(ctx context.Context, clients []procfs.Proc, prefix string, window time.Duration) (fleetPhase, error) {
	p := fleetPhase{clients: len(clients)}
	if len(clients) > 0 {
		if err := sleep(ctx, fleetWarmup); err != nil {
			return p, err
		}
	}
	cpu0, _, err := procsUsage(clients)
	if err != nil {
		return p, err
	}
	b0, _, err := procsUsage(f.brokerProcs())
	if err != nil {
		return p, err
	}
	f.consumer.open(prefix)
	start := time.Now()
	if err := sleep(ctx, window); err != nil {
		return p, err
	}
	p.took = time.Since(start)
	p.window = f.consumer.shut()
	cpu1, rss, err := procsUsage(clients)
	if err != nil {
		return p, err
	}
	b1, brss, err := procsUsage(f.brokerProcs())
	if err != nil {
		return p, err
	}
	p.clientCPU, p.clientRSS = cpu1-cpu0, rss
	p.brokerCPU, p.brokerRSS = b1-b0, brss
	// The clients are frozen (SIGSTOP) while the CLI reads the broker:
	// the window is over, and the broker's memory and connections stay
	// what they are for the seconds it takes. Each CLI call is mostly an
	// Erlang VM's boot, which took up to a minute on this machine beside
	// a hundred running daemons.
	// Thawed after frozenAtMost at the latest: RabbitMQ closes a
	// connection after two missed heartbeats (20 s by default).
	freeze(clients, syscall.SIGSTOP)
	thaw := time.AfterFunc(frozenAtMost, func() { freeze(clients, syscall.SIGCONT) })
	defer func() {
		thaw.Stop()
		freeze(clients, syscall.SIGCONT)
	}()
	// Two CLI calls: at once.
	var g errgroup.Group
	g.Go(func() (err error) {
		p.brokerMemory, err = f.erlangMemory(ctx)
		return err
	})
	if prefix != "" {
		g.Go(func() (err error) {
			p.connections, p.channels, err = f.connections(ctx, prefix)
			return err
		})
	}
	return p, g.Wait()
}

// frozenAtMost bounds how long measure keeps the clients frozen.
const frozenAtMost = 10 * time.Second

// freeze sends sig (SIGSTOP, SIGCONT) to procs; one that has exited is
// left alone.
func freeze(procs []procfs.Proc, sig syscall.Signal) {
	for _, p := range procs {
		_ = syscall.Kill(p.PID, sig)
	}
}

// procsUsage sums the CPU time and the RSS of procs.
func procsUsage(procs []procfs.Proc) (time.Duration, uint64, error) {
	var cpu time.Duration
	var rss uint64
	for _, p := range procs {
		st, err := p.Stat()
		if err != nil {
			return 0, 0, fmt.Errorf("read process %d (exited?): %w", p.PID, err)
		}
		cpu += cpuOf(st)
		rss += uint64(st.ResidentMemory())
	}
	return cpu, rss, nil
}

// brokerProcs are the running nodes' VMs (their pid files: a restart
// makes a new one).
func (f *fleetRun) brokerProcs() []procfs.Proc {
	var out []procfs.Proc
	for _, n := range f.c.Nodes {
		// A killed node's pid file stays: its process is gone.
		b, err := os.ReadFile(filepath.Join(n.Dir, "node.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			continue
		}
		if p, err := procfs.NewProc(pid); err == nil {
			if _, err := p.Stat(); err == nil {
				out = append(out, p)
			}
		}
	}
	return out
}

// erlangMemory is erlang:memory(total) summed over the running nodes:
// one rabbitmqctl call (an Erlang VM's boot) asking every node.
func (f *fleetRun) erlangMemory(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, fleetCtlTimeout)
	defer cancel()
	out, err := f.c.Ctl(ctx, "eval",
		"{Ms, _} = rpc:multicall([node() | nodes()], erlang, memory, [total]), lists:sum([M || M <- Ms, is_integer(M)]).")
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(lastLine(out), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read erlang:memory: %w: %s", err, out)
	}
	return v, nil
}

// connections counts the connections whose client-given name starts with
// prefix (the daemons name theirs "observerd <node>"), by node (the
// address they connected to), and their channels.
func (f *fleetRun) connections(ctx context.Context, prefix string) (map[string]int, int, error) {
	ctx, cancel := context.WithTimeout(ctx, fleetCtlTimeout)
	defer cancel()
	out, err := f.c.Ctl(ctx, "list_connections", "host", "client_properties", "channels", "--formatter", "json", "--quiet")
	if err != nil {
		return nil, 0, err
	}
	var conns []struct {
		Host       []int `json:"host"`
		Properties []any `json:"client_properties"`
		Channels   int   `json:"channels"`
	}
	if err := json.Unmarshal([]byte(out), &conns); err != nil {
		return nil, 0, fmt.Errorf("read list_connections: %w: %s", err, out)
	}
	byNode, channels := map[string]int{}, 0
	for _, c := range conns {
		if !strings.HasPrefix(strings.TrimPrefix(connectionName(c.Properties), "observerd "), prefix) {
			continue
		}
		host := make([]string, len(c.Host))
		for i, b := range c.Host {
			host[i] = strconv.Itoa(b)
		}
		byNode[f.shortNode(strings.Join(host, "."))]++
		channels += c.Channels
	}
	return byNode, channels, nil
}

// connectionName finds connection_name in client_properties as
// list_connections writes them in JSON: [name, type, value] triples.
func connectionName(props []any) string {
	for _, p := range props {
		if kv, ok := p.([]any); ok && len(kv) == 3 && kv[0] == "connection_name" {
			if s, ok := kv[2].(string); ok {
				return s
			}
		}
	}
	return ""
}

// shortNode names a node of the cluster by its number, rabbit-1 to
// rabbit-3, from its URL or its address.
func (f *fleetRun) shortNode(s string) string {
	for i, n := range f.c.Nodes {
		if s == n.URL() || s == n.Host {
			return fmt.Sprintf("rabbit-%d", i+1)
		}
	}
	return s
}

// startDaemons starts daemons from to to (their indices), fleetStartBatch
// at a time, each waited for until ready (its broker connected, its
// policy loaded).
func (f *fleetRun) startDaemons(ctx context.Context, from, to int) error {
	started := make([]*fleetDaemon, to-from)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(fleetStartBatch)
	for i := from; i < to; i++ {
		g.Go(func() error {
			d, err := f.startDaemon(i)
			if err != nil {
				return err
			}
			started[i-from] = d
			if err := waitReady(gctx, d.admin, d.name); err != nil {
				return fmt.Errorf("daemon %s: %w (see %s)", d.name, err, filepath.Join(d.dir, "log"))
			}
			return nil
		})
	}
	err := g.Wait()
	for _, d := range started {
		if d != nil {
			f.daemons = append(f.daemons, d)
		}
	}
	return err
}

// startDaemon starts bin/observerd number i on every node of the cluster
// (url_order: spread, the default), with five observers of the shared
// bin/observable every fleetInterval, its events into the exchange.
func (f *fleetRun) startDaemon(i int) (*fleetDaemon, error) {
	d := &fleetDaemon{name: fmt.Sprintf("fleet-%03d", i+1)}
	d.dir = filepath.Join(f.dir, d.name)
	for _, sub := range []string{"policies", "plugins"} {
		if err := os.MkdirAll(filepath.Join(d.dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("create daemon dir: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(d.dir, "policies", "web.yaml"), []byte(overheadPolicy(f.target, f.pidFile, fleetInterval)), 0o600); err != nil {
		return nil, fmt.Errorf("write policy: %w", err)
	}
	d.admin = daemonAdmin(fleetAddrBlock, i)
	urls, err := json.Marshal(f.c.URLs())
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`node: %s
policy_dir: %s
plugin_dir: %s
state_dir: %s
allowed_pid_dirs: [%q]
log: {level: warn, format: json}
admin: {listen: %q, socket: ""}
broker:
  urls: %s
  url_order: spread
  password_file: %s
  tls: {ca_file: %q}
  exchange: %s
`, d.name, filepath.Join(d.dir, "policies"), filepath.Join(d.dir, "plugins"), filepath.Join(d.dir, "state"),
		filepath.Dir(f.pidFile), d.admin, urls, f.c.PasswordFile, f.c.CAFile, f.exchange)
	config := filepath.Join(d.dir, "observerd.yaml")
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("write daemon config: %w", err)
	}
	log, err := os.Create(filepath.Join(d.dir, "log"))
	if err != nil {
		return nil, fmt.Errorf("create daemon log: %w", err)
	}
	// The child has its own copy of the descriptor.
	defer log.Close()
	d.cmd = exec.Command(f.bin, "--config", config)
	d.cmd.Stdout, d.cmd.Stderr = log, log
	// A bench that dies takes its fleet with it.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start observerd: %w", err)
	}
	if d.proc, err = procfs.NewProc(d.cmd.Process.Pid); err != nil {
		_ = d.cmd.Process.Kill()
		_ = d.cmd.Wait()
		return nil, fmt.Errorf("read daemon process: %w", err)
	}
	return d, nil
}

func (f *fleetRun) daemonProcs() []procfs.Proc {
	out := make([]procfs.Proc, len(f.daemons))
	for i, d := range f.daemons {
		out[i] = d.proc
	}
	return out
}

// stopDaemons stops the fleet (SIGTERM, all at once) and waits for it,
// killing whatever has not stopped within half a minute.
func (f *fleetRun) stopDaemons() {
	for _, d := range f.daemons {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.AfterFunc(30*time.Second, func() {
		for _, d := range f.daemons {
			_ = d.cmd.Process.Kill()
		}
	})
	defer deadline.Stop()
	for _, d := range f.daemons {
		_ = d.cmd.Wait()
	}
}

// fleetState is the part of a daemon's /v1/state the row reads.
type fleetState struct {
	Broker protocol.BrokerStatus    `json:"broker"`
	Outbox *protocol.OutboxSnapshot `json:"outbox"`
	err    error
}

// states reads every daemon's /v1/state, fleetPolls at a time.
func (f *fleetRun) states(ctx context.Context) []fleetState {
	out := make([]fleetState, len(f.daemons))
	var g errgroup.Group
	g.SetLimit(fleetPolls)
	for i, d := range f.daemons {
		g.Go(func() error {
			out[i] = f.state(ctx, d)
			return nil
		})
	}
	_ = g.Wait()
	return out
}

func (f *fleetRun) state(ctx context.Context, d *fleetDaemon) fleetState {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.admin+"/v1/state", nil)
	if err != nil {
		return fleetState{err: err}
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return fleetState{err: err}
	}
	defer resp.Body.Close()
	var s fleetState
	if resp.StatusCode != http.StatusOK {
		s.err = fmt.Errorf("%s /v1/state: %s", d.name, resp.Status)
		return s
	}
	// A /v1/state of five observers is a few KB; 1 MiB is plenty.
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(&s); err != nil {
		s.err = fmt.Errorf("%s /v1/state: %w", d.name, err)
	}
	return s
}

// byNode counts the connected daemons of states by node.
func (f *fleetRun) byNode(states []fleetState) map[string]int {
	out := map[string]int{}
	for _, s := range states {
		if s.err == nil && s.Broker.Connected {
			out[f.shortNode(s.Broker.URL)]++
		}
	}
	return out
}

// killNode SIGKILLs fleetKillNode under the fleet and follows the daemons
// to their new connections, then restarts the node.
func (f *fleetRun) killNode(ctx context.Context) (fleetKill, error) {
	node := f.c.Nodes[fleetKillNode]
	k := fleetKill{node: fleetKillNode, name: node.Name(), total: len(f.daemons)}
	states := f.states(ctx)
	k.before = f.byNode(states)
	var on []bool
	for _, s := range states {
		if s.err != nil {
			return k, s.err
		}
		on = append(on, s.Broker.Connected && s.Broker.URL == node.URL())
	}
	k.onIt = k.before[f.shortNode(node.URL())]

	// The kill is when a connection of the bench's own to the node sees
	// it go, as the daemons do: Kill first syncs the node's metadata
	// (rabbitmqctl, a second or two), then kills.
	probe, err := node.Dial()
	if err != nil {
		return k, err
	}
	closed := probe.NotifyClose(make(chan *amqp.Error, 1))
	f.say("SIGKILL of %s (rabbit-%d), %d of %d daemons on it", node.Name(), fleetKillNode+1, k.onIt, k.total)
	if err := f.c.Kill(fleetKillNode); err != nil {
		return k, err
	}
	var killed time.Time
	select {
	case <-closed:
		killed = time.Now()
	case <-time.After(10 * time.Second):
		return k, errors.New("the probe connection to the killed node did not close")
	}
	// The probe's own clock reading is taken after the close reached this
	// process; it differs from the daemons' by the scheduling of a
	// goroutine.
	f.consumer.markResume(killed)

	first, moved := make([]time.Time, len(f.daemons)), make([]time.Time, len(f.daemons))
	deadline := killed.Add(fleetReconnectWait)
	var settled time.Time // when the last daemon of the node reconnected
	for {
		states = f.states(ctx)
		waiting := 0
		for i, s := range states {
			if s.err != nil {
				continue
			}
			if s.Outbox != nil {
				k.maxOutbox = max(k.maxOutbox, s.Outbox.Events)
			}
			if s.Broker.Connected && s.Broker.URL != node.URL() && s.Broker.Since.After(killed) {
				moved[i] = s.Broker.Since
				if first[i].IsZero() {
					first[i] = s.Broker.Since
				}
			}
			if on[i] && moved[i].IsZero() {
				waiting++
			}
		}
		now := time.Now()
		if waiting == 0 && settled.IsZero() {
			settled = now
			f.say("the daemons of the killed node connected to other nodes within %s; following them %s more", secs(now.Sub(killed)), whole(fleetSettle))
		}
		if !settled.IsZero() && now.Sub(settled) >= fleetSettle || now.After(deadline) {
			k.stranded = waiting
			break
		}
		if err := sleep(ctx, fleetPollEvery); err != nil {
			return k, err
		}
	}
	k.after = f.byNode(states)
	for i, t := range moved {
		switch {
		case t.IsZero():
		case on[i]:
			k.onItFirst = append(k.onItFirst, first[i].Sub(killed))
			k.onItTook = append(k.onItTook, t.Sub(killed))
		default:
			k.othersTook = append(k.othersTook, t.Sub(killed))
		}
	}
	f.say("restarting %s", node.Name())
	t := time.Now()
	rctx, cancel := context.WithTimeout(ctx, fleetClusterTimeout)
	defer cancel()
	if err := f.c.Restart(rctx, fleetKillNode); err != nil {
		return k, err
	}
	k.restartTook = time.Since(t)
	k.rejoined = f.byNode(f.states(ctx))
	// Read once the node is back, so that a lagging consumer had time:
	// each is the receipt of the first event made after the kill.
	resumed := f.consumer.resumedAfter()
	for i, d := range f.daemons {
		if on[i] {
			if t, ok := resumed[d.name]; ok {
				k.resumed = append(k.resumed, t)
			}
		}
	}
	return k, nil
}

// checkLoss stops the fleet's observations (each daemon's policy file
// removed: its observers stop, its outbox drains), waits until every
// daemon's outbox is empty, reads every daemon's last sequence (the last
// event its outbox accepted: from then on it must be delivered), waits
// until the consumer has read every sequence up to it, then counts the
// sequences missing from 1 to the last of every node, less those
// outbox.overflow reported. A saturated fleet holds a backlog in its
// outboxes: stopping the load first tells events not yet delivered from
// lost ones.
func (f *fleetRun) checkLoss(ctx context.Context) (fleetLoss, error) {
	for _, d := range f.daemons {
		if err := os.Remove(filepath.Join(d.dir, "policies", "web.yaml")); err != nil {
			return fleetLoss{}, fmt.Errorf("stop %s's observations: %w", d.name, err)
		}
	}
	stopped := time.Now()
	deadline := stopped.Add(fleetDrainWait)
	for {
		states := f.states(ctx)
		waiting := 0
		for _, s := range states {
			if s.err != nil || s.Outbox == nil || s.Outbox.Events > 0 {
				waiting++
			}
		}
		if waiting == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fleetLoss{}, fmt.Errorf("%d daemons' outboxes still held events %s after their observations stopped", waiting, whole(fleetDrainWait))
		}
		if err := sleep(ctx, time.Second); err != nil {
			return fleetLoss{}, err
		}
	}
	drained := time.Since(stopped)
	last := map[string]uint64{}
	for i, s := range f.states(ctx) {
		if s.err != nil {
			return fleetLoss{}, s.err
		}
		if s.Outbox == nil {
			return fleetLoss{}, fmt.Errorf("%s: /v1/state without its outbox", f.daemons[i].name)
		}
		last[f.daemons[i].name] = s.Outbox.LastSequence
	}
	deadline = time.Now().Add(fleetDrainWait)
	for !f.consumer.caughtUp(last) && time.Now().Before(deadline) {
		// What is still missing at the deadline is counted as lost.
		if err := sleep(ctx, fleetPollEvery); err != nil {
			return fleetLoss{}, err
		}
	}
	l := f.consumer.loss(last)
	l.drained = drained
	return l, nil
}

// checkFleetLimits checks, and raises where it can, what clients this
// machine must hold: open files (this process and the RabbitMQ nodes it
// starts inherit its limit; a node holds a descriptor per connection)
// and ephemeral ports (a connection to a node, and the tcp observer's
// connection each second, each take one).
func checkFleetLimits(clients int) (fleetLimits, error) {
	var l fleetLimits
	l.noFileNeed = uint64(4*clients + 1024)
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return l, fmt.Errorf("read the open files limit: %w", err)
	}
	if rl.Cur < l.noFileNeed {
		if rl.Max < l.noFileNeed {
			return l, fmt.Errorf("the open files limit is %d (hard); the fleet row of %d clients needs %d: raise it (ulimit -Hn) or lower --fleet-daemons", rl.Max, clients, l.noFileNeed)
		}
		rl.Cur = l.noFileNeed
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return l, fmt.Errorf("raise the open files limit to %d: %w", l.noFileNeed, err)
		}
	}
	l.noFile = rl.Cur
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return l, fmt.Errorf("read the ephemeral port range: %w", err)
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil {
		return l, fmt.Errorf("read the ephemeral port range %q: %w", b, err)
	}
	l.ports = hi - lo + 1
	// A broker connection and an admin connection per client, and the tcp
	// observer's connections in TIME_WAIT (a minute of one a second),
	// with room for everything else.
	l.portsNeed = clients*(2+60) + 1024
	if l.ports < l.portsNeed {
		return l, fmt.Errorf("the ephemeral port range %d-%d has %d ports; the fleet row of %d clients needs about %d: widen net.ipv4.ip_local_port_range or lower --fleet-daemons", lo, hi, l.ports, clients, l.portsNeed)
	}
	return l, nil
}

// sortedNodes lists a count by node in node order.
func sortedNodes(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
