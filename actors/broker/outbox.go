package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/messages"
)

// Outbox is the durable queue of accepted events in state_dir. An event is
// accepted when Commit returns: it is committed and fsynced with its
// sequence. It leaves only through Delete, after RabbitMQ confirmed it.
//
// Why bbolt? A single file, fsync on every commit, copy-on-write pages with
// two meta pages (a torn write leaves the previous commit intact), ordered
// keys for replay in sequence order, and no cgo.
//
// A damaged file (one bbolt rejects as invalid, or panics on, at open or
// in use) is moved aside and replaced by a new one whose sequences go on
// after the ceiling of the sequence file (seqfile.go); the new file's first
// event is an outbox.overflow with policy "corrupt" naming the range the
// damaged file may have taken with it. Every other error (permission, I/O,
// the lock) leaves the file as it is.
//
// A damaged record (a value that does not decode to its own sequence:
// bbolt has no checksum on its data pages, so such a file opens) is damage
// to that record alone: readers leave it out and remember it, and the
// committer's next Commit deletes it and returns it as a Dropped range
// with policy corrupt, which the pipeline reports as any other loss.
//
// The outbox is also where the committer and the publisher meet: the
// publisher claims the records it publishes (Claim), which drop_oldest
// then never drops until they are deleted or released (Release), and
// Appended wakes it when a commit added records.
type Outbox struct {
	dir, path string
	opts      OutboxOptions
	// limit is read without mu, so that asking whether the outbox is
	// full never waits for a commit's fsync.
	limit atomic.Pointer[Limit]

	// mu serializes the writers (bbolt does anyway), Claim against drops,
	// and repairs; it is held across a commit's fsync.
	mu sync.Mutex
	// claimed are the records published and not yet confirmed (they may
	// have been delivered): drop_oldest never takes them. Under mu; a
	// subset of the records, since every way out of the file forgets them.
	claimed map[uint64]bool
	// appended is woken (cap 1) after every commit that added records.
	appended chan struct{}
	// dbMu guards db, file and closed: every transaction holds it shared,
	// a repair or Close exclusively, so that no transaction runs on a file
	// being replaced.
	dbMu sync.RWMutex
	db   *bolt.DB
	// file is db's file, kept to release a damaged db's lock without
	// bbolt's Close, which may wait forever on a lock that a panicking
	// transaction left held.
	file   *os.File
	closed bool
	// broken is set when a transaction panicked: the next commit moves the
	// file aside. db == nil (not broken) means the file must be created.
	broken atomic.Bool
	// replaced is when a damaged file was last moved aside; report is the
	// range it may have taken with it, until the new file holds its
	// outbox.overflow. Under mu.
	replaced time.Time
	report   *Dropped

	// last is the last assigned sequence; persisted in the same commit as
	// the events that used it, and never above ceiling, which the sequence
	// file holds, so a sequence is never reused. floor is the sequence
	// file's. Written under mu; the counters are also published to stats
	// for readers that must not wait for a commit (the actor's mailbox).
	last, floor, ceiling uint64
	events               int
	bytes                int64
	stats                atomic.Pointer[OutboxStats]

	// damaged are the sequences of the damaged records readers found, for
	// the next Commit to delete and report; at most maxDamaged. Under
	// damagedMu: readers do not hold mu.
	damagedMu sync.Mutex
	damaged   map[uint64]bool
}

// OutboxOptions configure an Outbox.
type OutboxOptions struct {
	Limit Limit
	// Node and Version stamp the outbox.overflow event that reports a
	// damaged file.
	Node, Version string
	Log           zerolog.Logger
}

// Limit bounds the outbox.
type Limit struct {
	// MaxBytes bounds the stored events' bytes (0: unbounded). bbolt's file
	// is larger by its page overhead and reuses freed pages.
	MaxBytes int64
	// DropOldest makes Append drop the oldest events to stay within
	// MaxBytes; otherwise Append keeps everything and Full tells the
	// producers to hold back (outbox.when_full: block).
	DropOldest bool
}

