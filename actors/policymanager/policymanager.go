// Package policymanager is the policy-manager actor: it watches policy_dir, parses
// every changed file in a short-lived parser child, and retasks the
// task-manager with the difference between what runs and what the files
// now say.
//
// A change goes through these steps:
//
//   - The watcher (fsnotify, on the directory) reports the names of
//     changed policy files; a swapped ..data link of a Kubernetes ConfigMap
//     mount or an overflow of the kernel's queue makes every file be read
//     again. A rescan of the directory every Options.Rescan is the safety
//     net; when the watch cannot be set up (inotify limits), polling every
//     Options.Poll takes its place.
//   - Changes are debounced: a round starts once the directory has been
//     quiet for Options.Debounce, or Options.MaxDelay after the first
//     change of a continuous stream. One round runs at a time.
//   - A round spawns one parser per changed file (parser/<file>#<n>). A
//     parser reads its file until it is stable, parses and validates it,
//     reports and stops; a parser that crashes rejects its file only. A
//     file that fails must stay unchanged for Options.Settle to be
//     rejected: one rewritten in place is empty or half written for a
//     moment, and is read again in the next round instead.
//   - When every parser has reported, the results are applied in file name
//     order: rejections first keep the last good version of the file
//     running (policy.rejected, once per distinct content); valid
//     policies whose revision changed are diffed against what runs and
//     sent to the task-manager as one messages.ApplyPolicy each
//     (policy.applied, whose id is the correlation of everything the
//     started observers emit); policies whose file went away, or whose
//     file now declares another name, are removed (policy.removed). A
//     policy name belongs to the file that declared it first; another file
//     declaring it is rejected until the name is free again. Each valid
//     policy is also checked against the daemon's totals
//     (limits.max_observers, limits.max_plugin_memory) beside what runs at
//     that point of the round: one that would exceed them is rejected like
//     an invalid file, and read again after a round that frees room.
//   - A rejected file is not read again at a rescan while its size, mtime,
//     inode and device stay the same, unless plugin_dir's listing changed
//     (the plugin it lacked may be there now). Files waiting for a name or
//     for room are read again when a round frees one.
//
// After every round the state-manager receives a messages.PoliciesLoaded
// (the first one makes the daemon ready).
package policymanager

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
)

// Defaults of Options.
const (
	DefaultDebounce = 100 * time.Millisecond
	DefaultSettle   = 100 * time.Millisecond
	DefaultMaxDelay = time.Second
	DefaultRescan   = 30 * time.Second
	DefaultPoll     = 2 * time.Second
	// maxRoundTime bounds a round whose parser hangs (a file on a stuck
	// network mount): its file is rejected and the next round can start.
	maxRoundTime = 10 * time.Second
)

// Options configure the policy-manager.
type Options struct {
	Dir string
	// Env validates the files; its Limits bound the totals of all
	// policies, and its PluginDir is fingerprinted at every scan.
	Env policy.Env
	// Task receives ApplyPolicy and RemovePolicy; State receives events.
	Task, State *actor.PID
	// Debounce, MaxDelay, Rescan and Poll: see the package doc. Settle
	// is how long a file that fails must stay unchanged before it is
	// rejected. Zero means the Default.
	Debounce, MaxDelay, Settle, Rescan, Poll time.Duration
	Log                                      zerolog.Logger

	parse parseFunc // policy.Parse; tests make it crash
}

// Actor is the policy-manager.
type Actor struct {
	opts Options
	self *actor.PID
	root *actor.RootContext

	watcher *watcher // nil while polling
	// files is what the last read of each policy file found.
	files map[string]*file
	// running is what the task-manager runs, by policy name.
	running map[string]*current
	// conflicts are files rejected because another file holds their
	// policy name; they are read again when a name is freed.
	conflicts map[string]bool
	// roomless are files rejected because their policy would take the
	// daemon past its totals; they are read again after a round that
	// leaves the running policies smaller.
	roomless map[string]bool
	// plugins is the fingerprint of plugin_dir at the last scan.
	plugins pluginPrint
	// dirProblem is why the directory cannot be listed, reported once.
	dirProblem string

	dirty      map[string]bool
	firstDirty time.Time
	debounce   *time.Timer
	rescanning *time.Timer
	timerGen   uint64

	round      *round
	roundGen   uint64
	stopped    bool // Stopping or Restarting seen
	flushAgain bool // a flush came while a round was in flight
	parsers    uint64
	loaded     bool
}

