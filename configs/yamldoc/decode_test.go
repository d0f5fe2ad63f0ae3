package yamldoc

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/test/fuzzbudget"
)

// sample exercises every shape the strict decoder supports.
type sample struct {
	Name    string            `yaml:"name"`
	Count   int8              `yaml:"count"`
	Ratio   float64           `yaml:"ratio"`
	On      bool              `yaml:"on"`
	Every   Duration          `yaml:"every"`
	Size    ByteSize          `yaml:"size"`
	Tags    []string          `yaml:"tags"`
	Labels  map[string]string `yaml:"labels"`
	Items   []item            `yaml:"items"`
	Section *item             `yaml:"section"`
	Free    map[string]any    `yaml:"free"`
	Ignored string            `yaml:"-"`
	Untag   string
}

type item struct {
	ID   string `yaml:"id"`
	Kind string `yaml:"kind"`
}

// SetDefaults shows that allocated elements get their defaults first.
func (i *item) SetDefaults() { i.Kind = "default" }

func TestDecodeShapes(t *testing.T) {
	var s sample
	doc, err := Decode("s.yaml", []byte(`
name: n
count: -8
ratio: 3
on: true
every: 1m30s
size: 1.5KiB
tags: [a, b]
labels: {x.y: "1", plain: two}
items: [{id: a}, {id: b, kind: custom}]
section: {id: s}
free: {n: 1, f: 1.5, s: text, l: [1, {a: b}], "no": null, t: true}
untag: u
`), &s)
	require.NoError(t, err)
	assert.Equal(t, sample{
		Name: "n", Count: -8, Ratio: 3, On: true, Every: Duration(90 * time.Second), Size: 1536,
		Tags: []string{"a", "b"}, Labels: map[string]string{"x.y": "1", "plain": "two"},
		Items:   []item{{ID: "a", Kind: "default"}, {ID: "b", Kind: "custom"}},
		Section: &item{ID: "s", Kind: "default"},
		Free:    map[string]any{"n": 1, "f": 1.5, "s": "text", "l": []any{1, map[string]any{"a": "b"}}, "no": nil, "t": true},
		Untag:   "u",
	}, s)
	assert.True(t, doc.Has("labels[\"x.y\"]"))
	assert.True(t, doc.Has("free.l[1].a"))
	assert.Equal(t, 10, doc.Line("items[0]"))
	assert.Equal(t, "line 10:9", doc.Where("items[0]"))
	assert.Equal(t, "nowhere", doc.Where("nowhere"))
}

func TestDecodeProblems(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"types", "name: {a: 1}\ncount: 300\nratio: x\non: 1\ntags: a\nlabels: [a]\nitems: {id: a}\nsection: [1]\nfree: 5", []string{
			`s.yaml:1:7: name: expected a string, got a mapping`,
			`s.yaml:2:8: count: the integer is out of range for this key`,
			`s.yaml:3:8: ratio: expected a number, got a string of 1 byte`,
			`s.yaml:4:5: on: expected true or false, got an integer`,
			`s.yaml:5:7: tags: expected a list, got a string of 1 byte`,
			`s.yaml:6:9: labels: expected a mapping, got a list`,
			`s.yaml:7:8: items: expected a list, got a mapping`,
			`s.yaml:8:10: section: expected a mapping of keys, got a list`,
			`s.yaml:9:7: free: expected a mapping, got an integer`}},
		{"quoted number is a string", `count: "5"`, []string{`s.yaml:1:8: count: expected an integer, got a string of 1 byte`}},
		{"ignored field is unknown", "ignored: x", []string{`s.yaml:1:1: ignored: unknown key "ignored"; valid keys: count, every, free, items, labels, name, on, ratio, section, size, tags, untag`}},
		{"non-scalar key", "? [a]\n: b", []string{`s.yaml:1:3: a key must be a plain value, not a list`}},
		{"duplicate in a map", "labels: {a: 1, a: 2}", []string{`s.yaml:1:16: labels.a: duplicate key "a" (first at line 1:10)`}},
		{"duplicate in a list element", "items:\n- id: a\n  id: b", []string{`s.yaml:3:3: items[0].id: duplicate key "id" (first at line 2:3)`}},
		{"self-referencing alias", "free: &a {x: *a}", []string{`s.yaml:1:14: free.x: an alias refers to itself`}},
		{"JSON cannot hold infinity", "free: {x: .inf}", []string{`s.yaml:1:11: free.x: infinity and NaN cannot be represented in JSON`}},
		{"bad merge", "section: {<<: 5}", []string{`s.yaml:1:15: section: a merge (<<) takes a mapping or a list of mappings, not an integer`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s sample
			doc, err := Decode("s.yaml", []byte(tt.yaml), &s)
			require.NotNil(t, doc)
			assert.Equal(t, tt.want, Lines(err))
		})
	}
}

