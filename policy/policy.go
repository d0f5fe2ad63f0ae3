// Package policy is the observation policy document (docs/policies.md):
// its types, strict parsing with file:line:col problems,
// validation against the daemon's environment, the canonical revision hash,
// and the difference between two versions of a policy.
//
// A policy is parsed completely or rejected: Parse returns either a valid
// Policy with its defaults applied, or every problem of the file at once.
package policy

import (
	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/configs/yamldoc"
)

// The document's header, checked exactly.
const (
	APIVersion = "observer.polar/v1"
	Kind       = "ObservationPolicy"
)

// MaxFileSize is the largest policy file accepted; real ones are a few KiB.
// It bounds what parsing one file may cost: about 140 bytes of memory per
// byte of input at worst, so a file at the cap is rejected within 50 MiB.
const MaxFileSize = 256 << 10

// Observer kinds.
const (
	KindHTTP       = "http"
	KindPrometheus = "prometheus"
	KindTCP        = "tcp"
	KindProcess    = "process"
	KindWASM       = "wasm"
)

// Kinds lists the observer kinds, in the order messages name them.
var Kinds = []string{KindHTTP, KindPrometheus, KindTCP, KindProcess, KindWASM}

// Policy is one policy file.
type Policy struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Metadata   Metadata `yaml:"metadata"`
	Spec       Spec     `yaml:"spec"`
	File       string   `yaml:"-"` // the file it came from
	Revision   string   `yaml:"-"` // canonical revision hash, set by Parse

	doc *yamldoc.Document // positions, for problems found after parsing
}

// SetDefaults fills in the defaults of a policy (its limits).
func (p *Policy) SetDefaults() { p.Spec.Limits.SetDefaults() }

// Metadata names the policy. The name is part of event sources
// (observerd://<node>/observer/<policy>/<observer>) and must be unique
// across the policy directory.
type Metadata struct {
	Name string `yaml:"name"`
}

// Spec is what to observe and how.
type Spec struct {
	Target    Target     `yaml:"target"`
	Limits    Limits     `yaml:"limits"`
	Observers []Observer `yaml:"observers"`
}

// Target is the observed service. Observers' paths are appended to the
// URL's path.
type Target struct {
	Name string `yaml:"name"` // the events' subject
	URL  string `yaml:"url"`  // http or https, host in allowed_targets
}

// Limits protect the observed service: all observers of a policy share one
// rate limit and one concurrency limit.
type Limits struct {
	MaxRequestsPerSecond  float64 `yaml:"max_requests_per_second"` // default 10
	MaxConcurrentRequests int     `yaml:"max_concurrent_requests"` // default 2
}

// SetDefaults sets 10 requests per second, 2 at a time.
func (l *Limits) SetDefaults() {
	l.MaxRequestsPerSecond = 10
	l.MaxConcurrentRequests = 2
}

// Observer is one scheduled observation. Exactly the section named by Kind
// is set.
type Observer struct {
	Name     string           `yaml:"name"`
	Kind     string           `yaml:"kind"`     // http | prometheus | tcp | process | wasm
	Interval yamldoc.Duration `yaml:"interval"` // required, > 0
	// Timeout bounds one observation; default 1s, or half the interval when
	// the interval is 2s or less, so that it always ends before the next.
	Timeout    yamldoc.Duration `yaml:"timeout"`
	Thresholds Thresholds       `yaml:"thresholds"`
	HTTP       *HTTP            `yaml:"http"`
	Prometheus *Prometheus      `yaml:"prometheus"`
	TCP        *TCP             `yaml:"tcp"`
	Process    *Process         `yaml:"process"`
	WASM       *WASM            `yaml:"wasm"`
	Line       int              `yaml:"-"` // line of this observer in File
}

// SetDefaults sets the default thresholds.
func (o *Observer) SetDefaults() { o.Thresholds.SetDefaults() }

// Thresholds turn an observer's results into its state: DownAfter
// consecutive failures make it down, UpAfter consecutive successes bring it
// back up. Fewer failures leave it up (their count is in every
// state.changed and in the state snapshot); the state-manager also damps
// flapping (see actors/state).
type Thresholds struct {
	DownAfter int `yaml:"down_after"` // default 3, 1..100
	UpAfter   int `yaml:"up_after"`   // default 1, 1..100
}

// SetDefaults sets down after 3 failures, up after 1 success.
func (t *Thresholds) SetDefaults() {
	t.DownAfter = 3
	t.UpAfter = 1
}