// file is the last read of a policy file.
type file struct {
	key fileKey
	// rejection is the reason and content of the last policy.rejected of
	// this file, so that reading the same bad content again (a rescan)
	// does not repeat it; empty while the file is good.
	rejection string
}

// current is a policy the task-manager runs.
type current struct {
	policy *policy.Policy
	file   string
	// eventID is the policy.applied event that last tasked its observers.
	eventID string
}

// round is one batch of parsers.
type round struct {
	gen     uint64
	pending map[string]string // parser PID id -> file name
	results map[string]*parsed
	timer   *time.Timer
}

// reads reports whether the round (nil: none) reads file name.
func (r *round) reads(name string) bool {
	if r == nil {
		return false
	}
	if _, done := r.results[name]; done {
		return true
	}
	for _, pending := range r.pending {
		if pending == name {
			return true
		}
	}
	return false
}

// Internal messages.
type (
	flush        struct{ gen uint64 }
	rescanTick   struct{ gen uint64 }
	roundTimeout struct{ gen uint64 }
)

// New returns the policy-manager.
func New(opts Options) *Actor {
	opts.Debounce = orDefault(opts.Debounce, DefaultDebounce)
	opts.MaxDelay = orDefault(opts.MaxDelay, DefaultMaxDelay)
	opts.Settle = orDefault(opts.Settle, DefaultSettle)
	opts.Rescan = orDefault(opts.Rescan, DefaultRescan)
	opts.Poll = orDefault(opts.Poll, DefaultPoll)
	if opts.parse == nil {
		opts.parse = policy.Parse
	}
	return &Actor{
		// Unique across incarnations: a timer of a previous incarnation
		// whose message is still in the mailbox is recognised as stale.
		timerGen:  incarnations.Add(1) << 32,
		opts:      opts,
		files:     map[string]*file{},
		running:   map[string]*current{},
		conflicts: map[string]bool{},
		roomless:  map[string]bool{},
		dirty:     map[string]bool{},
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// incarnations numbers the actors New makes, for their timer generations.
var incarnations atomic.Uint64

// Props for the policy-manager.
func Props(opts Options) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return New(opts) })
}

// HandleFailure makes the actor its parsers' supervisor (protoactor uses an
// actor's own HandleFailure when it has one): a crashed parser is stopped
// and its file rejected with the reason, nothing else is touched.
func (a *Actor) HandleFailure(sys *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, _ *actor.RestartStatistics, reason, _ any) {
	sup.StopChildren(child)
	if a.round != nil {
		if name, ok := a.round.pending[child.Id]; ok {
			sys.Root.Send(a.self, unreadable(child.Id, a.opts.Dir, name, fmt.Sprintf("the parser crashed: %v", reason)))
		}
	}
}

// Receive handles the actor's messages.
func (a *Actor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.self, a.root = ctx.Self(), ctx.ActorSystem().Root
		// Diff against what really runs: after a restart of this actor
		// the task-manager still runs what the previous one applied.
		ctx.ReenterAfter(ctx.RequestFuture(a.opts.Task, &protocol.GetRunning{}, 5*time.Second), func(res any, err error) {
			if a.stopped {
				return // this incarnation stopped or restarted meanwhile
			}
			a.seed(res, err)
			a.startWatching()
			a.scan(true)
		})
	case *actor.Stopping, *actor.Restarting:
		a.stopped = true
		a.watcher.close()
		a.timerGen++
		for _, t := range []*time.Timer{a.debounce, a.rescanning} {
			if t != nil {
				t.Stop()
			}
		}
		if a.round != nil {
			a.round.timer.Stop()
		}
	case *changed:
		a.mark(msg.name)
	case *rescan:
		a.scan(true)
	case *watchFailed:
		a.opts.Log.Error().Err(msg.err).Dur("poll", a.opts.Poll).Msg("policy_dir watch failed: polling instead")
		a.watcher.close()
		a.watcher = nil
		a.scan(true)
	case *scanned:
		a.scanned(ctx, msg)
	case *rescanTick:
		if msg.gen == a.timerGen {
			if a.watcher == nil {
				a.startWatching()
			}
			a.scan(false)
		}
	case *flush:
		if msg.gen == a.timerGen {
			a.flush(ctx)
		}
	case *parsed:
		a.parsed(ctx, msg)
	case *roundTimeout:
		if a.round != nil && a.round.gen == msg.gen {
			for id, name := range a.round.pending {
				a.round.results[name] = unreadable(id, a.opts.Dir, name, fmt.Sprintf("reading the file took longer than %s", maxRoundTime))
				ctx.Stop(actor.NewPID(ctx.Self().Address, id))
			}
			clear(a.round.pending)
			a.finish(ctx)
		}
	case *protocol.Resync:
		for _, name := range slices.Sorted(maps.Keys(a.running)) {
			cur := a.running[name]
			ctx.Send(a.opts.Task, &protocol.ApplyPolicy{Policy: cur.policy, Change: policy.Diff(nil, cur.policy), EventID: cur.eventID})
		}
	}
}

