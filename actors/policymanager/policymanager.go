// Package policymanager is the policy-manager actor: it watches policy_dir,
// parses every changed file in a short-lived parser child, and tells the
// task-manager what the files now ask for. It owns the files: which file
// declares which policy name, and which files are rejected. What runs,
// the diff, the totals and the policy events are the task-manager's.
//
// With the control channel, it watches the central policies' cache
// (Options.Central, central.go) as well: its files are read as those of
// policy_dir, named by their paths as every file is, and parsed as
// Central policies with their Issuer. One name is held by one file of
// either directory. It accepts PolicyOwner (who holds a name), answered
// with an Owner, from the control actor.
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
//     file that fails less than Options.Settle after it changed is not
//     rejected yet: it is read again Options.Settle later, and rejected
//     then only if its stats and its content are still the same (see
//     settles). A file not read within Options.ReadTimeout (a stuck
//     mount) is rejected; one read but not validated within
//     Options.CheckTimeout more (its plugins compile on a loaded host) is
//     rejected then.
//   - When every parser has reported, the results go to the task-manager
//     in file name order: rejections first (protocol.RejectFile: the last
//     good version of the file keeps running), then the names no file
//     declares any more (protocol.RemovePolicy: the file went away, or now
//     declares another name), then each valid policy
//     (protocol.ApplyPolicy), and last protocol.FilesRead, which maps every
//     file to the name it owns. A policy name belongs to the file that
//     declared it first; another file declaring it is rejected until the
//     name is free again, and then takes it over (an update, not a removal
//     and an addition).
//   - A rejected file is not read again at a rescan while its size, mtime,
//     inode and device stay the same, unless plugin_dir's listing changed
//     (the plugin it lacked may be there now). Files waiting for a name
//     are read again in every round, so that the round that frees a name
//     hands it over.
//
// Which file owns which name is rebuilt from the files by a restarted
// policy-manager: its first round reads every file, and what it sends
// about the unchanged ones changes nothing in what runs (the task-manager
// ignores a revision it runs, and reports a rejection once). FilesRead's
// map lets the task-manager remove the policies whose files went while
// the policy-manager was down. A name declared by two files goes, after
// such a restart, to the first of them in file name order.
package policymanager

import (
	"crypto/sha256"
	"fmt"
	"iter"
	"maps"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/actors/restart"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/policy"
)

// Defaults of Options.
const (
	DefaultDebounce = 100 * time.Millisecond
	DefaultSettle   = time.Second
	DefaultMaxDelay = time.Second
	DefaultRescan   = 30 * time.Second
	DefaultPoll     = 2 * time.Second
	// DefaultReadTimeout bounds the read of a file in a round (a file on
	// a stuck network mount): it is rejected and the next round can
	// start. DefaultCheckTimeout bounds, after the read, its validation:
	// compiling its plugins is CPU work that a loaded host may take tens
	// of seconds over, and a busy host must not reject a good policy.
	DefaultReadTimeout  = 10 * time.Second
	DefaultCheckTimeout = 2 * time.Minute
)

// Options configure the policy-manager.
type Options struct {
	Dir string
	// Central is the cache of the central policies (ApplyPolicy over the
	// control channel), watched as Dir is; "" when there is none. Its
	// files are read as Central policies, with the Issuer their
	// .<file>.issuer beside them names.
	Central string
	// Env validates the files; its PluginDir is fingerprinted at every
	// scan.
	Env policy.Env
	// Task receives ApplyPolicy, RemovePolicy, RejectFile and FilesRead.
	Task *actor.PID
	// Debounce, MaxDelay, Rescan and Poll: see the package doc. Settle
	// is how long a file that fails right after it changed must stay the
	// same before it is rejected. Zero means the Default.
	Debounce, MaxDelay, Settle, Rescan, Poll time.Duration
	// ReadTimeout and CheckTimeout bound a round's reads and, after them,
	// its validations (zero: the Defaults).
	ReadTimeout, CheckTimeout time.Duration
	Log                       zerolog.Logger

	parse parseFunc // policy.Parse; tests make it crash
}

