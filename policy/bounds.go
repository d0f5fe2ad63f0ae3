package policy

import (
	"fmt"
	"strings"
	"time"

	"github.com/polar/observerd/configs/yamldoc"
)

// Bounds are what the daemon config allows policies (its limits section):
// the daemon owner's, not the policy writers'. A policy that asks for more
// is rejected, and the event budgets are enforced while it runs.
type Bounds struct {
	// MinInterval is the shortest observer interval; default 1s.
	MinInterval yamldoc.Duration `yaml:"min_interval"`
	// MaxRequestsPerSecond and MaxConcurrentRequests are the highest
	// spec.limits a policy may set; default 100 and 16.
	MaxRequestsPerSecond  float64 `yaml:"max_requests_per_second"`
	MaxConcurrentRequests int     `yaml:"max_concurrent_requests"`
	// MaxEventsPerSecond is each policy's budget of observation events;
	// the excess is dropped and reported in policy.throttled; default 100.
	MaxEventsPerSecond float64 `yaml:"max_events_per_second"`
	// MaxEventsPerSecondTotal is the budget of all policies' observation
	// events together, so that many policies cannot do what one may not;
	// default 1000.
	MaxEventsPerSecondTotal float64 `yaml:"max_events_per_second_total"`
	// MaxObservers is the number of observers of all policies together;
	// default 1000.
	MaxObservers int `yaml:"max_observers"`
	// MaxPluginMemory is the sum of the wasm observers' memory_limit over
	// all policies; default 512MiB, which with the Go heap's 512MiB
	// (GOMEMLIMIT) fills the unit's MemoryHigh.
	MaxPluginMemory yamldoc.ByteSize `yaml:"max_plugin_memory"`
	// MaxResponseBytes caps what one observation reads of an answer (an
	// http body, a metrics page, a plugin's http response); default 16MiB.
	MaxResponseBytes yamldoc.ByteSize `yaml:"max_response_bytes"`
	// MaxResponseBytesTotal caps the answers all observers may hold at
	// once: each observation reserves its own cap before it asks, and
	// waits (within its timeout) while the total is taken; default 64MiB.
	MaxResponseBytesTotal yamldoc.ByteSize `yaml:"max_response_bytes_total"`
}

// DefaultBounds are the bounds of a config that sets none.
func DefaultBounds() Bounds {
	return Bounds{
		MinInterval:             yamldoc.Duration(time.Second),
		MaxRequestsPerSecond:    100,
		MaxConcurrentRequests:   16,
		MaxEventsPerSecond:      100,
		MaxEventsPerSecondTotal: 1000,
		MaxObservers:            1000,
		MaxPluginMemory:         512 * yamldoc.MiB,
		MaxResponseBytes:        16 * yamldoc.MiB,
		MaxResponseBytesTotal:   64 * yamldoc.MiB,
	}
}

// DefaultPIDDirs is allowed_pid_dirs when the config sets none.
func DefaultPIDDirs() []string { return []string{"/run"} }

// CheckProcessName accepts what a process observer may look a process up
// by: a command name, as in /proc/<pid>/comm or the base name of argv[0].
func CheckProcessName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("a process name must not be empty")
	case len(name) > 255:
		return fmt.Errorf("a process name has at most 255 bytes, got %d", len(name))
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("a process name holds no / and no NUL (use pid_file to point at a file)")
	}
	return nil
}

// Bounds of the limits section: past them a limit protects nothing.
const (
	minMinInterval = time.Millisecond
	maxRate        = 1e6
	maxConcurrency = 10_000
	maxObservers   = 1_000_000
)

// Validate reports, under key path prefix, what is wrong with the bounds.
func (l *Bounds) Validate(r *yamldoc.Report, prefix string) {
	if time.Duration(l.MinInterval) < minMinInterval {
		r.Addf(prefix+".min_interval", "must be at least %s, got %s", minMinInterval, l.MinInterval)
	}
	for _, rate := range []struct {
		path string
		v    float64
	}{
		{prefix + ".max_requests_per_second", l.MaxRequestsPerSecond},
		{prefix + ".max_events_per_second", l.MaxEventsPerSecond},
		{prefix + ".max_events_per_second_total", l.MaxEventsPerSecondTotal},
	} {
		if !(rate.v > 0) || rate.v > maxRate {
			r.Addf(rate.path, "must be greater than 0 and at most %g, got %g", float64(maxRate), rate.v)
		}
	}
	if l.MaxConcurrentRequests < 1 || l.MaxConcurrentRequests > maxConcurrency {
		r.Addf(prefix+".max_concurrent_requests", "must be between 1 and %d, got %d", maxConcurrency, l.MaxConcurrentRequests)
	}
	if l.MaxObservers < 1 || l.MaxObservers > maxObservers {
		r.Addf(prefix+".max_observers", "must be between 1 and %d, got %d", maxObservers, l.MaxObservers)
	}
	if l.MaxPluginMemory < 0 {
		r.Addf(prefix+".max_plugin_memory", "must not be negative, got %s", l.MaxPluginMemory)
	}
	if l.MaxResponseBytes < yamldoc.KiB || l.MaxResponseBytes > yamldoc.GiB {
		r.Addf(prefix+".max_response_bytes", "must be between 1KiB and 1GiB, got %s", l.MaxResponseBytes)
	} else if l.MaxResponseBytesTotal < l.MaxResponseBytes || l.MaxResponseBytesTotal > 16*yamldoc.GiB {
		r.Addf(prefix+".max_response_bytes_total", "must be between %s.max_response_bytes (%s) and 16GiB, got %s", prefix, l.MaxResponseBytes, l.MaxResponseBytesTotal)
	}
}
