package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// saturatedShare is the share of the clients' events/s below which a
// phase is marked saturated: the machine could not carry the clients
// and the cluster together, so its latencies and costs measure a
// machine out of CPU, not the clients.
const saturatedShare = 0.9

// expected is the events/s the phase's clients make.
func (p fleetPhase) expected() float64 { return float64(p.clients * fleetRate) }

// saturated tells whether the consumer received less than saturatedShare
// of what the clients make.
func (p fleetPhase) saturated() bool {
	return p.clients > 0 && p.window.rate(p.took) < saturatedShare*p.expected()
}

// saturation is a note for a saturated phase, or "".
func (p fleetPhase) saturation() string {
	if !p.saturated() {
		return ""
	}
	return fmt.Sprintf(" **(saturated: %s of the %s events/s made reached the consumer; the machine ran out of CPU)**",
		thousands(p.window.rate(p.took)), thousands(p.expected()))
}

// summary writes row 9's lines of the summary table.
func (r *fleetResult) summary(b *strings.Builder) {
	for i, p := range r.fleet {
		if i >= len(r.baseline) {
			break
		}
		base := r.baseline[i]
		cpu, baseCPU := p.perClient(p.cpuShare(p.clientCPU)), base.perClient(base.cpuShare(base.clientCPU))
		rss, baseRSS := p.perClient(float64(p.clientRSS)), base.perClient(float64(base.clientRSS))
		fmt.Fprintf(b, "| 9 | fleet of %d daemons on a three-node cluster (%s events/s): CPU and RSS per daemon%s | %s of a core, %s | %s of a core, %s per publisher (%d amqp091-go publishers with confirms in one process, as many events/s) | **%s** CPU, **%s** RSS daemon/publisher |\n",
			p.clients, thousands(p.window.rate(p.took)), p.saturation(), percent(cpu), mib(uint64(rss)), percent(baseCPU), mib(uint64(baseRSS)),
			base.clients, ratio(cpu, baseCPU), ratio(rss, baseRSS))
		fmt.Fprintf(b, "| 9 | end-to-end latency, event `time` → the consumer, p50 / p99, %d daemons | %s / %s | %s / %s (the publishers) | **p99 %s** |\n",
			p.clients, ms(percentile(p.window.latencies, 50)), ms(percentile(p.window.latencies, 99)),
			ms(percentile(base.window.latencies, 50)), ms(percentile(base.window.latencies, 99)),
			ratio(percentile(p.window.latencies, 99).Seconds(), percentile(base.window.latencies, 99).Seconds()))
	}
	k := r.kill
	if k.total > 0 {
		fmt.Fprintf(b, "| 9 | SIGKILL of the node holding the queue's leader: its %d daemons (of %d) connected to another node, p50 / p99 / max | first %s / %s / %s; for good %s / %s / %s; %s; %d stranded | – | – |\n",
			k.onIt, k.total, ms(percentile(k.onItFirst, 50)), ms(percentile(k.onItFirst, 99)), ms(maxOf(k.onItFirst)),
			ms(percentile(k.onItTook, 50)), ms(percentile(k.onItTook, 99)), ms(maxOf(k.onItTook)),
			k.deliveringAgain(), k.stranded)
		fmt.Fprintf(b, "| 9 | connections by node: at the kill → settled → node back | %s → %s → %s | – | – |\n",
			sortedNodes(k.before), sortedNodes(k.after), sortedNodes(k.rejoined))
	}
	if len(r.fleet) > 0 && len(r.baseline) > 0 {
		d, base := added(r.before, r.fleet[0]), added(r.idle, r.baseline[0])
		r.costLine(b, fmt.Sprintf("the first %d daemons", d.clients), d, base, r.fleet[0])
	}
	if len(r.fleet) == 2 && len(r.baseline) == 2 {
		d, base := added(r.restarted, r.fleet[1]), added(r.baseline[0], r.baseline[1])
		r.costLine(b, fmt.Sprintf("the %d daemons that join", d.clients), d, base, r.fleet[1])
	}
	l := r.loss
	fmt.Fprintf(b, "| 9 | sequences lost, every node's 1..last checked (less outbox.overflow ranges) | **%d** of %s events from %d nodes (daemons and publishers); %d duplicates | – | – |\n",
		l.lost, thousands(float64(l.events)), l.nodes, l.duplicates)
}