// seed takes what the task-manager runs as the state to diff against. The
// files are read next, and a policy whose file is gone is then removed.
func (a *Actor) seed(res any, err error) {
	r, ok := res.(*protocol.Running)
	if err != nil || !ok {
		a.opts.Log.Warn().Err(err).Msg("cannot ask the task-manager what runs: assuming nothing")
		return
	}
	for _, rp := range r.Policies {
		a.running[rp.Policy.Metadata.Name] = &current{policy: rp.Policy, file: filepath.Base(rp.Policy.File), eventID: rp.EventID}
		a.files[filepath.Base(rp.Policy.File)] = &file{}
	}
}

func (a *Actor) startWatching() {
	w, err := watch(a.opts.Dir, func(m any) { a.root.Send(a.self, m) })
	switch {
	case err != nil && a.watcher == nil && !a.loaded:
		a.opts.Log.Error().Err(err).Dur("poll", a.opts.Poll).Msg("cannot watch policy_dir: polling instead")
	case err == nil && a.loaded:
		a.opts.Log.Info().Str("dir", a.opts.Dir).Msg("watching policy_dir again")
	}
	a.watcher = w
}

// scan lists the directory, and fingerprints plugin_dir, off the mailbox;
// force reads every file again.
func (a *Actor) scan(force bool) {
	root, self, dir, plugins := a.root, a.self, a.opts.Dir, a.opts.Env.PluginDir
	go func() {
		s := scan(dir, force)
		s.plugins = fingerprint(plugins)
		root.Send(self, s)
	}()
}

// scanned marks what the listing shows to have changed, and schedules the
// next scan: the safety-net rescan, or polling while there is no watch.
func (a *Actor) scanned(ctx actor.Context, s *scanned) {
	defer func() {
		period := a.opts.Rescan
		if a.watcher == nil {
			period = a.opts.Poll
		}
		if a.rescanning != nil {
			a.rescanning.Stop()
		}
		gen := a.timerGen
		a.rescanning = time.AfterFunc(period, func() { a.root.Send(a.self, &rescanTick{gen: gen}) })
	}()
	if s.err != nil {
		// Reported once: what runs keeps running, and the next scan
		// tries again.
		if reason := s.err.Error(); reason != a.dirProblem {
			a.dirProblem = reason
			a.publishRejection(ctx, a.opts.Dir, []*yamldoc.Problem{{File: a.opts.Dir, Message: reason}}, nil)
			a.finishLoad()
		}
		return
	}
	if a.dirProblem != "" {
		a.dirProblem = ""
		a.opts.Log.Info().Str("dir", a.opts.Dir).Msg("policy_dir readable again")
	}
	pluginsChanged := s.plugins != a.plugins
	a.plugins = s.plugins
	for name, key := range s.keys {
		if !s.force && a.round.reads(name) {
			// What the parser reads is compared with the next scan.
			continue
		}
		// An unchanged rejected file is read again only if the plugin it
		// lacked may be there now; a free name or room is handed over by
		// the round that frees it.
		if f, ok := a.files[name]; s.force || !ok || f.key != key || (f.rejection != "" && pluginsChanged) {
			a.mark(name)
		}
	}
	for name := range a.files {
		if _, ok := s.keys[name]; !ok {
			a.mark(name)
		}
	}
	if !a.loaded && len(a.dirty) == 0 {
		a.finishLoad() // an empty directory
	}
}

