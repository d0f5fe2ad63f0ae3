// Package yamldoc decodes YAML documents strictly into Go structs and
// reports every problem at once: unknown keys (with a suggestion), wrong
// types, bad durations and byte sizes, duplicate keys, excessive aliasing,
// each with file:line:col and its key path, such as broker.tls.min_version
// or spec.observers[2].interval. The daemon config and policy files share
// it; a Document remembers where each key was, so that validation, which
// runs on the decoded values, still points at the file.
//
// Its problems never quote what the document holds (only key paths,
// kinds and sizes): a rejected file may be anything, a secret included.
package yamldoc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Limits of the strict decoder. They keep a hostile or broken file from
// costing more than a bounded amount of time and output.
const (
	// MaxDepth is how deeply mappings and lists may nest; real documents
	// use fewer than ten levels.
	MaxDepth = 100
	// MaxProblems is where decoding stops reporting: past it, the file is
	// most likely not the kind of document expected at all.
	MaxProblems = 100
	// MaxKeyBytes is the longest mapping key: keys name things, and every
	// key is repeated in the key path of everything below it.
	MaxKeyBytes = 256
)

// Defaulter is implemented (on the pointer) by types that fill in their
// defaults. The decoder calls SetDefaults on every struct it allocates (list
// elements, pointer sections) before overlaying the document onto it, so an
// absent key keeps its default while an explicit zero stays visible to
// validation. The top-level value is the caller's to prepare.
type Defaulter interface {
	SetDefaults()
}

// Extensible is implemented (on the pointer) by a struct that takes keys
// beyond its fields, known only at run time: an observer of a policy takes
// one section per observer kind, named by the kind, of the kind's own
// type. For a key that is not a field, the decoder asks NewExtension for a
// pointer to a fresh value to decode it into (nil: not a key of the
// struct), calls its SetDefaults (Defaulter) first, and hands it back
// with SetExtension unless the document's value is null, so that a null
// leaves the key absent as it leaves a pointer field nil.
// ExtensionKeys lists the keys it takes, for the suggestion of an unknown
// key.
type Extensible interface {
	ExtensionKeys() []string
	NewExtension(key string) any
	SetExtension(key string, value any)
}

// Document records where each key path of a decoded file is, so that
// validation, which runs on the Go values, can still point at file:line:col.
type Document struct {
	File     string
	at       map[string]place
	problems []*Problem
	broken   map[string]bool
}

type place struct {
	line, column       int // the value
	keyLine, keyColumn int // the key naming it; zero for list elements
}

// Has reports whether path was written in the document (a key with a null
// value counts as written).
func (d *Document) Has(path string) bool {
	if d == nil {
		return false
	}
	_, ok := d.at[path]
	return ok
}

// Line is the line of the value at path, or 0 when the path is absent.
func (d *Document) Line(path string) int {
	if d == nil {
		return 0
	}
	return d.at[path].line
}

// Where names where path is for a message about another place, such as a
// duplicate's first occurrence: "line 12:5", or the path itself when the
// position is unknown.
func (d *Document) Where(path string) string {
	if d == nil {
		return path
	}
	if at, ok := d.at[path]; ok && at.line > 0 {
		return fmt.Sprintf("line %d:%d", at.line, at.column)
	}
	return path
}

// Problemf makes a problem at path. When the path is not in the document
// (a missing key), it points at the key of the nearest enclosing mapping
// that is, which is where the operator has to add it.
func (d *Document) Problemf(path, format string, args ...any) *Problem {
	p := &Problem{Path: path, Message: fmt.Sprintf(format, args...)}
	if d == nil {
		return p
	}
	p.File = d.File
	if at, ok := d.at[path]; ok {
		p.Line, p.Column = at.line, at.column
		return p
	}
	for parent := path; parent != ""; {
		parent = parentPath(parent)
		if at, ok := d.at[parent]; ok {
			p.Line, p.Column = at.keyLine, at.keyColumn
			if p.Line == 0 {
				p.Line, p.Column = at.line, at.column
			}
			return p
		}
	}
	return p
}

// Broken reports whether path, or a path enclosing it, already failed to
// decode. Validation skips such paths: a value that did not decode has no
// meaningful Go value to check, and a second message would only be noise.
func (d *Document) Broken(path string) bool {
	if d == nil {
		return false
	}
	for p := path; p != ""; p = parentPath(p) {
		if d.broken[p] {
			return true
		}
	}
	return false
}

