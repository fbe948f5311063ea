package postgres

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/lib/pq"
)

// Subscriber is told what arrives on the channels it listens to. Live(true)
// comes once the channels are listened to (again); Live(false) when the
// connection is lost, since announcements made meanwhile are missed. Both
// are also calls to forget anything derived from earlier announcements.
type Subscriber interface {
	Live(bool)
	Notified(payload string)
}

// Listen delivers the announcements (NOTIFY) on each channel of subs to its
// subscriber, over one connection to dsn that is re-established when lost,
// until ctx ends. It returns at once.
func Listen(ctx context.Context, dsn string, log *slog.Logger, subs map[string]Subscriber) {
	all := func(live bool) {
		for _, s := range subs {
			s.Live(live)
		}
	}
	down := false
	l := pq.NewListener(dsn, 100*time.Millisecond, 5*time.Second, func(ev pq.ListenerEventType, err error) {
		switch ev {
		case pq.ListenerEventReconnected: // the channels are listened to again by now
			log.Info("listen: connection back")
			down = false
			all(true)
		case pq.ListenerEventDisconnected, pq.ListenerEventConnectionAttemptFailed:
			if !down && err != nil {
				log.Warn("listen: connection lost; caches off until it is back", "error", err.Error())
			}
			down = true
			all(false)
		}
	})
	go func() {
		defer l.Close() //nolint:errcheck // shutting down
		defer all(false)
		for _, ch := range slices.Sorted(maps.Keys(subs)) {
			if err := l.Listen(ch); err != nil {
				log.Warn("listen: caches off", "channel", ch, "error", err.Error())
				return
			}
		}
		all(true)
		for {
			select {
			case <-ctx.Done():
				return
			case n := <-l.Notify:
				if n == nil { // after a reconnection; Live(true) was said
					continue
				}
				if s, ok := subs[n.Channel]; ok {
					s.Notified(n.Extra)
				}
			}
		}
	}()
}

// Cache holds values derived from the database, by key, in process. It is
// a Subscriber: an announcement of a key drops its entry, and entries are
// used only while the channel is listened to (Live(true)); losing or
// regaining the connection empties it. Get returns a generation to pass to
// Put, so that a value read while its key was being dropped is not cached.
type Cache[V any] struct {
	mu      sync.Mutex
	live    bool
	gen     uint64
	max     int
	entries map[string]V
}

// NewCache returns an empty cache that starts over past max entries.
func NewCache[V any](max int) *Cache[V] {
	return &Cache[V]{max: max, entries: map[string]V{}}
}

// Get returns key's value when cached and the cache is live, and the
// generation to give Put after reading the value from the database.
func (c *Cache[V]) Get(key string) (V, uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.entries[key]
	return v, c.gen, ok && c.live
}

// Put caches v unless the cache is not live or something was dropped
// since the Get that returned gen.
func (c *Cache[V]) Put(key string, v V, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live || c.gen != gen {
		return
	}
	if len(c.entries) >= c.max {
		clear(c.entries)
	}
	c.entries[key] = v
}

// Drop forgets key.
func (c *Cache[V]) Drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.entries, key)
}

// Live implements Subscriber: the cache starts empty either way.
func (c *Cache[V]) Live(live bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.entries)
	c.live = live
}

// Notified implements Subscriber: the payload is a key to drop.
func (c *Cache[V]) Notified(key string) { c.Drop(key) }

// Clear forgets every entry, as an announcement of each would.
func (c *Cache[V]) Clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.entries)
}