// mark records a changed file and (re)arms the debounce.
func (a *Actor) mark(name string) {
	now := time.Now()
	if len(a.dirty) == 0 {
		a.firstDirty = now
	}
	a.dirty[name] = true
	at := now.Add(a.opts.Debounce)
	if latest := a.firstDirty.Add(a.opts.MaxDelay); latest.Before(at) {
		at = latest
	}
	if a.debounce != nil {
		a.debounce.Stop()
	}
	gen := a.timerGen
	a.debounce = time.AfterFunc(time.Until(at), func() { a.root.Send(a.self, &flush{gen: gen}) })
}

// flush starts a round with the dirty files, unless one is in flight.
func (a *Actor) flush(ctx actor.Context) {
	if a.round != nil {
		a.flushAgain = true
		return
	}
	if len(a.dirty) == 0 {
		return
	}
	// Files waiting for a name are read in every round, so that the round
	// that frees a name hands it over at once (an update, not a removal
	// and an addition).
	for name := range a.conflicts {
		a.dirty[name] = true
	}
	a.roundGen++
	r := &round{gen: a.roundGen, pending: map[string]string{}, results: map[string]*parsed{}}
	a.round = r
	for _, name := range slices.Sorted(maps.Keys(a.dirty)) {
		a.parsers++
		props := actor.PropsFromProducer(func() actor.Actor {
			return &parser{path: filepath.Join(a.opts.Dir, name), env: a.opts.Env, parse: a.opts.parse, settle: a.opts.Settle}
		})
		pid, err := ctx.SpawnNamed(props, fmt.Sprintf("parser/%s#%d", name, a.parsers))
		if err != nil {
			r.results[name] = unreadable("", a.opts.Dir, name, fmt.Sprintf("cannot start a parser: %v", err))
			continue
		}
		r.pending[pid.Id] = name
	}
	clear(a.dirty)
	gen := r.gen
	r.timer = time.AfterFunc(maxRoundTime, func() { a.root.Send(a.self, &roundTimeout{gen: gen}) })
	if len(r.pending) == 0 {
		a.finish(ctx)
	}
}

func (a *Actor) parsed(ctx actor.Context, p *parsed) {
	r := a.round
	if r == nil {
		return
	}
	if _, ok := r.pending[p.id]; !ok {
		return // a parser that reported after its round timed out
	}
	delete(r.pending, p.id)
	r.results[p.name] = p
	if len(r.pending) == 0 {
		a.finish(ctx)
	}
}

// finish applies a round's results in file name order.
func (a *Actor) finish(ctx actor.Context) {
	r := a.round
	r.timer.Stop()
	a.round = nil
	names := slices.Sorted(maps.Keys(r.results))

	// Who runs from which file, and which names the round frees.
	owner := map[string]*current{}
	var before policy.Usage
	for _, cur := range a.running {
		owner[cur.file] = cur
		before = before.Add(policy.UsageOf(cur.policy))
	}
	vacated := map[string]*current{}
	for _, name := range names {
		res, cur := r.results[name], owner[name]
		switch {
		case res.unstable:
			a.mark(name)
		case res.gone:
			delete(a.files, name)
			delete(a.conflicts, name)
			delete(a.roomless, name)
			if cur != nil {
				vacated[cur.policy.Metadata.Name] = cur
			}
		case res.err != nil:
			delete(a.roomless, name)
			a.reject(ctx, name, res, cur, yamldoc.ProblemsOf(res.err))
		}
	}
	// usage is what runs at this point of the round: what keeps running,
	// and the policies claimed so far instead of their previous versions.
	var usage policy.Usage
	for pname, cur := range a.running {
		if vacated[pname] == nil {
			usage = usage.Add(policy.UsageOf(cur.policy))
		}
	}
	limits := a.opts.Env.LimitsOf()
	var claims []string
	claimed := map[string]*policy.Policy{} // by name, in this round
	for _, name := range names {
		res := r.results[name]
		if res.policy == nil {
			continue
		}
		pname := res.policy.Metadata.Name
		holder := claimed[pname]
		if cur := a.running[pname]; holder == nil && cur != nil && cur.file != name && vacated[pname] == nil {
			holder = cur.policy
		}
		if holder != nil {
			a.conflicts[name] = true
			delete(a.roomless, name)
			a.reject(ctx, name, res, owner[name], []*yamldoc.Problem{res.policy.DuplicateOf(holder)})
			continue
		}
		delete(a.conflicts, name)
		others := usage
		if cur := a.running[pname]; cur != nil && vacated[pname] == nil {
			others = minus(others, policy.UsageOf(cur.policy)) // its previous version
		}
		if problem := res.policy.CheckTotals(others, limits); problem != nil {
			a.roomless[name] = true
			a.reject(ctx, name, res, owner[name], []*yamldoc.Problem{problem})
			continue
		}
		delete(a.roomless, name)
		usage = others.Add(policy.UsageOf(res.policy))
		claimed[pname] = res.policy
		delete(vacated, pname)
		if cur := owner[name]; cur != nil && cur.policy.Metadata.Name != pname {
			// The file now declares another name: the old one goes.
			vacated[cur.policy.Metadata.Name] = cur
			usage = minus(usage, policy.UsageOf(cur.policy))
		}
		claims = append(claims, name)
	}
	// What goes stops before what comes starts.
	for _, pname := range slices.Sorted(maps.Keys(vacated)) {
		a.remove(ctx, vacated[pname])
	}
	for _, name := range claims {
		a.apply(ctx, name, r.results[name])
	}
	if len(vacated) > 0 && len(a.conflicts) > 0 {
		// A name freed by a rename within a file: the files that wanted
		// it get another chance.
		for name := range a.conflicts {
			a.mark(name)
		}
	}
	var after policy.Usage
	for _, cur := range a.running {
		after = after.Add(policy.UsageOf(cur.policy))
	}
	if after.Observers < before.Observers || after.PluginMemory < before.PluginMemory {
		// Room freed: the files that lacked it get another chance.
		for name := range a.roomless {
			a.mark(name)
		}
	}
	a.finishLoad()
	if a.flushAgain {
		a.flushAgain = false
		a.flush(ctx)
	}
}

