package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/polar/observerd/test/rabbitmq"
)

// machine describes where the figures were measured: ratios travel between
// machines far better than absolute rates, but both need their context.
type machine struct {
	cpu      string
	cores    int
	memory   string
	kernel   string
	goVer    string
	rabbitmq string
	erlang   string
	revision string
	// load is /proc/loadavg at the start and at the end: other work on
	// the machine shows up in the figures, and here at least it is named.
	loadStart, loadEnd string
	date               time.Time
}

func describeMachine(ctx context.Context, node *rabbitmq.Node) machine {
	m := machine{
		cpu:       cpuModel(),
		cores:     runtime.NumCPU(),
		memory:    memTotal(),
		goVer:     runtime.Version(),
		date:      time.Now(),
		loadStart: loadAvg(),
	}
	// Read-only: which source the figures belong to, "-dirty" when the
	// working tree has uncommitted changes.
	if out, err := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty").Output(); err == nil {
		m.revision = strings.TrimSpace(string(out))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = "Linux " + strings.TrimSpace(string(b))
	}
	// Every rabbitmqctl call boots an Erlang VM: a second or two each,
	// bounded so that a sick CLI does not hold up the benchmark.
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if out, err := node.Ctl(cctx, "version"); err == nil {
		m.rabbitmq = lastLine(out)
	} else if out, err := exec.CommandContext(cctx, "dpkg-query", "-W", "-f", "${Version}", "rabbitmq-server").Output(); err == nil {
		m.rabbitmq = strings.TrimSpace(string(out)) + " (Debian package)"
	}
	if out, err := node.Ctl(cctx, "eval", "erlang:system_info(otp_release)."); err == nil {
		m.erlang = "OTP " + strings.Trim(lastLine(out), `"`)
	}
	return m
}

// loadAvg is the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func memTotal() string {
	kv, err := procKV("/proc/meminfo")
	if err != nil {
		return "unknown"
	}
	return fmt.Sprintf("%.1f GiB", float64(kv["MemTotal"])/(1<<20))
}

// procMem is this process's memory from /proc/self/status, in bytes.
type procMem struct {
	rss  uint64 // VmRSS: resident now
	hwm  uint64 // VmHWM: the highest VmRSS so far
	anon uint64 // RssAnon: heap, stacks, Go's arenas
	file uint64 // RssFile: mapped files, here mostly bbolt's mmap of the outbox
}

func readProcMem() (procMem, error) {
	kv, err := procKV("/proc/self/status")
	if err != nil {
		return procMem{}, err
	}
	return procMem{rss: kv["VmRSS"] << 10, hwm: kv["VmHWM"] << 10, anon: kv["RssAnon"] << 10, file: kv["RssFile"] << 10}, nil
}

// procKV parses "Key:   123 kB" lines into kB values.
func procKV(path string) (map[string]uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	out := map[string]uint64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		if n, err := strconv.ParseUint(fields[0], 10, 64); err == nil {
			out[k] = n
		}
	}
	return out, nil
}

// heapInUse is the Go heap in use. ReadMemStats stops the world briefly;
// it is called only at the memory row's few checkpoints.
func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

func mib(b uint64) string {
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}