// Err is the decoding problems joined, or nil.
func (d *Document) Err() error {
	if d == nil {
		return nil
	}
	return Join(d.problems)
}

// Report starts a list of problems for validating the decoded value, seeded
// with the decoding problems so that one error holds everything wrong with
// the file. A nil Document gives problems without positions, for values
// built in code.
func (d *Document) Report() *Report {
	r := &Report{doc: d}
	if d != nil {
		r.problems = slices.Clone(d.problems)
	}
	return r
}

// Report collects the problems of one document.
type Report struct {
	doc      *Document
	problems []*Problem
}

// Addf records a problem at path, unless the path already failed to decode.
func (r *Report) Addf(path, format string, args ...any) {
	if r.doc.Broken(path) {
		return
	}
	r.problems = append(r.problems, r.doc.Problemf(path, format, args...))
}

// Err is every problem recorded, sorted and joined, or nil.
func (r *Report) Err() error { return Join(r.problems) }

// Where names where path is, for a message about another place (see
// Document.Where).
func (r *Report) Where(path string) string { return r.doc.Where(path) }

// Decode decodes one YAML document into out, which must be a non-nil
// pointer to a struct (prefilled with defaults). It reports every problem
// rather than the first: unknown keys (with a suggestion), wrong types, bad
// durations and byte sizes, duplicate keys, excessive aliasing. Each problem
// carries file:line:col and the key path, such as broker.tls.min_version or
// spec.observers[2].interval.
//
// When the file cannot be decoded at all (not UTF-8 text, a YAML syntax
// error, empty, not a mapping, several documents, nested too deeply) the
// Document is nil. Otherwise the Document is returned, with the problems in
// the error too, so that the caller can go on validating and report
// decoding and validation problems together.
//
// Null values ("key:" or "key: null") leave the default in place.
func Decode(file string, data []byte, out any) (*Document, error) {
	v := reflect.ValueOf(out)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("decode %s: want a non-nil pointer to a struct, got %T", file, out)
	}
	root, nodes, err := parseDocument(file, data)
	if err != nil {
		return nil, err
	}
	doc := &Document{File: file, at: map[string]place{}, broken: map[string]bool{}}
	d := &decoder{
		doc: doc,
		// Aliases may repeat parts of the document, but not blow it up: a
		// "billion laughs" file runs out of budget after a few thousand
		// nodes instead of expanding to gigabytes.
		budget: 4*nodes + 10_000,
		// Every value decoded is recorded under its key path, and a path
		// repeats the keys above it: counted in nodes alone, long keys
		// nested deep and aliased often made gigabytes of paths.
		pathBudget: 32*len(data) + 1<<20,
		active:     map[*yaml.Node]bool{},
		merged:     map[*yaml.Node][]entry{},
	}
	doc.at[""] = place{line: root.Line, column: root.Column}
	d.value(root, v.Elem(), "", nil)
	return doc, doc.Err()
}

// parseDocument checks that data is one YAML document whose root is a
// mapping, and returns the root with the number of nodes it holds.
func parseDocument(file string, data []byte) (*yaml.Node, int, error) {
	fatal := func(line int, format string, args ...any) error {
		return &Problem{File: file, Line: line, Message: fmt.Sprintf(format, args...)}
	}
	if i := bytes.IndexByte(data, 0); i >= 0 {
		return nil, 0, fatal(lineAt(data, i), "not a text file: it contains a NUL byte")
	}
	if !utf8.Valid(data) {
		i := 0
		for i < len(data) {
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size <= 1 {
				break
			}
			i += size
		}
		return nil, 0, fatal(lineAt(data, i), "not a text file: it is not valid UTF-8")
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, 0, fatal(0, "the document is empty")
		}
		return nil, 0, syntaxProblem(file, err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return nil, 0, fatal(next.Line, "a second YAML document starts here; a file holds exactly one")
	case !errors.Is(err, io.EOF):
		return nil, 0, syntaxProblem(file, err)
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return nil, 0, fatal(0, "the document is empty")
	}
	nodes, deep := measure(root, 1)
	if deep != nil {
		return nil, 0, &Problem{File: file, Line: deep.Line, Column: deep.Column,
			Message: fmt.Sprintf("the document nests deeper than %d levels", MaxDepth)}
	}
	if root.Kind != yaml.MappingNode {
		return nil, 0, &Problem{File: file, Line: root.Line, Column: root.Column,
			Message: "the document must be a mapping of keys to values, not " + describe(root)}
	}
	return root, nodes, nil
}

