package broker

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestTypeLabelBoundsPluginTypes(t *testing.T) {
	for typ, want := range map[string]string{
		"observation.http":             "observation.http",
		"observation.plugin":           "observation.plugin",
		"observation.plugin.threshold": "observation.plugin",
		"observation.plugin.a.b.c":     "observation.plugin",
		"state.changed":                "state.changed",
	} {
		assert.Equal(t, want, typeLabel(typ), typ)
	}
}