func TestDecodeAliasesAndMerges(t *testing.T) {
	var s sample
	_, err := Decode("s.yaml", []byte(`
labels: &common {a: "1", b: "2"}
free: {copy: *common}
items:
  - &base {id: x, kind: k}
  - {<<: *base, id: y}
  - {<<: [*base], kind: z}
`), &s)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"copy": map[string]any{"a": "1", "b": "2"}}, s.Free)
	assert.Equal(t, []item{{"x", "k"}, {"y", "k"}, {"x", "z"}}, s.Items)
}

func TestDecodeBillionLaughs(t *testing.T) {
	var b strings.Builder
	b.WriteString("free:\n  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
	for i := 1; i < 10; i++ {
		fmt.Fprintf(&b, "  l%d: &l%d [*l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d]\n", i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	var err error
	fuzzbudget.Check(t, fuzzbudget.MaxAlloc, func() {
		var s sample
		_, err = Decode("s.yaml", []byte(b.String()), &s)
	})
	problems := ProblemsOf(err)
	require.Len(t, problems, 1)
	assert.Equal(t, "the document expands too much through aliases", problems[0].Message)
}

// mergeBomb is a mapping of keys entries, then depth levels that each
// merge the level below fan times.
func mergeBomb(keys, fan, depth int) string {
	var b strings.Builder
	b.WriteString("free:\n  a0: &a0 {")
	for i := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "k%d: 0", i)
	}
	b.WriteString("}\n")
	for d := 1; d <= depth; d++ {
		fmt.Fprintf(&b, "  a%d: &a%d {<<: [%s]}\n", d, d, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d, ", d-1), fan), ", "))
	}
	return b.String()
}

// Merge keys copy every key of the mapping they name, and nest. Charged
// one unit per merge, a 19 KB file of them allocated 8.6 GB before it was
// rejected. Each copied key is charged now: any shape of merge bomb up to
// the size of a policy file (256KiB) is rejected within the fuzz budget.
func TestDecodeMergeBomb(t *testing.T) {
	for _, shape := range []struct{ keys, fan, depth int }{
		{2000, 20, 4}, {1000, 10, 3}, {200, 50, 4}, {5000, 100, 2}, {20000, 10, 1}, {20000, 40, 2}, {100, 1000, 1},
	} {
		doc := mergeBomb(shape.keys, shape.fan, shape.depth)
		require.LessOrEqual(t, len(doc), 256<<10)
		t.Run(fmt.Sprintf("%d keys, %d merges a level, %d levels (%d bytes)", shape.keys, shape.fan, shape.depth, len(doc)), func(t *testing.T) {
			var err error
			fuzzbudget.Check(t, fuzzbudget.MaxAlloc, func() {
				var s sample
				_, err = Decode("s.yaml", []byte(doc), &s)
			})
			problems := ProblemsOf(err)
			require.Len(t, problems, 1)
			assert.Equal(t, "the document expands too much through aliases", problems[0].Message)
		})
	}
}

// keyChain is an anchor holding a chain of depth mappings with keys of
// keyBytes, aliased uses times.
func keyChain(keyBytes, depth, uses int) string {
	key := strings.Repeat("k", keyBytes)
	return "free:\n  a: &a " + strings.Repeat("{"+key+": ", depth) + "1" + strings.Repeat("}", depth) +
		"\n  b: [" + strings.TrimSuffix(strings.Repeat("*a, ", uses), ", ") + "]\n"
}

// Every value is recorded under its key path, which repeats the keys
// above it. Counted in nodes alone, a 119 KB file of long keys nested deep
// and aliased 8,500 times allocated 2 GB of paths in 6 s. Keys are capped,
// and the paths' bytes are charged.
func TestDecodeLongKeyPaths(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		keyBytes, depth, uses int
		want                  string
	}{
		{"keys too long", 1000, 85, 8500, "s.yaml:2:10: free.a: a key of 1000 bytes; keys have at most 256"},
		{"the longest keys, nested and aliased", 256, 95, 20000, "the document expands too much through aliases"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := keyChain(tc.keyBytes, tc.depth, tc.uses)
			require.LessOrEqual(t, len(doc), 256<<10)
			var err error
			fuzzbudget.Check(t, fuzzbudget.MaxAlloc, func() {
				var s sample
				_, err = Decode("s.yaml", []byte(doc), &s)
			})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Less(t, len(err.Error()), 64<<10, "the problems repeat the document")
		})
	}
}