// measure counts the nodes of a tree without following aliases, and returns
// the first node deeper than MaxDepth, if any.
func measure(n *yaml.Node, depth int) (int, *yaml.Node) {
	if depth > MaxDepth {
		return 0, n
	}
	count := 1
	for _, c := range n.Content {
		k, deep := measure(c, depth+1)
		if deep != nil {
			return 0, deep
		}
		count += k
	}
	return count, nil
}

var yamlErrLine = regexp.MustCompile(`^yaml: (?:line (\d+): )?`)

// parserProblems are the messages of go-yaml's parser, as opposed to its
// scanner. go-yaml numbers the lines of parser errors from 0 (see
// go-yaml/yaml#205), and leaves the line out when that is 0.
var parserProblems = []string{
	"did not find expected node content",
	"did not find expected key",
	"did not find expected <stream-start>",
	"did not find expected <document start>",
	"did not find expected '-' indicator",
	"did not find expected ',' or '}'",
	"did not find expected ',' or ']'",
	"found undefined tag handle",
	"found incompatible YAML document",
	"found duplicate %YAML directive",
	"found duplicate %TAG directive",
}

// syntaxProblem turns a go-yaml parse error ("yaml: line 3: ...") into a
// Problem carrying the (1-based) line.
func syntaxProblem(file string, err error) *Problem {
	msg := err.Error()
	p := &Problem{File: file}
	if m := yamlErrLine.FindStringSubmatch(msg); m != nil {
		p.Line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	}
	if slices.Contains(parserProblems, msg) {
		p.Line++ // a fixed text: it quotes go-yaml's grammar, not the document
	} else {
		msg = yamlQuoted.ReplaceAllString(msg, "…")
	}
	p.Message = "invalid YAML: " + msg
	return p
}

// yamlQuoted is what the scanner's messages quote of the document (an
// anchor's name, a character): problems never repeat the document.
var yamlQuoted = regexp.MustCompile("'[^']*'|`[^`]*`|\"[^\"]*\"")

func lineAt(data []byte, offset int) int { return bytes.Count(data[:offset], []byte("\n")) + 1 }

// decoder walks a yaml.Node tree and a Go value together.
type decoder struct {
	doc    *Document
	budget int
	active map[*yaml.Node]bool // anchors being expanded, to catch self-reference
	// merged keeps the entries of each mapping a merge named, so that a
	// mapping merged again and again is listed once (its copies are
	// still charged to the budget).
	merged map[*yaml.Node][]entry
	// pathBudget is what the key paths recorded may take, in bytes.
	pathBudget int
	stopped    bool
}

type nodeUnmarshaler interface {
	UnmarshalYAML(*yaml.Node) error
}

var nodeUnmarshalerType = reflect.TypeFor[nodeUnmarshaler]()

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	if d.stopped {
		return
	}
	d.doc.broken[path] = true
	if len(d.doc.problems) >= MaxProblems {
		d.doc.problems = append(d.doc.problems, &Problem{File: d.doc.File, Line: n.Line, Column: n.Column,
			Message: fmt.Sprintf("more than %d problems; stopped looking", MaxProblems)})
		d.stopped = true
		return
	}
	d.doc.problems = append(d.doc.problems, &Problem{File: d.doc.File, Line: n.Line, Column: n.Column,
		Path: path, Message: fmt.Sprintf(format, args...)})
}

// spend accounts for one decoded node; false once the budget is gone.
func (d *decoder) spend(n *yaml.Node, path string) bool { return d.spendN(n, path, 1) }

// spendN accounts for k units of work (nodes decoded, keys copied by a
// merge); false once the budget is gone.
func (d *decoder) spendN(n *yaml.Node, path string, k int) bool {
	if d.stopped {
		return false
	}
	d.budget -= k
	if d.budget < 0 {
		d.fail(n, path, "the document expands too much through aliases")
		d.stopped = true
		return false
	}
	return true
}

