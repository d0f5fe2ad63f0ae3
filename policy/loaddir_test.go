package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/configs"
)

func policyNamed(name string) string {
	return strings.Replace(base, "metadata: {name: web}", "metadata: {name: "+name+"}", 1)
}

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, content string) {
		path := filepath.Join(dir, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	}
	link := func(target, rel string) { require.NoError(t, os.Symlink(target, filepath.Join(dir, rel))) }

	write("a.yaml", policyNamed("alpha"))
	write("b.yml", policyNamed("beta"))
	write("c.yaml", "\n"+policyNamed("alpha")) // same name as a.yaml
	write("d.yaml", policyNamed("delta")+"    - {name: bad, kind: icmp, interval: 1s}\n")
	write(".hidden.yaml", "not even yaml: [")
	write("notes.txt", "ignored")
	write("sub/inner.yaml", policyNamed("inner")) // subdirectories are not read
	require.NoError(t, os.Mkdir(filepath.Join(dir, "dir.yaml"), 0o755))
	link("nowhere.yaml", "broken.yaml")
	// A Kubernetes ConfigMap mount: name.yaml -> ..data/name.yaml, ..data -> ..<timestamp>.
	write("..2024_05_01_10_00_00.000000001/cm.yaml", policyNamed("configmap"))
	link("..2024_05_01_10_00_00.000000001", "..data")
	link("..data/cm.yaml", "cm.yaml")

	policies, err := LoadDir(dir, Env{})
	var names []string
	for _, p := range policies {
		names = append(names, p.Metadata.Name+"@"+filepath.Base(p.File))
	}
	assert.Equal(t, []string{"alpha@a.yaml", "beta@b.yml", "configmap@cm.yaml"}, names)
	assert.Equal(t, []string{
		"$DIR/broken.yaml: cannot read the file: no such file or directory",
		`$DIR/c.yaml:4:18: metadata.name: policy name "alpha" is already used by $DIR/a.yaml:3`,
		"$DIR/d.yaml:10:25: spec.observers[3].kind: unknown kind \"icmp\"; use one of: http, prometheus, tcp, process, wasm",
		"$DIR/dir.yaml: not a regular file",
	}, problemLines(err, dir))
	for _, p := range policies {
		assert.Len(t, p.Revision, RevisionLength)
	}
}

func TestLoadDirMissing(t *testing.T) {
	_, err := LoadDir(filepath.Join(t.TempDir(), "none"), Env{})
	require.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, err.Error(), "load policies: open ")

	policies, err := LoadDir(t.TempDir(), Env{})
	assert.NoError(t, err)
	assert.Empty(t, policies)
}

func problemLines(err error, dir string) []string {
	var out []string
	for _, p := range configs.ProblemsOf(err) {
		out = append(out, strings.ReplaceAll(p.Error(), dir, "$DIR"))
	}
	return out
}
