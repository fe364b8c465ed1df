//! The table behind `esper_enforcement_zone`: Esper's non-allow decisions per
//! entity, in one fixed block of memory that every worker process maps.
//!
//! Everything is plain data at fixed places (no pointers), so the same bytes
//! mean the same thing in every process: slots chained per hash bucket and
//! linked in least-recently-used order by index. The caller provides the
//! memory and the mutual exclusion; this file only keeps the structure right.

use std::mem::{align_of, size_of};

use sha2::{Digest, Sha256};

use crate::{Action, Verdict};

/// No slot.
const NIL: u32 = u32::MAX;
/// Marks memory laid out by this version of the table; anything else (a new
/// zone, a zone of another layout kept across a reload) is laid out anew.
const MAGIC: u64 = 0x6573_7065_7274_6233; // "espertb3"
/// The longest decision id kept; a longer one is cut.
pub const MAX_ID_BYTES: usize = crate::answer::contract::MAX_DECISION_ID_BYTES;
/// The longest challenge URL kept: a challenge whose URL is longer is not
/// remembered, and the entity's next request asks Esper again.
pub const MAX_URL_BYTES: usize = 1024;
/// Most challenge proofs an entity may have verified while it has an entry:
/// a visitor solves a challenge once or twice, a bot replaying junk proofs
/// gets no more calls out of it.
pub const MAX_PROOFS_PER_ENTRY: u8 = 3;

/// The entity a decision applies to: a digest of what the decision payload
/// sends as `request.client_ip` and `request.user_agent`.
pub use crate::enforcement::{EntityKey, ReturnScope};

/// The table's own bookkeeping, at the start of the memory.
#[repr(C)]
pub struct Meta {
    magic: u64,
    /// Keys the bucket hash: random per table, so that a client cannot
    /// choose user agents whose entries all land in one bucket.
    seed: [u8; 16],
    capacity: u32,
    buckets: u32,
    lru_head: u32,
    lru_tail: u32,
    free: u32,
    entries: u32,
    evictions: u64,
}

/// One remembered decision, or a free slot.
#[repr(C)]
pub struct Slot {
    key: [u8; EntityKey::LEN],
    expires_ms: u64,
    bucket_next: u32,
    lru_prev: u32,
    lru_next: u32,
    /// 0: free; else [`stored_action`].
    action: u8,
    id_len: u8,
    url_len: u16,
    /// Proofs verified (or being verified) for the entity since the entry
    /// was stored.
    proofs: u8,
    /// A challenge's [`ReturnScope`].
    scope: [u8; ReturnScope::LEN],
    id: [u8; MAX_ID_BYTES],
    url: [u8; MAX_URL_BYTES],
}

/// A decision as the table keeps it and gives it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub verdict: Verdict,
    pub decision_id: Option<String>,
    /// The request a challenge was made for; a block applies to every
    /// request of the entity.
    pub scope: ReturnScope,
}

/// Where the parts of a table lie in a block of memory: `meta` at offset 0,
/// then the bucket heads, then the slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub capacity: usize,
    pub buckets: usize,
    pub buckets_offset: usize,
    pub slots_offset: usize,
}

impl Layout {
    /// The largest table that fits in `bytes`; `None` when not even
    /// `min_entries` fit.
    pub fn fitting(bytes: usize, min_entries: usize) -> Option<Layout> {
        let buckets_offset = size_of::<Meta>().next_multiple_of(align_of::<u32>());
        // No more entries than this fit: each takes a slot and at least one
        // bucket head. Fewer may (the bucket heads are a power of two, and the
        // slots aligned), so the capacity is lowered until the table fits.
        let per_entry = size_of::<Slot>() + size_of::<u32>();
        let mut capacity = bytes.saturating_sub(buckets_offset) / per_entry;
        loop {
            if capacity < min_entries.max(1) {
                return None;
            }
            let buckets = capacity.next_power_of_two();
            let slots_offset =
                (buckets_offset + buckets * size_of::<u32>()).next_multiple_of(align_of::<Slot>());
            if slots_offset + capacity * size_of::<Slot>() <= bytes {
                return Some(Layout { capacity, buckets, buckets_offset, slots_offset });
            }
            capacity -= 1;
        }
    }
}

