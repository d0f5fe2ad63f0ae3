package kinds_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
)

// The greeting kind is made up here, the way a kind's folder declares
// one (docs/architecture.md, "How to add an observer kind"): its section,
// its check, its summary. Its payload stands in for the message a real
// kind adds to proto/.

// greetingSection is the greeting kind's section.
type greetingSection struct {
	Word  string           `yaml:"word"` // default hello
	Pause yamldoc.Duration `yaml:"pause"`
}

func (s *greetingSection) SetDefaults() { s.Word = "hello" }

func (s *greetingSection) Validate(c *policy.SectionContext) {
	if s.Pause >= c.Observer.Timeout {
		c.Addf("pause", "must be shorter than the observer's timeout (%s), got %s", c.Observer.Timeout, s.Pause)
	}
}

var greeting = kinds.Define(kinds.Definition[*greetingSection, *wrapperspb.StringValue]{
	Name:       "greeting",
	NewSection: func() *greetingSection { return &greetingSection{} },
	NewCheck: func(s *greetingSection, setup kinds.Setup) (kinds.Check, error) {
		return kinds.OneObservation(func(context.Context) *messages.Event {
			ev := messages.NewEvent("observation.greeting")
			ev.Subject = s.Word + " " + setup.Policy.Spec.Target.Name
			return ev
		}), nil
	},
	Summary: func(p *wrapperspb.StringValue) string { return p.GetValue() },
})

// TestANewKindIsOneFolder: a kind registered beside the built-in ones
// is a kind of policies at once, decoded, defaulted, validated and run
// like them, with nothing else changed: the kinds policies had keep
// their revisions.
func TestANewKindIsOneFolder(t *testing.T) {
	if _, ok := kinds.Lookup("greeting"); !ok { // -count=2 runs this again
		require.NoError(t, kinds.Register(greeting))
	}
	assert.Equal(t, []string{"http", "prometheus", "tcp", "process", "wasm", "greeting"}, policy.Kinds())

	// The revision of a policy of the built-in kinds is still the one
	// its golden file holds.
	p, err := policy.ParseFile("../../../policy/testdata/good-design-example/input.yaml", policy.Env{})
	require.NoError(t, err)
	assert.Equal(t, "fa855091c099", p.Revision)

	const head = `apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: web, url: "http://127.0.0.1:8080"}
  observers:
`
	_, err = policy.Parse("p.yaml", []byte(head+`    - {name: slow, kind: greeting, interval: 5s, greeting: {word: bye, pause: 2s}}
    - {name: mixed, kind: tcp, interval: 5s, tcp: {}, greeting: {wrod: x}}
    - {name: bad, kind: gretting, interval: 5s}
`), policy.Env{})
	assert.Equal(t, []string{
		`p.yaml:7:79: spec.observers[0].greeting.pause: must be shorter than the observer's timeout (1s), got 2s`,
		`p.yaml:8:65: spec.observers[1].greeting: a greeting section does not belong to an observer of kind tcp`,
		`p.yaml:8:66: spec.observers[1].greeting.wrod: unknown key "wrod" (did you mean "word"?)`,
		`p.yaml:9:25: spec.observers[2].kind: unknown kind; use one of: http, prometheus, tcp, process, wasm, greeting`,
	}, yamldoc.Lines(err))

	p, err = policy.Parse("p.yaml", []byte(head+"    - {name: hi, kind: greeting, interval: 5s, greeting: {}}\n"), policy.Env{})
	require.NoError(t, err)
	hi := p.Spec.Observers[0]
	assert.Equal(t, &greetingSection{Word: "hello"}, hi.Section)
	access := kinds.NewTargetAccess(p, targets.Default(), nil)
	t.Cleanup(access.Close)
	c, err := kinds.NewCheck(kinds.Setup{Policy: p, Observer: &hi, Access: access})
	require.NoError(t, err)
	evs, err := c.Observe(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "hello web", evs[0].Subject)
}

// TestRegisterRefusesWhatIsNotAKind: a kind without a section, a check
// or a summary, or whose name or payload another kind has, is an error,
// and nothing of the call is registered.
func TestRegisterRefusesWhatIsNotAKind(t *testing.T) {
	before := policy.Kinds()
	tests := []struct {
		name string
		kind *kinds.Kind
		err  string
	}{
		{"incomplete", kinds.Define(kinds.Definition[*greetingSection, *wrapperspb.StringValue]{Name: "half"}),
			`register: observer kind "half" lacks a section, a check, a summary`},
		{"nameless", kinds.Define(kinds.Definition[*greetingSection, *wrapperspb.BytesValue]{
			NewSection: func() *greetingSection { return nil },
			NewCheck:   func(*greetingSection, kinds.Setup) (kinds.Check, error) { return nil, nil },
			Summary:    func(*wrapperspb.BytesValue) string { return "" },
		}), `register: observer kind "" lacks a name`},
		{"another kind's name", kinds.Define(kinds.Definition[*greetingSection, *wrapperspb.BytesValue]{
			Name:       "http",
			NewSection: func() *greetingSection { return nil },
			NewCheck:   func(*greetingSection, kinds.Setup) (kinds.Check, error) { return nil, nil },
			Summary:    func(*wrapperspb.BytesValue) string { return "" },
		}), "register observer kind http: registered twice"},
		{"another kind's payload", kinds.Define(kinds.Definition[*greetingSection, *messages.HttpObservation]{
			Name:       "web",
			NewSection: func() *greetingSection { return nil },
			NewCheck:   func(*greetingSection, kinds.Setup) (kinds.Check, error) { return nil, nil },
			Summary:    func(*messages.HttpObservation) string { return "" },
		}), "register observer kind web: payload polar.observer.v1.HttpObservation is another kind's"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.EqualError(t, kinds.Register(greetingTwin(), tt.kind), tt.err)
			assert.Equal(t, before, policy.Kinds(), "nothing registered")
			_, ok := kinds.Lookup("twin")
			assert.False(t, ok)
		})
	}
}

// greetingTwin is a complete kind, registered with each refused one.
func greetingTwin() *kinds.Kind {
	return kinds.Define(kinds.Definition[*greetingSection, *wrapperspb.Int64Value]{
		Name:       "twin",
		NewSection: func() *greetingSection { return &greetingSection{} },
		NewCheck:   func(*greetingSection, kinds.Setup) (kinds.Check, error) { return nil, nil },
		Summary:    func(*wrapperspb.Int64Value) string { return "" },
	})
}
