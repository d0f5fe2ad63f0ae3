package yamldoc

import (
	"encoding"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Schema is a JSON Schema (draft-07) of what Decode accepts, for editors
// that validate YAML as it is typed (the YAML language server) and for any
// JSON Schema validator. It describes shapes, types, defaults and the
// static bounds that fields declare; validation that depends on the
// daemon's environment (allowed targets, the daemon's limits) or on other
// fields stays with the program's own checks.
type Schema struct {
	Schema      string `json:"$schema,omitempty"`
	ID          string `json:"$id,omitempty"`
	Title       string `json:"title,omitempty"`
	Description string `json:"description,omitempty"`
	// Type is a JSON type name or a list of them.
	Type       any                `json:"type,omitempty"`
	Properties map[string]*Schema `json:"properties,omitempty"`
	Required   []string           `json:"required,omitempty"`
	// AdditionalProperties is a *Schema, or false for none.
	AdditionalProperties any       `json:"additionalProperties,omitempty"`
	PropertyNames        *Schema   `json:"propertyNames,omitempty"`
	Items                *Schema   `json:"items,omitempty"`
	MinItems             *int      `json:"minItems,omitempty"`
	MinLength            *int      `json:"minLength,omitempty"`
	Minimum              *float64  `json:"minimum,omitempty"`
	Maximum              *float64  `json:"maximum,omitempty"`
	ExclusiveMinimum     *float64  `json:"exclusiveMinimum,omitempty"`
	Pattern              string    `json:"pattern,omitempty"`
	Enum                 []any     `json:"enum,omitempty"`
	Const                any       `json:"const,omitempty"`
	Default              any       `json:"default,omitempty"`
	AllOf                []*Schema `json:"allOf,omitempty"`
	If                   *Schema   `json:"if,omitempty"`
	Then                 *Schema   `json:"then,omitempty"`
	Not                  *Schema   `json:"not,omitempty"`
}

// Draft07 is the $schema of the schemas made here: the draft that editors
// support best.
const Draft07 = "http://json-schema.org/draft-07/schema#"

// What a YAML scalar may be, in JSON Schema's types: the decoder reads
// any scalar into a string field (min_version: 1.2 means "1.2"), and a
// null leaves the default in place wherever it is written.
var (
	scalarTypes = []string{"string", "number", "boolean", "null"}
	nullable    = func(t string) []string { return []string{t, "null"} }
)

// SchemaExtender is implemented (on the pointer) by a struct whose schema
// says more than its fields' tags can: constraints taken from the
// program's own constants and regular expressions, or that relate keys.
// SchemaOf calls ExtendSchema with the struct's schema once it is made.
type SchemaExtender interface {
	ExtendSchema(s *Schema)
}

// schemer is implemented by the types that decode themselves (Duration,
// ByteSize): their schema is what their UnmarshalYAML reads.
type schemer interface {
	schema() *Schema
}

// SchemaOf returns the schema of what Decode accepts into a value of type
// t, a struct: its keys (the fields' yaml names, and an Extensible's
// extension keys, each with the schema of its type), their types, the
// defaults that the type's SetDefaults sets, what the fields' tags add,
// and what the type's ExtendSchema (SchemaExtender) adds last:
//
//	doc:"..."        the key's description
//	schema:"..."     comma-separated: required (the key must be written),
//	                 min=N, max=N, xmin=N (exclusive minimum),
//	                 minItems=N, minLength=N, enum=a|b|c, const=v,
//	                 pattern=RE (last: the rest of the tag is the pattern)
//
// A tag that cannot be read is a mistake of the program: SchemaOf panics,
// and the tests of every type with tags call it.
func SchemaOf(t reflect.Type) *Schema {
	return typeSchema(t)
}

func typeSchema(t reflect.Type) *Schema {
	if s, ok := reflect.New(t).Interface().(schemer); ok {
		return s.schema()
	}
	switch t.Kind() {
	case reflect.Pointer:
		return typeSchema(t.Elem())
	case reflect.Struct:
		return structSchema(t)
	case reflect.Map:
		return &Schema{Type: nullable("object"), AdditionalProperties: typeSchema(t.Elem())}
	case reflect.Slice:
		return &Schema{Type: nullable("array"), Items: typeSchema(t.Elem())}
	case reflect.Interface:
		return &Schema{}
	case reflect.String:
		return &Schema{Type: scalarTypes}
	case reflect.Bool:
		return &Schema{Type: nullable("boolean")}
	case reflect.Float32, reflect.Float64:
		return &Schema{Type: nullable("number")}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return &Schema{Type: nullable("integer")}
	}
	panic("yamldoc: no schema for type " + t.String())
}

func structSchema(t reflect.Type) *Schema {
	s := &Schema{Type: nullable("object"), Properties: map[string]*Schema{}, AdditionalProperties: false}
	defaults := reflect.New(t)
	setDefaults(defaults)
	for i := range t.NumField() {
		f := t.Field(i)
		name, ok := yamlName(f)
		if !ok {
			continue
		}
		p := typeSchema(f.Type)
		p.Description = f.Tag.Get("doc")
		if v := defaults.Elem().Field(i); !v.IsZero() {
			p.Default = jsonValue(v)
		}
		if applyTag(p, f.Tag.Get("schema"), t.String()+"."+f.Name) {
			// A null reads as the key not written.
			s.Required = append(s.Required, name)
			if types, ok := p.Type.([]string); ok {
				kept := slices.DeleteFunc(slices.Clone(types), func(t string) bool { return t == "null" })
				p.Type = kept
				if len(kept) == 1 {
					p.Type = kept[0]
				}
			}
		}
		s.Properties[name] = p
	}
	if ext, ok := reflect.New(t).Interface().(Extensible); ok {
		for _, key := range ext.ExtensionKeys() {
			if v := ext.NewExtension(key); v != nil {
				s.Properties[key] = typeSchema(reflect.TypeOf(v))
			}
		}
	}
	if x, ok := reflect.New(t).Interface().(SchemaExtender); ok {
		x.ExtendSchema(s)
	}
	return s
}

// jsonValue is a default as a document writes it: a Duration or ByteSize
// as its text (5s, 64KiB), anything else as itself.
func jsonValue(v reflect.Value) any {
	if m, ok := v.Interface().(encoding.TextMarshaler); ok {
		text, err := m.MarshalText()
		if err == nil {
			return string(text)
		}
	}
	return v.Interface()
}

// applyTag adds the constraints of a schema tag to p and says whether the
// key is required. where names the field, for the panic of a bad tag.
func applyTag(p *Schema, tag, where string) (required bool) {
	bad := func(format string, args ...any) {
		panic(fmt.Sprintf("yamldoc: schema tag of %s: %s", where, fmt.Sprintf(format, args...)))
	}
	number := func(key, value string) *float64 {
		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			bad("%s is not a number", key)
		}
		return &f
	}
	count := func(key, value string) *int {
		n, err := strconv.Atoi(value)
		if err != nil || n < 0 {
			bad("%s is not a count", key)
		}
		return &n
	}
	for tag != "" {
		var opt string
		if strings.HasPrefix(tag, "pattern=") {
			opt, tag = tag, ""
		} else {
			opt, tag, _ = strings.Cut(tag, ",")
		}
		key, value, _ := strings.Cut(opt, "=")
		switch key {
		case "required":
			required = true
		case "min":
			p.Minimum = number(key, value)
		case "max":
			p.Maximum = number(key, value)
		case "xmin":
			p.ExclusiveMinimum = number(key, value)
		case "minItems":
			p.MinItems = count(key, value)
		case "minLength":
			p.MinLength = count(key, value)
		case "enum":
			for _, e := range strings.Split(value, "|") {
				p.Enum = append(p.Enum, e)
			}
		case "const":
			p.Const = value
		case "pattern":
			p.Pattern = value
		default:
			bad("unknown option %q", key)
		}
	}
	return required
}

// durationPattern is what time.ParseDuration reads: 250ms, 1m30s, 0.
const durationPattern = `^\s*[-+]?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)\s*$`

func (*Duration) schema() *Schema {
	return &Schema{Type: nullable("string"), Pattern: durationPattern}
}

// byteSizePattern is what ParseByteSize reads: 64KiB, 1.5GiB, 100MB, 4096,
// its units in any case.
const byteSizePattern = `^\s*[0-9]+(\.[0-9]+)?\s*(([kKmMgGtT][iI]?)?[bB])?\s*$`

func (*ByteSize) schema() *Schema {
	return &Schema{Type: []string{"string", "integer", "null"}, Pattern: byteSizePattern, Minimum: new(float64)}
}
