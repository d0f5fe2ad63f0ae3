package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

type results struct {
	cfg        config
	machine    machine
	took       time.Duration
	rowTimes   []rowTime
	group      []groupResult
	throughput *throughputResult
	outage     *outageResult
	memory     *memoryResult
	reload     *reloadResult
	overhead   *overheadResult
	plugins    *pluginsResult
	control    *controlResult
	fleet      *fleetResult
	scale      *scaleResult
	// perObservation is row 13.
	perObservation *perObservationResult
	// pluginFleet is row 14.
	pluginFleet *pluginFleetResult
}

// rowTime is how long a row (or rows measured together) took.
type rowTime struct {
	rows string
	took time.Duration
}

// markdown renders the results: a summary table (one line per row, each
// against its baseline) and the details behind each line.
func (r *results) markdown() string {
	var b strings.Builder
	m := r.machine
	fmt.Fprintf(&b, "Measured on %s with `go run ./test/bench %s` (%s in all).\n\n",
		m.date.Format("2006-01-02 15:04 MST"), r.cfg.flags(), r.took.Round(time.Second))
	if len(r.rowTimes) > 1 {
		parts := make([]string, len(r.rowTimes))
		for i, t := range r.rowTimes {
			parts[i] = fmt.Sprintf("%s %s", t.rows, t.took.Round(time.Second))
		}
		fmt.Fprintf(&b, "Time per row: %s.\n\n", strings.Join(parts, ", "))
	}
	b.WriteString("| machine | |\n|---|---|\n")
	fmt.Fprintf(&b, "| CPU | %s, %d cores |\n", m.cpu, m.cores)
	fmt.Fprintf(&b, "| memory | %s |\n", m.memory)
	fmt.Fprintf(&b, "| kernel | %s |\n", orUnknown(m.kernel))
	fmt.Fprintf(&b, "| Go | %s |\n", m.goVer)
	fmt.Fprintf(&b, "| RabbitMQ | %s, %s, one node on loopback, TLS |\n", orUnknown(m.rabbitmq), orUnknown(m.erlang))
	fmt.Fprintf(&b, "| observerd source | %s |\n", orUnknown(m.revision))
	fmt.Fprintf(&b, "| load average (1, 5, 15 min) | %s at the start, %s at the end |\n", orUnknown(m.loadStart), orUnknown(m.loadEnd))
	b.WriteString("\n")

	b.WriteString("| # | measurement | observerd (broker actor) | baseline | ratio |\n|---|---|---|---|---|\n")
	if t := r.throughput; t != nil {
		a, raw := median(t.actor), median(t.raw)
		fmt.Fprintf(&b, "| 1 | pipeline throughput, events/s, median of %d | %s | %s (amqp091-go, confirms, window %d) | **%s** actor/baseline (goal ≥ 0.9) |\n",
			len(t.actor), thousands(a), thousands(raw), r.cfg.window, ratio(a, raw))
	}
	if o := r.outage; o != nil {
		fmt.Fprintf(&b, "| 2 | outage recovery: Restart returned → outbox empty | %s (%s events waiting after a %s outage; reconnected after %s) | %s (raw publisher, as many events, empty broker) | **%s** recovery/baseline |\n",
			secs(o.recovery), thousands(float64(o.accumulated)), whole(o.outage), secs(o.reconnect), secs(o.baseline.took),
			ratio(o.recovery.Seconds(), o.baseline.took.Seconds()))
	}
	if mr := r.memory; mr != nil && len(mr.samples) > 0 {
		first, last := mr.samples[0], mr.samples[len(mr.samples)-1]
		fmt.Fprintf(&b, "| 3 | memory: RSS growth from 25 %% to 100 %% of a %s outage | %s (%s → %s), of which anonymous %s and file-backed %s; %s events waiting at the end | %s RSS before the outage (anonymous %s) | **%s** RSS at 100 %%/before (anonymous: %s) |\n",
			whole(mr.outage), signedMiB(int64(last.proc.rss)-int64(first.proc.rss)), mib(first.proc.rss), mib(last.proc.rss),
			signedMiB(int64(last.proc.anon)-int64(first.proc.anon)), signedMiB(int64(last.proc.file)-int64(first.proc.file)),
			thousands(float64(last.outbox)), mib(mr.before.proc.rss), mib(mr.before.proc.anon),
			ratio(float64(last.proc.rss), float64(mr.before.proc.rss)), ratio(float64(last.proc.anon), float64(mr.before.proc.anon)))
	}
	if rl := r.reload; rl != nil {
		fmt.Fprintf(&b, "| 4 | policy reload: rename into policy_dir → first event of the new observer, p50 / p99 of %d | %s / %s (debounce 100 ms included) | %s / %s (fsnotify alone) | **p99 %s** (goal ≤ 250 ms) |\n",
			len(rl.latencies), ms(percentile(rl.latencies, 50)), ms(percentile(rl.latencies, 99)),
			ms(percentile(rl.baseline, 50)), ms(percentile(rl.baseline, 99)), ms(percentile(rl.latencies, 99)))
		bu := rl.burst
		fmt.Fprintf(&b, "| 5 | a burst of %s in-place writes of a policy: daemon CPU until the last version runs | %s CPU over %s (%d policy.applied) | %s CPU of the writer writing them | **%s** daemon/writer |\n",
			thousands(float64(bu.writes)), ms(bu.cpu), secs(bu.took), bu.applied, ms(bu.writeCPU), ratio(bu.cpu.Seconds(), bu.writeCPU.Seconds()))
	}
	if o := r.overhead; o != nil {
		obs, alone := sumRate(o.pairs, true), sumRate(o.pairs, false)
		share := o.daemonCPU.Seconds() / o.observedIn.Seconds()
		fmt.Fprintf(&b, "| 6 | service overhead: bin/observable's requests/s under load, %d pairs of %s segments | %s observed by five observers of all four kinds every %s (observerd: %s of the service's core, RSS %s) | %s alone (observerd frozen) | **%s** observed/alone (pairs: %s); %.3f = 1 − observerd's share of the core (goal ≥ 0.99) |\n",
			len(o.pairs), whole(r.cfg.loadTime), thousands(obs), whole(o.interval), percent(share),
			mib(o.daemonRSS), thousands(alone), ratio(obs, alone), pairVerdict(o.pairs, 0.99), 1-share)
	}
	if p := r.plugins; p != nil {
		fmt.Fprintf(&b, "| 7 | plugin per call: %s through the observer actor (ObserveNow → observation), median of %d rounds of %d | %s (wasm kind) | %s (http kind, `extract: [/backlog]`, same endpoint) | **%s** plugin/built-in |\n",
			p.module, p.rounds, p.calls, us(p.actorPluginCall()), us(p.actorBuiltinCall()),
			ratio(p.actorPluginCall().Seconds(), p.actorBuiltinCall().Seconds()))
		fmt.Fprintf(&b, "| 7 | plugin host per-call overhead: an empty observe in a warm instance, median of %d rounds of %s | %s | %s (%s on the host alone, per call) | **%s** of the plugin's call |\n",
			len(p.empty), thousands(float64(p.emptyCalls)), us(p.emptyCall()), us(p.hostPluginCall()), p.module,
			percent(p.emptyCall().Seconds()/p.hostPluginCall().Seconds()))
		fmt.Fprintf(&b, "| 7 | cold start of a Go plugin (fresh host, `Check`: compile, validate, instantiate), median of %d | %s (warm compilation cache) | %s (empty cache: compiled) | **%s** cached/compiled |\n",
			len(p.cold), ms(medianDuration(p.warm)), ms(medianDuration(p.cold)),
			ratio(medianDuration(p.warm).Seconds(), medianDuration(p.cold).Seconds()))
		rss, anon := p.perInstance()
		fmt.Fprintf(&b, "| 7 | instantiate a compiled Go plugin; RSS per warm instance (%d instances) | %s; %s (anonymous %s) | – | – |\n",
			len(p.firstObserve), ms(p.instantiate()), signedMiB(rss), signedMiB(anon))
	}
	if c := r.control; c != nil {
		for _, f := range c.fleets {
			fmt.Fprintf(&b, "| 8 | command round trip: `observerctl remote status` to every answer, %d daemon(s), p50 / p99 of %d | %s / %s (a process started each time; RSS %s per daemon) | %s / %s (raw amqp091-go RPC, TLS login included, to %d responders in-process) | **p99 %s** ctl/raw |\n",
				f.daemons, len(f.ctl), ms(percentile(f.ctl, 50)), ms(percentile(f.ctl, 99)), mib(f.rss),
				ms(percentile(f.baseline, 50)), ms(percentile(f.baseline, 99)), f.daemons,
				ratio(percentile(f.ctl, 99).Seconds(), percentile(f.baseline, 99).Seconds()))
		}
	}
	if f := r.fleet; f != nil {
		f.summary(&b)
	}
	if s := r.scale; s != nil {
		s.summary(&b, r.cfg)
	}
	if p := r.perObservation; p != nil {
		p.summary(&b)
	}
	if f := r.pluginFleet; f != nil {
		f.summary(&b)
	}
	if len(r.group) >= 2 {
		one, top := r.group[0], r.group[len(r.group)-1]
		fmt.Fprintf(&b, "| – | fsync group commit: outbox Append, events/s | %s (%d per transaction) | %s (1 per transaction) | **%s×** |\n",
			thousands(top.eventsPerSecond()), top.size, thousands(one.eventsPerSecond()),
			strconv.FormatFloat(top.eventsPerSecond()/one.eventsPerSecond(), 'f', 0, 64))
	}

	if t := r.throughput; t != nil {
		b.WriteString("\n#### 1. Pipeline throughput, every run\n\n")
		fmt.Fprintf(&b, "%s events per run, %d-byte protobuf bodies plus CloudEvents headers, persistent, mandatory, "+
			"one fresh durable quorum queue bound `#` per run (deleted afterwards). Runs alternate, swapping which side goes first.\n\n",
			thousands(float64(r.cfg.events)), t.actor[0].bytes)
		b.WriteString("| run | broker actor, events/s | its outbox write transactions (events per transaction) | its CPU per event | baseline, events/s | baseline CPU per event | ratio |\n|---|---|---|---|---|---|---|\n")
		for i := range t.actor {
			a, raw := t.actor[i], t.raw[i]
			fmt.Fprintf(&b, "| %d | %s (%s) | %s (%.1f) | %.0f µs | %s (%s) | %.0f µs | %s |\n", i+1,
				thousands(a.rate()), secs(a.took), thousands(float64(a.commits)), perCommit(a), a.cpuPerEvent(),
				thousands(raw.rate()), secs(raw.took), raw.cpuPerEvent(), ratio(a.rate(), raw.rate()))
		}
		b.WriteString("\nCPU per event is this process's user and system time over the timed run divided by its events " +
			"(the baseline's messages are prepared before its timing starts; the actor encodes, stores and reads back inside it).\n")
	}
	if o := r.outage; o != nil {
		b.WriteString("\n#### 2. Outage recovery, timeline\n\n")
		fmt.Fprintf(&b, "| step | |\n|---|---|\n")
		fmt.Fprintf(&b, "| steady producer | %d events/s into the broker actor, %s before the stop |\n", r.cfg.rate, whole(r.cfg.warmup))
		fmt.Fprintf(&b, "| graceful stop of the node (`node.Stop`) | %s |\n", secs(o.stopTook))
		fmt.Fprintf(&b, "| outage, Stop called → Restart called | %s |\n", secs(o.outage))
		fmt.Fprintf(&b, "| boot (`node.Restart` until it accepts clients) | %s |\n", secs(o.restartTook))
		fmt.Fprintf(&b, "| events produced from Stop to Restart returned | %s |\n", thousands(float64(o.produced)))
		fmt.Fprintf(&b, "| events in the outbox when Restart returned | %s |\n", thousands(float64(o.accumulated)))
		fmt.Fprintf(&b, "| actor reconnected, after Restart returned | %s |\n", secs(o.reconnect))
		fmt.Fprintf(&b, "| outbox empty, after Restart returned | **%s** (of which %s after the reconnect) |\n",
			secs(o.recovery), secs(o.recovery-max(0, o.reconnect)))
		runs := make([]string, len(o.baselines))
		for i, m := range o.baselines {
			runs[i] = secs(m.took)
		}
		fmt.Fprintf(&b, "| baseline: raw publisher, %s events, empty broker (runs: %s) | median %s (%s events/s) |\n",
			thousands(float64(o.baseline.events)), strings.Join(runs, ", "), secs(o.baseline.took), thousands(o.baseline.rate()))
		fmt.Fprintf(&b, "| drain after the reconnect / baseline | %s |\n",
			ratio((o.recovery-max(0, o.reconnect)).Seconds(), o.baseline.took.Seconds()))
		fmt.Fprintf(&b, "| outbox write transactions in the whole row | %s |\n", thousands(float64(o.commits)))
	}
	if mr := r.memory; mr != nil {
		b.WriteString("\n#### 3. Memory during the outage\n\n")
		fmt.Fprintf(&b, "Producer at %d events/s throughout; RSS of this process (broker actor, producer and measuring code together) from /proc/self/status.\n\n", r.cfg.rate)
		b.WriteString("| point | into the outage | VmRSS | RssAnon | RssFile | Go heap in use | outbox events | outbox bytes |\n|---|---|---|---|---|---|---|---|\n")
		row := func(name string, s memSample) {
			at := "–"
			if s.fraction > 0 {
				at = secs(s.at)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", name, at, mib(s.proc.rss), mib(s.proc.anon), mib(s.proc.file),
				mib(s.heap), thousands(float64(s.outbox)), mib(uint64(s.outboxB)))
		}
		row("before (baseline)", mr.before)
		for _, s := range mr.samples {
			row(fmt.Sprintf("%.0f %%", s.fraction*100), s)
		}
		fmt.Fprintf(&b, "\nPeak VmRSS during the outage (sampled every 100 ms): %s. VmHWM of the process at the end (whole run, throughput rows included): %s. "+
			"Events produced from Stop to Restart returned: %s; the actor reconnected %s and the outbox was empty %s after Restart returned; %s outbox write transactions in the row.\n",
			mib(mr.peakRSS), mib(mr.hwm), thousands(float64(mr.produced)), secs(mr.reconnect), secs(mr.drain), thousands(float64(mr.commits)))
	}
	if rl := r.reload; rl != nil {
		b.WriteString("\n#### 4 and 5. Policy reload\n\n")
		b.WriteString("bin/observerd against the same node; a policy with one http observer; each change renames a new version " +
			"(another interval) into policy_dir, waits for its observer.started event on a queue, and takes the event's own time " +
			"minus the time of the rename (publishing is not counted). The daemon's defaults: debounce 100 ms, at most 1 s under a stream.\n\n")
		b.WriteString("| latency | min | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|\n")
		for _, row := range []struct {
			name string
			ds   []time.Duration
		}{{"rename → observer.started", rl.latencies}, {"rename → fsnotify event (baseline)", rl.baseline}} {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", row.name, ms(slices.Min(row.ds)), ms(percentile(row.ds, 50)),
				ms(percentile(row.ds, 90)), ms(percentile(row.ds, 99)), ms(slices.Max(row.ds)))
		}
		bu := rl.burst
		fmt.Fprintf(&b, "\nBurst: %s `os.WriteFile`s of the policy in place (truncate and write), as fast as this process can "+
			"(its own CPU for them: %s); the last version's observer started %s after the first write; the daemon applied %d version(s) "+
			"and spent %s CPU, against %s over as long a quiet period right after (CPU times have the kernel's 10 ms tick).\n",
			thousands(float64(bu.writes)), ms(bu.writeCPU), secs(bu.took), bu.applied, ms(bu.cpu), ms(bu.idleCPU))
	}
	if o := r.overhead; o != nil {
		b.WriteString("\n#### 6. Service overhead, every pair\n\n")
		fmt.Fprintf(&b, "bin/observable on loopback; the load generator (this process) keeps %d keep-alive connections busy with `GET /api/status`. "+
			"bin/observerd observes it with one policy of five observers every %s (http /healthz, http /api/status with two JSON values, "+
			"prometheus /metrics, tcp, process by pid file), its events published to the node and consumed. Segments of %s alternate between "+
			"the daemon frozen (SIGSTOP: the service alone) and running (SIGCONT: observed), swapping which comes first in each pair. "+
			"Where the machine has two CPUs or more, the service and observerd share CPU 0, as they share a host; the load generator and "+
			"RabbitMQ, remote in a deployment, run on the others.\n\n", loadWorkers, whole(o.interval), whole(r.cfg.loadTime))
		b.WriteString("| pair | alone, requests/s | its service CPU | observed, requests/s | its service CPU | observed/alone |\n|---|---|---|---|---|---|\n")
		for i, p := range o.pairs {
			fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %.3f |\n", i+1, thousands(p.alone.rate()), percent(p.alone.serviceShare()),
				thousands(p.observed.rate()), percent(p.observed.serviceShare()), p.ratio())
		}
		fmt.Fprintf(&b, "\nobserverd over the observed segments: %s CPU in %s (%s of a core); RSS %s at the end. "+
			"The pairs' spread is this machine's noise (the service's throughput moves by several per cent from one second to the next "+
			"with nothing changed); the daemon's CPU is the steadier measure of what it takes from a saturated service on its core.\n",
			ms(o.daemonCPU), secs(o.observedIn), percent(o.daemonCPU.Seconds()/o.observedIn.Seconds()), mib(o.daemonRSS))
	}
	if p := r.plugins; p != nil {
		b.WriteString("\n#### 7. Plugins\n\n")
		fmt.Fprintf(&b, "The plugin host (`wasm`) in this process, close-on-context-done on as the daemon always runs it. %s (%s KiB, the SDK) "+
			"with `{\"threshold\": 100}` and an empty guest (`wasm/testdata/empty`, raw ABI, %s KiB, built in %s) against an httptest "+
			"server on loopback serving a JSON status (backlog 150). Per-call figures are the mean of a round's calls in a warm instance; "+
			"rounds alternate between the two sides after one unmeasured round each; the median round is reported.\n\n",
			p.module, thousands(float64(p.moduleSize>>10)), thousands(float64(p.emptySize>>10)), secs(p.built))
		b.WriteString("| per call | rounds | min | median | max |\n|---|---|---|---|---|\n")
		for _, row := range []struct {
			name string
			ds   []time.Duration
		}{
			{"observer actor, wasm kind: " + p.module, p.actorPlugin},
			{"observer actor, http kind: `extract: [/backlog]`", p.actorBuiltin},
			{"host alone: `Plugin.Observe` of " + p.module, p.hostPlugin},
			{"host alone, baseline: net/http GET + JSON decode + lookup", p.hostBaseline},
			{"host alone: `Plugin.Observe` of the empty guest", p.empty},
		} {
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s |\n", row.name, len(row.ds), us(slices.Min(row.ds)), us(medianDuration(row.ds)), us(slices.Max(row.ds)))
		}
		fmt.Fprintf(&b, "\nOn the host alone, the plugin takes **%s×** the baseline's time per call. The empty observe (encode the request, "+
			"`polar_alloc`, write it, `polar_observe` returning 0) is %s of it: the rest is the plugin's own work, in the guest (the SDK's "+
			"protobuf, the Go guest's runtime and collector, each loop paying close-on-context-done's check) and its `http_request` "+
			"(a net/http round trip, and the JSON lookup the host makes for it, `HttpRequest.extract`).\n\n",
			ratio(p.hostPluginCall().Seconds(), p.hostBaselineCall().Seconds()), percent(p.emptyCall().Seconds()/p.hostPluginCall().Seconds()))
		b.WriteString("| start-up | runs | min | median | max |\n|---|---|---|---|---|\n")
		for _, row := range []struct {
			name string
			ds   []time.Duration
		}{
			{"`NewHost` (runtime, WASI and `polar` host modules)", p.newHost},
			{"`Check` on a fresh host, empty compilation cache", p.cold},
			{"`Check` on a fresh host, warm compilation cache", p.warm},
			{"`NewPlugin` of a compiled module (read and hash the file)", p.newPlugin},
			{"its first `Observe` (instantiate, `_initialize`, one call)", p.firstObserve},
		} {
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s |\n", row.name, len(row.ds), ms(slices.Min(row.ds)), ms(medianDuration(row.ds)), ms(slices.Max(row.ds)))
		}
		rss, anon := p.perInstance()
		fmt.Fprintf(&b, "\nInstantiate ≈ first `Observe` − a warm call = %s. Memory of this process (after a GC returning what it can) "+
			"around %d further instances kept warm after one call each: VmRSS %s → %s (RssAnon %s → %s), %s per instance "+
			"(anonymous %s); %s after closing them (the allocator unmaps an instance's memory at once). "+
			"Close-on-context-done costs a few µs per call and ~10x on loop-heavy guests, nothing at instantiation "+
			"(wasm/doc.go; `go test -run '^$' -bench . ./wasm/` measures it with and without).\n",
			ms(p.instantiate()), len(p.firstObserve), mib(p.rssBefore.rss), mib(p.rssAfter.rss), mib(p.rssBefore.anon), mib(p.rssAfter.anon),
			signedMiB(rss), signedMiB(anon), mib(p.rssClosed.rss))
	}
	if f := r.fleet; f != nil {
		f.details(&b)
	}
	if s := r.scale; s != nil {
		s.details(&b, r.cfg)
	}
	if f := r.pluginFleet; f != nil {
		f.details(&b)
	}
	if len(r.group) > 0 {
		b.WriteString("\n#### fsync group commit: the outbox alone\n\n")
		fmt.Fprintf(&b, "`broker.OpenOutbox` + `Append` in a loop for %s per size, no actor, no network.\n\n", whole(r.cfg.groupTime))
		b.WriteString("| events per Append | transactions | events/s | time per transaction |\n|---|---|---|---|\n")
		for _, g := range r.group {
			fmt.Fprintf(&b, "| %d | %s | %s | %s |\n", g.size, thousands(float64(g.commits)), thousands(g.eventsPerSecond()),
				g.commitLatency().Round(10*time.Microsecond))
		}
	}
	return b.String()
}