// costLine writes a summary line of what each daemon of some costs the
// cluster, against as many publishers; to is the phase they were
// measured in.
func (r *fleetResult) costLine(b *strings.Builder, some string, d, base addedCost, to fleetPhase) {
	fmt.Fprintf(b, "| 9 | what each of %s costs the cluster: CPU, memory (erlang:memory), connections, channels%s | %s of a core, %s, %.2f, %.2f | %s of a core, %s, %.2f, %.2f per added publisher | **%s** CPU, **%s** memory |\n",
		some, to.saturation(), percent(d.brokerCPU), signedMiB(int64(d.brokerMemory)), d.connections, d.channels,
		percent(base.brokerCPU), signedMiB(int64(base.brokerMemory)), base.connections, base.channels,
		ratio(d.brokerCPU, base.brokerCPU), ratio(d.brokerMemory, base.brokerMemory))
}

// addedCost is what each client added between two phases cost the
// broker.
type addedCost struct {
	clients      int
	brokerCPU    float64 // share of a core
	brokerMemory float64 // bytes
	brokerRSS    float64
	connections  float64
	channels     float64
}

func added(from, to fleetPhase) addedCost {
	n := to.clients - from.clients
	if n <= 0 {
		return addedCost{}
	}
	per := func(a, b float64) float64 { return (b - a) / float64(n) }
	return addedCost{
		clients:      n,
		brokerCPU:    per(from.cpuShare(from.brokerCPU), to.cpuShare(to.brokerCPU)),
		brokerMemory: per(float64(from.brokerMemory), float64(to.brokerMemory)),
		brokerRSS:    per(float64(from.brokerRSS), float64(to.brokerRSS)),
		connections:  per(float64(from.connectionCount()), float64(to.connectionCount())),
		channels:     per(float64(from.channels), float64(to.channels)),
	}
}

// rate is the window's events per second.
func (w consumerWindow) rate(took time.Duration) float64 {
	if took <= 0 {
		return 0
	}
	return float64(len(w.latencies)) / took.Seconds()
}

func maxOf(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return slices.Max(ds)
}

