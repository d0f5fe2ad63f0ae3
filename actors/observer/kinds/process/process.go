// Package process is the process observer kind: the observed service's
// process, found by its pid file or by its name, measured from /proc
// (docs/observers/process.md).
package process

import (
	"fmt"

	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/messages"
)

// Kind is the process kind. Its observations measure no latency: /proc
// answers, not the service.
var Kind = kinds.Define(kinds.Definition[*Section, *messages.ProcessObservation]{
	Name:       "process",
	NewSection: func() *Section { return &Section{} },
	NewCheck:   newCheck,
	Summary: func(p *messages.ProcessObservation) string {
		return fmt.Sprintf("pid %d %s %s cpu %.2fs rss %s fds %d threads %d restarted=%t %s", p.Pid, p.Name, kinds.ResultName(p.Result),
			p.CpuSeconds, yamldoc.ByteSize(p.RssBytes), p.OpenFds, p.Threads, p.Restarted, p.Error)
	},
})