// flags renders the settings of the run as the flags that reproduce it.
func (c config) flags() string {
	return fmt.Sprintf("--rows %s --events %d --runs %d --window %d --rate %d --outage %s --mem-outage %s --group-time %s --load-time %s --pairs %d --overhead-interval %s --plugin-calls %d --fleet-daemons %d --fleet-join %d --fleet-window %s --scale-policies %d --scale-interval %s --scale-window %s --scale-pairs %d --scale-reloads %d --per-observation-window %s",
		c.rowsString, c.events, c.runs, c.window, c.rate, c.outage, c.memOutage, c.groupTime, c.loadTime, c.pairs, c.overheadInterval, c.pluginCalls, c.fleetDaemons, c.fleetJoin, c.fleetWindow,
		c.scalePolicies, c.scaleInterval, c.scaleWindow, c.scalePairs, c.scaleReloads, c.perObsWindow)
}

// sumRate is the requests per second over all the pairs' observed (or
// alone) segments.
func sumRate(pairs []loadPair, observed bool) float64 {
	var n int64
	var took time.Duration
	for _, p := range pairs {
		r := p.alone
		if observed {
			r = p.observed
		}
		n += r.requests
		took += r.took
	}
	return float64(n) / took.Seconds()
}

func percent(f float64) string { return fmt.Sprintf("%.1f %%", f*100) }

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func secs(d time.Duration) string {
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// whole renders a configured duration for prose: "30 s", "500 ms".
func whole(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%d ms", d.Milliseconds())
	}
	return fmt.Sprintf("%g s", d.Round(100*time.Millisecond).Seconds())
}