// Actor is the policy-manager.
type Actor struct {
	opts     Options
	strategy *restart.Strategy
	self     *actor.PID
	root     *actor.RootContext

	watcher *watcher // nil while polling
	// files is what the last read of each policy file found, by path
	// (in Dir or Central): every file is named by its path below.
	files map[string]*file
	// owners are the policy names the files own: each name's
	// declaration by the file that owns it (its File says which).
	owners map[string]*policy.Policy
	// conflicts are files rejected because another file holds their
	// policy name; they are read again when a name is freed.
	conflicts map[string]bool
	// settling are the files whose last read failed right after they
	// changed: not rejected yet, read again once Options.Settle passed.
	settling map[string]*settling
	// plugins is the fingerprint of plugin_dir at the last scan.
	plugins pluginPrint
	// dirProblem is why a directory (problemDir) cannot be listed,
	// reported once.
	dirProblem, problemDir string

	dirty      map[string]bool
	firstDirty time.Time
	debounce   *time.Timer
	rescanning *time.Timer
	timerGen   uint64

	round      *round
	roundGen   uint64
	flushAgain bool // a flush came while a round was in flight
	parsers    uint64
	loaded     bool
}

// file is the last read of a policy file.
type file struct {
	key fileKey
	// rejection identifies the content and the problems of the file's
	// last rejection (protocol.RejectFile.Key); empty while it is good.
	rejection string
}

// settling is a failed read of a file that changed right before it.
type settling struct {
	key   fileKey
	hash  [sha256.Size]byte
	since time.Time
	timer *time.Timer
}

// round is one batch of parsers.
type round struct {
	gen     uint64
	pending map[string]string // parser PID id -> file path
	read    map[string]bool   // the pending parsers that read their file
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
	roundTimeout struct {
		gen      uint64
		checking bool // the validations' deadline, after the reads'
	}
	// fileRead is a parser's word that it read its file and validates it.
	fileRead  struct{ id string }
	settleDue struct {
		gen  uint64
		name string
	}
)