// details writes row 9's section.
func (r *fleetResult) details(b *strings.Builder) {
	b.WriteString("\n#### 9. The fleet\n\n")
	fmt.Fprintf(b, "A three-node RabbitMQ cluster of its own (test/rabbitmq.StartCluster: a loopback address, TLS listener and certificate per node; "+
		"up in %s), one durable quorum queue bound `#` declared through rabbit-1 (so its leader is there) with a member on every node, "+
		"and one consumer on rabbit-2 (prefetch %d, acks every %d) reading every event. bin/observerd processes, each with its own node name, "+
		"state_dir and admin listener, `broker.urls` every node with `url_order: spread`, one policy of five observers of one shared "+
		"bin/observable every %s (http ×2, prometheus, tcp, process: the overhead row's policy), log level warn; started %d at a time, each "+
		"waited for until ready. Phases are measured over %s windows after %s of warm-up: the clients' CPU (utime+stime deltas) and RSS from "+
		"/proc, the RabbitMQ VMs' likewise, erlang:memory(total) summed over the nodes, `rabbitmqctl list_connections` by node, and the "+
		"consumer's latency of every event received in the window (its receipt minus the event's `time`, one clock). The baseline is as many "+
		"amqp091-go publishers in one process (this program again), each with its own TLS connection (round the nodes) and confirms, "+
		"publishing a %d-byte observation event every %s and waiting for its confirm, into the same exchange and queue.\n\n",
		secs(r.clusterUp), fleetPrefetch, fleetAckEvery, whole(fleetInterval), fleetStartBatch, whole(r.window), whole(fleetWarmup),
		eventBytes(), whole(time.Second/fleetRate))
	b.WriteString("| phase | clients | events/s at the consumer (mean bytes) | latency p50 / p99 / max | clients' CPU, per client | clients' RSS, per client | broker CPU (3 VMs) | broker RSS | erlang:memory | connections by node (channels) |\n|---|---|---|---|---|---|---|---|---|---|\n")
	row := func(name string, p fleetPhase) {
		lat, mean := "–", "–"
		if n := len(p.window.latencies); n > 0 {
			lat = fmt.Sprintf("%s / %s / %s", ms(percentile(p.window.latencies, 50)), ms(percentile(p.window.latencies, 99)), ms(maxOf(p.window.latencies)))
			mean = thousands(float64(p.window.bytes) / float64(n))
		}
		clients, rss := "–", "–"
		if p.clients > 0 {
			clients = fmt.Sprintf("%s, %s", percent(p.cpuShare(p.clientCPU)), percent(p.perClient(p.cpuShare(p.clientCPU))))
			rss = fmt.Sprintf("%s, %s", mib(p.clientRSS), mib(uint64(p.perClient(float64(p.clientRSS)))))
		}
		conns := "–"
		if p.connections != nil {
			conns = fmt.Sprintf("%s (%d)", sortedNodes(p.connections), p.channels)
		}
		if p.saturated() {
			name += " (saturated)"
		}
		fmt.Fprintf(b, "| %s | %d | %s (%s) | %s | %s | %s | %s | %s | %s | %s |\n", name, p.clients, thousands(p.window.rate(p.took)), mean, lat,
			clients, rss, percent(p.cpuShare(p.brokerCPU)), mib(p.brokerRSS), mib(p.brokerMemory), conns)
	}
	row("idle cluster (queue, consumer)", r.idle)
	for _, p := range r.baseline {
		row(fmt.Sprintf("baseline: %d publishers", p.clients), p)
	}
	row("idle again, the baseline gone", r.before)
	for i, p := range r.fleet {
		if i == 1 {
			row(fmt.Sprintf("%d daemons, the killed node back (%s)", r.restarted.clients, whole(r.restarted.took.Round(time.Second))), r.restarted)
		}
		row(fmt.Sprintf("**%d daemons**", p.clients), p)
	}
	b.WriteString("\nThe clients' CPU share is of one core over the window (200 % = both cores of this machine); the broker's is the three VMs together. The daemons' events are larger than the baseline's (the prometheus observation carries the scraped values; mean bytes in the table). ")
	fmt.Fprintf(b, "A phase is *saturated* when less than %s of the events/s its clients make (%d each) reached the consumer: the clients, the three nodes and the consumer share this machine's cores, and a saturated phase measures a machine out of CPU (events queue in the daemons, their observations time out), not what a client costs. ", percent(saturatedShare), fleetRate)
	if len(r.started) == 2 {
		fmt.Fprintf(b, "Starting the first %d daemons took %s, the %d that joined %s (each until ready). ", r.daemons, secs(r.started[0]), r.daemons, secs(r.started[1]))
	}
	b.WriteString("\n")
	if len(r.fleet) == 2 && len(r.baseline) == 2 {
		d, base := added(r.restarted, r.fleet[1]), added(r.baseline[0], r.baseline[1])
		first, basefirst := added(r.before, r.fleet[0]), added(r.idle, r.baseline[0])
		b.WriteString("\n| each client added costs the cluster | CPU (share of a core) | erlang:memory | VM RSS | connections | channels |\n|---|---|---|---|---|---|\n")
		for _, c := range []struct {
			name string
			a    addedCost
		}{
			{fmt.Sprintf("daemon, the first %d (over the cluster idle again)", first.clients), first},
			{fmt.Sprintf("daemon, the %d that joined (over the fleet with the node back)", d.clients), d},
			{fmt.Sprintf("baseline publisher, the first %d (over the idle cluster)", basefirst.clients), basefirst},
			{fmt.Sprintf("baseline publisher, %d more", base.clients), base},
		} {
			fmt.Fprintf(b, "| %s | %s | %s | %s | %.2f | %.2f |\n", c.name, percent(c.a.brokerCPU), signedMiB(int64(c.a.brokerMemory)),
				signedMiB(int64(c.a.brokerRSS)), c.a.connections, c.a.channels)
		}
	}
	k := r.kill
	if k.total > 0 {
		b.WriteString("\n| SIGKILL of rabbit-1 (the queue's leader) under the fleet | |\n|---|---|\n")
		fmt.Fprintf(b, "| daemons on it / running | %d / %d |\n", k.onIt, k.total)
		fmt.Fprintf(b, "| connections by node at the kill (the daemons' /v1/state) | %s |\n", sortedNodes(k.before))
		fmt.Fprintf(b, "| its daemons: kill → first connected to another node (broker.since of /v1/state), p50 / p99 / max of %d | %s / %s / %s |\n",
			len(k.onItFirst), ms(percentile(k.onItFirst, 50)), ms(percentile(k.onItFirst, 99)), ms(maxOf(k.onItFirst)))
		fmt.Fprintf(b, "| its daemons: kill → their last connection, after giving up any whose publications were all nacked for 3 s, p50 / p99 / max of %d | %s / %s / %s |\n",
			len(k.onItTook), ms(percentile(k.onItTook, 50)), ms(percentile(k.onItTook, 99)), ms(maxOf(k.onItTook)))
		fmt.Fprintf(b, "| its daemons: kill → the consumer's receipt of their first event made after the kill, p50 / p99 / max of %d | %s / %s / %s |\n",
			len(k.resumed), ms(percentile(k.resumed, 50)), ms(percentile(k.resumed, 99)), ms(maxOf(k.resumed)))
		fmt.Fprintf(b, "| daemons on the other nodes that changed connection too (publications nacked or unconfirmed for 3 s), and when | %d: %s |\n",
			len(k.othersTook), durations(k.othersTook))
		all := append(slices.Clone(k.onItTook), k.othersTook...)
		fmt.Fprintf(b, "| every daemon that reconnected (last connection), p50 / p99 / max of %d | %s / %s / %s |\n", len(all), ms(percentile(all, 50)), ms(percentile(all, 99)), ms(maxOf(all)))
		fmt.Fprintf(b, "| stranded (not reconnected within %s) | %d |\n", whole(fleetReconnectWait), k.stranded)
		fmt.Fprintf(b, "| connections by node once settled (%s after the last of its daemons) | %s |\n", whole(fleetSettle), sortedNodes(k.after))
		fmt.Fprintf(b, "| most events waiting in one daemon's outbox meanwhile | %d |\n", k.maxOutbox)
		fmt.Fprintf(b, "| restart of the node, until the cluster and every queue member are whole again | %s |\n", secs(k.restartTook))
		fmt.Fprintf(b, "| connections by node with the node back | %s |\n", sortedNodes(k.rejoined))
		if len(r.fleet) == 2 {
			fmt.Fprintf(b, "| connections by node once %d more daemons joined | %s |\n", r.fleet[1].clients-r.fleet[0].clients, sortedNodes(r.fleet[1].connections))
		}
		b.WriteString("\nThe kill's time is when a connection of the bench's own to rabbit-1 saw it close (`Cluster.Kill` first syncs the node's metadata, then SIGKILLs it).\n")
	}
	l := r.loss
	fmt.Fprintf(b, "\nAt the end, the fleet's observations were stopped (each daemon's policy file removed) and every daemon's outbox emptied, in %s; "+
		"then every daemon's last accepted sequence was read from its /v1/state (the outbox's `last_sequence`: every event up to it "+
		"must be delivered), and the consumer was waited for (at most %s) until it held every sequence up to it. Of %s events from %d nodes, "+
		"**%d** sequences were missing (of 1..last per node, less %d reported dropped by outbox.overflow); %d duplicates were received.",
		secs(l.drained), whole(fleetDrainWait), thousands(float64(l.events)), l.nodes, l.lost, l.overflow, l.duplicates)
	if len(l.lostNodes) > 0 {
		fmt.Fprintf(b, " Notes: %s.", strings.Join(l.lostNodes, "; "))
	}
	fmt.Fprintf(b, " The row took %s. Limits checked first: open files %d (needed %d, raised when lower), ephemeral ports %d (needed about %d).\n",
		secs(r.took), r.limits.noFile, r.limits.noFileNeed, r.limits.ports, r.limits.portsNeed)
}