// deref follows an alias. Anchored nodes are marked while they are being
// decoded, so that an alias inside its own anchor is reported instead of
// recursing; it returns nil (after reporting) then. release must be called
// when done with the target.
func (d *decoder) deref(n *yaml.Node, path string) (target *yaml.Node, release func()) {
	target = n
	if n.Kind == yaml.AliasNode {
		target = n.Alias
		if d.active[target] {
			d.fail(n, path, "an alias refers to itself")
			return nil, nil
		}
	}
	if target.Anchor == "" {
		return target, func() {}
	}
	d.active[target] = true
	return target, func() { delete(d.active, target) }
}

// value decodes n into v. key is the mapping key naming it, nil for list
// elements and the root. It records where the value is, so that
// validation can point at it; an alias is recorded where it is used.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string, key *yaml.Node) {
	if !d.spend(n, path) {
		return
	}
	if d.pathBudget -= len(path); d.pathBudget < 0 {
		d.fail(n, "", "the document expands too much through aliases")
		d.stopped = true
		return
	}
	if path != "" {
		at := place{line: n.Line, column: n.Column}
		if key != nil {
			at.keyLine, at.keyColumn = key.Line, key.Column
		}
		d.doc.at[path] = at
	}
	n, release := d.deref(n, path)
	if n == nil {
		return
	}
	defer release()
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}
	d.into(n, v, path)
}

// into decodes a non-null, non-alias node into v.
func (d *decoder) into(n *yaml.Node, v reflect.Value, path string) {
	if v.CanAddr() && v.Addr().Type().Implements(nodeUnmarshalerType) {
		if err := v.Addr().Interface().(nodeUnmarshaler).UnmarshalYAML(n); err != nil {
			d.fail(n, path, "%s", err.Error())
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			fresh := reflect.New(v.Type().Elem())
			setDefaults(fresh)
			v.Set(fresh)
		}
		d.into(n, v.Elem(), path)
	case reflect.Struct:
		d.structure(n, v, path)
	case reflect.Map:
		d.mapping(n, v, path)
	case reflect.Slice:
		d.list(n, v, path)
	case reflect.Interface:
		if x, ok := d.generic(n, path); ok {
			v.Set(reflect.ValueOf(&x).Elem())
		}
	default:
		d.scalar(n, v, path)
	}
}

func setDefaults(ptr reflect.Value) {
	if def, ok := reflect.TypeAssert[Defaulter](ptr); ok {
		def.SetDefaults()
	}
}

// entry is one key: value pair of a mapping, after merge keys are applied.
type entry struct{ key, value *yaml.Node }

// entries lists the pairs of a mapping node, reporting duplicate and
// non-scalar keys, and applying "<<: *anchor" merges (explicit keys win,
// then earlier merged mappings win over later ones, as YAML specifies).
// Merged pairs are added as they come, never gathered first: a mapping
// merging many large ones costs its distinct keys, not their sum.
func (d *decoder) entries(n *yaml.Node, path string) []entry {
	var out []entry
	var merges []*yaml.Node
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content) && !d.stopped; i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merges = append(merges, val)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.fail(k, path, "a key must be a plain value, not %s", describe(k))
			continue
		}
		if len(k.Value) > MaxKeyBytes {
			d.fail(k, path, "a key of %s; keys have at most %d", Bytes(len(k.Value)), MaxKeyBytes)
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.fail(k, PathKey(path, k.Value), "duplicate key %s (first at line %d:%d)", shownKey(k.Value), first.Line, first.Column)
			continue
		}
		seen[k.Value] = k
		out = append(out, entry{k, val})
	}
	for _, val := range merges {
		d.merge(val, path, func(e entry) {
			if _, ok := seen[e.key.Value]; !ok {
				seen[e.key.Value] = e.key
				out = append(out, e)
			}
		})
	}
	return out
}

// merge hands add the pairs that the merge value val brings: those of the
// mapping it names, or of each mapping of a list, in order.
func (d *decoder) merge(val *yaml.Node, path string, add func(entry)) {
	if !d.spend(val, path) {
		return
	}
	target, release := d.deref(val, path)
	if target == nil {
		return
	}
	defer release()
	switch target.Kind {
	case yaml.MappingNode:
		// A merge copies every key of the mapping it names, and merges
		// nest: charged one unit per merge, a 20 KB file of merges of
		// merges made gigabytes of copies. Each copied key costs one.
		es, ok := d.merged[target]
		if !ok {
			es = d.entries(target, path)
			d.merged[target] = es
		}
		if !d.spendN(val, path, len(es)) {
			return
		}
		for _, e := range es {
			add(e)
		}
		return
	case yaml.SequenceNode:
		for _, item := range target.Content {
			if item.Kind != yaml.AliasNode || item.Alias.Kind != yaml.MappingNode {
				d.fail(item, path, "a merge (<<) list must hold aliases of mappings, not %s", describe(item))
				continue
			}
			d.merge(item, path, add)
		}
		return
	}
	d.fail(val, path, "a merge (<<) takes a mapping or a list of mappings, not %s", describe(target))
}

