// Package policy is the observation policy document (docs/policies.md):
// its types, strict parsing with file:line:col problems,
// validation against the daemon's environment, the canonical revision hash,
// and the difference between two versions of a policy.
//
// An observer's settings for its kind are a Section of that kind's type,
// which the kind's package (kinds/<kind>) declares and package kinds
// registers here (RegisterKind): a program that parses policies links
// the daemon's kinds by importing kinds/all.
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

// Policy is one policy file.
type Policy struct {
	APIVersion string   `yaml:"apiVersion" schema:"required"`
	Kind       string   `yaml:"kind" schema:"required"`
	Metadata   Metadata `yaml:"metadata" schema:"required"`
	Spec       Spec     `yaml:"spec" schema:"required"`
	File       string   `yaml:"-"` // the file it came from
	Revision   string   `yaml:"-"` // canonical revision hash, set by Parse
	// Central is set for a central policy: sent over the control channel
	// (ApplyPolicy) and read from its cache under state_dir, not from
	// policy_dir. Issuer is who sent it (the verified broker user).
	Central bool   `yaml:"-" json:",omitempty"`
	Issuer  string `yaml:"-" json:",omitempty"`

	doc *yamldoc.Document // positions, for problems found after parsing
}

// SetDefaults fills in the defaults of a policy (its limits).
func (p *Policy) SetDefaults() { p.Spec.Limits.SetDefaults() }

// Metadata names the policy. The name is part of event sources
// (observerd://<node>/observer/<policy>/<observer>) and must be unique
// across the policy directory.
type Metadata struct {
	Name string `yaml:"name" schema:"required" doc:"The policy's name, unique in the policy directory; part of its observers' event sources."`
}

// Spec is what to observe and how.
type Spec struct {
	Target    Target     `yaml:"target" schema:"required" doc:"The observed service."`
	Limits    Limits     `yaml:"limits" doc:"What all observers of the policy together may ask of the target."`
	Observers []Observer `yaml:"observers" schema:"required,minItems=1"`
}

// Target is the observed service. Observers' paths are appended to the
// URL's path.
type Target struct {
	Name string `yaml:"name" schema:"required,minLength=1" doc:"The target's name: the subject of its observers' events."`
	URL  string `yaml:"url" schema:"required,pattern=^[hH][tT][tT][pP][sS]?://" doc:"http:// or https:// URL of the target, its host in the daemon's allowed_targets; observers' paths are appended to its path."`
}

// Limits protect the observed service: all observers of a policy share one
// rate limit and one concurrency limit.
type Limits struct {
	MaxRequestsPerSecond  float64 `yaml:"max_requests_per_second" schema:"xmin=0" doc:"Observations per second, all observers together; at most the daemon's limits.max_requests_per_second."`
	MaxConcurrentRequests int     `yaml:"max_concurrent_requests" schema:"min=1" doc:"Observations at a time, all observers together; at most the daemon's limits.max_concurrent_requests."`
}

// SetDefaults sets 10 requests per second, 2 at a time.
func (l *Limits) SetDefaults() {
	l.MaxRequestsPerSecond = 10
	l.MaxConcurrentRequests = 2
}

// Observer is one scheduled observation. Its Kind names the kind of
// observation (one of Kinds), whose Section holds the settings.
type Observer struct {
	Name     string           `yaml:"name" schema:"required" doc:"The observer's name, unique in the policy; part of its event source."`
	Kind     string           `yaml:"kind" schema:"required" doc:"The kind of observation; the observer's section of that name holds its settings."`
	Interval yamldoc.Duration `yaml:"interval" schema:"required" doc:"Time between observations, such as 5s; at least the daemon's limits.min_interval."`
	// Timeout bounds one observation; default 1s, or half the interval when
	// the interval is 2s or less, so that it always ends before the next.
	Timeout    yamldoc.Duration `yaml:"timeout" doc:"Deadline of one observation, shorter than the interval; default 1s, or half the interval when it is 2s or less."`
	Thresholds Thresholds       `yaml:"thresholds" doc:"How many results in a row change the observer's state."`
	// Section is the section of the observer's kind, of that kind's type
	// (such as *http.Section of package kinds/http); every observer of a
	// valid policy has one.
	Section Section `yaml:"-"`
	Line    int     `yaml:"-"` // line of this observer in File

	// sections are the sections the document gives the observer, by kind
	// (null ones left out): validation accepts only its own kind's.
	sections map[string]Section
}

// ExtensionKeys, NewExtension and SetExtension make an observer
// yamldoc.Extensible: its keys beyond its fields are the sections of the
// registered kinds, each decoded into that kind's type.
func (o *Observer) ExtensionKeys() []string { return Kinds() }

// NewExtension returns a fresh section of kind, or nil when no such kind
// is registered.
func (o *Observer) NewExtension(kind string) any {
	if s := newSection(kind); s != nil {
		return s
	}
	return nil
}

// SetExtension keeps the section of kind that the document gives.
func (o *Observer) SetExtension(kind string, section any) {
	if o.sections == nil {
		o.sections = map[string]Section{}
	}
	o.sections[kind] = section.(Section)
}

// SetDefaults sets the default thresholds.
func (o *Observer) SetDefaults() { o.Thresholds.SetDefaults() }

// Thresholds turn an observer's results into its state: DownAfter
// consecutive failures make it down, UpAfter consecutive successes bring it
// back up. Fewer failures leave it up (their count is in every
// state.changed and in the state snapshot); the state-manager also damps
// flapping (see actors/state).
type Thresholds struct {
	DownAfter int `yaml:"down_after" doc:"Consecutive failures that make the observer down."`
	UpAfter   int `yaml:"up_after" doc:"Consecutive successes that bring it back up."`
}

// SetDefaults sets down after 3 failures, up after 1 success.
func (t *Thresholds) SetDefaults() {
	t.DownAfter = 3
	t.UpAfter = 1
}

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

// AllowedOf returns the daemon's allowed_targets of env, or the default.
func (e Env) AllowedOf() *targets.AllowList {
	if e.Allowed != nil {
		return e.Allowed
	}
	return targets.Default()
}

// PIDDirsOf returns the daemon's allowed_pid_dirs of env, or the default.
func (e Env) PIDDirsOf() []string {
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
