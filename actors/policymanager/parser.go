package policymanager

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"

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
	path string
	// central: the file is a central policy's, sent by the broker user
	// its issuer file names (IssuerFile).
	central bool
	env     policy.Env
	parse   parseFunc
}

type parseFunc func(file string, data []byte, env policy.Env) (*policy.Policy, error)

// parsed is what a parser found in its file.
type parsed struct {
	id   string // the parser's PID id
	name string // the file's path
	// gone: the file no longer exists (or is a dangling symlink).
	gone bool
	// unstable: the file kept changing while it was read; the watcher
	// reports its next change, and the round after reads it again.
	unstable bool
	key      fileKey
	hash     [sha256.Size]byte
	policy   *policy.Policy
	err      error // the file is rejected: *yamldoc.Problem values
}

// Receive reads the file, tells the policy-manager it did (its deadline
// for reads no longer applies), and parses what it read. Whether a file
// that fails is rejected at once is the policy-manager's decision
// (Actor.settles).
func (p *parser) Receive(ctx actor.Context) {
	if _, ok := ctx.Message().(*actor.Started); !ok {
		return
	}
	res, data := p.read()
	if res.err == nil && !res.gone && !res.unstable {
		ctx.Send(ctx.Parent(), &fileRead{id: ctx.Self().Id})
		res.policy, res.err = p.parseSafely(data)
	}
	if res.policy != nil && p.central {
		res.policy.Central, res.policy.Issuer = true, readIssuer(p.path)
	}
	res.id, res.name = ctx.Self().Id, p.path
	ctx.Send(ctx.Parent(), res)
	ctx.Stop(ctx.Self())
}

// read reads the file until two stats around the read agree, so that a
// file being written is read whole or not at all, as far as its stats
// tell: a writer that truncates and writes the same length again within
// one tick of the file system's clock leaves them as they were (see
// Actor.settles).
func (p *parser) read() (*parsed, []byte) {
	for range maxReads {
		before, err := os.Stat(p.path)
		if errors.Is(err, fs.ErrNotExist) {
			if _, lerr := os.Lstat(p.path); lerr != nil {
				return &parsed{gone: true}, nil
			}
			// A dangling symlink is a mistake to report, not a removal.
		}
		data, err := policy.ReadFile(p.path)
		if err != nil {
			return &parsed{err: err}, nil
		}
		after, err := os.Stat(p.path)
		if err != nil || keyOf(before) != keyOf(after) {
			continue
		}
		return &parsed{key: keyOf(after), hash: sha256.Sum256(data)}, data
	}
	return &parsed{unstable: true}, nil
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
func unreadable(id, path, message string) *parsed {
	return &parsed{id: id, name: path, err: &yamldoc.Problem{File: path, Message: message}}
}