// durations lists a few durations, sorted.
func durations(ds []time.Duration) string {
	if len(ds) == 0 {
		return "–"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var parts []string
	for i, d := range s {
		if i == 10 {
			parts = append(parts, fmt.Sprintf("… (%d more)", len(s)-i))
			break
		}
		parts = append(parts, ms(d))
	}
	return strings.Join(parts, ", ")
}

// eventBytes is the size of the baseline's events.
func eventBytes() int {
	msg, err := publishing(event(1))
	if err != nil {
		return 0
	}
	return len(msg.Body)
}

// deliveringAgain says when the consumer received the first event made
// after the kill of each daemon that was on the node, over those it did
// by the time the node was back: a consumer that lags (a loaded machine)
// may receive none of them by then, which is said, not shown as zero.
func (k *fleetKill) deliveringAgain() string {
	const what = "delivering again (the consumer's first event of theirs made after the kill)"
	if len(k.resumed) == 0 {
		return fmt.Sprintf("%s: none of the %d received before the node was back (the consumer lagged)", what, k.onIt)
	}
	some := ""
	if len(k.resumed) < k.onIt {
		some = fmt.Sprintf(", %d of %d received before the node was back", len(k.resumed), k.onIt)
	}
	return fmt.Sprintf("%s %s / %s / %s%s", what, ms(percentile(k.resumed, 50)), ms(percentile(k.resumed, 99)), ms(maxOf(k.resumed)), some)
}