func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "expected a mapping of keys, got %s", describe(n))
		return
	}
	fields := yamlFields(v.Type())
	var ext Extensible
	if v.CanAddr() {
		ext, _ = reflect.TypeAssert[Extensible](v.Addr())
	}
	for _, e := range d.entries(n, path) {
		if i, ok := fields[e.key.Value]; ok {
			d.value(e.value, v.Field(i), PathKey(path, e.key.Value), e.key)
			continue
		}
		if ext != nil {
			if x := ext.NewExtension(e.key.Value); x != nil {
				ptr := reflect.ValueOf(x)
				setDefaults(ptr)
				d.value(e.value, ptr.Elem(), PathKey(path, e.key.Value), e.key)
				if !isNull(e.value) {
					ext.SetExtension(e.key.Value, x)
				}
				continue
			}
		}
		known := fields
		if ext != nil {
			known = maps.Clone(fields)
			for _, k := range ext.ExtensionKeys() {
				known[k] = -1
			}
		}
		d.fail(e.key, PathKey(path, e.key.Value), "unknown key %s%s", shownKey(e.key.Value), suggest(e.key.Value, known))
	}
}

// isNull reports whether n, or what it is an alias of, is null.
func isNull(n *yaml.Node) bool {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// yamlFields maps the YAML names of a struct's fields to their index, the
// way go-yaml names them: the tag name, else the lower-cased field name.
func yamlFields(t reflect.Type) map[string]int {
	fields := map[string]int{}
	for i := range t.NumField() {
		if name, ok := yamlName(t.Field(i)); ok {
			fields[name] = i
		}
	}
	return fields
}

// yamlName is the key of a struct field: its yaml tag's name, or its
// name in lower case; false for a field that is not decoded.
func yamlName(f reflect.StructField) (string, bool) {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	switch {
	case !f.IsExported() || name == "-":
		return "", false
	case name == "":
		return strings.ToLower(f.Name), true
	}
	return name, true
}

// suggest names the closest known key, or lists them all when none is close.
func suggest(key string, fields map[string]int) string {
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	slices.Sort(names)
	best, bestDist := "", 3
	for _, name := range names {
		if dist := editDistance(strings.ToLower(key), name); dist < bestDist {
			best, bestDist = name, dist
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return "; valid keys: " + strings.Join(names, ", ")
}

// editDistance is the Levenshtein distance, for short keys.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "expected a mapping, got %s", describe(n))
		return
	}
	if v.Type().Key().Kind() != reflect.String {
		panic("configs: only maps with string keys are supported, got " + v.Type().String())
	}
	m := reflect.MakeMap(v.Type())
	for _, e := range d.entries(n, path) {
		elem := reflect.New(v.Type().Elem())
		setDefaults(elem)
		p := PathKey(path, e.key.Value)
		before := len(d.doc.problems)
		d.value(e.value, elem.Elem(), p, e.key)
		if len(d.doc.problems) == before {
			m.SetMapIndex(reflect.ValueOf(e.key.Value).Convert(v.Type().Key()), elem.Elem())
		}
	}
	v.Set(m)
}

func (d *decoder) list(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, "expected a list, got %s", describe(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		setDefaults(s.Index(i).Addr())
		d.value(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i), nil)
	}
	v.Set(s)
}