/// What [`Table::remember`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored, or an entry of the entity replaced.
    Yes {
        /// A live entry of another entity made room (least recently used).
        evicted: bool,
    },
    /// Not storable (an allow, or a challenge URL over [`MAX_URL_BYTES`]).
    No,
}

/// A view of a laid-out table; the caller holds the lock for its lifetime.
pub struct Table<'a> {
    meta: &'a mut Meta,
    buckets: &'a mut [u32],
    slots: &'a mut [Slot],
}

impl<'a> Table<'a> {
    /// Takes the parts of a table; lays them out anew unless they already
    /// hold a table of this layout (a zone kept across a reload).
    /// The table in this memory; one of another layout (or none yet) is
    /// laid out afresh, with the seed `new_seed` gives.
    pub fn new(
        meta: &'a mut Meta,
        buckets: &'a mut [u32],
        slots: &'a mut [Slot],
        new_seed: impl FnOnce() -> [u8; 16],
    ) -> Self {
        let mut table = Table { meta, buckets, slots };
        let kept = table.meta.magic == MAGIC
            && table.meta.capacity as usize == table.slots.len()
            && table.meta.buckets as usize == table.buckets.len();
        if !kept {
            table.clear(new_seed());
        }
        table
    }

    fn clear(&mut self, seed: [u8; 16]) {
        self.buckets.fill(NIL);
        let n = self.slots.len();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            slot.action = 0;
            slot.bucket_next = if i + 1 < n { (i + 1) as u32 } else { NIL };
        }
        *self.meta = Meta {
            magic: MAGIC,
            seed,
            capacity: n as u32,
            buckets: self.buckets.len() as u32,
            lru_head: NIL,
            lru_tail: NIL,
            free: if n > 0 { 0 } else { NIL },
            entries: 0,
            evictions: 0,
        };
    }

    /// Live entries (expired ones count until they are looked at or pushed out).
    pub fn len(&self) -> usize {
        self.meta.entries as usize
    }

    pub fn is_empty(&self) -> bool {
        self.meta.entries == 0
    }

    /// Entries of other entities pushed out to make room, since the zone was made.
    pub fn evictions(&self) -> u64 {
        self.meta.evictions
    }

    /// The entity's decision, unless there is none or it expired (then it
    /// goes); a hit becomes the most recently used entry.
    pub fn get(&mut self, key: &EntityKey, now_ms: u64) -> Option<Remembered> {
        let at = self.find(key)?;
        if self.slots[at as usize].expires_ms <= now_ms {
            self.remove(at);
            return None;
        }
        self.unlink_lru(at);
        self.push_lru_head(at);
        let slot = &self.slots[at as usize];
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let verdict = match stored_action(slot.action)? {
            Action::Challenge => {
                Verdict::Challenge { redirect_url: text(&slot.url[..slot.url_len as usize]) }
            }
            Action::Block | Action::Allow => Verdict::Block,
        };
        Some(Remembered {
            verdict,
            decision_id: (slot.id_len > 0).then(|| text(&slot.id[..slot.id_len as usize])),
            scope: ReturnScope::from_bytes(slot.scope),
        })
    }

    /// Remembers a block or challenge for the entity until `expires_ms`.
    pub fn remember(
        &mut self,
        key: &EntityKey,
        decision: &Remembered,
        expires_ms: u64,
        now_ms: u64,
    ) -> Stored {
        let (action, url) = match &decision.verdict {
            Verdict::Allow => return Stored::No,
            Verdict::Challenge { redirect_url } => {
                if redirect_url.is_empty() || redirect_url.len() > MAX_URL_BYTES {
                    return Stored::No;
                }
                (2, redirect_url.as_bytes())
            }
            Verdict::Block => (1, &[][..]),
        };
        let mut evicted = false;
        let at = match self.find(key) {
            Some(at) => {
                self.unlink_lru(at);
                at
            }
            None => {
                let at = match self.take_free() {
                    Some(at) => at,
                    None => {
                        let tail = self.meta.lru_tail;
                        if tail == NIL {
                            return Stored::No;
                        }
                        evicted = self.slots[tail as usize].expires_ms > now_ms;
                        self.remove(tail);
                        if evicted {
                            self.meta.evictions += 1;
                        }
                        self.take_free().expect("a slot was just freed")
                    }
                };
                let bucket = self.bucket_of(key);
                let slot = &mut self.slots[at as usize];
                slot.key = *key.as_bytes();
                slot.bucket_next = self.buckets[bucket];
                self.buckets[bucket] = at;
                self.meta.entries += 1;
                at
            }
        };
        // Answers never carry a longer id; one that does not fit is not kept.
        let id = decision.decision_id.as_deref().unwrap_or_default().as_bytes();
        let id = if id.len() <= MAX_ID_BYTES { id } else { &[] };
        let slot = &mut self.slots[at as usize];
        slot.action = action;
        slot.expires_ms = expires_ms;
        slot.id_len = id.len() as u8;
        slot.id[..id.len()].copy_from_slice(id);
        slot.url_len = url.len() as u16;
        slot.url[..url.len()].copy_from_slice(url);
        slot.scope = *decision.scope.as_bytes();
        slot.proofs = 0;
        self.push_lru_head(at);
        Stored::Yes { evicted }
    }

    /// Whether a proof the entity brings may be verified: always without a
    /// live entry; never under a block, which no proof lifts; under a
    /// challenge, for the first [`MAX_PROOFS_PER_ENTRY`] proofs.
    pub fn admit_proof(&mut self, key: &EntityKey, now_ms: u64) -> bool {
        let Some(at) = self.find(key) else {
            return true;
        };
        let slot = &mut self.slots[at as usize];
        if slot.expires_ms <= now_ms {
            return true;
        }
        match stored_action(slot.action) {
            Some(Action::Challenge) if slot.proofs < MAX_PROOFS_PER_ENTRY => {
                slot.proofs += 1;
                true
            }
            _ => false,
        }
    }

    /// Forgets the entity's challenge (a verified proof); a block stays.
    pub fn forget_challenge(&mut self, key: &EntityKey) -> bool {
        match self.find(key) {
            Some(at)
                if stored_action(self.slots[at as usize].action) == Some(Action::Challenge) =>
            {
                self.remove(at);
                true
            }
            _ => false,
        }
    }

    fn bucket_of(&self, key: &EntityKey) -> usize {
        let h = Sha256::new().chain_update(self.meta.seed).chain_update(key.as_bytes()).finalize();
        u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize & (self.buckets.len() - 1)
    }

    fn find(&self, key: &EntityKey) -> Option<u32> {
        let mut at = *self.buckets.get(self.bucket_of(key))?;
        while at != NIL {
            let slot = &self.slots[at as usize];
            if slot.key == *key.as_bytes() {
                return Some(at);
            }
            at = slot.bucket_next;
        }
        None
    }

    fn take_free(&mut self) -> Option<u32> {
        let at = self.meta.free;
        if at == NIL {
            return None;
        }
        self.meta.free = self.slots[at as usize].bucket_next;
        Some(at)
    }

    /// Takes a live slot out of its bucket and the LRU list, onto the free list.
    fn remove(&mut self, at: u32) {
        let bucket = self.bucket_of(&EntityKey::from_bytes(self.slots[at as usize].key));
        let next = self.slots[at as usize].bucket_next;
        if self.buckets[bucket] == at {
            self.buckets[bucket] = next;
        } else {
            let mut prev = self.buckets[bucket];
            while self.slots[prev as usize].bucket_next != at {
                prev = self.slots[prev as usize].bucket_next;
            }
            self.slots[prev as usize].bucket_next = next;
        }
        self.unlink_lru(at);
        let slot = &mut self.slots[at as usize];
        slot.action = 0;
        slot.bucket_next = self.meta.free;
        self.meta.free = at;
        self.meta.entries -= 1;
    }

    fn unlink_lru(&mut self, at: u32) {
        let (prev, next) = {
            let slot = &self.slots[at as usize];
            (slot.lru_prev, slot.lru_next)
        };
        match prev {
            NIL => self.meta.lru_head = next,
            p => self.slots[p as usize].lru_next = next,
        }
        match next {
            NIL => self.meta.lru_tail = prev,
            n => self.slots[n as usize].lru_prev = prev,
        }
    }

    fn push_lru_head(&mut self, at: u32) {
        let head = self.meta.lru_head;
        {
            let slot = &mut self.slots[at as usize];
            slot.lru_prev = NIL;
            slot.lru_next = head;
        }
        match head {
            NIL => self.meta.lru_tail = at,
            h => self.slots[h as usize].lru_prev = at,
        }
        self.meta.lru_head = at;
    }
}