// Dropped is one contiguous range of events lost for one reason, Policy:
// dropped to make room (drop_oldest), or found damaged (corrupt). Events
// dropped from memory before they were accepted (disk_full, memory_full)
// have no sequence: First and Last are 0.
type Dropped struct {
	First, Last uint64
	Events      uint64
	Bytes       uint64
	Policy      string
}

// The policies of outbox.overflow events (OutboxOverflow.policy).
const (
	policyDropOldest = "drop_oldest"
	policyDiskFull   = "disk_full"
	policyMemoryFull = "memory_full"
	policyCorrupt    = "corrupt"
)

// mergeDropped adds d to ds, extending the last range when d follows it
// for the same reason.
func mergeDropped(ds []Dropped, d Dropped) []Dropped {
	if n := len(ds); n > 0 && ds[n-1].Policy == d.Policy && ds[n-1].Last+1 == d.First {
		last := &ds[n-1]
		last.Last, last.Events, last.Bytes = d.Last, last.Events+d.Events, last.Bytes+d.Bytes
		return ds
	}
	return append(ds, d)
}

// droppedOne is the range of the single record seq of size bytes.
func droppedOne(seq uint64, size int, policy string) Dropped {
	return Dropped{First: seq, Last: seq, Events: 1, Bytes: uint64(size), Policy: policy}
}

var (
	bucketEvents = []byte("events")
	bucketMeta   = []byte("meta")
	keyLastSeq   = []byte("last_sequence")
)

// errDamaged marks an outbox that is being replaced: a transaction
// panicked on its file, or the new file is not created yet. Readers wait
// for the next commit, which repairs.
var errDamaged = errors.New("outbox file damaged")

var errOutboxClosed = errors.New("outbox closed")

// replaceEvery bounds how often a damaged file is moved aside: a disk that
// damages every new file would otherwise fill the directory with them. In
// between, commits fail and the pipeline's bounds (pending bytes,
// readiness) apply.
const replaceEvery = time.Minute

// OpenOutbox opens (or creates) the outbox in dir, which is created 0700.
//
// A damaged file is moved aside as outbox.db.corrupt-<time> and replaced,
// and the damage logged: it is not an error. An error means the state_dir
// is unusable (permission, I/O, a second daemon holding the lock, a
// sequence file that cannot be read or written): the file is left as it
// is, and the daemon must not start.
func OpenOutbox(dir string, opts OutboxOptions) (*Outbox, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open outbox: %w", err)
	}
	o := &Outbox{dir: dir, path: filepath.Join(dir, "outbox.db"), opts: opts,
		claimed: map[uint64]bool{}, appended: make(chan struct{}, 1)}
	o.limit.Store(&opts.Limit)
	seq, damage, err := o.open()
	if err != nil {
		return nil, err
	}
	if damage != nil {
		// Without a sequence file, nothing says how far the damaged file
		// got: the new one goes on after a bound from the clock.
		o.floor, o.ceiling = 1, clockCeiling(time.Now())
		if seq != nil {
			o.floor, o.ceiling = seq.floor, seq.ceiling
		}
		o.broken.Store(true)
		o.mu.Lock()
		err := o.repairLocked(damage)
		o.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("open outbox: %w", err)
		}
	}
	o.publish()
	return o, nil
}

