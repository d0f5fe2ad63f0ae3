//go:build integration

package policy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/policy"
)

// validateScript checks the schema itself against draft-07's metaschema,
// then validates each document of the JSON lines file: one line out per
// document, the key paths of its errors (never the values).
const validateScript = `
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft7Validator.check_schema(schema)
validator = jsonschema.Draft7Validator(schema)
for line in open(sys.argv[2]):
    doc = json.loads(line)
    errors = sorted(".".join(str(p) for p in e.absolute_path) for e in validator.iter_errors(doc))
    print(json.dumps(errors))
`

// schemaVerdicts validates docs against the policy schema with an
// independent validator, Debian's python3-jsonschema (make deps installs
// it), and returns each document's errors, by key path.
func schemaVerdicts(t *testing.T, docs []any) [][]string {
	t.Helper()
	dir := t.TempDir()
	schema, err := json.Marshal(policy.Schema())
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "schema.json"), schema, 0o600))
	var lines bytes.Buffer
	for _, doc := range docs {
		line, err := json.Marshal(doc)
		require.NoError(t, err)
		lines.Write(append(line, '\n'))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "docs.jsonl"), lines.Bytes(), 0o600))
	cmd := exec.Command("/usr/bin/python3", "-c", validateScript, filepath.Join(dir, "schema.json"), filepath.Join(dir, "docs.jsonl"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "python3-jsonschema (make deps installs it): %s", stderr.String())
	var verdicts [][]string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var errs []string
		require.NoError(t, json.Unmarshal(sc.Bytes(), &errs))
		verdicts = append(verdicts, errs)
	}
	require.Len(t, verdicts, len(docs))
	return verdicts
}

// TestSchemaAgreesWithParse checks the schema's claims against Parse, key
// by key, on every example: at and beyond each bound, and without each
// required key, the schema accepts exactly what Parse accepts, and when
// both refuse, Parse names the key changed (or one below it). A bound or
// requirement that the types declare and validation does not enforce, or
// the other way round, fails here.
func TestSchemaAgreesWithParse(t *testing.T) {
	env := schemaEnv(t)
	_, byFile := exampleVariants(t, env)
	var (
		vs   []variant
		docs []any
	)
	for _, file := range schemaExamples(t) {
		for _, v := range byFile[file] {
			if strings.HasPrefix(v.name, "default ") {
				continue // TestSchemaDefaultsAreParseDefaults
			}
			v.name = filepath.Base(file) + "/" + v.name
			vs, docs = append(vs, v), append(docs, v.doc)
		}
	}
	verdicts := schemaVerdicts(t, docs)
	accepted, refused := 0, 0
	for i, v := range vs {
		t.Run(v.name, func(t *testing.T) {
			_, err := v.parse(t, env)
			if len(verdicts[i]) == 0 {
				accepted++
				assert.NoError(t, err, "the schema accepts it")
				return
			}
			refused++
			require.Error(t, err, "the schema refuses it: %v", verdicts[i])
			var paths []string
			for _, problem := range yamldoc.ProblemsOf(err) {
				if problem.Path == v.path || strings.HasPrefix(problem.Path, v.path+".") || strings.HasPrefix(problem.Path, v.path+"[") {
					return
				}
				paths = append(paths, problem.Path)
			}
			t.Errorf("no problem at %s, only at %v", v.path, paths)
		})
	}
	// Both sides are reached, so that the test cannot pass on either alone.
	assert.Greater(t, accepted, 10)
	assert.Greater(t, refused, 10)
}

// structural are the problems (by their message) that the schema must
// catch: the shape of the document, not its meaning in the daemon's
// environment.
var structural = []string{
	"unknown key", "expected ", "is required", "at least one observer is required", "needs the section",
	"does not belong to an observer", "unknown kind", "invalid name", "must be \"",
}

// TestSchemaOnEveryGoldenFile validates every policy the repository holds
// (examples, the demo's, the golden cases) with the schema: what Parse
// accepts the schema accepts, and what Parse refuses for its shape the
// schema refuses too. Files that are not one YAML mapping (binary
// garbage, several documents, alias bombs) are left out: an editor has
// nothing to validate there.
func TestSchemaOnEveryGoldenFile(t *testing.T) {
	var files []string
	for _, pattern := range []string{"testdata/*/input.yaml", "testdata/*/policies/*.yaml", "../configs/examples/*.yaml", "../configs/policies/*.yaml"} {
		matches, err := filepath.Glob(pattern)
		require.NoError(t, err)
		files = append(files, matches...)
	}
	env := testEnv(t)
	env.ProcessNames = append(env.ProcessNames, "observable")
	type checked struct {
		file    string
		valid   bool
		shapely bool // refused for its shape
	}
	var (
		cases []checked
		docs  []any
	)
	for _, file := range files {
		data, err := os.ReadFile(file)
		if errors.Is(err, fs.ErrNotExist) {
			continue // a dangling link of a directory case
		}
		require.NoError(t, err)
		_, err = policy.Parse(file, data, env)
		doc, convErr := asJSON(data)
		if convErr != nil {
			require.Error(t, err, "%s: Parse accepts what cannot be converted", file)
			continue
		}
		c := checked{file: file, valid: err == nil}
		for _, problem := range yamldoc.ProblemsOf(err) {
			for _, s := range structural {
				c.shapely = c.shapely || strings.Contains(problem.Message, s)
			}
		}
		cases, docs = append(cases, c), append(docs, doc)
	}
	verdicts := schemaVerdicts(t, docs)
	valid, shapely := 0, 0
	for i, c := range cases {
		switch {
		case c.valid:
			valid++
			assert.Empty(t, verdicts[i], "%s: Parse accepts it, the schema refuses it", c.file)
		case c.shapely:
			shapely++
			assert.NotEmpty(t, verdicts[i], "%s: Parse refuses its shape, the schema accepts it", c.file)
		}
	}
	assert.GreaterOrEqual(t, valid, 8)
	assert.GreaterOrEqual(t, shapely, 10)
}

// asJSON converts one YAML document to what a YAML editor validates: the
// same tree as JSON values.
func asJSON(data []byte) (any, error) {
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if _, ok := doc.(map[string]any); !ok {
		return nil, fmt.Errorf("not a mapping")
	}
	if _, err := json.Marshal(doc); err != nil {
		return nil, err
	}
	return doc, nil
}
