package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/messages"
)

// Outbox is the durable queue of accepted events in state_dir. An event is
// accepted when Append returns: it is committed and fsynced with its
// sequence. It leaves only through Delete, after RabbitMQ confirmed it.
//
// Why bbolt? A single file, fsync on every commit, copy-on-write pages with
// two meta pages (a torn write leaves the previous commit intact), ordered
// keys for replay in sequence order, and no cgo.
type Outbox struct {
	db *bolt.DB
	// limit is read without mu, so that asking whether the outbox is
	// full never waits for a commit's fsync.
	limit atomic.Pointer[Limit]

	// mu serializes the writers (bbolt does anyway) and Claim against
	// drops; it is held across a commit's fsync.
	mu sync.Mutex
	// last is the last assigned sequence; persisted in the same commit as
	// the events that used it, so a sequence is never reused. Written
	// under mu; the counters are also published to stats for readers that
	// must not wait for a commit (the actor's mailbox).
	last   uint64
	events int
	bytes  int64
	stats  atomic.Pointer[OutboxStats]
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

// Dropped is one contiguous range of events dropped to make room.
type Dropped struct {
	First, Last uint64
	Events      uint64
	Bytes       uint64
}

var (
	bucketEvents = []byte("events")
	bucketMeta   = []byte("meta")
	keyLastSeq   = []byte("last_sequence")
)

// OpenOutbox opens (or creates) the outbox in dir, which is created 0700.
// A file that bbolt cannot open (corrupt beyond its own recovery, which
// already survives torn writes) is moved aside and a new one started, so
// that a damaged disk is reported, not a crash loop.
func OpenOutbox(dir string, limit Limit) (*Outbox, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open outbox: %w", err)
	}
	path := filepath.Join(dir, "outbox.db")
	// The timeout turns a second daemon on the same state_dir into an error
	// instead of a hang on the file lock.
	db, openErr := openBolt(path)
	if db == nil {
		return nil, openErr
	}
	o := &Outbox{db: db}
	o.limit.Store(&limit)
	err := db.Update(func(tx *bolt.Tx) error {
		evs, err := tx.CreateBucketIfNotExists(bucketEvents)
		if err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(keyLastSeq); len(v) == 8 {
			o.last = binary.BigEndian.Uint64(v)
		}
		return evs.ForEach(func(_, v []byte) error {
			o.events++
			o.bytes += int64(len(v))
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open outbox %s: %w", path, err)
	}
	o.publish()
	return o, openErr // nil, or ErrMovedAside with a usable new outbox
}

// ErrMovedAside wraps the error of an outbox file that could not be opened
// and was renamed; the returned Outbox is a new, empty one.
var ErrMovedAside = errors.New("outbox file moved aside")

func openBolt(path string) (*bolt.DB, error) {
	// The timeout turns a second daemon on the same state_dir into an error
	// instead of a hang on the file lock.
	opts := &bolt.Options{Timeout: 2 * time.Second}
	db, err := bolt.Open(path, 0o600, opts)
	if err == nil {
		return db, nil
	}
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open outbox %s: locked by another process (is another observerd using this state_dir?)", path)
	}
	aside := fmt.Sprintf("%s.corrupt-%d", path, time.Now().Unix())
	if rerr := os.Rename(path, aside); rerr != nil {
		return nil, fmt.Errorf("open outbox %s: %w (and moving it aside failed: %v)", path, err, rerr)
	}
	db, err2 := bolt.Open(path, 0o600, opts)
	if err2 != nil {
		return nil, fmt.Errorf("open outbox %s: %w", path, err2)
	}
	return db, fmt.Errorf("open outbox %s: %w to %s: %w", path, ErrMovedAside, aside, err)
}

// Append assigns the next sequences to evs and commits them in one
// transaction (one fsync for the whole group). With Limit.DropOldest it
// drops, in the same transaction, the oldest events that keep(seq) does
// not protect until the outbox fits in Limit.MaxBytes, and returns what
// it dropped.
func (o *Outbox) Append(evs []*messages.Event, keep func(seq uint64) bool) ([]Dropped, error) {
	return o.Commit(evs, nil, keep)
}

// Commit appends evs (as Append) and deletes the confirmed events del in
// one transaction: one fsync for both, which is what keeps a steady stream
// at one commit per group instead of two.
func (o *Outbox) Commit(evs []*messages.Event, del []uint64, keep func(seq uint64) bool) ([]Dropped, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	last, events, bytes := o.last, o.events, o.bytes
	var dropped []Dropped
	err := o.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
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
		// (Delete) has no keep function and nobody to report drops to.
		if l := o.Limit(); len(evs) > 0 && l.DropOldest && l.MaxBytes > 0 && bytes > l.MaxBytes {
			var err error
			dropped, err = dropOldest(b, bytes-l.MaxBytes, keep)
			if err != nil {
				return err
			}
			for _, d := range dropped {
				events -= int(d.Events)
				bytes -= int64(d.Bytes)
			}
		}
		return tx.Bucket(bucketMeta).Put(keyLastSeq, seqKey(last))
	})
	if err != nil {
		// Nothing was committed: the sequences are not used.
		for _, ev := range evs {
			ev.Sequence = 0
		}
		return nil, fmt.Errorf("commit to outbox: %w", err)
	}
	o.last, o.events, o.bytes = last, events, bytes
	o.publish()
	return dropped, nil
}

