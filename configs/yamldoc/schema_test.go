package yamldoc

import (
	"encoding/json"
	"reflect"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// schemaSample has a field of every shape SchemaOf describes.
type schemaSample struct {
	Name     string            `yaml:"name" schema:"required,minLength=1" doc:"the name"`
	Count    int               `yaml:"count" schema:"min=1,max=10"`
	Ratio    float64           `yaml:"ratio" schema:"xmin=0"`
	Mode     string            `yaml:"mode" schema:"enum=fast|slow"`
	Version  string            `yaml:"version" schema:"const=v1"`
	Path     string            `yaml:"path" schema:"pattern=^/(a,b)?$"`
	On       bool              `yaml:"on"`
	Every    Duration          `yaml:"every"`
	Size     ByteSize          `yaml:"size"`
	Tags     []string          `yaml:"tags" schema:"minItems=1"`
	Labels   map[string]string `yaml:"labels"`
	Anything any               `yaml:"anything"`
	Nested   *schemaNested     `yaml:"nested"`
	Ignored  string            `yaml:"-"`
}

type schemaNested struct {
	Limit int `yaml:"limit"`
}

func (s *schemaSample) SetDefaults() { s.Count, s.Every, s.Size = 3, Duration(5e9), 64*KiB }

func (n *schemaNested) ExtendSchema(s *Schema) { s.Properties["limit"].Description = "extended" }

func TestSchemaOf(t *testing.T) {
	s := SchemaOf(reflect.TypeFor[schemaSample]())
	got, err := json.Marshal(s.Properties)
	require.NoError(t, err)
	assert.JSONEq(t, `{
		"name": {"type": ["string", "number", "boolean"], "description": "the name", "minLength": 1},
		"count": {"type": ["integer", "null"], "minimum": 1, "maximum": 10, "default": 3},
		"ratio": {"type": ["number", "null"], "exclusiveMinimum": 0},
		"mode": {"type": ["string", "number", "boolean", "null"], "enum": ["fast", "slow"]},
		"version": {"type": ["string", "number", "boolean", "null"], "const": "v1"},
		"path": {"type": ["string", "number", "boolean", "null"], "pattern": "^/(a,b)?$"},
		"on": {"type": ["boolean", "null"]},
		"every": {"type": ["string", "null"], "pattern": `+jsonString(durationPattern)+`, "default": "5s"},
		"size": {"type": ["string", "integer", "null"], "pattern": `+jsonString(byteSizePattern)+`, "minimum": 0, "default": "64KiB"},
		"tags": {"type": ["array", "null"], "items": {"type": ["string", "number", "boolean", "null"]}, "minItems": 1},
		"labels": {"type": ["object", "null"], "additionalProperties": {"type": ["string", "number", "boolean", "null"]}},
		"anything": {},
		"nested": {"type": ["object", "null"], "additionalProperties": false,
			"properties": {"limit": {"type": ["integer", "null"], "description": "extended"}}}
	}`, string(got))
	assert.Equal(t, []string{"name"}, s.Required, "required, and not null")
	assert.Equal(t, false, s.AdditionalProperties, "unknown keys are refused")
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestSchemaTagMistakesPanic(t *testing.T) {
	for _, tag := range []string{"min=x", "max=", "xmin=1e", "minItems=-1", "minLength=a", "required,bogus"} {
		t.Run(tag, func(t *testing.T) {
			assert.PanicsWithValue(t, "yamldoc: schema tag of T.F: "+map[string]string{
				"min=x": "min is not a number", "max=": "max is not a number", "xmin=1e": "xmin is not a number",
				"minItems=-1": "minItems is not a count", "minLength=a": "minLength is not a count",
				"required,bogus": `unknown option "bogus"`,
			}[tag], func() { applyTag(&Schema{}, tag, "T.F") })
		})
	}
}

// TestSchemaPatternsReadAsTheParsers: the patterns of Duration and
// ByteSize accept what ParseDuration and ParseByteSize accept, and only
// that (short of ranges: 1.5B matches and is not whole bytes).
func TestSchemaPatternsReadAsTheParsers(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		parse   func(string) error
		inputs  []string
	}{
		{durationPattern, func(s string) error { _, err := ParseDuration(s); return err },
			[]string{"5s", "1m30s", "250ms", "1.5h", ".5s", "0", "-3s", "+2m", "10us", "10µs", " 5s ", "", "5", "s", "5 s", "5sec", "1d", "1.s", "--1s", "0x", "00"}},
		{byteSizePattern, func(s string) error { _, err := ParseByteSize(s); return err },
			[]string{"64KiB", "1GiB", "100MB", "4096", "1.5GiB", "32mib", "2kb", " 7 B ", "0", "", "KiB", "-1", "1PiB", "1 MiBs", "1e3", ".5MiB"}},
	} {
		re := regexp.MustCompile(tc.pattern)
		for _, in := range tc.inputs {
			assert.Equal(t, tc.parse(in) == nil, re.MatchString(in), "%q against %s", in, tc.pattern)
		}
	}
}
