package policy

import (
	"reflect"

	"github.com/polar/observerd/configs/yamldoc"
)

// SchemaID names the policy schema; editors show it, and a policy's
// modeline may point at the installed copy instead.
const SchemaID = "https://observerd.polar/schemas/observer.polar/v1/ObservationPolicy.json"

// Schema returns the JSON Schema (draft-07) of a policy file, with the
// sections of the registered kinds: what an editor can check as a policy
// is typed. It is made from the policy's types, so it cannot drift from
// what Parse decodes; Parse checks more (the daemon's allowed targets and
// limits, names unique in the policy), and has the last word.
func Schema() *yamldoc.Schema {
	mustHaveKinds()
	s := yamldoc.SchemaOf(reflect.TypeFor[Policy]())
	s.Schema = yamldoc.Draft07
	s.ID = SchemaID
	s.Title = "observerd observation policy"
	s.Description = "What observerd observes of one service, and how: see docs/policies.md."
	s.Type = "object"
	return s
}

// ExtendSchema pins the document's header.
func (*Policy) ExtendSchema(s *yamldoc.Schema) {
	s.Properties["apiVersion"].Const = APIVersion
	s.Properties["kind"].Const = Kind
}

// ExtendSchema gives the name its syntax.
func (*Metadata) ExtendSchema(s *yamldoc.Schema) {
	s.Properties["name"].Pattern = name.String()
}

// ExtendSchema bounds the thresholds.
func (*Thresholds) ExtendSchema(s *yamldoc.Schema) {
	lowest, highest := 1.0, float64(maxThreshold)
	for _, key := range []string{"down_after", "up_after"} {
		s.Properties[key].Minimum, s.Properties[key].Maximum = &lowest, &highest
	}
}

// ExtendSchema lists the kinds, and says that an observer has the section
// of its kind and no other: a null section is one not written.
func (*Observer) ExtendSchema(s *yamldoc.Schema) {
	s.Properties["name"].Pattern = name.String()
	kinds := Kinds()
	for _, kind := range kinds {
		s.Properties["kind"].Enum = append(s.Properties["kind"].Enum, kind)
		then := &yamldoc.Schema{
			Required:   []string{kind},
			Properties: map[string]*yamldoc.Schema{kind: {Type: "object"}},
		}
		for _, other := range kinds {
			if other != kind {
				then.Properties[other] = &yamldoc.Schema{Type: "null"}
			}
		}
		s.AllOf = append(s.AllOf, &yamldoc.Schema{
			If: &yamldoc.Schema{
				Required:   []string{"kind"},
				Properties: map[string]*yamldoc.Schema{"kind": {Const: kind}},
			},
			Then: then,
		})
	}
}
