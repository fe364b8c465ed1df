//! Counters of decisions, results, errors, pending calls, open breakers,
//! proof verifications, pass cookies issued and decision latency, kept in an
//! nginx shared memory zone so that every worker adds to the same numbers and
//! a reload keeps them. `metrics_page` serves them.

use std::ffi::c_void;
use std::ptr::null_mut;
use std::rc::Rc;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use esper_protocol::challenge_metrics::{proof_outcome_index, ChallengeSnapshot, PROOF_OUTCOMES};
use esper_protocol::metrics::{
    action_index, enforced_index, error_index, latency_bucket, EsperResult, Snapshot, ZoneSnapshot,
    ENFORCED_ACTIONS, ERROR_REASONS, LATENCY_BUCKETS_MS, RESULTS,
};
use esper_protocol::{Action, Failure, ProofCheck};
use ngx::ffi::{
    ngx_conf_t, ngx_int_t, ngx_shm_zone_t, ngx_slab_alloc, ngx_slab_pool_t, NGX_ERROR, NGX_OK,
};

use crate::conf::{EnforcementZone, METRICS_ZONE};
use crate::enforcement::ZoneTable;
use crate::log::guard;
use crate::nginx_conf::ConfExt;
use crate::shm;

/// The counters as they lie in shared memory.
#[repr(C)]
struct Counters {
    actions: [AtomicU64; 3],
    results: [AtomicU64; RESULTS.len()],
    errors: [AtomicU64; ERROR_REASONS.len()],
    enforced: [AtomicU64; ENFORCED_ACTIONS.len()],
    rate_limited: AtomicU64,
    pending: AtomicU64,
    open_breakers: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    latency_sum_ms: AtomicU64,
    proofs: [AtomicU64; PROOF_OUTCOMES.len()],
    passes_issued: AtomicU64,
}

const ZONE_SIZE: usize = 64 * 1024;

/// The counters of the configuration this process runs; set when the zone is
/// initialized (in the master, before workers are forked).
static COUNTERS: AtomicPtr<Counters> = AtomicPtr::new(null_mut());

fn counters() -> Option<&'static Counters> {
    // SAFETY: the pointer is null or points at counters in a shared zone that
    // stays mapped for the life of every process of this configuration.
    unsafe { COUNTERS.load(Ordering::Relaxed).as_ref() }
}

fn add(counter: impl FnOnce(&Counters) -> &AtomicU64, n: u64) {
    if let Some(c) = counters() {
        counter(c).fetch_add(n, Ordering::Relaxed);
    }
}

fn sub(counter: impl FnOnce(&Counters) -> &AtomicU64, n: u64) {
    if let Some(c) = counters() {
        // Never below zero, even if a worker died without taking its part back.
        let _ = counter(c)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(n)));
    }
}

pub fn count_result(result: EsperResult) {
    add(|c| &c.results[result.index()], 1);
}

pub fn count_action(action: Action) {
    add(|c| &c.actions[action_index(action)], 1);
}

pub fn count_error(failure: &Failure) {
    if let Some(i) = error_index(failure) {
        add(|c| &c.errors[i], 1);
    }
}

/// A request answered from an enforcement zone, without a call.
pub fn count_enforced(action: Action) {
    if let Some(i) = enforced_index(action) {
        add(|c| &c.enforced[i], 1);
    }
}

/// Esper answered 429.
pub fn count_rate_limited() {
    add(|c| &c.rate_limited, 1);
}

/// A challenge proof's verification came back (or failed).
pub fn count_proof(check: &Result<ProofCheck, Failure>) {
    add(|c| &c.proofs[proof_outcome_index(check)], 1);
}

/// A pass cookie was issued.
pub fn count_pass_issued() {
    add(|c| &c.passes_issued, 1);
}

pub fn observe_latency(ms: u64) {
    add(|c| &c.latency_buckets[latency_bucket(ms)], 1);
    add(|c| &c.latency_sum_ms, ms);
}

pub fn pending_changed(started: u64, ended: u64) {
    add(|c| &c.pending, started);
    sub(|c| &c.pending, ended);
}

pub fn breakers_changed(opened: u64, closed: u64) {
    add(|c| &c.open_breakers, opened);
    sub(|c| &c.open_breakers, closed);
}

/// The counters now, with the entries and evictions of `zones`; `None`
/// before nginx mapped the counters' zone.
pub fn snapshot(zones: &[Rc<EnforcementZone>]) -> Option<(Snapshot, ChallengeSnapshot)> {
    let c = counters()?;
    Some((counter_snapshot(c, zones), challenge_snapshot(c)))
}

fn counter_snapshot(c: &Counters, zones: &[Rc<EnforcementZone>]) -> Snapshot {
    let read = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Snapshot {
        actions: c.actions.each_ref().map(read),
        results: c.results.each_ref().map(read),
        errors: c.errors.each_ref().map(read),
        enforced: c.enforced.each_ref().map(read),
        rate_limited: read(&c.rate_limited),
        zones: zones
            .iter()
            .map(|zone| {
                let (entries, evictions) = zone.counts();
                ZoneSnapshot { name: zone.name.clone(), entries, evictions }
            })
            .collect(),
        pending: read(&c.pending),
        open_breakers: read(&c.open_breakers),
        latency_buckets: c.latency_buckets.each_ref().map(read),
        latency_sum_ms: read(&c.latency_sum_ms),
    }
}

fn challenge_snapshot(c: &Counters) -> ChallengeSnapshot {
    let read = |a: &AtomicU64| a.load(Ordering::Relaxed);
    ChallengeSnapshot {
        proofs: c.proofs.each_ref().map(read),
        passes_issued: read(&c.passes_issued),
    }
}

/// Adds the counters' shared zone to the configuration (postconfiguration).
pub fn add_zone(cf: &ngx_conf_t) -> Result<(), ()> {
    shm::add(cf, METRICS_ZONE, ZONE_SIZE, Some(init_zone), std::ptr::null_mut())
        .map(drop)
        .map_err(|message| cf.emerg(&message))
}

/// Zone initialization: new counters, or those of the previous configuration
/// on a reload (nginx keeps a zone of the same name, size and tag).
extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, previous: *mut c_void) -> ngx_int_t {
    guard(NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx passes the zone it has just mapped, which starts with
        // nginx's slab pool; the previous configuration's counters, when
        // nginx kept the zone, are still mapped where they were.
        let data = unsafe {
            let zone = &mut *zone;
            let pool = zone.shm.addr.cast::<ngx_slab_pool_t>();
            let data = if !previous.is_null() {
                previous
            } else if zone.shm.exists != 0 {
                (*pool).data
            } else {
                let p = ngx_slab_alloc(pool, size_of::<Counters>());
                if p.is_null() {
                    return NGX_ERROR as ngx_int_t;
                }
                // All-zero atomics are zero counters.
                std::ptr::write_bytes(p.cast::<u8>(), 0, size_of::<Counters>());
                (*pool).data = p;
                p
            };
            zone.data = data;
            data
        };
        COUNTERS.store(data.cast(), Ordering::Relaxed);
        NGX_OK as ngx_int_t
    })
}
