//! The change feed behind `GET /v1/watch/{bucket}`: every applied write step appends its
//! events here, in revision order (engines append under their writer lock), and the engine
//! *releases* revisions once they are durable. Watchers read only released events, so a watch
//! never shows a write that could still be lost (docs/STORAGE.md, "Visibility = durability").
//!
//! The feed is a pull model: one bounded ring of recent events shared by every watcher, each
//! watcher holding only a cursor (the last revision it delivered). A write costs one push and
//! one wake-up, whatever the number of watchers; a stalled watcher costs nothing until it is
//! polled again, when it finds itself too far behind (`overflow`) or past the ring's start
//! (`compacted`). Nothing ever buffers per watcher.
//!
//! History is in memory: it starts at the revision the store opened at, and a resume point
//! from before a restart is answered 410 `compacted` (the client re-lists, then watches from
//! the list's revision).

use std::collections::VecDeque;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::Notify;

/// Values kept in the ring, in bytes; past it the oldest events go even below the event
/// count bound.
pub const HISTORY_VALUE_BYTES: usize = 64 << 20;

/// What an event says happened to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
    Expire,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Put => "put",
            EventKind::Delete => "delete",
            EventKind::Expire => "expire",
        }
    }
}

/// One change of one key.
#[derive(Debug, Clone)]
pub struct Event {
    pub revision: u64,
    pub kind: EventKind,
    pub bucket: Box<str>,
    pub key: Box<str>,
    /// Puts only: the value, its content type and expiry.
    pub value: Bytes,
    pub content_type: Bytes,
    pub expires_at: Option<u64>,
    /// Puts only: the tenant the record counts for, `None` = `default` (snapshots carry it).
    pub owner: Option<Box<str>>,
}

impl Event {
    fn weight(&self) -> usize {
        self.value.len() + self.content_type.len() + self.key.len() + 64
    }
}

struct Ring {
    events: VecDeque<Event>,
    /// Every event with a revision above this is in `events`.
    floor: u64,
    bytes: usize,
}

/// Where a watcher stands after [`Feed::read`].
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Events to send (possibly none: wait for [`Feed::changed`]); the cursor moved.
    Events,
    /// More than `buffer` matching events wait: the watcher is too slow.
    Overflow,
    /// Events after the cursor are gone from the ring.
    Compacted,
}

pub struct Feed {
    ring: RwLock<Ring>,
    /// Events up to this revision may be delivered.
    released: AtomicU64,
    wake: Notify,
    max_events: usize,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("released", &self.released)
            .finish_non_exhaustive()
    }
}

impl Feed {
    /// An empty feed whose history starts after `revision` (the store's at open).
    pub fn new(revision: u64, max_events: usize) -> Feed {
        Feed {
            ring: RwLock::new(Ring {
                events: VecDeque::new(),
                floor: revision,
                bytes: 0,
            }),
            released: AtomicU64::new(revision),
            wake: Notify::new(),
            max_events: max_events.max(1),
        }
    }

    /// Moves an empty feed's start to `revision` (an engine learns its revision after
    /// creating the feed).
    pub(crate) fn restart_at(&self, revision: u64) {
        if let Ok(mut ring) = self.ring.write()
            && ring.events.is_empty()
        {
            ring.floor = revision;
        }
        self.released.fetch_max(revision, Ordering::AcqRel);
    }

    /// Drops the whole history and restarts the feed after `revision`: the engine can no
    /// longer give the events before it (a shared change log pruned them before this node
    /// read them). Watchers whose cursor is behind read [`Read::Compacted`].
    pub(crate) fn skip_to(&self, revision: u64) {
        if let Ok(mut ring) = self.ring.write() {
            ring.events.clear();
            ring.bytes = 0;
            ring.floor = ring.floor.max(revision);
        }
        self.release(revision);
        self.wake.notify_waiters();
    }

    /// Appends the events of one applied step, all under one revision higher than any before
    /// (the engine's writer lock guarantees the order).
    pub fn append(&self, events: impl IntoIterator<Item = Event>) {
        let Ok(mut ring) = self.ring.write() else {
            return;
        };
        for e in events {
            ring.bytes += e.weight();
            ring.events.push_back(e);
        }
        // Evict whole revisions from the front, so a resume never splits a transaction; the
        // newest revision always stays, however large (its watchers must get it).
        let newest = ring.events.back().map(|e| e.revision);
        while ring.events.len() > self.max_events || ring.bytes > HISTORY_VALUE_BYTES {
            if ring.events.front().map(|e| e.revision) == newest {
                break;
            }
            let Some(first) = ring.events.pop_front() else {
                break;
            };
            ring.bytes -= first.weight();
            ring.floor = first.revision;
            while ring
                .events
                .front()
                .is_some_and(|e| e.revision == first.revision)
            {
                if let Some(e) = ring.events.pop_front() {
                    ring.bytes -= e.weight();
                }
            }
        }
    }

    /// Events up to `revision` are durable: watchers may see them.
    pub fn release(&self, revision: u64) {
        if self.released.fetch_max(revision, Ordering::AcqRel) < revision {
            self.wake.notify_waiters();
        }
    }

    /// The newest revision watchers may see.
    pub fn released(&self) -> u64 {
        self.released.load(Ordering::Acquire)
    }

    /// The oldest `since` that can still be served.
    pub fn floor(&self) -> u64 {
        self.ring.read().map_or(u64::MAX, |r| r.floor)
    }