// dropOldest deletes the oldest events not protected by keep until at
// least need bytes are freed, and returns the contiguous ranges dropped.
// outbox.overflow events are never dropped: during a long outage they would
// age into the oldest and take the report of a loss with them.
func dropOldest(b *bolt.Bucket, need int64, keep func(uint64) bool) ([]Dropped, error) {
	var victims [][]byte
	var out []Dropped
	c := b.Cursor()
	for k, v := c.First(); k != nil && need > 0; k, v = c.Next() {
		seq := binary.BigEndian.Uint64(k)
		if keep != nil && keep(seq) || isOverflow(v) {
			continue
		}
		victims = append(victims, k)
		need -= int64(len(v))
		if n := len(out); n > 0 && out[n-1].Last == seq-1 {
			out[n-1].Last = seq
			out[n-1].Events++
			out[n-1].Bytes += uint64(len(v))
		} else {
			out = append(out, Dropped{First: seq, Last: seq, Events: 1, Bytes: uint64(len(v))})
		}
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

// Claim calls mark for each event of evs still in the outbox and returns
// those. It holds the writers' lock, so a concurrent Append drops an event
// either before (Claim leaves it out) or not at all (mark, through Append's
// keep, protects it).
func (o *Outbox) Claim(rs []Record, mark func(seq uint64)) ([]Record, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	kept := rs[:0]
	err := o.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		for _, r := range rs {
			if b.Get(seqKey(r.Event.Sequence)) != nil {
				mark(r.Event.Sequence)
				kept = append(kept, r)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return kept, nil
}

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

// After returns up to max events with a sequence above seq, in order.
func (o *Outbox) After(seq uint64, max int) ([]Record, error) {
	var out []Record
	err := o.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(seqKey(seq + 1)); k != nil && len(out) < max; k, v = c.Next() {
			ev := &messages.Event{}
			if err := proto.Unmarshal(v, ev); err != nil {
				return fmt.Errorf("decode event %d: %w", binary.BigEndian.Uint64(k), err)
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

// Get returns the record with sequence seq, or nil when it is not there.
func (o *Outbox) Get(seq uint64) (*Record, error) {
	rs, err := o.After(seq-1, 1)
	if err != nil || len(rs) == 0 || rs[0].Event.Sequence != seq {
		return nil, err
	}
	return &rs[0], nil
}

// Delete removes confirmed events; deleting an absent one is not an error.
func (o *Outbox) Delete(seqs []uint64) error {
	_, err := o.Commit(nil, seqs, nil)
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
	if err := o.db.Close(); err != nil {
		return fmt.Errorf("close outbox: %w", err)
	}
	return nil
}

func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}
