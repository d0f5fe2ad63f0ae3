package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

const (
	// jitterGoal is row 10's goal for the p99 of the turns' lateness.
	jitterGoal = 20 * time.Millisecond
	// scaleBins is how many parts of the interval where the turns fall
	// is counted in.
	scaleBins = 100
)

// cpuPerTurn is the CPU per observation over the phase.
func (p scalePhase) cpuPerTurn() time.Duration {
	if len(p.late) == 0 {
		return 0
	}
	return p.cpu / time.Duration(len(p.late))
}

// spread is where in the interval the phase's turns started: the busiest
// hundredth of the interval against the mean.
func (p scalePhase) spread(interval time.Duration) (busiest int, mean float64) {
	var bins [scaleBins]int
	for _, o := range p.offset {
		bins[min(int(o*scaleBins/interval), scaleBins-1)]++
	}
	for _, n := range bins {
		busiest = max(busiest, n)
	}
	return busiest, float64(len(p.offset)) / scaleBins
}

// within is the share of the phase's turns that started within d of
// when they were due.
func (p scalePhase) within(d time.Duration) float64 {
	n := 0
	for _, l := range p.late {
		if l <= d {
			n++
		}
	}
	return float64(n) / float64(max(len(p.late), 1))
}

func (s *scaleResult) phaseName(i int) string {
	if i == 0 {
		return fmt.Sprintf("%s http", thousands(float64(s.http)))
	}
	return fmt.Sprintf("%s http + %s tcp + %s process", thousands(float64(s.http)), thousands(float64(s.tcp)), thousands(float64(s.proc)))
}

func (s *scaleResult) summary(b *strings.Builder, cfg config) {
	d, base := s.daemon, s.baseline
	if cfg.rows["manyobservers"] {
		for i, p := range d.phases {
			if i >= len(base.phases) {
				break
			}
			q := base.phases[i]
			fmt.Fprintf(b, "| 10 | %s observers every %s: turn lateness p50 / p99 / max; RSS; CPU per observation | %s / %s / %s; RSS %s; %s | %s / %s / %s; RSS %s; %s (goroutines + time.Ticker) | **p99 %s** (goal ≤ 20 ms); RSS **%s** (goal ≤ 300 MiB), %s daemon/baseline; CPU %s |\n",
				s.phaseName(i), whole(s.interval),
				ms(percentile(p.late, 50)), ms(percentile(p.late, 99)), ms(percentile(p.late, 100)), mib(p.rss), us(p.cpuPerTurn()),
				ms(percentile(q.late, 50)), ms(percentile(q.late, 99)), ms(percentile(q.late, 100)), mib(q.rss), us(q.cpuPerTurn()),
				ms(percentile(p.late, 99)), mib(p.rss), ratio(float64(p.rss), float64(q.rss)), ratio(p.cpuPerTurn().Seconds(), q.cpuPerTurn().Seconds()))
		}
		if len(d.pairs) > 0 && len(base.pairs) > 0 {
			do, da := sumRate(d.pairs, true), sumRate(d.pairs, false)
			bo, ba := sumRate(base.pairs, true), sumRate(base.pairs, false)
			fmt.Fprintf(b, "| 10 | bin/observable's requests/s under load while %s observers observe it, %d pairs of %s segments | %s observed by observerd, %s with it frozen: **%s** (pairs: %s) | %s observed by the baseline, %s with it frozen: %s (pairs: %s) | **%s** observed/alone (goal ≥ 0.99) |\n",
				thousands(float64(s.http)), len(d.pairs), whole(cfg.loadTime), thousands(do), thousands(da), ratio(do, da), pairVerdict(d.pairs, 0.99),
				thousands(bo), thousands(ba), ratio(bo, ba), pairVerdict(base.pairs, 0.99), ratio(do, da))
		}
	}
	if cfg.rows["startup"] {
		fmt.Fprintf(b, "| 11 | start with %d policies × %d observers in policy_dir: daemon.started → last observer.started; → first observation | %s; %s (%s from exec to the last observer.started) | %s (exec → every goroutine started) | **%s** (goal ≤ 5 s) |\n",
			s.http/s.perPolicy, s.perPolicy, secs(d.allStarted), secs(d.firstObservation), secs(d.ready), secs(base.ready), secs(d.allStarted))
	}
	if r := s.reload; r != nil {
		fmt.Fprintf(b, "| 12 | change 1 policy (%d observers) of %d while the other %s observers run: rename → first / last observer.started of the new revision, p50 / p99 of %d | first %s / %s, last %s / %s; the others: %d lifecycle events, %d of %s turns missed | %s / %s (fsnotify alone) | **p99 %s** (goal ≤ 250 ms) |\n",
			s.perPolicy, s.http/s.perPolicy, thousands(float64(s.http-s.perPolicy)), len(r.first),
			ms(percentile(r.first, 50)), ms(percentile(r.first, 99)), ms(percentile(r.last, 50)), ms(percentile(r.last, 99)),
			r.othersLifecycle, r.othersMissed, thousands(float64(r.othersDue)),
			ms(percentile(r.fsnotify, 50)), ms(percentile(r.fsnotify, 99)), ms(percentile(r.last, 99)))
	}
}

func (s *scaleResult) details(b *strings.Builder, cfg config) {
	if !cfg.rows["manyobservers"] || len(s.daemon.phases) == 0 {
		return
	}
	b.WriteString("\n#### 10. Thousands of observers in one daemon\n\n")
	fmt.Fprintf(b, "Policies of %d observers each, every %s, against one bin/observable; lateness is an observation's own time "+
		"(when its check started) less when its turn was due (its observer's place in the interval); for the baseline, its goroutine's "+
		"wake-up less its ticker's due tick. Measured over %s windows after every observer has run once; where the turns fall is "+
		"counted per hundredth of the interval.\n\n", s.perPolicy, whole(s.interval), whole(cfg.scaleWindow))
	b.WriteString("| observers | side | turns | within 1 ms / 5 ms / 20 ms of due | p50 / p90 / p99 / p99.9 / max | busiest hundredth of the interval / mean | CPU (share of a core) | CPU per turn | RSS (VmHWM) |\n|---|---|---|---|---|---|---|---|---|\n")
	for i := range s.daemon.phases {
		for _, side := range []struct {
			name   string
			phases []scalePhase
		}{{"observerd", s.daemon.phases}, {"baseline", s.baseline.phases}} {
			if i >= len(side.phases) {
				continue
			}
			p := side.phases[i]
			busiest, mean := p.spread(s.interval)
			fmt.Fprintf(b, "| %s | %s | %s | %s / %s / %s | %s / %s / %s / %s / %s | %d / %.0f | %s (%s) | %s | %s (%s) |\n",
				s.phaseName(i), side.name, thousands(float64(len(p.late))),
				percent(p.within(time.Millisecond)), percent(p.within(5*time.Millisecond)), percent(p.within(jitterGoal)),
				ms(percentile(p.late, 50)), ms(percentile(p.late, 90)), ms(percentile(p.late, 99)), ms(percentileMille(p.late, 999)), ms(percentile(p.late, 100)),
				busiest, mean, ms(p.cpu), percent(p.cpu.Seconds()/p.window.Seconds()), us(p.cpuPerTurn()), mib(p.rss), mib(p.hwm))
		}
	}
}

// percentileMille is the p-th per mille (nearest rank) of ds.
func percentileMille(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	return sorted[max(0, (p*len(sorted)+999)/1000-1)]
}