    /// Wakes every watcher (shutdown: they notice the stop flag).
    pub fn wake_all(&self) {
        self.wake.notify_waiters();
    }

    /// A future that completes at the next release. Create it *before* calling
    /// [`Feed::read`] so no release is missed in between.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// Events after `*cursor` and up to the released revision that match `filter`, at most
    /// `max` of them and never part of a revision; moves `*cursor` past what it read
    /// (matching or not). `Overflow` when more than `buffer` matching events are waiting.
    pub fn read(
        &self,
        cursor: &mut u64,
        filter: impl Fn(&Event) -> bool,
        buffer: usize,
        max: usize,
        out: &mut Vec<Event>,
    ) -> Read {
        let released = self.released();
        if released <= *cursor {
            return Read::Events;
        }
        let Ok(ring) = self.ring.read() else {
            return Read::Compacted;
        };
        if *cursor < ring.floor {
            return Read::Compacted;
        }
        let start = ring.events.partition_point(|e| e.revision <= *cursor);
        let mut waiting = 0usize;
        let mut taken_upto = *cursor;
        let mut full = false;
        for e in ring.events.range(start..) {
            if e.revision > released {
                break;
            }
            let matches = filter(e);
            if !full {
                if matches && out.len() >= max && e.revision != taken_upto {
                    full = true;
                } else {
                    if matches {
                        out.push(e.clone());
                    }
                    taken_upto = e.revision;
                    continue;
                }
            }
            if buffer == usize::MAX {
                break; // nothing to count: the page is full
            }
            if matches {
                waiting += 1;
                if waiting > buffer {
                    out.clear();
                    return Read::Overflow;
                }
            }
        }
        *cursor = if full { taken_upto } else { released };
        Read::Events
    }

    /// The events with revisions in `(after, upto]` (snapshots replay them); `None` when
    /// some are already gone from the ring.
    pub fn between(&self, after: u64, upto: u64) -> Option<Vec<Event>> {
        let ring = self.ring.read().ok()?;
        if after < ring.floor {
            return None;
        }
        let start = ring.events.partition_point(|e| e.revision <= after);
        Some(
            ring.events
                .range(start..)
                .take_while(|e| e.revision <= upto)
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(revision: u64, key: &str) -> Event {
        Event {
            revision,
            kind: EventKind::Put,
            bucket: "b".into(),
            key: key.into(),
            value: Bytes::from_static(b"v"),
            content_type: Bytes::new(),
            expires_at: None,
            owner: None,
        }
    }

    #[test]
    fn only_released_events_are_read_in_order() {
        let feed = Feed::new(10, 100);
        feed.append([ev(11, "a")]);
        feed.append([ev(12, "b"), ev(12, "c")]);
        let (mut cursor, mut out) = (10, Vec::new());
        assert_eq!(
            feed.read(&mut cursor, |_| true, 10, 10, &mut out),
            Read::Events
        );
        assert!(out.is_empty() && cursor == 10, "nothing released yet");
        feed.release(11);
        feed.read(&mut cursor, |_| true, 10, 10, &mut out);
        assert_eq!((out.len(), cursor), (1, 11));
        feed.release(12);
        out.clear();
        feed.read(&mut cursor, |e| &*e.key != "b", 10, 10, &mut out);
        assert_eq!((out.len(), &*out[0].key, cursor), (1, "c", 12));
    }

    #[test]
    fn a_page_never_splits_a_revision() {
        let feed = Feed::new(0, 100);
        feed.append([ev(1, "a")]);
        feed.append([ev(2, "b"), ev(2, "c"), ev(2, "d")]);
        feed.append([ev(3, "e")]);
        feed.release(3);
        let (mut cursor, mut out) = (0, Vec::new());
        feed.read(&mut cursor, |_| true, 100, 2, &mut out);
        assert_eq!((out.len(), cursor), (4, 2), "revision 2 whole, then stop");
        out.clear();
        feed.read(&mut cursor, |_| true, 100, 2, &mut out);
        assert_eq!((out.len(), cursor), (1, 3));
    }

    #[test]
    fn the_newest_revision_is_never_evicted() {
        let feed = Feed::new(0, 2);
        feed.append([ev(1, "a")]);
        feed.append([ev(2, "b"), ev(2, "c"), ev(2, "d")]);
        feed.release(2);
        let (mut cursor, mut out) = (1, Vec::new());
        assert_eq!(
            feed.read(&mut cursor, |_| true, 10, 10, &mut out),
            Read::Events
        );
        assert_eq!(
            (out.len(), cursor),
            (3, 2),
            "a transaction larger than the history"
        );
    }

    #[test]
    fn overflow_and_compaction() {
        let feed = Feed::new(0, 4);
        for r in 1..=6 {
            feed.append([ev(r, "k")]);
        }
        feed.release(6);
        assert_eq!(feed.floor(), 2);
        let mut out = Vec::new();
        assert_eq!(
            feed.read(&mut 1, |_| true, 10, 10, &mut out),
            Read::Compacted
        );
        assert_eq!(feed.read(&mut 2, |_| true, 1, 1, &mut out), Read::Overflow);
        let mut cursor = 2;
        assert_eq!(
            feed.read(&mut cursor, |_| true, 10, 10, &mut out),
            Read::Events
        );
        assert_eq!((out.len(), cursor), (4, 6));
        assert_eq!(feed.between(2, 4).map(|v| v.len()), Some(2));
        assert!(feed.between(1, 4).is_none());
    }
}
