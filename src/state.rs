//! A request's state in this module: where it is between Esper and the
//! access phase (`Stage`), what `$esper_*` show (`Shown`), and how nginx's
//! callbacks (the answer's wake-up, the deadline, the pool cleanup) reach it.
//! It lives until the request pool's cleanup and is found again after
//! internal redirects through that cleanup.

use std::ffi::c_void;
use std::io::Write;
use std::ptr::NonNull;

use esper_client::{Answer, CallKind};
use esper_protocol::enforcement::EntityKey;
use esper_protocol::entity_table::Remembered;
use esper_protocol::metrics::EsperResult;
use esper_protocol::{Action, Failure, Verdict};
use ngx::ffi::{
    ngx_event_t, ngx_http_block_reading, ngx_http_core_run_phases, ngx_http_request_t,
    ngx_http_run_posted_requests, ngx_msec_t, ngx_pool_cleanup_add,
};
use ngx::http::{HttpModule, Request};

use crate::conf::LocConf;
use crate::enforcement::ZoneTable;
use crate::ffi::now_ms;
use crate::log::{debug_log, guard};
use crate::worker::{self, CallId, Waiter};
use crate::{metrics, Module};

/// Where a request is between Esper and the access phase.
pub enum Stage {
    /// Not waiting for Esper: not asked yet, or what came back was applied.
    Idle,
    /// Waiting for the answer to a call, up to the deadline.
    Waiting { call: CallId, kind: CallKind },
    /// The answer, or the deadline's failure, arrived; applied when the
    /// request's phases run again.
    Arrived(Answer),
    /// A block the enforcement zone remembers, answered when the hold ends.
    Holding(Remembered),
}

/// What `$esper_*` show of a request.
#[derive(Default)]
pub struct Shown {
    /// `$esper_action`
    pub action: Option<Action>,
    /// `$esper_result`
    pub result: Option<EsperResult>,
    /// `$esper_decision_id`
    pub decision_id: Option<String>,
    /// `$esper_latency`: how long the call took in seconds ("0.012"), once
    /// it ended.
    latency_text: Option<([u8; 24], usize)>,
}

impl Shown {
    /// `$esper_latency`, once the call ended.
    pub fn latency_text(&self) -> Option<&[u8]> {
        self.latency_text.as_ref().map(|(text, len)| &text[..*len])
    }
}

/// One allocation per judged request: its state and what `$esper_*` show,
/// side by side. A `$esper_*` getter may run while a handler step holds
/// `&mut RequestState` (an `esper_bypass`, `esper_field` or
/// `esper_hybrid_key` expression that names one): it reads `shown`, which
/// that borrow does not cover, and the state writes `shown` only through
/// short-lived references of its own.
#[repr(C)]
struct Attached {
    /// First, so that a pointer to the `Attached` is one to its state.
    state: RequestState,
    shown: Shown,
}

/// What the module knows about one main request.
#[repr(C)]
pub struct RequestState {
    /// Fires at `esper_timeout` even if the background runtime stalls, or
    /// at the end of a hold. First, so that a pointer to it is one to the
    /// state.
    deadline: ngx_event_t,
    request: *mut ngx_http_request_t,
    pub stage: Stage,
    started: u64,
    /// How long the call took, in milliseconds.
    pub latency: Option<u64>,
    /// The `shown` beside this state in its `Attached`.
    shown: NonNull<Shown>,
    /// The entity's key in the location's enforcement zone; `None` where no
    /// zone applies (none set, or monitor mode, which never enforces).
    pub entity: Option<EntityKey>,
    /// A block or challenge decided where `esper_mode monitor` let the
    /// request go on: an enforcing location it is redirected to applies it.
    pub unenforced: Option<Verdict>,
}

impl RequestState {
    /// What `$esper_*` show of this request.
    pub fn shown(&self) -> &Shown {
        // SAFETY: `shown` is the sibling field of this state in its
        // `Attached`, alive as long as the state; it is written only through
        // `show`, whose reference ends with the call.
        unsafe { self.shown.as_ref() }
    }

    /// Changes what `$esper_*` show.
    fn show(&mut self, change: impl FnOnce(&mut Shown)) {
        // SAFETY: as in `shown`; no other reference to it is live while
        // `change` runs: getters run only inside nginx calls, and `change`
        // makes none.
        change(unsafe { self.shown.as_mut() })
    }

    /// Records what Esper (or the zone) decided, for `$esper_action` and
    /// `$esper_decision_id`.
    pub fn decided(&mut self, action: Action, decision_id: Option<String>) {
        self.show(|shown| {
            shown.action = Some(action);
            shown.decision_id = decision_id;
        });
    }

    /// The decision the location's enforcement zone remembers for the entity.
    pub fn zone_lookup(&self, conf: &LocConf) -> Option<Remembered> {
        conf.zone.as_ref()?.lookup(self.entity.as_ref()?)
    }

