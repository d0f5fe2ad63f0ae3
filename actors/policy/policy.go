// Package policy is the policy-manager actor: it loads every policy in
// policy_dir, tells the task-manager to run the good ones
// (messages.ApplyPolicy, correlated with their policy.applied event) and
// publishes policy.rejected, with the file, line and reason, for each bad
// file. Loading runs off the mailbox and reports back as a message.
package policy

import (
	"slices"
	"strings"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/polar/observerd/actors/supervision"
	"github.com/polar/observerd/configs"
	"github.com/polar/observerd/messages"
	policydoc "github.com/polar/observerd/policy"
)

// Path is the policy-manager's actor path, the source of its events.
const Path = "policy-manager"

// Options configure the policy-manager.
type Options struct {
	Dir string
	Env policydoc.Env
	// Task receives ApplyPolicy and RemovePolicy; State receives events.
	Task, State *actor.PID
	Log         zerolog.Logger
}

// Actor is the policy-manager.
type Actor struct {
	opts Options
}

type loaded struct {
	policies []*policydoc.Policy
	err      error
}

// New returns the policy-manager.
func New(opts Options) *Actor {
	return &Actor{opts: opts}
}

// Props for the policy-manager.
func Props(opts Options) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return New(opts) })
}

// Receive handles the actor's messages.
func (a *Actor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		root, self := ctx.ActorSystem().Root, ctx.Self()
		go func() {
			defer supervision.Recover(func(err error) { root.Send(self, &loaded{err: err}) })
			ps, err := policydoc.LoadDir(a.opts.Dir, a.opts.Env)
			root.Send(self, &loaded{policies: ps, err: err})
		}()
	case *loaded:
		a.load(ctx, msg)
	}
}

func (a *Actor) load(ctx actor.Context, msg *loaded) {
	var done messages.PoliciesLoaded
	for _, p := range msg.policies {
		ev := messages.NewEvent(messages.TypePolicyApplied)
		ev.Subject = p.Spec.Target.Name
		ev.Policy = &messages.PolicyRef{Name: p.Metadata.Name, Revision: p.Revision}
		added := make([]string, 0, len(p.Spec.Observers))
		for _, o := range p.Spec.Observers {
			added = append(added, o.Name)
		}
		ev.Data = &messages.Event_PolicyOutcome{PolicyOutcome: &messages.PolicyOutcome{
			Name: p.Metadata.Name, Revision: p.Revision, File: p.File, Added: added,
		}}
		ctx.Send(a.opts.State, &messages.Emit{Path: Path, Event: ev})
		ctx.Send(a.opts.Task, &messages.ApplyPolicy{Policy: p, EventID: ev.Id})
		done.Applied = append(done.Applied, p.Metadata.Name)
		a.opts.Log.Info().Str("policy", p.Metadata.Name).Str("revision", p.Revision).Str("file", p.File).Msg("policy applied")
	}
	for file, probs := range byFile(msg.err, a.opts.Dir) {
		ev := messages.NewEvent(messages.TypePolicyRejected)
		ev.Severity = messages.Severity_SEVERITY_MEDIUM
		reasons := make([]string, 0, len(probs))
		for _, p := range probs {
			reasons = append(reasons, p.Error())
		}
		first := probs[0]
		ev.Data = &messages.Event_PolicyOutcome{PolicyOutcome: &messages.PolicyOutcome{
			File: file, Line: int32(first.Line), Column: int32(first.Column), Reason: strings.Join(reasons, "\n"),
		}}
		ctx.Send(a.opts.State, &messages.Emit{Path: Path, Event: ev})
		done.Rejected = append(done.Rejected, file)
		a.opts.Log.Error().Str("file", file).Strs("problems", reasons).Msg("policy rejected")
	}
	ctx.Send(a.opts.State, &done)
}

// byFile groups the problems of a load by file, in line order; a problem
// with no file (the directory itself cannot be read) goes under dir.
func byFile(err error, dir string) map[string][]*configs.Problem {
	if err == nil {
		return nil
	}
	out := map[string][]*configs.Problem{}
	for _, p := range configs.ProblemsOf(err) {
		if p.File == "" {
			p.File = dir
		}
		out[p.File] = append(out[p.File], p)
	}
	for _, ps := range out {
		slices.SortStableFunc(ps, func(x, y *configs.Problem) int { return x.Line - y.Line })
	}
	return out
}