// generic decodes an untyped value (such as a plugin's free-form config)
// into the JSON-compatible shapes: map[string]any, []any, string, bool,
// int, float64. It is walked here rather than by go-yaml so that aliases
// are budgeted and positions kept like everywhere else.
func (d *decoder) generic(n *yaml.Node, path string) (any, bool) {
	switch n.Kind {
	case yaml.MappingNode:
		m := map[string]any{}
		for _, e := range d.entries(n, path) {
			var x any
			d.value(e.value, reflect.ValueOf(&x).Elem(), PathKey(path, e.key.Value), e.key)
			m[e.key.Value] = x
		}
		return m, true
	case yaml.SequenceNode:
		s := make([]any, len(n.Content))
		for i, item := range n.Content {
			d.value(item, reflect.ValueOf(&s[i]).Elem(), fmt.Sprintf("%s[%d]", path, i), nil)
		}
		return s, true
	}
	var x any
	if err := n.Decode(&x); err != nil {
		d.fail(n, path, "cannot decode %s", describe(n))
		return nil, false
	}
	if f, ok := x.(float64); ok && (math.IsInf(f, 0) || math.IsNaN(f)) {
		d.fail(n, path, "infinity and NaN cannot be represented in JSON")
		return nil, false
	}
	return x, true
}

func (d *decoder) scalar(n *yaml.Node, v reflect.Value, path string) {
	want := map[reflect.Kind]string{reflect.String: "a string", reflect.Bool: "true or false",
		reflect.Float32: "a number", reflect.Float64: "a number"}[v.Kind()]
	if want == "" {
		want = "an integer"
	}
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "expected %s, got %s", want, describe(n))
		return
	}
	tag := n.ShortTag()
	ok := false
	switch v.Kind() {
	case reflect.String:
		// Any scalar reads as its text, so that min_version: 1.2 means "1.2".
		if tag != "!!binary" {
			v.SetString(n.Value)
			ok = true
		}
	case reflect.Bool:
		var b bool
		if ok = tag == "!!bool" && n.Decode(&b) == nil; ok {
			v.SetBool(b)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		if ok = tag == "!!int" && n.Decode(&i) == nil; ok {
			if v.OverflowInt(i) {
				d.fail(n, path, "the integer is out of range for this key")
				return
			}
			v.SetInt(i)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		var u uint64
		if ok = tag == "!!int" && n.Decode(&u) == nil; ok {
			if v.OverflowUint(u) {
				d.fail(n, path, "the integer is out of range for this key")
				return
			}
			v.SetUint(u)
		}
	case reflect.Float32, reflect.Float64:
		var f float64
		if ok = (tag == "!!int" || tag == "!!float") && n.Decode(&f) == nil; ok {
			v.SetFloat(f)
		}
	default:
		panic("configs: unsupported field type " + v.Type().String())
	}
	if !ok {
		d.fail(n, path, "expected %s, got %s", want, describe(n))
	}
}

// describe names what a node is, for "expected X, got Y" messages: its
// kind and size, never its text. A file that is rejected may be anything
// (a symlink to a password file, a key): what it holds must not reach an
// event or a log through a problem message.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	switch n.ShortTag() {
	case "!!null":
		return "null"
	case "!!bool":
		return "true or false"
	case "!!int":
		return "an integer"
	case "!!float":
		return "a number"
	case "!!str":
		return "a string of " + Bytes(len(n.Value))
	}
	return "a value of " + Bytes(len(n.Value))
}

// Bytes says how many bytes: "1 byte", "7 bytes"; for messages that give
// a size in place of what they must not quote.
func Bytes(n int) string {
	if n == 1 {
		return "1 byte"
	}
	return strconv.Itoa(n) + " bytes"
}

// shownKey is a mapping key as messages quote it: keys are the document's
// structure, not its data, but a key of a file that is not a policy at all
// can be anything, so a long or odd one is described, not quoted.
func shownKey(key string) string {
	if len(key) <= 64 && plainKey.MatchString(key) {
		return strconv.Quote(key)
	}
	return "of " + Bytes(len(key))
}

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// PathKey appends a key to a key path the way problems name it: a.b for
// plain keys, a["x.y"] otherwise.
func PathKey(path, key string) string {
	if !plainKey.MatchString(key) {
		return path + "[" + strconv.Quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// parentPath strips the last element of a key path built by PathKey.
func parentPath(path string) string {
	if strings.HasSuffix(path, `"]`) {
		// A quoted key may itself hold brackets: find the opening that
		// makes the rest a valid quoted string.
		for i := strings.LastIndex(path, `["`); i >= 0; i = strings.LastIndex(path[:i], `["`) {
			if _, err := strconv.Unquote(path[i+1 : len(path)-1]); err == nil {
				return path[:i]
			}
		}
	}
	if i := strings.LastIndexAny(path, ".["); i >= 0 {
		return path[:i]
	}
	return ""
}