// New returns the policy-manager.
func New(opts Options) *Actor {
	opts.Debounce = orDefault(opts.Debounce, DefaultDebounce)
	opts.MaxDelay = orDefault(opts.MaxDelay, DefaultMaxDelay)
	opts.Settle = orDefault(opts.Settle, DefaultSettle)
	opts.ReadTimeout = orDefault(opts.ReadTimeout, DefaultReadTimeout)
	opts.CheckTimeout = orDefault(opts.CheckTimeout, DefaultCheckTimeout)
	opts.Rescan = orDefault(opts.Rescan, DefaultRescan)
	opts.Poll = orDefault(opts.Poll, DefaultPoll)
	opts.Dir = filepath.Clean(opts.Dir)
	if opts.Central != "" {
		opts.Central = filepath.Clean(opts.Central)
	}
	if opts.parse == nil {
		opts.parse = policy.Parse
	}
	return &Actor{
		// Unique across incarnations: a timer of a previous incarnation
		// whose message is still in the mailbox is recognised as stale.
		timerGen:  incarnations.Add(1) << 32,
		opts:      opts,
		strategy:  restart.New(restart.Never),
		files:     map[string]*file{},
		owners:    map[string]*policy.Policy{},
		conflicts: map[string]bool{},
		settling:  map[string]*settling{},
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
// actor's own HandleFailure when it has one), with restart.Never: a crashed
// parser is stopped (restart.GaveUp) and its file rejected with the
// reason; nothing else is touched.
func (a *Actor) HandleFailure(sys *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, rs *actor.RestartStatistics, reason, msg any) {
	a.strategy.HandleFailure(sys, sup, child, rs, reason, msg)
}

// Receive handles the actor's messages.
func (a *Actor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *protocol.PolicyOwner:
		ctx.Respond(a.owner(msg.Name))
	case *actor.Started:
		a.self, a.root = ctx.Self(), ctx.ActorSystem().Root
		a.startWatching()
		a.scan(true)
	case *actor.Stopping, *actor.Restarting:
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
		for _, s := range a.settling {
			s.timer.Stop()
		}
	case *changed:
		a.mark(msg.name)
	case *rescan:
		a.scan(true)
	case *watchFailed:
		a.opts.Log.Error().Err(msg.err).Stringer("poll", a.opts.Poll).Msg("policy_dir watch failed: polling instead")
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
	case *settleDue:
		if msg.gen == a.timerGen {
			a.mark(msg.name)
		}
	case *parsed:
		a.parsed(ctx, msg)
	case *fileRead:
		if a.round != nil {
			if _, ok := a.round.pending[msg.id]; ok {
				a.round.read[msg.id] = true
			}
		}
	case *roundTimeout:
		if a.round != nil && a.round.gen == msg.gen {
			a.timedOut(ctx, msg.checking)
		}
	case *restart.GaveUp:
		// A parser that crashed outside its parse (which catches its own
		// panics): its file is rejected.
		if a.round != nil {
			if name, ok := a.round.pending[msg.Child.Id]; ok {
				a.parsed(ctx, unreadable(msg.Child.Id, name, fmt.Sprintf("the parser crashed: %v", msg.Reason)))
			}
		}
	}
}

// owner is the file that owns the policy name, if any.
func (a *Actor) owner(name string) *protocol.Owner {
	p := a.owners[name]
	if p == nil {
		return &protocol.Owner{}
	}
	return &protocol.Owner{File: p.File, Line: p.NameLine()}
}

// dirs are the directories of policy files: policy_dir, and the central
// policies' cache.
func (a *Actor) dirs() []string {
	if a.opts.Central == "" {
		return []string{a.opts.Dir}
	}
	return []string{a.opts.Dir, a.opts.Central}
}

func (a *Actor) startWatching() {
	w, err := watch(a.dirs(), func(m any) { a.root.Send(a.self, m) })
	switch {
	case err != nil && a.watcher == nil && !a.loaded:
		a.opts.Log.Error().Err(err).Stringer("poll", a.opts.Poll).Msg("cannot watch policy_dir: polling instead")
	case err == nil && a.loaded:
		a.opts.Log.Info().Str("dir", a.opts.Dir).Msg("watching policy_dir again")
	}
	a.watcher = w
}

// scan lists the directory, and fingerprints plugin_dir, off the mailbox;
// force reads every file again.
func (a *Actor) scan(force bool) {
	root, self, dirs, plugins := a.root, a.self, a.dirs(), a.opts.Env.PluginDir
	go func() {
		s := scan(dirs, force)
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
			a.dirProblem, a.problemDir = reason, s.errDir
			ctx.Send(a.opts.Task, &protocol.RejectFile{File: s.errDir, Problems: []*yamldoc.Problem{{File: s.errDir, Message: reason}}, Key: reason})
			a.finishLoad()
		}
		return
	}
	if a.dirProblem != "" {
		a.dirProblem = ""
		a.opts.Log.Info().Str("dir", a.problemDir).Msg("policy directory readable again")
		a.problemDir = ""
	}
	pluginsChanged := s.plugins != a.plugins
	a.plugins = s.plugins
	for name, key := range s.keys {
		if !s.force && a.round.reads(name) {
			// What the parser reads is compared with the next scan.
			continue
		}
		// An unchanged rejected file is read again only if the plugin it
		// lacked may be there now; a free name is handed over by the round
		// that frees it.
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
	r := &round{gen: a.roundGen, pending: map[string]string{}, read: map[string]bool{}, results: map[string]*parsed{}}
	a.round = r
	for _, name := range slices.Sorted(maps.Keys(a.dirty)) {
		a.parsers++
		props := actor.PropsFromProducer(func() actor.Actor {
			return &parser{path: name, central: a.isCentral(name), env: a.opts.Env, parse: a.opts.parse}
		})
		pid, err := ctx.SpawnNamed(props, fmt.Sprintf("parser/%s#%d", filepath.Base(name), a.parsers))
		if err != nil {
			r.results[name] = unreadable("", name, fmt.Sprintf("cannot start a parser: %v", err))
			continue
		}
		r.pending[pid.Id] = name
	}
	clear(a.dirty)
	gen := r.gen
	r.timer = time.AfterFunc(a.opts.ReadTimeout, func() { a.root.Send(a.self, &roundTimeout{gen: gen}) })
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
	delete(r.read, p.id)
	r.results[p.name] = p
	if len(r.pending) == 0 {
		a.finish(ctx)
	}
}

// timedOut rejects the files of the round whose parsers did not read them
// within ReadTimeout, or, checking, did not validate them within
// CheckTimeout after that. The round then finishes, unless files that were
// read are still being validated: they get CheckTimeout more.
func (a *Actor) timedOut(ctx actor.Context, checking bool) {
	r := a.round
	for id, name := range r.pending {
		if r.read[id] && !checking {
			continue
		}
		reason := fmt.Sprintf("reading the file took longer than %s", a.opts.ReadTimeout)
		if checking {
			reason = fmt.Sprintf("validating the file (compiling its plugins) took longer than %s after it was read", a.opts.CheckTimeout)
		}
		r.results[name] = unreadable(id, name, reason)
		delete(r.pending, id)
		ctx.Stop(actor.NewPID(ctx.Self().Address, id))
	}
	if len(r.pending) > 0 {
		gen := r.gen
		r.timer = time.AfterFunc(a.opts.CheckTimeout, func() { a.root.Send(a.self, &roundTimeout{gen: gen, checking: true}) })
		return
	}
	a.finish(ctx)
}

// finish hands a round's results to the task-manager in file name order.
func (a *Actor) finish(ctx actor.Context) {
	r := a.round
	r.timer.Stop()
	a.round = nil
	names := slices.Sorted(maps.Keys(r.results))

	// Which name each file owns, and which names the round frees.
	owned := map[string]string{} // file name -> policy name
	for pname, p := range a.owners {
		owned[p.File] = pname
	}
	vacated := map[string]bool{}
	for _, name := range names {
		res := r.results[name]
		if res.err == nil {
			a.forgetSettling(name)
		}
		switch {
		case res.unstable:
			a.mark(name)
		case res.gone:
			delete(a.files, name)
			delete(a.conflicts, name)
			if pname := owned[name]; pname != "" {
				vacated[pname] = true
			}
		case res.err != nil && a.settles(name, res):
			// Read again later; what runs from it keeps running.
		case res.err != nil:
			a.reject(ctx, name, res, yamldoc.ProblemsOf(res.err))
		}
	}
	var claims []*policy.Policy
	claimed := map[string]*policy.Policy{} // by name, in this round
	for _, name := range names {
		res := r.results[name]
		p := res.policy
		if p == nil {
			continue
		}
		pname := p.Metadata.Name
		holder := claimed[pname]
		if h := a.owners[pname]; holder == nil && h != nil && h.File != name && !vacated[pname] {
			holder = h
		}
		if holder != nil {
			a.conflicts[name] = true
			a.reject(ctx, name, res, []*yamldoc.Problem{p.DuplicateOf(holder)})
			continue
		}
		delete(a.conflicts, name)
		a.files[name] = &file{key: res.key}
		claimed[pname] = p
		delete(vacated, pname)
		if prev := owned[name]; prev != "" && prev != pname {
			vacated[prev] = true // the file now declares another name: the old one goes
		}
		claims = append(claims, p)
	}
	// What goes stops before what comes starts.
	for _, pname := range slices.Sorted(maps.Keys(vacated)) {
		delete(a.owners, pname)
		ctx.Send(a.opts.Task, &protocol.RemovePolicy{Name: pname})
	}
	for _, p := range claims {
		a.owners[p.Metadata.Name] = p
		ctx.Send(a.opts.Task, &protocol.ApplyPolicy{Policy: p})
	}
	if len(vacated) > 0 && len(a.conflicts) > 0 {
		// A name freed by a rename within a file: the files that wanted
		// it get another chance.
		for name := range a.conflicts {
			a.mark(name)
		}
	}
	a.finishLoad()
	if a.flushAgain {
		a.flushAgain = false
		a.flush(ctx)
	}
}

// settles reports whether the failed read res of file name waits before
// it is rejected. A file that changed less than Options.Settle before may
// be one a writer truncated and is writing again (an editor writing in
// place, a shell's > redirection), however long the writer takes between
// the two: on a loaded host a writer can be descheduled for longer than
// the debounce, and the daemon must not publish a false rejection. Its
// rejection waits until a read at least Options.Settle later finds it the
// same, stats and content: the content too, because a writer that writes
// the same length again within one tick of the file system's clock leaves
// the stats as they were. A file that changed long before it failed (the
// daemon starting on it, a rescan) is rejected at once, as is one read
// again unchanged once settled.
func (a *Actor) settles(name string, res *parsed) bool {
	s := a.settling[name]
	if s != nil && s.key == res.key && s.hash == res.hash {
		if time.Since(s.since) < a.opts.Settle {
			return true // read again too early (a rescan): its timer reads it again
		}
		a.forgetSettling(name)
		return false
	}
	if s == nil && time.Since(res.key.mtime) >= a.opts.Settle {
		return false
	}
	a.forgetSettling(name)
	gen := a.timerGen
	a.settling[name] = &settling{key: res.key, hash: res.hash, since: time.Now(),
		timer: time.AfterFunc(a.opts.Settle, func() { a.root.Send(a.self, &settleDue{gen: gen, name: name}) })}
	a.opts.Log.Debug().Str("file", name).Stringer("settle", a.opts.Settle).Msg("policy file fails right after a change: reading it again before rejecting it")
	return true
}

// forgetSettling forgets the settling read of file name.
func (a *Actor) forgetSettling(name string) {
	if s := a.settling[name]; s != nil {
		s.timer.Stop()
		delete(a.settling, name)
	}
}

// reject records a rejected read of file name and tells the task-manager,
// which reports it (once per distinct content and problems) with the
// version that stays in force.
func (a *Actor) reject(ctx actor.Context, name string, res *parsed, probs []*yamldoc.Problem) {
	slices.SortStableFunc(probs, func(x, y *yamldoc.Problem) int { return x.Line - y.Line })
	key := fmt.Sprintf("%x\n%s", res.hash, yamldoc.Join(probs))
	a.files[name] = &file{key: res.key, rejection: key}
	reject := &protocol.RejectFile{File: name, Problems: probs, Key: key}
	if a.isCentral(name) {
		reject.Central, reject.Issuer = true, readIssuer(name)
	}
	ctx.Send(a.opts.Task, reject)
}

// isCentral reports whether the file at path is a central policy's.
func (a *Actor) isCentral(path string) bool {
	return a.opts.Central != "" && filepath.Dir(path) == a.opts.Central
}

// finishLoad tells the task-manager that a round (or the first load) is
// over: which name each file owns, and which files are rejected.
func (a *Actor) finishLoad() {
	a.loaded = true
	done := &protocol.FilesRead{}
	if a.dirProblem == "" {
		// Every file known, the ones still to read or settling included:
		// a policy whose file is there but owns nothing keeps running.
		done.Declared = map[string]string{}
		for _, names := range []iter.Seq[string]{maps.Keys(a.dirty), maps.Keys(a.files), maps.Keys(a.settling)} {
			for name := range names {
				done.Declared[name] = ""
			}
		}
		for pname, p := range a.owners {
			done.Declared[p.File] = pname
		}
	}
	for name, f := range a.files {
		if f.rejection != "" {
			done.Rejected = append(done.Rejected, name)
		}
	}
	if a.dirProblem != "" {
		done.Rejected = append(done.Rejected, a.problemDir)
	}
	slices.Sort(done.Rejected)
	a.root.Send(a.opts.Task, done)
}