// open opens the file at o.path and reads its state, and the sequence
// file's. damage is why the file must be replaced; err means the state_dir
// cannot be used, and leaves the files as they are. The outbox file is
// opened first, so that an error names it rather than the sequence file.
func (o *Outbox) open() (seq *seqFile, damage, err error) {
	st, err := os.Stat(o.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, unusable(o.path, err)
	}
	// An empty file is one bbolt would initialise as new.
	exists := err == nil && st.Size() > 0
	if exists {
		db, file, err := openBolt(o.path)
		switch {
		case isDamage(err):
			damage = err
		case err != nil:
			return nil, nil, unusable(o.path, err)
		default:
			o.db, o.file = db, file
		}
	}
	seq, err = readSeqFile(o.dir)
	if errors.Is(err, errSeqFileInvalid) {
		o.opts.Log.Warn().Err(err).Msg("outbox sequence file damaged: rewritten from the outbox")
		seq = nil
	} else if err != nil {
		o.closeDB()
		return nil, nil, fmt.Errorf("open outbox: %w; nothing was changed", err)
	}
	switch {
	case damage != nil:
		return seq, damage, nil
	case !exists && seq != nil:
		return seq, fmt.Errorf("%s is missing or empty, but %s says sequences up to %d were used", o.path, seqFileName, seq.last), nil
	case !exists:
		db, file, err := openBolt(o.path)
		if err != nil {
			return nil, nil, unusable(o.path, err)
		}
		o.db, o.file = db, file
	}
	fresh := false
	floor := uint64(0)
	err = o.view(func(tx *bolt.Tx) error {
		evs, meta := tx.Bucket(bucketEvents), tx.Bucket(bucketMeta)
		if evs == nil || meta == nil {
			fresh = true
			return nil
		}
		if v := meta.Get(keyLastSeq); len(v) == 8 {
			o.last = binary.BigEndian.Uint64(v)
		}
		if k, _ := evs.Cursor().First(); k != nil {
			floor = binary.BigEndian.Uint64(k)
		}
		return evs.ForEach(func(_, v []byte) error {
			o.events++
			o.bytes += int64(len(v))
			return nil
		})
	})
	if err == nil && fresh {
		err = o.update(func(tx *bolt.Tx) error {
			for _, name := range [][]byte{bucketEvents, bucketMeta} {
				if _, err := tx.CreateBucketIfNotExists(name); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err == nil && seq != nil && o.last < seq.last {
		err = fmt.Errorf("%w: %s went back to sequence %d, but %s says %d was committed (restored from a copy?)",
			errDamaged, o.path, o.last, seqFileName, seq.last)
	}
	if errors.Is(err, errDamaged) {
		o.closeDB()
		o.last, o.events, o.bytes = 0, 0, 0
		return seq, err, nil
	}
	if err != nil {
		o.closeDB()
		return nil, nil, unusable(o.path, err)
	}
	if floor == 0 {
		floor = o.last + 1
	}
	// Written at the first start (and the first after an upgrade), and
	// when the sequence file is behind: not at every start, so that a
	// healthy outbox opens on a full disk.
	if seq == nil || seq.ceiling < o.last {
		s := seqFile{floor: floor, last: o.last, ceiling: o.last + reserveBlock}
		if err := writeSeqFile(o.dir, s); err != nil {
			o.closeDB()
			return nil, nil, fmt.Errorf("open outbox: %w", err)
		}
		seq = &s
	}
	o.floor, o.ceiling = seq.floor, seq.ceiling
	return seq, nil, nil
}

// openBolt opens path, turning a panic of bbolt (a damaged freelist, a
// fault on a truncated file) into errDamaged.
func openBolt(path string) (db *bolt.DB, file *os.File, err error) {
	opts := &bolt.Options{
		// The timeout turns a second daemon on the same state_dir into an
		// error instead of a hang on the file lock.
		Timeout: 2 * time.Second,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, perm)
			file = f
			return f, err
		},
	}
	defer func() {
		if r := recover(); r != nil {
			// bbolt leaves its file open and locked after a panic.
			if file != nil {
				file.Close()
			}
			db, file, err = nil, nil, fmt.Errorf("%w: %s: %v", errDamaged, path, r)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	db, err = bolt.Open(path, 0o600, opts)
	if err != nil {
		return nil, nil, err
	}
	return db, file, nil
}

// isDamage tells the errors that mean the file is damaged, and only those:
// bbolt's own verdicts and a recovered panic.
func isDamage(err error) bool {
	return errors.Is(err, errDamaged) || errors.Is(err, bolterrors.ErrInvalid) ||
		errors.Is(err, bolterrors.ErrChecksum) || errors.Is(err, bolterrors.ErrVersionMismatch)
}

// unusable is the error of a file that cannot be opened but is not known
// to be damaged: it names the file and says it was left as it is.
func unusable(path string, err error) error {
	if errors.Is(err, bolterrors.ErrTimeout) {
		return fmt.Errorf("open outbox %s: locked by another process (is another observerd using this state_dir?)", path)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("open outbox %s: %w; the file was left as it is", path, err)
}

// view and update run a transaction on the current file. A panic in bbolt
// (or a fault on its mapping) marks the file damaged and returns
// errDamaged instead of killing the daemon.
func (o *Outbox) view(fn func(*bolt.Tx) error) error   { return o.tx(false, fn) }
func (o *Outbox) update(fn func(*bolt.Tx) error) error { return o.tx(true, fn) }

func (o *Outbox) tx(writable bool, fn func(*bolt.Tx) error) (err error) {
	o.dbMu.RLock()
	defer o.dbMu.RUnlock()
	if o.db == nil {
		return o.noFile()
	}
	defer o.recoverDamage(&err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	if writable {
		return o.db.Update(fn)
	}
	return o.db.View(fn)
}

// noFile is the error of a transaction while there is no file; dbMu held.
func (o *Outbox) noFile() error {
	if o.closed {
		return errOutboxClosed
	}
	return fmt.Errorf("%w: no outbox file until it is re-created", errDamaged)
}

// recoverDamage is deferred by view and update.
func (o *Outbox) recoverDamage(err *error) {
	if r := recover(); r != nil {
		o.broken.Store(true)
		*err = fmt.Errorf("%w: %s: %v", errDamaged, o.path, r)
	}
}

// NeedsRepair reports whether the file is damaged or missing, or readers
// found damaged records: the next Commit, even of nothing, replaces the
// file or deletes (and returns) the records.
func (o *Outbox) NeedsRepair() bool {
	o.dbMu.RLock()
	defer o.dbMu.RUnlock()
	if o.closed {
		return false
	}
	o.damagedMu.Lock()
	records := len(o.damaged) > 0
	o.damagedMu.Unlock()
	return o.db == nil || o.broken.Load() || records
}

// repairLocked moves a damaged file aside and creates the new one; mu
// held. cause is logged.
func (o *Outbox) repairLocked(cause error) error {
	o.dbMu.RLock()
	closed := o.closed
	o.dbMu.RUnlock()
	if closed {
		return errOutboxClosed
	}
	if o.broken.Load() {
		if !o.replaced.IsZero() && time.Since(o.replaced) < replaceEvery {
			return fmt.Errorf("%w: %v (a damaged file was already replaced %s ago; retrying later)",
				errDamaged, cause, time.Since(o.replaced).Round(time.Second))
		}
		o.closeDB()
		if err := o.moveAside(cause); err != nil {
			return err
		}
		o.broken.Store(false)
	}
	o.dbMu.RLock()
	missing := o.db == nil
	o.dbMu.RUnlock()
	if missing {
		return o.create()
	}
	return nil
}

// closeDB drops the current db: closed by bbolt when healthy; when damaged
// only its file is closed, which releases the lock (its mapping stays until
// the daemon exits: one per replacement, at most one a minute).
func (o *Outbox) closeDB() {
	o.dbMu.Lock()
	defer o.dbMu.Unlock()
	if o.db == nil {
		return
	}
	if o.broken.Load() {
		o.file.Close()
	} else {
		_ = o.db.Close()
	}
	o.db, o.file = nil, nil
}

// moveAside renames the damaged file, then reserves the sequences of the
// new one after the ceiling. In that order: a crash in between finds no
// file and the old sequence file, and reports the same range again.
func (o *Outbox) moveAside(cause error) error {
	aside := o.path + ".corrupt-" + time.Now().UTC().Format("20060102T150405.000000000Z")
	if err := os.Rename(o.path, aside); errors.Is(err, fs.ErrNotExist) {
		aside = "" // missing already: nothing to keep
	} else if err != nil {
		return fmt.Errorf("move damaged outbox %s aside: %w", o.path, err)
	}
	o.replaced = time.Now()
	last := o.ceiling
	s := seqFile{floor: last + 1, last: last, ceiling: last + 1 + reserveBlock}
	if err := writeSeqFile(o.dir, s); err != nil {
		return fmt.Errorf("replace damaged outbox %s: %w", o.path, err)
	}
	r := &Dropped{First: o.floor, Last: o.ceiling}
	if o.report != nil { // an earlier replacement never got its new file
		r.First = min(r.First, o.report.First)
	}
	o.opts.Log.Error().Err(cause).Str("moved_to", aside).Uint64("first_sequence", r.First).Uint64("last_sequence", r.Last).
		Msg("outbox file damaged: replaced by a new one; the events it held that no consumer received are lost")
	o.report = r
	o.last, o.floor, o.ceiling, o.events, o.bytes = last, s.floor, s.ceiling, 0, 0
	// Damaged records of the old file are within the reported range, and
	// its claims went with it.
	o.damagedMu.Lock()
	clear(o.damaged)
	o.damagedMu.Unlock()
	clear(o.claimed)
	return nil
}

// create makes a new file at o.path that goes on after o.last, with the
// report of the damaged one as its first event, in one commit.
func (o *Outbox) create() error {
	// What a failed create left has nothing accepted in it.
	if err := os.Remove(o.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("create outbox %s: %w", o.path, err)
	}
	db, file, err := openBolt(o.path)
	if err != nil {
		return fmt.Errorf("create outbox %s: %w", o.path, err)
	}
	last, events, bytes := o.last, 0, int64(0)
	var report []byte
	if r := o.report; r != nil {
		last++
		ev := overflowEvent(o.opts.Node, o.opts.Version, &messages.OutboxOverflow{
			FirstSequence: r.First, LastSequence: r.Last, Policy: policyCorrupt,
		})
		ev.Sequence = last
		if report, err = proto.Marshal(ev); err != nil {
			return fmt.Errorf("create outbox %s: %w", o.path, err)
		}
		events, bytes = 1, int64(len(report))
	}
	err = func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%w: %v", errDamaged, r)
			}
		}()
		return db.Update(func(tx *bolt.Tx) error {
			evs, err := tx.CreateBucketIfNotExists(bucketEvents)
			if err != nil {
				return err
			}
			meta, err := tx.CreateBucketIfNotExists(bucketMeta)
			if err != nil {
				return err
			}
			if report != nil {
				if err := evs.Put(seqKey(last), report); err != nil {
					return err
				}
			}
			return meta.Put(keyLastSeq, seqKey(last))
		})
	}()
	if err != nil {
		file.Close()
		return fmt.Errorf("create outbox %s: %w", o.path, err)
	}
	o.dbMu.Lock()
	o.db, o.file = db, file
	o.dbMu.Unlock()
	o.last, o.events, o.bytes, o.report = last, events, bytes, nil
	return nil
}

// Append assigns the next sequences to evs and commits them in one
// transaction (one fsync for the whole group). With Limit.DropOldest it
// drops, in the same transaction, the oldest events not claimed until the
// outbox fits in Limit.MaxBytes, and returns what it dropped. Damaged
// records found by readers are left to Commit.
func (o *Outbox) Append(evs []*messages.Event) ([]Dropped, error) {
	return o.commit(evs, nil, true, false)
}

// AppendReports appends outbox.overflow reports without making room for
// them: once the committer stops, a drop made for them could not be
// reported in turn. Reports are never dropped themselves, so the bound is
// exceeded by their few hundred bytes until the next append makes room.
func (o *Outbox) AppendReports(reports []*messages.Event) error {
	_, err := o.commit(reports, nil, false, false)
	return err
}

// Commit appends evs (as Append) and deletes the confirmed events del in
// one transaction: one fsync for both, which is what keeps a steady stream
// at one commit per group instead of two. It is the committer's: it also
// deletes the damaged records readers found, and returns them among the
// dropped ranges (policy corrupt), which its caller must report.
//
// A damaged file is replaced first (and when the commit itself finds the
// damage, the commit goes again to the new file): evs were not accepted
// yet, so they are the new file's, after its report.
func (o *Outbox) Commit(evs []*messages.Event, del []uint64) ([]Dropped, error) {
	return o.commit(evs, del, true, true)
}

// commit is Append, AppendReports, Commit or Delete; room drops the oldest
// to make room for evs (drop_oldest), purge deletes the damaged records
// found by readers.
func (o *Outbox) commit(evs []*messages.Event, del []uint64, room, purge bool) ([]Dropped, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	last := o.last
	var dropped []Dropped
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		if err = o.repairLocked(err); err != nil {
			break
		}
		var damaged []uint64
		if purge {
			damaged = o.damagedRecords()
		}
		if dropped, err = o.commitTx(evs, del, damaged, room); err == nil {
			o.forgetDamaged(damaged)
			for _, s := range slices.Concat(del, damaged) {
				delete(o.claimed, s)
			}
		}
		if !errors.Is(err, errDamaged) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("commit to outbox: %w", err)
	}
	o.publish()
	if o.last != last {
		wake(o.appended) // new records, or a new file that starts with its report
	}
	return dropped, nil
}

// commitTx is one commit: it deletes the confirmed events del and the
// damaged records damaged, appends evs, and drops to make room.
func (o *Outbox) commitTx(evs []*messages.Event, del, damaged []uint64, room bool) ([]Dropped, error) {
	last, events, bytes := o.last, o.events, o.bytes
	var dropped []Dropped
	err := o.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		if err := o.reserve(b, last+uint64(len(evs))); err != nil {
			return err
		}
		for _, s := range del {
			k := seqKey(s)
			if v := b.Get(k); v != nil {
				events--
				bytes -= int64(len(v))
				if err := b.Delete(k); err != nil {
					return err
				}
			}
		}
		// After the confirmed ones: a record confirmed before it was
		// damaged was delivered, and is no loss.
		for _, s := range damaged {
			k := seqKey(s)
			v := b.Get(k)
			if v == nil {
				continue // dropped since it was found, and reported as such
			}
			dropped = mergeDropped(dropped, droppedOne(s, len(v), policyCorrupt))
			events--
			bytes -= int64(len(v))
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		for _, ev := range evs {
			last++
			ev.Sequence = last
			data, err := proto.Marshal(ev)
			if err != nil {
				validUTF8(ev.ProtoReflect())
				data, err = proto.Marshal(ev)
			}
			if err != nil {
				return fmt.Errorf("marshal event %s: %w", ev.Id, err)
			}
			if err := b.Put(seqKey(last), data); err != nil {
				return err
			}
			events++
			bytes += int64(len(data))
		}
		// Only an append makes room by dropping: a commit of deletes alone
		// (Delete) has nobody to report drops to.
		if l := o.Limit(); room && len(evs) > 0 && l.DropOldest && l.MaxBytes > 0 && bytes > l.MaxBytes {
			oldest, err := dropOldest(b, bytes-l.MaxBytes, o.claimed)
			if err != nil {
				return err
			}
			for _, d := range oldest {
				events -= int(d.Events)
				bytes -= int64(d.Bytes)
			}
			dropped = append(dropped, oldest...)
		}
		return tx.Bucket(bucketMeta).Put(keyLastSeq, seqKey(last))
	})
	if err != nil {
		// Nothing was committed: the sequences are not used.
		for _, ev := range evs {
			ev.Sequence = 0
		}
		return nil, err
	}
	o.last, o.events, o.bytes = last, events, bytes
	return dropped, nil
}

// reserve writes a new ceiling to the sequence file before a commit uses
// sequences above the current one (need is the highest it will use), with
// the floor as the outbox holds it before the commit: the lowest sequence
// still unconfirmed. Inside the write transaction, so before its fsync.
func (o *Outbox) reserve(b *bolt.Bucket, need uint64) error {
	if need <= o.ceiling {
		return nil
	}
	floor := o.last + 1
	if k, _ := b.Cursor().First(); k != nil {
		floor = binary.BigEndian.Uint64(k)
	}
	s := seqFile{floor: floor, last: o.last, ceiling: need + reserveBlock}
	if err := writeSeqFile(o.dir, s); err != nil {
		return err
	}
	o.floor, o.ceiling = s.floor, s.ceiling
	return nil
}

// dropOldest deletes the oldest events not claimed until at least need
// bytes are freed, and returns the contiguous ranges dropped.
// outbox.overflow events are never dropped: during a long outage they would
// age into the oldest and take the report of a loss with them.
func dropOldest(b *bolt.Bucket, need int64, claimed map[uint64]bool) ([]Dropped, error) {
	var victims [][]byte
	var out []Dropped
	c := b.Cursor()
	for k, v := c.First(); k != nil && need > 0; k, v = c.Next() {
		seq := binary.BigEndian.Uint64(k)
		if claimed[seq] || isOverflow(v) {
			continue
		}
		victims = append(victims, k)
		need -= int64(len(v))
		out = mergeDropped(out, droppedOne(seq, len(v), policyDropOldest))
	}
	// Deleting while iterating would move bbolt's cursor; delete after.
	for _, k := range victims {
		if err := b.Delete(k); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// isOverflow tells whether a stored event is an outbox.overflow report,
// reading only its type field (Event.type, field 2) off the wire.
func isOverflow(v []byte) bool {
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			return false
		}
		v = v[n:]
		if num == 2 && typ == protowire.BytesType {
			b, _ := protowire.ConsumeBytes(v)
			return string(b) == messages.TypeOutboxOverflow
		}
		if n = protowire.ConsumeFieldValue(num, typ, v); n < 0 {
			return false
		}
		v = v[n:]
	}
	return false
}

// Claim claims the records of rs still in the outbox, for publishing, and
// returns those: drop_oldest never drops a claimed record (once published
// it may have been delivered) until it is deleted (confirmed) or released
// (returned). It holds the writers' lock, so a concurrent Append drops a
// record either before (Claim leaves it out) or not at all.
func (o *Outbox) Claim(rs []Record) ([]Record, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	kept := rs[:0]
	err := o.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		for _, r := range rs {
			if b.Get(seqKey(r.Event.Sequence)) != nil {
				kept = append(kept, r)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	for _, r := range kept {
		o.claimed[r.Event.Sequence] = true
	}
	return kept, nil
}

// Release ends the claim of seq: RabbitMQ returned it unroutable, so it
// was certainly not delivered, and drop_oldest may take it (else an outbox
// of unroutable events would outgrow its bound).
func (o *Outbox) Release(seq uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.claimed, seq)
}

// Appended is woken after every commit that added records (a new file's
// report included): the publisher, its one reader, waits on it once it
// has read them all. Wakes coalesce.
func (o *Outbox) Appended() <-chan struct{} { return o.appended }

// Full reports whether the outbox holds Limit.MaxBytes or more.
func (o *Outbox) Full() bool {
	l := o.Limit()
	return l.MaxBytes > 0 && o.Stats().Bytes >= l.MaxBytes
}

// Limit returns the outbox's bound.
func (o *Outbox) Limit() Limit { return *o.limit.Load() }

// SetLimit changes the outbox's bound while it runs (SIGHUP). A smaller
// max_bytes with drop_oldest drops at the next commit, and is reported as
// any drop is.
func (o *Outbox) SetLimit(l Limit) { o.limit.Store(&l) }

// Record is a stored event with its stored bytes, which are its protobuf
// encoding: publishing them saves encoding the event again.
type Record struct {
	Event *messages.Event
	Raw   []byte
}

// After returns up to n events with a sequence above seq, in order. A
// damaged record is left out and remembered for the next Commit, which
// deletes and reports it: the events after it go on.
func (o *Outbox) After(seq uint64, n int) ([]Record, error) {
	var out []Record
	err := o.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(seqKey(seq + 1)); k != nil && len(out) < n; k, v = c.Next() {
			s := binary.BigEndian.Uint64(k)
			ev := decodeRecord(s, v)
			if ev == nil {
				if !o.foundDamaged(s) {
					break // found again once Commit has deleted those known
				}
				continue
			}
			// v is only valid inside the transaction.
			out = append(out, Record{Event: ev, Raw: append([]byte(nil), v...)})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return out, nil
}

// decodeRecord decodes the stored value of seq; nil when it is damaged: it
// does not decode, or decodes to another sequence (every value is stored
// with its own).
func decodeRecord(seq uint64, v []byte) *messages.Event {
	ev := &messages.Event{}
	if proto.Unmarshal(v, ev) != nil || ev.Sequence != seq {
		return nil
	}
	return ev
}

// maxDamaged bounds the damaged records remembered between two commits:
// a reader stops at one more, and finds it again after the next Commit.
const maxDamaged = 4096

// foundDamaged remembers the damaged record seq for the next Commit; false
// when there is no room left.
func (o *Outbox) foundDamaged(seq uint64) bool {
	o.damagedMu.Lock()
	defer o.damagedMu.Unlock()
	if o.damaged[seq] {
		return true
	}
	if len(o.damaged) >= maxDamaged {
		return false
	}
	if o.damaged == nil {
		o.damaged = map[uint64]bool{}
	}
	o.damaged[seq] = true
	return true
}

// damagedRecords returns the damaged records found, in sequence order.
func (o *Outbox) damagedRecords() []uint64 {
	o.damagedMu.Lock()
	defer o.damagedMu.Unlock()
	seqs := slices.Collect(maps.Keys(o.damaged))
	slices.Sort(seqs)
	return seqs
}

// forgetDamaged forgets the damaged records a commit deleted (a reader may
// have found more meanwhile).
func (o *Outbox) forgetDamaged(seqs []uint64) {
	o.damagedMu.Lock()
	defer o.damagedMu.Unlock()
	for _, s := range seqs {
		delete(o.damaged, s)
	}
}

// Get returns the record with sequence seq, or nil when it is not there.
func (o *Outbox) Get(seq uint64) (*Record, error) {
	rs, err := o.After(seq-1, 1)
	if err != nil || len(rs) == 0 || rs[0].Event.Sequence != seq {
		return nil, err
	}
	return &rs[0], nil
}

// Delete removes confirmed events; deleting an absent one is not an error.
// Damaged records are left to Commit: nobody would report them here.
func (o *Outbox) Delete(seqs []uint64) error {
	_, err := o.commit(nil, seqs, false, false)
	return err
}

// OutboxStats are the outbox's counters.
type OutboxStats struct {
	Events       int
	Bytes        int64
	LastSequence uint64
}

// Stats returns the outbox's counters as of the last commit; it never
// waits for a commit in progress.
func (o *Outbox) Stats() OutboxStats {
	return *o.stats.Load()
}

// publish makes the counters visible to Stats; called under mu (or before
// the outbox is shared).
func (o *Outbox) publish() {
	o.stats.Store(&OutboxStats{Events: o.events, Bytes: o.bytes, LastSequence: o.last})
}

// Close closes the file.
func (o *Outbox) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dbMu.Lock()
	db, file, broken := o.db, o.file, o.broken.Load()
	o.db, o.file, o.closed = nil, nil, true
	o.dbMu.Unlock()
	switch {
	case db == nil:
		return nil
	case broken: // see closeDB
		return file.Close()
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("close outbox: %w", err)
	}
	return nil
}

// Oldest returns the time of the first event in the outbox, zero when it
// is empty.
func (o *Outbox) Oldest() (time.Time, error) {
	var t time.Time
	err := o.view(func(tx *bolt.Tx) error {
		_, v := tx.Bucket(bucketEvents).Cursor().First()
		if v == nil {
			return nil
		}
		ev := &messages.Event{}
		if err := proto.Unmarshal(v, ev); err != nil {
			return err
		}
		if ts := ev.GetTime(); ts != nil {
			t = ts.AsTime()
		}
		return nil
	})
	return t, err
}

func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}
