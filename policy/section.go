package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/polar/observerd/configs/yamldoc"
)

// Section is an observer's settings for its kind: the value of the key
// named by the kind (http: for kind http). Each kind has its own type, in
// its package under kinds/, decoded strictly like the rest of the document
// into a fresh value whose SetDefaults (yamldoc.Defaulter), if it has one,
// ran first. Only the section of the observer's kind may be present.
type Section interface {
	// Validate reports, through c, what is wrong with the section. It
	// runs once the observer's own values (interval, timeout) and the
	// section's completion (Completer) are done.
	Validate(c *SectionContext)
}

// Completer is implemented by sections with defaults that depend on the
// rest of the policy (the target's address, the observer's timeout), set
// before validation.
type Completer interface {
	Complete(c *SectionContext)
}

// Normalizer is implemented by sections whose values can mean the same
// thing spelled differently (header names, empty lists): Normalize gives
// them one spelling once the policy is valid, so that the revision does
// not depend on the spelling. Validation's messages name the values as
// written.
type Normalizer interface {
	Normalize()
}

// PluginMemoryReserver is implemented by the sections of kinds that
// reserve memory of the daemon's limits.max_plugin_memory (the wasm
// kind's memory_limit), which CheckTotals adds up over all policies.
type PluginMemoryReserver interface {
	PluginMemory() yamldoc.ByteSize
}

// SectionContext is what a section sees of its policy while it is
// completed and validated, and where it reports its problems.
type SectionContext struct {
	// Env is the daemon's environment the policy is validated against.
	Env Env
	// Observer is the section's observer, its interval and timeout
	// complete.
	Observer *Observer
	// Target is the policy's target; TargetHostPort its URL's host:port
	// (the port of the scheme when the URL has none), "" when the URL has
	// no host; TargetValid says whether the URL passed validation, so
	// that a default taken from it is not reported twice.
	Target         Target
	TargetHostPort string
	TargetValid    bool

	path   string
	doc    *yamldoc.Document
	report *yamldoc.Report
}

// Path is the key path of key (a key, key.sub or key[2]) in the section,
// as problems name it: spec.observers[0].http.path; "" is the section's
// own path.
func (c *SectionContext) Path(key string) string {
	switch {
	case key == "":
		return c.path
	case strings.HasPrefix(key, "["):
		return c.path + key
	}
	return c.path + "." + key
}

// Has reports whether the document writes key of the section.
func (c *SectionContext) Has(key string) bool { return c.doc.Has(c.Path(key)) }

// Addf reports a problem at key of the section ("" for the section
// itself), unless that key failed to decode.
func (c *SectionContext) Addf(key, format string, args ...any) {
	if c.report != nil {
		c.report.Addf(c.Path(key), format, args...)
	}
}

// The observer kinds that policies may use, registered by package kinds
// (kinds.Register) when the daemon's kinds are linked (kinds/all): their
// names, in the order problems list them, and their sections.
var registry struct {
	mu       sync.RWMutex
	names    []string
	sections map[string]func() Section
}

// RegisterKind makes the observer kind name known to policies, with its
// section made by newSection (a pointer to a fresh value of the kind's
// type). Package kinds calls it, once per kind; a name that is empty or
// taken is an error.
func RegisterKind(name string, newSection func() Section) error {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	switch {
	case name == "":
		return errors.New("register observer kind: no name")
	case newSection == nil:
		return fmt.Errorf("register observer kind %s: no section", name)
	case registry.sections[name] != nil:
		return fmt.Errorf("register observer kind %s: registered twice", name)
	}
	if registry.sections == nil {
		registry.sections = map[string]func() Section{}
	}
	registry.names = append(registry.names, name)
	registry.sections[name] = newSection
	return nil
}

// Kinds lists the registered observer kinds, in the order they were
// registered, which is the order problems list them in.
func Kinds() []string {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	return slices.Clone(registry.names)
}

// newSection returns a fresh section of kind, or nil for a kind that is
// not registered.
func newSection(kind string) Section {
	registry.mu.RLock()
	f := registry.sections[kind]
	registry.mu.RUnlock()
	if f == nil {
		return nil
	}
	return f()
}

// mustHaveKinds catches a program that parses policies without linking
// any observer kind, where every observer would be rejected as of an
// unknown kind: a mistake of the program, not of the policy.
func mustHaveKinds() {
	if len(Kinds()) == 0 {
		panic("policy: no observer kinds registered: import github.com/polar/observerd/actors/observer/kinds/all")
	}
}
