package policy_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/policy"
)

// TestSchemaGolden: the schema observerctl prints is
// testdata/schema.json (go test -update rewrites it), so that a change of
// the policy's types shows in review as a change of the schema.
func TestSchemaGolden(t *testing.T) {
	got, err := json.MarshalIndent(policy.Schema(), "", "  ")
	require.NoError(t, err)
	got = append(got, '\n')
	golden := filepath.Join("testdata", "schema.json")
	if *update {
		require.NoError(t, os.WriteFile(golden, got, 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err, "run go test -update to create it")
	assert.Equal(t, string(want), string(got))
}

// schemaExamples are valid policies of every kind, the bases that
// TestSchemaAgreesWithParse changes one key at a time.
func schemaExamples(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../configs/examples/*.yaml")
	require.NoError(t, err)
	require.Len(t, files, len(policy.Kinds()), "one example per kind")
	return append(files, "testdata/good-full-http/input.yaml")
}

// schemaEnv accepts the examples as they are (their targets, process
// names; plugins unchecked), so that a change is rejected for that change
// alone.
func schemaEnv(t *testing.T) policy.Env {
	env := testEnv(t)
	env.ProcessNames = []string{"observable", "nginx"}
	env.PluginDir = ""
	return env
}

// variant is a policy changed at one key.
type variant struct {
	name string
	doc  map[string]any
	path string // the key changed, as Parse's problems name it
}

// parse parses a variant as the daemon would.
func (v variant) parse(t *testing.T, env policy.Env) (*policy.Policy, error) {
	t.Helper()
	out, err := yaml.Marshal(v.doc)
	require.NoError(t, err)
	return policy.Parse("variant.yaml", out, env)
}

// exampleVariants are the variants of every example, with the revision
// of the example they change.
func exampleVariants(t *testing.T, env policy.Env) (map[string]string, map[string][]variant) {
	t.Helper()
	schema := policy.Schema()
	revisions, byFile := map[string]string{}, map[string][]variant{}
	for _, file := range schemaExamples(t) {
		data, err := os.ReadFile(file)
		require.NoError(t, err)
		base, err := policy.Parse(file, data, env)
		require.NoError(t, err, "the base must be valid")
		var doc map[string]any
		require.NoError(t, yaml.Unmarshal(data, &doc))
		revisions[file], byFile[file] = base.Revision, variants(schema, doc, doc, "")
	}
	return revisions, byFile
}

// TestSchemaDefaultsAreParseDefaults: a default the schema shows, written
// out, changes nothing: the policy has the same revision as without it.
func TestSchemaDefaultsAreParseDefaults(t *testing.T) {
	env := schemaEnv(t)
	revisions, byFile := exampleVariants(t, env)
	seen := 0
	for file, vs := range byFile {
		for _, v := range vs {
			if !strings.HasPrefix(v.name, "default ") {
				continue
			}
			seen++
			t.Run(filepath.Base(file)+"/"+v.name, func(t *testing.T) {
				p, err := v.parse(t, env)
				require.NoError(t, err)
				assert.Equal(t, revisions[file], p.Revision, "writing the default out changes the policy")
			})
		}
	}
	assert.GreaterOrEqual(t, seen, 10, "the walk reaches the defaults")
}

// variants walks the schema s along the document object obj (at key path
// path of the whole document root), making a variant of root per claim of
// the schema about a key of obj: each numeric bound (also of list items)
// met and passed, each required key removed, each default written out.
func variants(s *yamldoc.Schema, root, obj map[string]any, path string) []variant {
	var out []variant
	change := func(name, key string, value any) {
		doc := deepCopy(root).(map[string]any)
		at := lookup(doc, path)
		if value == nil {
			delete(at, key)
		} else {
			at[key] = value
		}
		out = append(out, variant{name: name, doc: doc, path: join(path, key)})
	}
	for _, key := range slices.Sorted(maps.Keys(s.Properties)) {
		p, keyPath := s.Properties[key], join(path, key)
		_, written := obj[key]
		if slices.Contains(s.Required, key) && written {
			change("without "+keyPath, key, nil)
		}
		if p.Default != nil && !written {
			change("default "+keyPath, key, p.Default)
		}
		for _, b := range bounds(p) {
			change(b.name+" "+keyPath, key, b.value)
		}
		if p.Items != nil {
			for _, b := range bounds(p.Items) {
				change(b.name+" "+keyPath+"[0]", key, []any{b.value})
				out[len(out)-1].path += "[0]"
			}
		}
		switch child := obj[key].(type) {
		case map[string]any:
			out = append(out, variants(p, root, child, keyPath)...)
		case []any:
			if first, ok := child[0].(map[string]any); ok && p.Items != nil {
				out = append(out, variants(p.Items, root, first, keyPath+"[0]")...)
			}
		case nil:
			// An object the document leaves to its defaults (limits,
			// thresholds) is walked as if written empty; the sections
			// of other kinds are not: they would be problems of their
			// own.
			if isObject(p) && !slices.Contains(policy.Kinds(), key) {
				empty := map[string]any{}
				r := deepCopy(root).(map[string]any)
				lookup(r, path)[key] = empty
				out = append(out, variants(p, r, empty, keyPath)...)
			}
		}
	}
	return out
}

// bound is a value at or beyond one of a schema's numeric bounds: an
// integer when whole, as a document would write it (YAML reads 1e+06 as
// a float).
type bound struct {
	name  string
	value any
}

func bounds(s *yamldoc.Schema) []bound {
	number := func(f float64) any {
		if f == math.Trunc(f) {
			return int64(f)
		}
		return f
	}
	var out []bound
	if s.Minimum != nil {
		out = append(out, bound{"minimum", number(*s.Minimum)}, bound{"beyond minimum", number(*s.Minimum - 1)})
	}
	if s.Maximum != nil {
		out = append(out, bound{"maximum", number(*s.Maximum)}, bound{"beyond maximum", number(*s.Maximum + 1)})
	}
	if s.ExclusiveMinimum != nil {
		out = append(out, bound{"beyond exclusiveMinimum", number(*s.ExclusiveMinimum)},
			bound{"above exclusiveMinimum", number(*s.ExclusiveMinimum + 0.5)})
	}
	return out
}

func isObject(s *yamldoc.Schema) bool {
	switch t := s.Type.(type) {
	case string:
		return t == "object"
	case []string:
		return slices.Contains(t, "object")
	}
	return false
}

// lookup follows a key path (a.b[0].c) through a decoded document.
func lookup(doc map[string]any, path string) map[string]any {
	at := doc
	for part := range strings.SplitSeq(path, ".") {
		if part == "" {
			continue
		}
		key, index, isList := strings.Cut(part, "[")
		next := at[key]
		if isList {
			var i int
			_, _ = fmt.Sscanf(index, "%d]", &i)
			next = next.([]any)[i]
		}
		at = next.(map[string]any)
	}
	return at
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}
