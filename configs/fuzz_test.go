package configs

import (
	"os"
	"testing"

	"github.com/polar/observerd/test/fuzzbudget"
)

// FuzzParse feeds the daemon config decoder anything: it must never
// panic nor spend more than the fuzz budget on one file under the 1MiB
// cap of Load. Seeds: testdata/fuzz/FuzzParse, the example config and the
// many-problems golden input.
func FuzzParse(f *testing.F) {
	for _, file := range []string{"observerd.example.yaml", "testdata/many-problems.yaml"} {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > maxConfigSize {
			return // Load refuses it unread
		}
		var (
			c   *Config
			err error
		)
		fuzzbudget.Check(t, 2*fuzzbudget.MaxAlloc, func() { c, err = Parse("fuzz.yaml", data) })
		if c == nil && err == nil {
			t.Fatal("no config and no error")
		}
	})
}
