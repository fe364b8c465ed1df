//! `esper_enforcement_zone` and `esper_enforcement`: a shared memory zone that
//! remembers Esper's block and challenge decisions per entity, so that the
//! entity's later requests get the same action without a call, in every
//! worker and across reloads. The table itself is `esper_protocol::entity_table`;
//! this file maps it into nginx's shared memory and guards it with the zone's
//! mutex.

use std::ffi::c_void;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;

use esper_protocol::entity_table::{EntityKey, Layout, Meta, Remembered, Slot, Stored, Table};
use ngx::core::SlabPool;
use ngx::ffi::{
    ngx_conf_t, ngx_int_t, ngx_shm_zone_t, ngx_slab_alloc_locked, ngx_slab_pool_t, NGX_ERROR,
    NGX_LOG_WARN, NGX_OK,
};

use crate::log::{cycle_log, guard, log_error};
use crate::nginx_conf::ConfExt;

/// Smallest zone accepted, as nginx's own zones (eight pages).
const MIN_ENTRIES: usize = 8;

/// One `esper_enforcement_zone`.
pub struct Zone {
    pub name: String,
    /// `ttl=`: the longest an entry lives.
    pub ttl: Duration,
    shm: NonNull<ngx_shm_zone_t>,
    /// Where the table's parts lie, for the zone's size.
    layout: Layout,
    /// The table's memory inside the zone, set when nginx maps it.
    table: AtomicPtr<u8>,
}

impl Zone {
    /// Adds the zone to the configuration; fails when the name is taken. The
    /// returned zone must live as long as the configuration (it is the
    /// zone's `data`): the MainConf keeps it.
    pub fn add(
        cf: &ngx_conf_t,
        name: &str,
        size: usize,
        ttl: Duration,
    ) -> Result<Rc<Zone>, String> {
        if name == crate::metrics::ZONE_NAME {
            return Err(format!("the zone name \"{name}\" is the module's own"));
        }
        let layout = layout_for(size).ok_or("the zone is too small")?;
        let zone = Rc::new(Zone {
            name: name.to_owned(),
            ttl,
            shm: NonNull::dangling(),
            layout,
            table: AtomicPtr::new(std::ptr::null_mut()),
        });
        // nginx keeps the name without a copy: it points into the zone,
        // which lives as long as the configuration.
        let data = Rc::as_ptr(&zone).cast_mut().cast();
        let shm = cf.add_shared_zone(&zone.name, size, Some(init_zone), data)?;
        let mut zone = zone;
        Rc::get_mut(&mut zone).expect("not shared yet").shm = shm;
        Ok(zone)
    }

    /// Runs `f` on the table under the zone's mutex; `None` before nginx
    /// mapped the zone.
    fn with_table<R>(&self, f: impl FnOnce(&mut Table) -> R) -> Option<R> {
        let base = self.table.load(Ordering::Acquire);
        if base.is_null() {
            return None;
        }
        // SAFETY: the zone is mapped for the life of this configuration, and
        // `base` is the allocation `init_zone` made in it for a table of
        // this layout (which fits it and keeps each part aligned). The
        // zone's mutex, held until `_locked` drops, makes this the only view
        // of the table in any process.
        unsafe {
            let layout = self.layout;
            let _locked = SlabPool::from_shm_zone(self.shm.as_ref())?.lock();
            let mut table = Table::new(
                &mut *base.cast::<Meta>(),
                std::slice::from_raw_parts_mut(
                    base.add(layout.buckets_offset).cast::<u32>(),
                    layout.buckets,
                ),
                std::slice::from_raw_parts_mut(
                    base.add(layout.slots_offset).cast::<Slot>(),
                    layout.capacity,
                ),
                random_seed,
            );
            Some(f(&mut table))
        }
    }

    /// The entity's remembered decision, if any.
    pub fn lookup(&self, key: &EntityKey) -> Option<Remembered> {
        self.with_table(|t| t.get(key, crate::ffi::now_ms())).flatten()
    }

    /// Remembers a block or a challenge for `lifetime`; says whether an entry
    /// of another entity had to go.
    pub fn remember(&self, key: &EntityKey, decision: &Remembered, lifetime: Duration) -> Stored {
        let now = crate::ffi::now_ms();
        let expires = now + lifetime.as_millis() as u64;
        self.with_table(|t| t.remember(key, decision, expires, now)).unwrap_or(Stored::No)
    }