fn stored_action(code: u8) -> Option<Action> {
    match code {
        1 => Some(Action::Block),
        2 => Some(Action::Challenge),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory for a table of `capacity` entries, laid out as in a zone.
    struct Memory {
        meta: Meta,
        buckets: Vec<u32>,
        slots: Vec<Slot>,
    }

    impl Memory {
        fn new(capacity: usize) -> Memory {
            let meta = Meta {
                magic: 0,
                seed: [0; 16],
                capacity: 0,
                buckets: 0,
                lru_head: 0,
                lru_tail: 0,
                free: 0,
                entries: 0,
                evictions: 0,
            };
            let slot = || Slot {
                key: [0; 16],
                expires_ms: 0,
                bucket_next: 0,
                lru_prev: 0,
                lru_next: 0,
                action: 0,
                id_len: 0,
                url_len: 0,
                proofs: 0,
                scope: [0; ReturnScope::LEN],
                id: [0; MAX_ID_BYTES],
                url: [0; MAX_URL_BYTES],
            };
            Memory {
                meta,
                buckets: vec![0; capacity.next_power_of_two()],
                slots: (0..capacity).map(|_| slot()).collect(),
            }
        }

        fn table(&mut self) -> Table<'_> {
            self.seeded(7)
        }

        fn seeded(&mut self, seed: u8) -> Table<'_> {
            Table::new(&mut self.meta, &mut self.buckets, &mut self.slots, || [seed; 16])
        }
    }

    fn key(n: u32) -> EntityKey {
        let mut k = [0u8; 16];
        // Keys alike but for a few bytes.
        k[4..8].copy_from_slice(&n.to_le_bytes());
        k[0] = (n % 3) as u8;
        EntityKey::from_bytes(k)
    }

    fn block(id: &str) -> Remembered {
        Remembered {
            verdict: Verdict::Block,
            decision_id: Some(id.to_owned()),
            scope: ReturnScope::default(),
        }
    }

    fn challenge(url: &str) -> Remembered {
        Remembered {
            verdict: Verdict::Challenge { redirect_url: url.to_owned() },
            decision_id: None,
            scope: ReturnScope::of(b"https://shop.example/account"),
        }
    }

    #[test]
    fn the_seed_decides_the_buckets() {
        // The keys that share a bucket under one seed (what a client could
        // find by trying user agents, were the hash not keyed) spread out
        // under another.
        let mut one = Memory::new(64);
        let t = one.seeded(1);
        let aimed: Vec<EntityKey> = (0..20_000).map(key).filter(|k| t.bucket_of(k) == 0).collect();
        assert!(aimed.len() > 100, "{}", aimed.len());
        let mut other = Memory::new(64);
        let t = other.seeded(2);
        let spread: std::collections::HashSet<usize> =
            aimed.iter().map(|k| t.bucket_of(k)).collect();
        assert!(spread.len() > 32, "{}", spread.len());
    }

    #[test]
    fn remembers_until_expiry() {
        let mut m = Memory::new(4);
        let mut t = m.table();
        assert_eq!(t.remember(&key(1), &block("d1"), 1000, 0), Stored::Yes { evicted: false });
        assert_eq!(t.get(&key(1), 999), Some(block("d1")));
        assert_eq!(t.get(&key(2), 999), None);
        assert_eq!(t.get(&key(1), 1000), None, "expired");
        assert!(t.is_empty(), "an expired entry goes when looked at");
    }

    #[test]
    fn allow_and_long_urls_are_not_stored() {
        let mut m = Memory::new(4);
        let mut t = m.table();
        let allow = Remembered {
            verdict: Verdict::Allow,
            decision_id: None,
            scope: ReturnScope::default(),
        };
        assert_eq!(t.remember(&key(1), &allow, 1000, 0), Stored::No);
        let long = format!("https://c.example/{}", "x".repeat(MAX_URL_BYTES));
        assert_eq!(t.remember(&key(1), &challenge(&long), 1000, 0), Stored::No);
        let over = format!("https://c.example/{}", "x".repeat(MAX_URL_BYTES - 17));
        assert_eq!(over.len(), MAX_URL_BYTES + 1);
        assert_eq!(t.remember(&key(1), &challenge(&over), 1000, 0), Stored::No, "one byte over");
        let exact = &over[..MAX_URL_BYTES];
        assert_eq!(t.remember(&key(2), &challenge(exact), 1000, 0), Stored::Yes { evicted: false });
        let kept = t.get(&key(2), 1).unwrap().verdict;
        assert_eq!(kept, Verdict::Challenge { redirect_url: exact.to_owned() }, "kept whole");
        t.forget_challenge(&key(2));
        assert_eq!(t.remember(&key(1), &challenge(""), 1000, 0), Stored::No);
        assert!(t.is_empty());
        let url = "https://c.example/challenge?s=1";
        t.remember(&key(1), &challenge(url), 1000, 0);
        assert_eq!(t.get(&key(1), 1).unwrap(), challenge(url));
    }

    #[test]
    fn a_table_without_slots_stores_nothing() {
        let mut m = Memory::new(0);
        let mut t = m.table();
        assert_eq!(t.remember(&key(1), &block("d"), 1000, 0), Stored::No);
        assert_eq!(t.get(&key(1), 1), None);
        assert!(t.is_empty());
    }

    #[test]
    fn least_recently_used_goes_first() {
        let mut m = Memory::new(3);
        let mut t = m.table();
        for n in 1..=3 {
            t.remember(&key(n), &block("d"), 1000, 0);
        }
        assert!(t.get(&key(1), 1).is_some(), "1 is now the most recent");
        assert_eq!(t.remember(&key(4), &block("d"), 1000, 1), Stored::Yes { evicted: true });
        assert_eq!(t.get(&key(2), 1), None, "2 was the least recently used");
        for n in [1, 3, 4] {
            assert!(t.get(&key(n), 1).is_some(), "{n} kept");
        }
        assert_eq!((t.len(), t.evictions()), (3, 1));
    }

    #[test]
    fn an_expired_tail_makes_room_without_an_eviction() {
        let mut m = Memory::new(2);
        let mut t = m.table();
        t.remember(&key(1), &block("d"), 10, 0);
        t.remember(&key(2), &block("d"), 1000, 0);
        assert_eq!(t.remember(&key(3), &block("d"), 1000, 20), Stored::Yes { evicted: false });
        assert_eq!(t.evictions(), 0);
        // A tail that expires exactly now is over too; one a millisecond
        // later is still live, and pushing it out is an eviction.
        let mut m = Memory::new(1);
        let mut t = m.table();
        t.remember(&key(1), &block("d"), 20, 0);
        assert_eq!(t.remember(&key(2), &block("d"), 21, 20), Stored::Yes { evicted: false });
        assert_eq!(t.remember(&key(3), &block("d"), 1000, 20), Stored::Yes { evicted: true });
        assert_eq!(t.evictions(), 1);
    }

    #[test]
    fn replacing_an_entry_keeps_one() {
        let mut m = Memory::new(2);
        let mut t = m.table();
        t.remember(&key(1), &challenge("https://c.example/a"), 1000, 0);
        t.remember(&key(1), &block("d2"), 2000, 0);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&key(1), 1500), Some(block("d2")));
    }

    #[test]
    fn a_proof_forgets_a_challenge_never_a_block() {
        let mut m = Memory::new(4);
        let mut t = m.table();
        t.remember(&key(1), &challenge("https://c.example/a"), 1000, 0);
        t.remember(&key(2), &block("d"), 1000, 0);
        assert!(t.forget_challenge(&key(1)));
        assert!(!t.forget_challenge(&key(2)));
        assert!(!t.forget_challenge(&key(3)));
        assert_eq!(t.get(&key(1), 1), None);
        assert!(t.get(&key(2), 1).is_some());
    }

    #[test]
    fn proofs_are_bounded_per_entry_and_never_lift_a_block() {
        let mut m = Memory::new(4);
        let mut t = m.table();
        assert!(t.is_empty());
        assert!(t.admit_proof(&key(1), 0), "no entry: verified as any proof");
        t.remember(&key(1), &challenge("https://c.example/a"), 1000, 0);
        t.remember(&key(2), &block("d"), 1000, 0);
        assert!(!t.is_empty());
        for n in 0..MAX_PROOFS_PER_ENTRY {
            assert!(t.admit_proof(&key(1), 1), "proof {n} under a challenge");
        }
        assert!(!t.admit_proof(&key(1), 1), "the budget is spent");
        assert!(!t.admit_proof(&key(2), 1), "never under a block");
        assert!(t.admit_proof(&key(2), 1000), "an expired block is no entry");
        // A new decision for the entity starts a new budget.
        t.remember(&key(1), &challenge("https://c.example/b"), 2000, 1);
        assert!(t.admit_proof(&key(1), 2));
    }

    #[test]
    fn a_challenge_keeps_the_request_it_was_made_for() {
        let mut m = Memory::new(4);
        let mut t = m.table();
        let stored = challenge("https://c.example/a");
        t.remember(&key(1), &stored, 1000, 0);
        assert_eq!(t.get(&key(1), 1).map(|r| r.scope), Some(stored.scope));
        assert_ne!(stored.scope, ReturnScope::default());
    }

    #[test]
    fn kept_across_a_new_view_unless_the_layout_changed() {
        let mut m = Memory::new(4);
        m.table().remember(&key(1), &block("d"), 1000, 0);
        assert!(m.table().get(&key(1), 1).is_some(), "a reload keeps the entries");
        m.meta.magic = 0;
        assert!(m.table().is_empty(), "memory of another layout is laid out anew");
    }

    #[test]
    fn ids_are_kept_whole_or_not_at_all() {
        let mut m = Memory::new(2);
        let mut t = m.table();
        let longest = "é".repeat(MAX_ID_BYTES / 2);
        t.remember(&key(1), &block(&longest), 1000, 0);
        assert_eq!(t.get(&key(1), 1).unwrap().decision_id.as_deref(), Some(longest.as_str()));
        t.remember(&key(2), &block(&format!("{longest}x")), 1000, 0);
        let kept = t.get(&key(2), 1).unwrap();
        assert_eq!((kept.verdict, kept.decision_id), (Verdict::Block, None));
    }

    #[test]
    fn churn_keeps_the_structure_consistent() {
        let mut m = Memory::new(16);
        let mut t = m.table();
        let mut now = 0;
        for n in 0..5000u32 {
            now += 1;
            match n % 7 {
                0 => {
                    t.forget_challenge(&key(n % 40));
                }
                1 | 2 => {
                    t.get(&key(n % 40), now);
                }
                3 => {
                    t.remember(&key(n % 40), &challenge("https://c.example/x"), now + 50, now);
                }
                _ => {
                    t.remember(&key(n % 40), &block("d"), now + (n % 90) as u64, now);
                }
            }
            assert!(t.len() <= 16);
        }
        // Every live entry is reachable from its bucket and from the LRU list.
        let mut lru = 0;
        let mut at = t.meta.lru_head;
        while at != NIL {
            assert!(t.find(&EntityKey::from_bytes(t.slots[at as usize].key)) == Some(at));
            lru += 1;
            at = t.slots[at as usize].lru_next;
        }
        assert_eq!(lru, t.len());
        let mut free = 0;
        let mut at = t.meta.free;
        while at != NIL {
            free += 1;
            at = t.slots[at as usize].bucket_next;
        }
        assert_eq!(free + t.len(), 16);
    }

    #[test]
    fn layout_fits_the_memory() {
        assert_eq!(Layout::fitting(1000, 1), None);
        let l = Layout::fitting(32 * 1024, 8).unwrap();
        assert!(l.capacity >= 20, "{l:?}");
        assert_eq!(Layout::fitting(32 * 1024, 10_000), None);
    }

    /// The regions of a layout for `bytes`: meta, bucket heads and slots,
    /// each aligned, apart from one another and inside the memory.
    fn assert_sound(l: &Layout, bytes: usize) {
        let meta = 0..size_of::<Meta>();
        let buckets = l.buckets_offset..l.buckets_offset + l.buckets * size_of::<u32>();
        let slots = l.slots_offset..l.slots_offset + l.capacity * size_of::<Slot>();
        assert_eq!(l.buckets_offset % align_of::<u32>(), 0, "{bytes}: {l:?}");
        assert_eq!(l.slots_offset % align_of::<Slot>(), 0, "{bytes}: {l:?}");
        assert!(meta.end <= buckets.start && buckets.end <= slots.start, "{bytes}: {l:?}");
        assert!(slots.end <= bytes, "{bytes}: {l:?} ends past the memory");
        assert!(l.buckets >= l.capacity && l.buckets.is_power_of_two(), "{bytes}: {l:?}");
    }

    /// The smallest memory a table of `capacity` entries fits in: the meta,
    /// the bucket heads (a power of two, at least one per entry), then the
    /// slots, aligned.
    fn smallest_for(capacity: usize) -> usize {
        let buckets_end = size_of::<Meta>().next_multiple_of(align_of::<u32>())
            + capacity.next_power_of_two() * size_of::<u32>();
        buckets_end.next_multiple_of(align_of::<Slot>()) + capacity * size_of::<Slot>()
    }

    #[test]
    fn every_zone_size_up_to_16_mib_gets_the_largest_sound_table() {
        const MAX: usize = 16 << 20;
        let page = 4096;
        // The capacity changes only where one more entry starts to fit, so
        // those sizes (and one byte less) are all the edges there are; with
        // them, every page multiple, and an odd stride through all the rest.
        let most = (1..).find(|&c| smallest_for(c) > MAX).unwrap() - 1;
        let edges = (1..=most + 1).flat_map(|c| [smallest_for(c) - 1, smallest_for(c)]);
        let sizes = (page..=MAX).step_by(page).chain((0..=MAX).step_by(4093)).chain(edges).chain([
            0,
            1,
            (10 << 20) - 1,
            10 << 20,
            (10 << 20) + 1,
            MAX - 1,
            MAX,
            MAX + 1,
        ]);
        let (mut checked, mut lowered) = (0, 0);
        for bytes in sizes {
            checked += 1;
            let Some(l) = Layout::fitting(bytes, 1) else {
                assert!(smallest_for(1) > bytes, "{bytes}: no table, yet one entry fits");
                continue;
            };
            assert_sound(&l, bytes);
            assert!(smallest_for(l.capacity) <= bytes, "{bytes}: {l:?}");
            assert!(smallest_for(l.capacity + 1) > bytes, "{bytes}: {l:?}: one more entry fits");
            assert_eq!(l.buckets, l.capacity.next_power_of_two(), "{bytes}: {l:?}");
            // Where a first guess from the size per entry did not fit.
            let guess = (bytes - size_of::<Meta>()) / (size_of::<Slot>() + size_of::<u32>());
            lowered += usize::from(l.capacity < guess);
        }
        assert!(checked > 30_000 && lowered > 1000, "{checked} sizes, {lowered} lowered");
        let ten = Layout::fitting(10 << 20, 8).unwrap();
        assert_eq!(ten.capacity, (8..20_000).rev().find(|&c| smallest_for(c) <= 10 << 20).unwrap());
        assert_eq!(Layout::fitting(MAX, 1).unwrap().capacity, most);
    }

    #[test]
    fn a_zone_holds_at_least_min_entries_or_no_table() {
        for min in [1, 2, 7, 8, 9, 100] {
            let exact = smallest_for(min);
            assert_eq!(Layout::fitting(exact, min).map(|l| l.capacity), Some(min), "{min}");
            assert_eq!(Layout::fitting(exact - 1, min), None, "{min}");
            assert_eq!(
                Layout::fitting(exact - 1, 0).map(|l| l.capacity),
                Some(min - 1).filter(|&c| c > 0)
            );
        }
        assert_eq!(Layout::fitting(smallest_for(1) - 1, 0), None, "a table has one entry at least");
        assert_eq!(Layout::fitting(0, 0), None);
    }
}