// minus is u without v.
func minus(u, v policy.Usage) policy.Usage {
	return policy.Usage{Observers: u.Observers - v.Observers, PluginMemory: u.PluginMemory - v.PluginMemory}
}

// apply runs a valid policy read from file name.
func (a *Actor) apply(ctx actor.Context, name string, res *parsed) {
	p := res.policy
	f := a.files[name]
	wasRejected := f != nil && f.rejection != ""
	a.files[name] = &file{key: res.key}
	cur := a.running[p.Metadata.Name]
	var old *policy.Policy
	if cur != nil {
		old = cur.policy
		if old.Revision == p.Revision {
			if cur.file != name {
				// A moved file: the task-manager learns where the policy
				// now comes from (nothing restarts), so that a restarted
				// policy-manager knows which file owns the name.
				ctx.Send(a.opts.Task, &protocol.ApplyPolicy{Policy: p, EventID: cur.eventID})
			}
			cur.file, cur.policy = name, p
			if !wasRejected {
				// Same meaning (a comment, a reordering, a moved file).
				a.opts.Log.Debug().Str("policy", p.Metadata.Name).Str("file", p.File).Msg("policy unchanged")
				return
			}
		}
	}
	change := policy.Diff(old, p)
	ev := messages.NewEvent(messages.TypePolicyApplied)
	ev.Subject = p.Spec.Target.Name
	ev.Policy = &messages.PolicyRef{Name: p.Metadata.Name, Revision: p.Revision}
	outcome := &messages.PolicyOutcome{
		Name: p.Metadata.Name, Revision: p.Revision, File: p.File,
		Added: change.Added, Updated: change.Updated, Removed: change.Removed,
	}
	if old != nil {
		outcome.PreviousRevision = old.Revision
	}
	ev.Data = &messages.Event_PolicyOutcome{PolicyOutcome: outcome}
	ctx.Send(a.opts.State, &protocol.Emit{From: protocol.ActorEmitter(protocol.PolicyManager), Event: ev})
	a.opts.Log.Info().Str("policy", p.Metadata.Name).Str("revision", p.Revision).Str("file", p.File).
		Strs("added", change.Added).Strs("updated", change.Updated).Strs("removed", change.Removed).Msg("policy applied")
	if old != nil && old.Revision == p.Revision {
		return // the file is good again, and says what already runs
	}
	ctx.Send(a.opts.Task, &protocol.ApplyPolicy{Policy: p, Change: change, EventID: ev.Id})
	a.running[p.Metadata.Name] = &current{policy: p, file: name, eventID: ev.Id}
}

