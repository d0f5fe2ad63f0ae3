package policymanager

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/policy"
)

// maxReads bounds how often a parser reads a file that changes while it is
// read, before it leaves it to the next round.
const maxReads = 3

// parser is a short-lived child of the policy-manager: it reads and parses
// one file, reports a parsed to its parent and stops. It runs off the
// policy-manager's mailbox, and a crash of the parser rejects that file
// only (see Actor.HandleFailure).
type parser struct {
	path  string
	env   policy.Env
	parse parseFunc
	// settle is how long a file that fails to parse must stay unchanged
	// before it is rejected: a file rewritten in place is empty or half
	// written for a moment, and that moment is not worth a rejection.
	settle time.Duration
}

type parseFunc func(file string, data []byte, env policy.Env) (*policy.Policy, error)

// parsed is what a parser found in its file.
type parsed struct {
	id   string // the parser's PID id
	name string // the file's name in the directory
	// gone: the file no longer exists (or is a dangling symlink).
	gone bool
	// unstable: the file kept changing while it was read; the watcher
	// reports its next change, and the round after reads it again.
	unstable bool
	key      fileKey
	hash     [sha256.Size]byte
	policy   *policy.Policy
	err      error // the file is rejected: *configs.Problem values
}

func (p *parser) Receive(ctx actor.Context) {
	if _, ok := ctx.Message().(*actor.Started); !ok {
		return
	}
	res := p.run()
	res.id, res.name = ctx.Self().Id, filepath.Base(p.path)
	ctx.Send(ctx.Parent(), res)
	ctx.Stop(ctx.Self())
}

// run reads the file until two stats around the read agree, so that a file
// being written is read whole or not at all, and parses what it read.
func (p *parser) run() *parsed {
	for range maxReads {
		before, err := os.Stat(p.path)
		if errors.Is(err, fs.ErrNotExist) {
			if _, lerr := os.Lstat(p.path); lerr != nil {
				return &parsed{gone: true}
			}
			// A dangling symlink is a mistake to report, not a removal.
		}
		data, err := policy.ReadFile(p.path)
		if err != nil {
			return &parsed{err: err}
		}
		after, err := os.Stat(p.path)
		if err != nil || keyOf(before) != keyOf(after) {
			continue
		}
		res := &parsed{key: keyOf(after), hash: sha256.Sum256(data)}
		res.policy, res.err = p.parseSafely(data)
		if res.err != nil {
			time.Sleep(p.settle) // this actor's only work: nothing waits behind it
			if now, err := os.Stat(p.path); err != nil || keyOf(now) != res.key {
				return &parsed{unstable: true}
			}
		}
		return res
	}
	return &parsed{unstable: true}
}

// parseSafely parses data. A parse that panics (on a hostile file) rejects
// the file like any other problem, with its key, so that the file is not
// read again until it changes; Actor.HandleFailure covers any other crash.
func (p *parser) parseSafely(data []byte) (pol *policy.Policy, err error) {
	defer func() {
		if r := recover(); r != nil {
			pol, err = nil, &yamldoc.Problem{File: p.path, Message: fmt.Sprintf("the parser crashed: %v", r)}
		}
	}()
	return p.parse(p.path, data, p.env)
}

// unreadable is the result of a parser that failed or did not finish: its
// file is rejected with message.
func unreadable(id, dir, name, message string) *parsed {
	return &parsed{id: id, name: name, err: &yamldoc.Problem{File: filepath.Join(dir, name), Message: message}}
}