    /// Whether the entity's proof may be verified (`Table::admit_proof`).
    pub fn admit_proof(&self, key: &EntityKey) -> bool {
        self.with_table(|t| t.admit_proof(key, crate::ffi::now_ms())).unwrap_or(true)
    }

    /// A verified proof: the entity's challenge goes (a block stays).
    pub fn forget_challenge(&self, key: &EntityKey) {
        self.with_table(|t| t.forget_challenge(key));
    }

    /// Entries and evictions, for the metrics.
    pub fn counts(&self) -> (u64, u64) {
        self.with_table(|t| (t.len() as u64, t.evictions())).unwrap_or_default()
    }

    /// Logs an eviction, at most once a second for the zone in this worker.
    pub fn evicted(&self, throttle: &mut esper_protocol::throttle::LogThrottle) {
        let now = ngx::ffi::ngx_time().max(0) as u64;
        if let Some(left_out) = throttle.admit(now) {
            let more =
                if left_out > 0 { format!(" ({left_out} more since)") } else { String::new() };
            log_error(
                NGX_LOG_WARN,
                cycle_log(),
                &format!(
                    "esper_enforcement_zone \"{}\" is full: the least recently used entry went{more}",
                    self.name
                ),
            );
        }
    }
}

/// The largest table in a zone of `size` bytes; `None` when too small.
pub fn layout_for(size: usize) -> Option<Layout> {
    Layout::fitting(usable_bytes(size), MIN_ENTRIES)
}

/// A new table's bucket seed. Should the system refuse randomness, the
/// clock and the process id still keep the seed from being known in advance.
fn random_seed() -> [u8; 16] {
    let mut seed = [0u8; 16];
    if getrandom::fill(&mut seed).is_err() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let nanos = now.map_or(0, |d| d.as_nanos()) as u64;
        seed[..8].copy_from_slice(&nanos.to_le_bytes());
        seed[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    seed
}

/// What one allocation can surely take from a zone of `size` bytes: nginx's
/// slab pool keeps its header, its size classes and a descriptor per page at
/// the start of the zone, and hands out whole pages.
fn usable_bytes(size: usize) -> usize {
    let page = crate::ffi::page_size().max(1);
    let overhead = std::mem::size_of::<ngx_slab_pool_t>() + 64 * 8 + size / page * 24 + 2 * page;
    (size.saturating_sub(overhead) / page) * page
}

/// Zone initialization (in the master, before workers are forked): the
/// table's memory, or on a reload the memory of the zone nginx kept.
extern "C" fn init_zone(shm: *mut ngx_shm_zone_t, _previous: *mut c_void) -> ngx_int_t {
    guard(NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx passes the zone it has just mapped, whose data is
        // the Zone of this configuration (`Zone::add`); a zone starts with
        // nginx's slab pool, and a kept zone (same name, size and module)
        // still holds the table in the pool's `data`. The unlocked
        // allocation only happens in a zone mapped just now, which no worker
        // has seen; a kept zone, which the old workers still use, is only
        // read here (its `data`), and the table in it is then taken under
        // the zone's mutex by `with_table`.
        let (zone, base) = unsafe {
            let zone = &*(*shm).data.cast::<Zone>();
            let size = (*shm).shm.size;
            let pool = (*shm).shm.addr.cast::<ngx_slab_pool_t>();
            if (*pool).data.is_null() {
                let p = ngx_slab_alloc_locked(pool, usable_bytes(size));
                if p.is_null() {
                    return NGX_ERROR as ngx_int_t;
                }
                // Not a table yet, whatever the memory held.
                std::ptr::write_bytes(p.cast::<u8>(), 0, std::mem::size_of::<Meta>());
                (*pool).data = p;
            }
            (zone, (*pool).data.cast::<u8>())
        };
        zone.table.store(base, Ordering::Release);
        // `Table::new` keeps a table of this layout and lays out anything else.
        if zone.with_table(|_| ()).is_none() {
            return NGX_ERROR as ngx_int_t;
        }
        NGX_OK as ngx_int_t
    })
}
