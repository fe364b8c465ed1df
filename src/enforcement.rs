//! `esper_enforcement`: the table of an `esper_enforcement_zone` (a shared
//! memory zone), which remembers Esper's block and challenge decisions per
//! entity, so that the entity's later requests get the same action without a
//! call, in every worker and across reloads. The table itself is
//! `esper_protocol::entity_table`; this file lays it out in the zone nginx
//! maps and guards it with the zone's mutex.

use std::ffi::c_void;
use std::rc::Rc;
use std::time::Duration;

use esper_protocol::entity_table::{EntityKey, Meta, Remembered, Slot, Stored, Table};
use esper_protocol::throttle::LogThrottle;
use ngx::core::SlabPool;
use ngx::ffi::{
    ngx_conf_t, ngx_int_t, ngx_shm_zone_t, ngx_slab_alloc_locked, ngx_slab_pool_t, NGX_ERROR,
    NGX_LOG_WARN, NGX_OK,
};

use crate::conf::EnforcementZone;
use crate::ffi::now_ms;
use crate::log::{cycle_log, guard, log_error};
use crate::shm;

/// Gives each zone the handler that lays its table out once nginx maps it
/// (at postconfiguration: the zones were named while the directives were read).
pub fn init_zones(cf: &ngx_conf_t, zones: &[Rc<EnforcementZone>]) -> Result<(), String> {
    for zone in zones {
        let data = Rc::as_ptr(zone).cast_mut().cast();
        shm::add(cf, &zone.name, zone.size, Some(init_zone), data)?;
    }
    Ok(())
}

/// The table operations on a configured zone.
pub trait ZoneTable {
    /// The entity's remembered decision, if any.
    fn lookup(&self, key: &EntityKey) -> Option<Remembered>;
    /// Remembers a block or a challenge for `lifetime`; says whether an entry
    /// of another entity had to go.
    fn remember(&self, key: &EntityKey, decision: &Remembered, lifetime: Duration) -> Stored;
    /// Whether the entity's proof may be verified (`Table::admit_proof`).
    fn admit_proof(&self, key: &EntityKey) -> bool;
    /// A verified proof: the entity's challenge goes (a block stays).
    fn forget_challenge(&self, key: &EntityKey);
    /// Entries and evictions, for the metrics.
    fn counts(&self) -> (u64, u64);
    /// Logs an eviction, at most once a second for the zone in this worker.
    fn evicted(&self, throttle: &mut LogThrottle);
}

impl ZoneTable for EnforcementZone {
    fn lookup(&self, key: &EntityKey) -> Option<Remembered> {
        with_table(self, |t| t.get(key, now_ms())).flatten()
    }

    fn remember(&self, key: &EntityKey, decision: &Remembered, lifetime: Duration) -> Stored {
        let now = now_ms();
        let expires = now + lifetime.as_millis() as u64;
        with_table(self, |t| t.remember(key, decision, expires, now)).unwrap_or(Stored::No)
    }

    fn admit_proof(&self, key: &EntityKey) -> bool {
        with_table(self, |t| t.admit_proof(key, now_ms())).unwrap_or(true)
    }

    fn forget_challenge(&self, key: &EntityKey) {
        with_table(self, |t| t.forget_challenge(key));
    }

    fn counts(&self) -> (u64, u64) {
        with_table(self, |t| (t.len() as u64, t.evictions())).unwrap_or_default()
    }

    fn evicted(&self, throttle: &mut LogThrottle) {
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

/// Runs `f` on the zone's table under the zone's mutex; `None` before nginx
/// mapped the zone and `init_zone` made the table.
fn with_table<R>(zone: &EnforcementZone, f: impl FnOnce(&mut Table) -> R) -> Option<R> {
    // SAFETY: the zone is nginx's for the life of this configuration; once
    // mapped (`addr` set) it starts with nginx's slab pool, whose `data` is
    // null or the allocation `init_zone` made for a table of this layout
    // (which fits it and keeps each part aligned). The zone's mutex, held
    // until `_locked` drops, makes this the only view of the table in any
    // process.
    unsafe {
        let shm = zone.shm.as_ref();
        let pool = shm.shm.addr.cast::<ngx_slab_pool_t>();
        if pool.is_null() || (*pool).data.is_null() {
            return None;
        }
        let base = (*pool).data.cast::<u8>();
        let layout = zone.layout;
        let _locked = SlabPool::from_shm_zone(shm)?.lock();
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

/// Zone initialization (in the master, before workers are forked): the
/// table's memory, or on a reload the memory of the zone nginx kept.
extern "C" fn init_zone(shm: *mut ngx_shm_zone_t, _previous: *mut c_void) -> ngx_int_t {
    guard(NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx passes the zone it has just mapped, whose data is
        // the zone's settings of this configuration (`init_zones`); a zone
        // starts with nginx's slab pool, and a kept zone (same name, size
        // and module) still holds the table in the pool's `data`. The
        // unlocked allocation only happens in a zone mapped just now, which
        // no worker has seen; a kept zone, which the old workers still use,
        // is only read here (its `data`), and the table in it is then taken
        // under the zone's mutex by `with_table`.
        let zone = unsafe {
            let pool = (*shm).shm.addr.cast::<ngx_slab_pool_t>();
            if (*pool).data.is_null() {
                let p = ngx_slab_alloc_locked(pool, shm::usable_bytes((*shm).shm.size));
                if p.is_null() {
                    return NGX_ERROR as ngx_int_t;
                }
                // Not a table yet, whatever the memory held.
                std::ptr::write_bytes(p.cast::<u8>(), 0, std::mem::size_of::<Meta>());
                (*pool).data = p;
            }
            &*(*shm).data.cast::<EnforcementZone>()
        };
        // `Table::new` keeps a table of this layout and lays out anything else.
        if with_table(zone, |_| ()).is_none() {
            return NGX_ERROR as ngx_int_t;
        }
        NGX_OK as ngx_int_t
    })
}