    /// Whether the entity's proof may be verified: the location's
    /// enforcement zone bounds proofs per entry and refuses them under a
    /// block.
    pub fn admit_proof(&self, conf: &LocConf) -> bool {
        match (&conf.zone, &self.entity) {
            (Some(zone), Some(key)) => zone.admit_proof(key),
            _ => true,
        }
    }
}

impl RequestState {
    /// Records what became of the request, for `$esper_result` and the metrics.
    pub fn judged(&mut self, result: EsperResult) {
        self.show(|shown| shown.result = Some(result));
        metrics::count_result(result);
    }

    /// Changes what `$esper_result` shows of a request judged before, which
    /// the metrics have already counted.
    pub fn rejudged(&mut self, result: EsperResult) {
        self.show(|shown| shown.result = Some(result));
    }

    /// The client went away while the call was pending: drop the call and
    /// its deadline.
    pub fn abandon(&mut self, call: CallId) {
        self.stop_deadline();
        worker::forget(call);
    }

    /// Records what arrived (the answer, or the deadline's failure) and
    /// stops the timer.
    fn arrived(&mut self, answer: Answer) {
        self.stop_deadline();
        let ms = now_ms().wrapping_sub(self.started);
        self.latency = Some(ms);
        let mut text = [0; 24];
        let mut out = &mut text[..];
        let _ = write!(out, "{}.{:03}", ms / 1000, ms % 1000);
        let len = 24 - out.len();
        self.show(|shown| shown.latency_text = Some((text, len)));
        self.stage = Stage::Arrived(answer);
    }

    /// Holds a remembered block for `hold`, on the deadline timer.
    pub fn hold(&mut self, block: Remembered, hold: ngx_msec_t) {
        self.stage = Stage::Holding(block);
        self.set_deadline(Some(hold));
    }

    /// True while the deadline timer runs.
    pub fn deadline_pending(&self) -> bool {
        self.deadline.timer_set() != 0
    }

    /// Stops the deadline timer (a client that went away while held).
    pub fn stop_waiting(&mut self) {
        self.stop_deadline();
    }

    /// Waits for `call`, up to `timeout`: the deadline timer is armed.
    pub fn wait_for(&mut self, call: CallId, kind: CallKind, timeout: ngx_msec_t) {
        self.stage = Stage::Waiting { call, kind };
        self.set_deadline(Some(timeout));
    }

    fn stop_deadline(&mut self) {
        self.set_deadline(None);
    }

    /// Arms the deadline timer, or takes it out of nginx's timer tree.
    fn set_deadline(&mut self, timeout: Option<ngx_msec_t>) {
        let deadline = &mut self.deadline;
        // SAFETY: the timer event lives in the state, on the nginx thread,
        // and the state takes it out of the timer tree before it is freed
        // (`cleanup`); only an armed timer is deleted.
        unsafe {
            match timeout {
                Some(timeout) => ngx::ffi::ngx_add_timer(deadline, timeout),
                None if deadline.timer_set() != 0 => ngx::ffi::ngx_del_timer(deadline),
                None => {}
            }
        }
    }
}

impl RequestState {
    /// What the worker calls with the answer of this state's call.
    pub fn waiter(&mut self) -> Waiter {
        // The pointer `attach` made (the deadline's data), not one taken
        // from this borrow, which the handler's step outlives.
        let state = self.deadline.data.cast::<RequestState>();
        Box::new(move |answer| wake(state, Wake::Answered(answer)))
    }
}

/// The deadline timer's handler.
extern "C" fn on_deadline(ev: *mut ngx_event_t) {
    // The timer is the first field of its `#[repr(C)]` state.
    guard((), || wake(ev.cast::<RequestState>(), Wake::Deadline))
}

/// What woke a request waiting in the access phase.
enum Wake {
    Answered(Answer),
    Deadline,
}

/// Gives the state what woke it, and runs the request's phases again.
fn wake(state: *mut RequestState, wake: Wake) {
    // SAFETY: `state` is the pointer `attach` made, and the state is alive:
    // the worker calls a waiter only while its call is registered and the
    // timer fires only while armed, and the state forgets its call
    // (`abandon`) and disarms its timer before `cleanup` frees it. The state
    // is a separate allocation from the request, and nothing else refers to
    // it while the nginx thread runs this.
    let state = unsafe { &mut *state };
    match wake {
        Wake::Answered(answer) => {
            if let Stage::Waiting { call, .. } = state.stage {
                debug_log!(state.deadline.log, "esper: call {call} answered");
            }
            state.arrived(answer);
        }
        Wake::Deadline => {
            // A hold simply ends: the access phase answers the block.
            debug_log!(state.deadline.log, "esper: deadline reached");
            if let Stage::Waiting { call, kind } = state.stage {
                worker::expire(call);
                state.arrived(kind.failed(Failure::Timeout));
            }
        }
    }
    resume(state.request);
}

