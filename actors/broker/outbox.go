package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
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

	// mu guards the counters and serializes the writers that change them
	// (bbolt serializes write transactions anyway).
	mu sync.Mutex
	// last is the last assigned sequence; persisted in the same commit as
	// the events that used it, so a sequence is never reused.
	last   uint64
	events int
	bytes  int64
}

var (
	bucketEvents = []byte("events")
	bucketMeta   = []byte("meta")
	keyLastSeq   = []byte("last_sequence")
)

// OpenOutbox opens (or creates) the outbox in dir, which is created 0700.
func OpenOutbox(dir string) (*Outbox, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open outbox: %w", err)
	}
	path := filepath.Join(dir, "outbox.db")
	// The timeout turns a second daemon on the same state_dir into an error
	// instead of a hang on the file lock.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open outbox %s: locked by another process (is another observerd using this state_dir?)", path)
		}
		return nil, fmt.Errorf("open outbox %s: %w", path, err)
	}
	o := &Outbox{db: db}
	err = db.Update(func(tx *bolt.Tx) error {
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
	return o, nil
}

// Append assigns the next sequences to evs and commits them in one
// transaction (one fsync for the whole group).
func (o *Outbox) Append(evs []*messages.Event) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	last, events, bytes := o.last, o.events, o.bytes
	err := o.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		for _, ev := range evs {
			last++
			ev.Sequence = last
			data, err := proto.Marshal(ev)
			if err != nil {
				return fmt.Errorf("marshal event %s: %w", ev.Id, err)
			}
			if err := b.Put(seqKey(last), data); err != nil {
				return err
			}
			events++
			bytes += int64(len(data))
		}
		return tx.Bucket(bucketMeta).Put(keyLastSeq, seqKey(last))
	})
	if err != nil {
		// Nothing was committed: the sequences are not used.
		for _, ev := range evs {
			ev.Sequence = 0
		}
		return fmt.Errorf("append to outbox: %w", err)
	}
	o.last, o.events, o.bytes = last, events, bytes
	return nil
}

// After returns up to max events with a sequence above seq, in order.
func (o *Outbox) After(seq uint64, max int) ([]*messages.Event, error) {
	var out []*messages.Event
	err := o.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(seqKey(seq + 1)); k != nil && len(out) < max; k, v = c.Next() {
			ev := &messages.Event{}
			if err := proto.Unmarshal(v, ev); err != nil {
				return fmt.Errorf("decode event %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, ev)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return out, nil
}

// Get returns the event with sequence seq, or nil when it is not there.
func (o *Outbox) Get(seq uint64) (*messages.Event, error) {
	evs, err := o.After(seq-1, 1)
	if err != nil || len(evs) == 0 || evs[0].Sequence != seq {
		return nil, err
	}
	return evs[0], nil
}

// Delete removes confirmed events; deleting an absent one is not an error.
func (o *Outbox) Delete(seqs []uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	events, bytes := o.events, o.bytes
	err := o.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		for _, s := range seqs {
			k := seqKey(s)
			if v := b.Get(k); v != nil {
				events--
				bytes -= int64(len(v))
				if err := b.Delete(k); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete from outbox: %w", err)
	}
	o.events, o.bytes = events, bytes
	return nil
}

// OutboxStats are the outbox's counters.
type OutboxStats struct {
	Events       int
	Bytes        int64
	LastSequence uint64
}

// Stats returns the outbox's counters.
func (o *Outbox) Stats() OutboxStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	return OutboxStats{Events: o.events, Bytes: o.bytes, LastSequence: o.last}
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
