package policy

import (
	"fmt"

	"github.com/polar/observerd/configs/yamldoc"
)

// Usage is what a set of policies takes of the daemon's limits that no
// single file can check: observers, and plugin memory, all policies
// together.
type Usage struct {
	Observers    int
	PluginMemory yamldoc.ByteSize
}

// UsageOf adds up what policies take.
func UsageOf(policies ...*Policy) Usage {
	var u Usage
	for _, p := range policies {
		for _, o := range p.Spec.Observers {
			u.Observers++
			if m, ok := o.Section.(PluginMemoryReserver); ok {
				u.PluginMemory += m.PluginMemory()
			}
		}
	}
	return u
}

// CheckTotals returns the problem of running p beside others (the other
// policies that run, p's own previous version left out), or nil when all
// of them together stay within limits.
func (p *Policy) CheckTotals(others Usage, limits Bounds) *yamldoc.Problem {
	own := UsageOf(p)
	switch {
	case others.Observers+own.Observers > limits.MaxObservers:
		return p.doc.Problemf("spec.observers",
			"the daemon runs at most %d observers (limits.max_observers): this policy has %d, the other policies %d",
			limits.MaxObservers, own.Observers, others.Observers)
	case own.PluginMemory > 0 && others.PluginMemory+own.PluginMemory > limits.MaxPluginMemory:
		return p.doc.Problemf("spec.observers",
			"plugin observers may reserve at most %s of memory together (limits.max_plugin_memory): this policy's memory_limit add up to %s, the other policies' to %s",
			limits.MaxPluginMemory, own.PluginMemory, others.PluginMemory)
	}
	return nil
}

// Add returns u with v added.
func (u Usage) Add(v Usage) Usage {
	return Usage{Observers: u.Observers + v.Observers, PluginMemory: u.PluginMemory + v.PluginMemory}
}

// String is for logs: "12 observers, 64MiB of plugin memory".
func (u Usage) String() string {
	return fmt.Sprintf("%d observers, %s of plugin memory", u.Observers, u.PluginMemory)
}
