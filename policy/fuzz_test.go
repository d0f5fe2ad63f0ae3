package policy_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/test/fuzzbudget"
)

// FuzzParse feeds the policy parser anything: it must never panic, and
// never spend more than the fuzz budget on one file under the size cap
// (a YAML alias or merge bomb fails here the way a crash does). Its seeds
// are testdata/fuzz/FuzzParse and every golden input.
func FuzzParse(f *testing.F) {
	inputs, err := filepath.Glob("testdata/*/input.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, in := range inputs {
		data, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	limits := policy.DefaultBounds()
	env := policy.Env{Allowed: targets.Default(), ProcessNames: []string{"nginx"}, Limits: &limits}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > policy.MaxFileSize {
			return // refused before parsing (TestFileSizeLimit)
		}
		var (
			p   *policy.Policy
			err error
		)
		fuzzbudget.Check(t, fuzzbudget.MaxAlloc, func() { p, err = policy.Parse("fuzz.yaml", data, env) })
		if (p == nil) == (err == nil) {
			t.Fatalf("want a policy or an error, got %v and %v", p, err)
		}
		for _, prob := range yamldoc.ProblemsOf(err) {
			if prob.File != "fuzz.yaml" {
				t.Fatalf("a problem that does not name its file: %v", prob)
			}
		}
		if p != nil && len(p.Revision) != policy.RevisionLength {
			t.Fatalf("revision %q", p.Revision)
		}
	})
}
