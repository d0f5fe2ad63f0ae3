package all_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/polar/observerd/actors/observer/kinds"
	_ "github.com/polar/observerd/actors/observer/kinds/all"
	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/test/docblock"
	"github.com/polar/observerd/wasm"
)

// root is the repository's root, from this package's directory.
const root = "../../../.."

func names(ks []*kinds.Kind) []string {
	var out []string
	for _, k := range ks {
		out = append(out, k.Name())
	}
	return out
}

// TestEveryFolderIsAKind: each folder of kinds/ but all is one kind,
// registered here under the folder's name, in the order problems list
// the kinds; package policy knows the same kinds.
func TestEveryFolderIsAKind(t *testing.T) {
	entries, err := os.ReadDir("..")
	require.NoError(t, err)
	var folders []string
	for _, e := range entries {
		if e.IsDir() && e.Name() != "all" {
			folders = append(folders, e.Name())
		}
	}
	registered := names(kinds.All())
	assert.ElementsMatch(t, folders, registered, "a folder of kinds/ that is not registered in kinds/all, or the reverse")
	assert.Equal(t, []string{"http", "prometheus", "tcp", "process", "wasm"}, registered)
	assert.Equal(t, registered, policy.Kinds())
}

// TestEveryKindIsOnTheWire: each kind's payload is a message of the
// event's data, and an event carrying one reads as the kind's
// observation: its summary, and its latency when the kind measures one.
func TestEveryKindIsOnTheWire(t *testing.T) {
	data := (&messages.Event{}).ProtoReflect().Descriptor().Oneofs().ByName("data")
	for _, k := range kinds.All() {
		t.Run(k.Name(), func(t *testing.T) {
			var field protoreflect.FieldDescriptor
			for i := range data.Fields().Len() {
				if f := data.Fields().Get(i); f.Message() != nil && f.Message().FullName() == k.Payload() {
					field = f
				}
			}
			require.NotNil(t, field, "the payload %s is not in the event's data", k.Payload())
			ev := &messages.Event{}
			m := ev.ProtoReflect()
			m.Set(field, protoreflect.ValueOfMessage(m.NewField(field).Message()))
			line, ok := kinds.Summary(ev)
			assert.True(t, ok)
			assert.NotEmpty(t, strings.TrimSpace(line))
			_, _, measured := kinds.Latency(ev)
			assert.False(t, measured, "an observation that measured nothing has no latency")
		})
	}
	_, ok := kinds.Summary(&messages.Event{Data: &messages.Event_StateChange{StateChange: &messages.StateChange{}}})
	assert.False(t, ok, "not an observation")
}

// TestExamplePolicies parses the sample policy of every kind,
// configs/examples/<kind>.yaml (the one docs/observers/<kind>.md shows),
// so that they cannot rot: each is valid, has observers of its kind only,
// and each of its observers can run.
func TestExamplePolicies(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(root, "configs/examples/*.yaml"))
	require.NoError(t, err)
	var examples []string
	for _, file := range files {
		examples = append(examples, strings.TrimSuffix(filepath.Base(file), ".yaml"))
	}
	assert.ElementsMatch(t, names(kinds.All()), examples, "one sample policy per kind")

	plugins, err := wasm.NewHost(context.Background(), wasm.HostOptions{Log: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = plugins.Close(context.Background()) })
	for _, file := range files {
		kind := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(kind, func(t *testing.T) {
			p, err := policy.ParseFile(file, policy.Env{ProcessNames: []string{"observable"}})
			require.NoError(t, err)
			access := kinds.NewTargetAccess(p, targets.Default(), nil)
			t.Cleanup(access.Close)
			require.NotEmpty(t, p.Spec.Observers)
			for i, o := range p.Spec.Observers {
				assert.Equal(t, kind, o.Kind, "observer %s", o.Name)
				c, err := kinds.NewCheck(kinds.Setup{Policy: p, Observer: &p.Spec.Observers[i], Access: access, MaxResponse: 1 << 20,
					PIDDirs: policy.DefaultPIDDirs(), Plugins: plugins, PluginDir: t.TempDir(), Log: zerolog.Nop()})
				assert.NoError(t, err, "observer %s", o.Name)
				if closer, ok := c.(interface{ Close() error }); ok {
					assert.NoError(t, closer.Close())
				}
			}
		})
	}
}

// TestPagesShowTheExamples: docs/observers/<kind>.md shows, under its
// "Sample policy" heading, configs/examples/<kind>.yaml as it is (less
// the file's leading comment, which points back at the page); the
// observers' README lists every page.
func TestPagesShowTheExamples(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(root, "docs/observers/README.md"))
	require.NoError(t, err)
	for _, k := range kinds.All() {
		t.Run(k.Name(), func(t *testing.T) {
			page := filepath.Join("docs/observers", k.Name()+".md")
			example := filepath.Join("configs/examples", k.Name()+".yaml")
			assert.Contains(t, string(readme), fmt.Sprintf("[%s.md](%s.md)", k.Name(), k.Name()), "docs/observers/README.md does not list %s", page)

			doc, err := os.ReadFile(filepath.Join(root, page))
			require.NoError(t, err, "the kind's page")
			file, err := os.ReadFile(filepath.Join(root, example))
			require.NoError(t, err, "the kind's sample policy")
			shown, ok := docblock.After(doc, heading(example), "yaml")
			require.True(t, ok, "%s has no section %q followed by a yaml block", page, heading(example))
			assert.Equal(t, withoutLeadingComment(file), shown,
				"the sample of %s differs from %s: copy the file (less its leading comment) into the page", page, example)
		})
	}
}

func heading(example string) string { return "## Sample policy — `" + example + "`" }

// withoutLeadingComment is a file less its first lines that are comments.
func withoutLeadingComment(file []byte) string {
	var b strings.Builder
	s := bufio.NewScanner(bytes.NewReader(file))
	leading := true
	for s.Scan() {
		if leading && strings.HasPrefix(s.Text(), "#") {
			continue
		}
		leading = false
		b.WriteString(s.Text())
		b.WriteByte('\n')
	}
	return b.String()
}

// TestRegisteringTwiceIsAnError: registering a kind of kinds/all again,
// by kinds or by policy, is an error that registers nothing.
func TestRegisteringTwiceIsAnError(t *testing.T) {
	before := names(kinds.All())
	for _, k := range kinds.All() {
		assert.ErrorContains(t, kinds.Register(k), "register observer kind "+k.Name()+": registered twice")
		assert.ErrorContains(t, policy.RegisterKind(k.Name(), k.NewSection), "register observer kind "+k.Name()+": registered twice")
	}
	assert.Equal(t, before, names(kinds.All()))
	assert.Equal(t, before, policy.Kinds())
}