// HTTP requests a path of the target and checks the answer.
type HTTP struct {
	Method          string            `yaml:"method"` // default GET
	Path            string            `yaml:"path"`   // default /
	Headers         map[string]string `yaml:"headers"`
	ExpectStatus    []int             `yaml:"expect_status"`  // default [200]
	MaxBodyBytes    yamldoc.ByteSize  `yaml:"max_body_bytes"` // read at most this much; default 64KiB
	BodyMatch       string            `yaml:"body_match"`     // RE2 regexp the body must match
	Extract         []string          `yaml:"extract"`        // JSON pointers (RFC 6901) of values to report
	FollowRedirects bool              `yaml:"follow_redirects"`
	MaxRedirects    int               `yaml:"max_redirects"` // default 3; each hop re-checked against allowed_targets
}

// SetDefaults sets GET /, expecting 200, reading up to 64KiB.
func (h *HTTP) SetDefaults() {
	h.Method = "GET"
	h.Path = "/"
	h.ExpectStatus = []int{200}
	h.MaxBodyBytes = 64 * yamldoc.KiB
	h.MaxRedirects = 3
}

// Prometheus scrapes a metrics endpoint of the target. Include and Exclude
// are RE2 regular expressions matched against whole metric names (anchored,
// as in Prometheus relabelling); an empty Include keeps every metric.
type Prometheus struct {
	Path        string            `yaml:"path"` // default /metrics
	Include     []string          `yaml:"include"`
	Exclude     []string          `yaml:"exclude"`
	MatchLabels map[string]string `yaml:"match_labels"` // exact label values a sample must have
	SampleLimit int               `yaml:"sample_limit"` // default 1000
}

// SetDefaults sets /metrics and 1000 samples.
func (p *Prometheus) SetDefaults() {
	p.Path = "/metrics"
	p.SampleLimit = 1000
}

// TCP connects to an address.
type TCP struct {
	Address string `yaml:"address"` // host:port; default the target URL's host:port
}

// Process watches a local process, found by exactly one of its PID file or
// its name.
type Process struct {
	PIDFile string `yaml:"pid_file"` // absolute path
	Name    string `yaml:"name"`
}

// WASM runs a plugin module from plugin_dir.
type WASM struct {
	Module      string           `yaml:"module"`       // file name in plugin_dir
	SHA256      string           `yaml:"sha256"`       // hex; when set, the module must match it
	Config      map[string]any   `yaml:"config"`       // given to the plugin as JSON
	MemoryLimit yamldoc.ByteSize `yaml:"memory_limit"` // 1MiB..4GiB in 64KiB pages; default 32MiB
	// Timeout is the deadline of one plugin call; default 1s, capped at the
	// observer's timeout, which bounds the whole observation anyway.
	Timeout yamldoc.Duration `yaml:"timeout"`
}

// SetDefaults sets a 32MiB memory limit.
func (w *WASM) SetDefaults() { w.MemoryLimit = 32 * yamldoc.MiB }

// ObserverByName finds an observer of the policy.
func (p *Policy) ObserverByName(name string) (Observer, bool) {
	for _, o := range p.Spec.Observers {
		if o.Name == name {
			return o, true
		}
	}
	return Observer{}, false
}

// Env is what validation needs from the daemon.
type Env struct {
	// Allowed is the daemon's allowed_targets; nil means the default
	// (loopback only), never "anything".
	Allowed *targets.AllowList
	// PIDDirs is the daemon's allowed_pid_dirs; nil means the default.
	PIDDirs []string
	// ProcessNames is the daemon's allowed_process_names (none by default).
	ProcessNames []string
	// Limits are the daemon's limits; nil means the defaults.
	Limits *Bounds
	// PluginDir is where wasm modules are looked up; "" skips the presence
	// and checksum checks (for validating a policy away from its host).
	PluginDir string
	// CheckPlugin, when set, validates a present module against the
	// plugin ABI (exports, imports, version) and the observer's memory
	// limit (0: the default); its error is the problem.
	// The policy package knows nothing of WebAssembly: the daemon passes
	// its plugin host's check.
	CheckPlugin func(path string, memoryLimit uint64) error
}

func (e Env) allowed() *targets.AllowList {
	if e.Allowed != nil {
		return e.Allowed
	}
	return targets.Default()
}

func (e Env) pidDirs() []string {
	if e.PIDDirs != nil {
		return e.PIDDirs
	}
	return DefaultPIDDirs()
}

// LimitsOf returns the daemon's limits of env, or the defaults.
func (e Env) LimitsOf() Bounds {
	if e.Limits != nil {
		return *e.Limits
	}
	return DefaultBounds()
}