// reject records a rejected read of file name and publishes it, once per
// distinct content and reason. What runs from the file keeps running.
func (a *Actor) reject(ctx actor.Context, name string, res *parsed, cur *current, probs []*yamldoc.Problem) {
	slices.SortStableFunc(probs, func(x, y *yamldoc.Problem) int { return x.Line - y.Line })
	key := fmt.Sprintf("%x\n%s", res.hash, yamldoc.Join(probs))
	if f := a.files[name]; f != nil && f.rejection == key {
		f.key = res.key
		return
	}
	a.files[name] = &file{key: res.key, rejection: key}
	a.publishRejection(ctx, filepath.Join(a.opts.Dir, name), probs, cur)
}

// publishRejection emits policy.rejected for file, naming the revision
// that stays in force (cur, when the file had a good version).
func (a *Actor) publishRejection(ctx actor.Context, file string, probs []*yamldoc.Problem, cur *current) {
	reasons := rejectionReasons(probs)
	first := probs[0]
	outcome := &messages.PolicyOutcome{
		File: file, Line: int32(first.Line), Column: int32(first.Column), Reason: strings.Join(reasons, "\n"),
	}
	ev := messages.NewEvent(messages.TypePolicyRejected)
	ev.Severity = messages.Severity_SEVERITY_MEDIUM
	if cur != nil {
		outcome.Name, outcome.PreviousRevision = cur.policy.Metadata.Name, cur.policy.Revision
		ev.Policy = &messages.PolicyRef{Name: cur.policy.Metadata.Name, Revision: cur.policy.Revision}
		ev.Subject = cur.policy.Spec.Target.Name
	}
	ev.Data = &messages.Event_PolicyOutcome{PolicyOutcome: outcome}
	ctx.Send(a.opts.State, &protocol.Emit{From: protocol.ActorEmitter(protocol.PolicyManager), Event: ev})
	a.opts.Log.Error().Str("file", file).Str("kept_revision", outcome.PreviousRevision).Strs("problems", reasons).Msg("policy rejected")
}

// maxReason bounds the problems a policy.rejected carries (and its log
// line): a file may have a hundred problems with long key paths, and the
// first ones say what to fix.
const maxReason = 16 << 10

// rejectionReasons renders the problems, one per line, as many as fit in
// maxReason, and says how many more there are.
func rejectionReasons(probs []*yamldoc.Problem) []string {
	var reasons []string
	size := 0
	for i, p := range probs {
		line := p.Error()
		if size += len(line) + 1; size > maxReason && i > 0 {
			return append(reasons, fmt.Sprintf("… and %d more problems (observerctl policy validate lists them all)", len(probs)-i))
		}
		reasons = append(reasons, line)
	}
	return reasons
}

// remove stops a policy whose file went away or now declares another name.
func (a *Actor) remove(ctx actor.Context, cur *current) {
	p := cur.policy
	ev := messages.NewEvent(messages.TypePolicyRemoved)
	ev.Subject = p.Spec.Target.Name
	ev.Policy = &messages.PolicyRef{Name: p.Metadata.Name, Revision: p.Revision}
	ev.Data = &messages.Event_PolicyOutcome{PolicyOutcome: &messages.PolicyOutcome{
		Name: p.Metadata.Name, Revision: p.Revision, File: p.File, Removed: policy.Diff(p, nil).Removed,
	}}
	ctx.Send(a.opts.State, &protocol.Emit{From: protocol.ActorEmitter(protocol.PolicyManager), Event: ev})
	ctx.Send(a.opts.Task, &protocol.RemovePolicy{Name: p.Metadata.Name, EventID: ev.Id})
	delete(a.running, p.Metadata.Name)
	a.opts.Log.Info().Str("policy", p.Metadata.Name).Str("revision", p.Revision).Str("file", p.File).Msg("policy removed")
}

// finishLoad tells the state-manager what runs and what is rejected.
func (a *Actor) finishLoad() {
	a.loaded = true
	var done protocol.PoliciesLoaded
	done.Applied = slices.Sorted(maps.Keys(a.running))
	for name, f := range a.files {
		if f.rejection != "" {
			done.Rejected = append(done.Rejected, filepath.Join(a.opts.Dir, name))
		}
	}
	if a.dirProblem != "" {
		done.Rejected = append(done.Rejected, a.opts.Dir)
	}
	slices.Sort(done.Rejected)
	a.root.Send(a.opts.State, &done)
}