func signedMiB(delta int64) string {
	return fmt.Sprintf("%+.1f MiB", float64(delta)/(1<<20))
}

// thousands formats a count or a rate rounded to an integer, with thin
// separators so that large figures stay readable in the table.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// The generated part of docs/benchmarks.md sits between these markers; the
// prose around them is written by hand and kept.
const (
	beginMarker = "<!-- bench:begin: generated by `make bench`, edits inside are overwritten -->"
	endMarker   = "<!-- bench:end -->"
)

// writeDoc puts report between the markers of path, creating the file (or
// the markers, at its end) when missing.
func writeDoc(path, report string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	section := []byte(beginMarker + "\n\n" + report + "\n" + endMarker)
	var out []byte
	begin, end := bytes.Index(old, []byte(beginMarker)), bytes.Index(old, []byte(endMarker))
	switch {
	case begin >= 0 && end > begin:
		out = append(out, old[:begin]...)
		out = append(out, section...)
		out = append(out, old[end+len(endMarker):]...)
	case len(old) == 0:
		out = append([]byte("# Benchmarks\n\nRun `make bench`.\n\n"), section...)
		out = append(out, '\n')
	default:
		out = append(bytes.TrimRight(old, "\n"), "\n\n"...)
		out = append(out, section...)
		out = append(out, '\n')
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