/// Runs the phases of a request waiting in the access phase again. It takes
/// the raw request because the access handler it reaches borrows it anew.
fn resume(r: *mut ngx_http_request_t) {
    // SAFETY: `r` is the live main request of a state (the request owns the
    // state); no Rust reference to it is held across this call, and its
    // connection outlives it (nginx marks a connection destroyed rather
    // than freeing it).
    unsafe {
        let c = (*r).connection;
        (*r).read_event_handler = Some(ngx_http_block_reading);
        ngx_http_core_run_phases(r);
        ngx_http_run_posted_requests(c);
    }
}

/// Creates the state of the request (a heap allocation that the request
/// pool's cleanup frees).
pub fn attach(request: &mut Request) -> Option<NonNull<RequestState>> {
    let r: *mut ngx_http_request_t = request.as_mut();
    let log = request.log();
    let pool = request.as_ref().pool;
    // SAFETY: an all-zero ngx_event_t is nginx's own initial state; the
    // request pool is live, and a new cleanup entry is ours to fill; the
    // allocation is freed only by `cleanup`. The pointers kept (the
    // cleanup's, the context's, the deadline's and `shown`) are raw, made
    // from the one `into_raw` gives; the reference to the deadline ends here.
    unsafe {
        let attached = Box::into_raw(Box::new(Attached {
            state: RequestState {
                request: r,
                deadline: std::mem::zeroed(),
                stage: Stage::Idle,
                started: now_ms(),
                latency: None,
                shown: NonNull::dangling(),
                entity: None,
                unenforced: None,
            },
            shown: Shown::default(),
        }));
        let Some(cln) = ngx_pool_cleanup_add(pool, 0).as_mut() else {
            drop(Box::from_raw(attached));
            return None;
        };
        cln.handler = Some(cleanup);
        cln.data = attached.cast();
        let state = &raw mut (*attached).state;
        (*state).shown = NonNull::new_unchecked(&raw mut (*attached).shown);
        let deadline = &mut (*state).deadline;
        deadline.handler = Some(on_deadline);
        deadline.data = state.cast();
        deadline.log = log;
        request.set_module_ctx(attached.cast(), Module::module());
        NonNull::new(state)
    }
}

/// The state of the request's main request, if it has been judged here;
/// it lives until the main request's pool cleanup.
pub fn find(request: &Request) -> Option<NonNull<RequestState>> {
    // `state` is the first field of the `#[repr(C)]` `Attached`.
    Some(find_attached(request)?.cast::<RequestState>())
}

/// What `$esper_*` show of the request's main request, if it has been
/// judged here: a pointer, never a reference into its state (see
/// `Attached`). It lives until the main request's pool cleanup, so as long
/// as the request; `RequestState::show` writes it.
pub fn shown(request: &Request) -> Option<NonNull<Shown>> {
    let attached = find_attached(request)?;
    let shown = attached.as_ptr().wrapping_byte_add(std::mem::offset_of!(Attached, shown));
    NonNull::new(shown.cast::<Shown>())
}

fn find_attached(request: &Request) -> Option<NonNull<Attached>> {
    // Our cleanup handler, compared by address.
    let ours = cleanup as *const () as usize;
    // SAFETY: `main` of a live request is live; its module contexts have a
    // slot for every module; its pool's cleanup list is null-terminated.
    // The main request may be `request` itself: only shared references to
    // it (`Request` is a transparent wrapper of nginx's request).
    unsafe {
        let main = &*request.as_ref().main.cast::<Request>().cast_const();
        let attached = *main.as_ref().ctx.add(Module::module().ctx_index);
        if !attached.is_null() {
            return NonNull::new(attached.cast());
        }
        // An internal redirect clears module contexts but not pool cleanups;
        // nginx's realip module finds its state the same way.
        let mut cln = (*main.as_ref().pool).cleanup.as_ref();
        while let Some(c) = cln {
            if c.handler.is_some_and(|h| h as usize == ours) {
                main.set_module_ctx(c.data, Module::module());
                return NonNull::new(c.data.cast());
            }
            cln = c.next.as_ref();
        }
        None
    }
}

/// Pool cleanup: the request is being freed, possibly with its call pending.
extern "C" fn cleanup(data: *mut c_void) {
    guard((), || {
        // SAFETY: `data` is the Box made by `attach`, freed only here.
        let mut attached = unsafe { Box::from_raw(data.cast::<Attached>()) };
        let state = &mut attached.state;
        match state.stage {
            Stage::Waiting { call, .. } => state.abandon(call),
            Stage::Idle | Stage::Arrived(_) | Stage::Holding(_) => state.stop_deadline(),
        }
    })
}