func TestDecodeLimits(t *testing.T) {
	deep := "free: " + strings.Repeat("[", MaxDepth+5) + strings.Repeat("]", MaxDepth+5)
	var s sample
	doc, err := Decode("s.yaml", []byte(deep), &s)
	assert.Nil(t, doc)
	assert.EqualError(t, err, fmt.Sprintf("s.yaml:1:%d: the document nests deeper than %d levels", 6+MaxDepth, MaxDepth))

	// go-yaml's own limit stops a pathological nesting early, without a hang.
	fuzzbudget.Check(t, fuzzbudget.MaxAlloc, func() {
		_, err = Decode("s.yaml", []byte("free: "+strings.Repeat("[", 200_000)), &s)
	})
	assert.ErrorContains(t, err, "exceeded max depth")

	many := strings.Repeat("x: 1\n", 2*MaxProblems)
	_, err = Decode("s.yaml", []byte(strings.ReplaceAll(many, "x", "k")), &s)
	problems := ProblemsOf(err)
	require.Len(t, problems, MaxProblems+1)
	assert.Equal(t, fmt.Sprintf("more than %d problems; stopped looking", MaxProblems), problems[MaxProblems].Message)
}

func TestDecodeWantsAStructPointer(t *testing.T) {
	var s sample
	_, err := Decode("s.yaml", []byte("name: x"), s)
	assert.EqualError(t, err, "decode s.yaml: want a non-nil pointer to a struct, got yamldoc.sample")
}

func TestProblemFormat(t *testing.T) {
	tests := []struct {
		p    Problem
		want string
	}{
		{Problem{File: "f.yaml", Line: 3, Column: 5, Path: "a.b", Message: "bad"}, "f.yaml:3:5: a.b: bad"},
		{Problem{File: "f.yaml", Line: 3, Message: "bad"}, "f.yaml:3: bad"},
		{Problem{File: "f.yaml", Message: "bad"}, "f.yaml: bad"},
		{Problem{Path: "a", Message: "bad"}, "a: bad"},
		{Problem{Line: 2, Column: 1, Message: "bad"}, "2:1: bad"},
		{Problem{Message: "bad"}, "bad"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, tt.p.Error())
	}
}

func TestProblemsOfAndJoin(t *testing.T) {
	assert.Nil(t, ProblemsOf(nil))
	assert.NoError(t, Join(nil))
	a := &Problem{File: "b.yaml", Line: 1, Message: "a"}
	b := &Problem{File: "a.yaml", Line: 9, Message: "b"}
	c := &Problem{File: "a.yaml", Line: 2, Message: "c"}
	err := errors.Join(Join([]*Problem{a, b, c}), fmt.Errorf("wrapped: %w", a), errors.New("plain"))
	got := ProblemsOf(err)
	assert.Equal(t, []*Problem{c, b, a, a, {Message: "plain"}}, got)
	var p *Problem
	assert.True(t, errors.As(err, &p))
}

func TestPathHelpers(t *testing.T) {
	assert.Equal(t, "a.b", PathKey("a", "b"))
	assert.Equal(t, `a["x.y"]`, PathKey("a", "x.y"))
	assert.Equal(t, "b", PathKey("", "b"))
	for path, parent := range map[string]string{
		"a.b": "a", "a[2]": "a", `a["x.y"]`: "a", `a["x[1]"]`: "a", "a": "", `a.b["p.q"].c`: `a.b["p.q"]`,
	} {
		assert.Equal(t, parent, parentPath(path), path)
	}
}

// extended takes, beyond its fields, one key per name in its extensions,
// each decoded into an item.
type extended struct {
	Name string `yaml:"name"`
	got  map[string]*item
}

func (e *extended) ExtensionKeys() []string { return []string{"alpha", "beta"} }

func (e *extended) NewExtension(key string) any {
	if key != "alpha" && key != "beta" {
		return nil
	}
	return &item{}
}

func (e *extended) SetExtension(key string, value any) {
	if e.got == nil {
		e.got = map[string]*item{}
	}
	e.got[key] = value.(*item)
}

// TestDecodeExtensions: the keys an Extensible takes beyond its fields
// are decoded strictly into the values it makes, with their defaults and
// positions; a null leaves the key out; an unknown key is suggested
// among the fields and the extensions.
func TestDecodeExtensions(t *testing.T) {
	var e extended
	doc, err := Decode("e.yaml", []byte("name: n\nalpha: {id: a}\nbeta:\n"), &e)
	require.NoError(t, err)
	assert.Equal(t, map[string]*item{"alpha": {ID: "a", Kind: "default"}}, e.got, "beta is null: absent")
	assert.Equal(t, 2, doc.Line("alpha.id"))
	assert.True(t, doc.Has("beta"))

	e = extended{}
	_, err = Decode("e.yaml", []byte("alpha: {id: a, size: 1}\nalpah: {}\ngamma: 1\n"), &e)
	assert.Equal(t, []string{
		`e.yaml:1:16: alpha.size: unknown key "size"; valid keys: id, kind`,
		`e.yaml:2:1: alpah: unknown key "alpah" (did you mean "alpha"?)`,
		`e.yaml:3:1: gamma: unknown key "gamma"; valid keys: alpha, beta, name`,
	}, Lines(err))
	assert.Contains(t, e.got, "alpha", "a value with problems is still handed back")
}
