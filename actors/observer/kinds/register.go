package kinds

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
)

// Definition is everything of a kind, as its folder declares it (see
// Define). S is the type of its policy section, P its payload message.
type Definition[S policy.Section, P proto.Message] struct {
	// Name is the kind's name: the observers' kind, the key of their
	// section, the label of the kind's metrics.
	Name string
	// NewSection returns a fresh section, to decode an observer's into
	// (the decoder applies its SetDefaults).
	NewSection func() S
	// NewCheck makes the check of one observer of the kind from its
	// section. An error means the observer cannot run: it is not started.
	NewCheck func(section S, setup Setup) (Check, error)
	// Summary renders an observation's payload on one line, for
	// observerctl tail.
	Summary func(payload P) string
	// Latency, for a kind whose observations measure how long the target
	// took to answer, is that duration (nil when an observation measured
	// none), for observerd_observation_latency_seconds{kind}.
	Latency func(payload P) *durationpb.Duration
}

// Kind is a defined kind, ready to be registered.
type Kind struct {
	name       string
	payload    protoreflect.FullName
	newSection func() policy.Section
	newCheck   func(policy.Section, Setup) (Check, error)
	summary    func(proto.Message) string
	latency    func(proto.Message) *durationpb.Duration
}

// Define makes a kind of its definition. Register checks that it is
// complete.
func Define[S policy.Section, P proto.Message](d Definition[S, P]) *Kind {
	var payload P
	k := &Kind{name: d.Name, payload: payload.ProtoReflect().Descriptor().FullName()}
	if d.NewSection != nil {
		k.newSection = func() policy.Section { return d.NewSection() }
	}
	if d.NewCheck != nil {
		k.newCheck = func(s policy.Section, setup Setup) (Check, error) {
			section, ok := s.(S)
			if !ok {
				return nil, fmt.Errorf("observer %s: a %s observer without its %s section", setup.Path, d.Name, d.Name)
			}
			return d.NewCheck(section, setup)
		}
	}
	if d.Summary != nil {
		k.summary = func(m proto.Message) string { return d.Summary(m.(P)) }
	}
	if d.Latency != nil {
		k.latency = func(m proto.Message) *durationpb.Duration { return d.Latency(m.(P)) }
	}
	return k
}

// Name is the kind's name.
func (k *Kind) Name() string { return k.name }

// NewSection returns a fresh section of the kind.
func (k *Kind) NewSection() policy.Section { return k.newSection() }

// Payload is the full name of the kind's payload message.
func (k *Kind) Payload() protoreflect.FullName { return k.payload }

// incomplete reports what the kind lacks, if anything.
func (k *Kind) incomplete() error {
	var missing []string
	for _, part := range []struct {
		name    string
		present bool
	}{
		{"a name", k.name != ""},
		{"a section", k.newSection != nil},
		{"a check", k.newCheck != nil},
		{"a summary", k.summary != nil},
		{"a payload message", k.payload != ""},
	} {
		if !part.present {
			missing = append(missing, part.name)
		}
	}
	if missing != nil {
		return fmt.Errorf("observer kind %q lacks %s", k.name, strings.Join(missing, ", "))
	}
	return nil
}

// The daemon's kinds: in the order they were registered, by name and by
// payload message.
var registry struct {
	mu        sync.RWMutex
	all       []*Kind
	byName    map[string]*Kind
	byPayload map[protoreflect.FullName]*Kind
}

// Register makes ks the daemon's kinds: policies may use them (it registers
// their sections with package policy) and observers run them; problems
// list them in this order. It registers none when one of them is
// incomplete (without a name, a section, a check, a summary or a payload
// message) or registered twice (a name or a payload message taken).
// kinds/all calls it, at init, with the daemon's kinds.
func Register(ks ...*Kind) error {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	names := map[string]bool{}
	payloads := map[protoreflect.FullName]bool{}
	for _, k := range ks {
		if err := k.incomplete(); err != nil {
			return fmt.Errorf("register: %w", err)
		}
		if registry.byName[k.name] != nil || names[k.name] || slices.Contains(policy.Kinds(), k.name) {
			return fmt.Errorf("register observer kind %s: registered twice", k.name)
		}
		if registry.byPayload[k.payload] != nil || payloads[k.payload] {
			return fmt.Errorf("register observer kind %s: payload %s is another kind's", k.name, k.payload)
		}
		names[k.name], payloads[k.payload] = true, true
	}
	if registry.byName == nil {
		registry.byName = map[string]*Kind{}
		registry.byPayload = map[protoreflect.FullName]*Kind{}
	}
	var errs []error
	for _, k := range ks {
		registry.all = append(registry.all, k)
		registry.byName[k.name] = k
		registry.byPayload[k.payload] = k
		errs = append(errs, policy.RegisterKind(k.name, k.newSection))
	}
	return errors.Join(errs...)
}

// All lists the registered kinds, in the order they were registered.
func All() []*Kind {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	return slices.Clone(registry.all)
}

// Lookup finds a registered kind by name.
func Lookup(name string) (*Kind, bool) {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	k, ok := registry.byName[name]
	return k, ok
}

// NewCheck makes the check of the observer of setup, by its kind.
func NewCheck(setup Setup) (Check, error) {
	k, ok := Lookup(setup.Observer.Kind)
	if !ok {
		return nil, fmt.Errorf("observer %s: kind %q is not supported", setup.Path, setup.Observer.Kind)
	}
	return k.newCheck(setup.Observer.Section, setup)
}

// observation returns the kind of an event's payload, and the payload,
// when it is an observation of a registered kind.
func observation(ev *messages.Event) (*Kind, proto.Message, bool) {
	m := ev.ProtoReflect()
	field := m.WhichOneof(m.Descriptor().Oneofs().ByName("data"))
	if field == nil || field.Message() == nil {
		return nil, nil, false
	}
	payload := m.Get(field).Message()
	registry.mu.RLock()
	k, ok := registry.byPayload[payload.Descriptor().FullName()]
	registry.mu.RUnlock()
	if !ok {
		return nil, nil, false
	}
	return k, payload.Interface(), true
}

// Summary renders an observation on one line, by its kind; ok is false
// for an event that is no observation of a registered kind.
func Summary(ev *messages.Event) (line string, ok bool) {
	k, payload, ok := observation(ev)
	if !ok {
		return "", false
	}
	return k.summary(payload), true
}

// KindOf is the name of the kind whose payload an observation carries;
// ok is false for an event that is no observation of a registered kind.
func KindOf(ev *messages.Event) (name string, ok bool) {
	k, _, ok := observation(ev)
	if !ok {
		return "", false
	}
	return k.name, true
}

// Latency is how long the target took to answer, of an observation of a
// kind that measures it, with the kind's name; ok is false when the
// observation measured none.
func Latency(ev *messages.Event) (kind string, d time.Duration, ok bool) {
	k, payload, ok := observation(ev)
	if !ok || k.latency == nil {
		return "", 0, false
	}
	l := k.latency(payload)
	if l == nil {
		return "", 0, false
	}
	return k.name, l.AsDuration(), true
}
