//! The background side of a worker process: one tokio runtime thread that makes
//! the decision calls, and the way their results come back into nginx's event
//! loop.
//!
//! Calls started while nginx handles one batch of events are handed to the
//! runtime together, once that batch is done (a posted event), so a burst
//! of requests wakes the runtime thread once and their requests to Esper go
//! out together (on one HTTP/2 connection, in one write). A finished call
//! pushes its outcome onto a queue and writes an eventfd that is registered
//! in nginx's own event loop, so the worker wakes at once and applies the
//! outcome on the nginx thread. Requests are known to the background only by
//! a number: a request that ends first is forgotten here, and its late outcome is
//! dropped.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use esper_client::{exchange, Answer, Call, Origin};
use esper_protocol::breaker::{Admit, Breaker};
use esper_protocol::enforcement::RetryGate;
use esper_protocol::Failure;
use ngx::ffi::{
    ngx_close_connection, ngx_connection_t, ngx_cycle_t, ngx_delete_posted_event, ngx_event_t,
    ngx_get_connection, ngx_handle_read_event, ngx_int_t, ngx_post_event, ngx_posted_events,
    ngx_process, NGX_LOG_ALERT, NGX_LOG_NOTICE, NGX_OK, NGX_PROCESS_SINGLE, NGX_PROCESS_WORKER,
};
use ngx::http::HttpModuleMainConf;
use tokio::sync::{mpsc, oneshot};

use crate::breakers::log_transition;
use crate::conf::{MainConf, Target};
use crate::ffi::now_ms;
use crate::log::{cycle_log, guard, log_error};
use crate::metrics;
use crate::runtime::{self, catching, Completions, Job};
use crate::Module;

pub use crate::runtime::CallId;

/// Receives, on the nginx thread, the answer of a call that is still wanted;
/// dropped unused when the call is forgotten or expires.
pub type Waiter = Box<dyn FnOnce(Answer)>;

struct Worker {
    /// Runs the runtime (single-threaded: the calls of a batch run in order,
    /// so their HTTP/2 frames leave in one write) until `dispatch` closes.
    thread: std::thread::JoinHandle<()>,
    /// Calls started since the last hand-off.
    batch: Vec<Job>,
    /// Hands a batch over; the runtime's dispatcher spawns its calls.
    dispatch: mpsc::UnboundedSender<Vec<Job>>,
    /// Posted when a batch starts; its handler hands the batch over.
    hand_off: Box<ngx_event_t>,
    completions: Arc<Completions>,
    /// The nginx connection that watches a duplicate of the eventfd.
    notifier: *mut ngx_connection_t,
    pending: HashMap<CallId, Pending>,
    next_id: CallId,
}

/// What one configuration needs in each process that asks Esper. It hangs
/// off that configuration (`MainConf::clients`), so after a reload in
/// single-process mode the new configuration's indices never point into the
/// old one's clients and breakers, while calls of the old one finish.
pub struct ConfClients {
    /// TLS settings, one per `MainConf::client_profiles` entry
    /// (`Target::client_profile`); none when no Esper URL is https, so that
    /// plain-http calls never depend on the system's trust store.
    tls: Vec<Result<Arc<rustls::ClientConfig>, String>>,
    /// Connections, one per client profile and endpoint in use, made on first use.
    origins: RefCell<HashMap<(usize, usize), Arc<Origin>>>,
    /// One per Esper endpoint (`Target::endpoint`).
    breakers: RefCell<Vec<Breaker>>,
    /// One per Esper endpoint: closed while Esper's `Retry-After` runs.
    retry_gates: RefCell<Vec<RetryGate>>,
}

impl ConfClients {
    /// The connections of `target`'s client profile to its endpoint.
    fn origin(&self, main: &MainConf, target: &Target) -> Result<Arc<Origin>, String> {
        let key = (target.client_profile, target.endpoint);
        if let Some(origin) = self.origins.borrow().get(&key) {
            return Ok(origin.clone());
        }
        let tls = match target.decision_url.scheme() {
            "https" => Some(self.tls[target.client_profile].clone()?),
            _ => None,
        };
        let origin = Arc::new(Origin::new(
            &target.decision_url,
            &target.verify_url,
            &main.client_profiles[target.client_profile],
            tls,
        )?);
        self.origins.borrow_mut().insert(key, origin.clone());
        Ok(origin)
    }
}

/// Whether this process has its background runtime.
enum Runtime {
    /// Not a process that serves requests, or no location asks Esper.
    Absent,
    Running(Worker),
    /// It could not start (logged once at `alert`): every request gets the
    /// failure action.
    Failed,
}

/// A call in flight.
struct Pending {
    waiter: Waiter,
    /// Dropped to cancel the call.
    cancel: oneshot::Sender<()>,
    target: Arc<Target>,
    /// Of the configuration the call was made for.
    conf: Rc<ConfClients>,
    /// How the endpoint's breaker admitted a decision call; `None` for a
    /// proof verification, whose answers never count for the breaker.
    admitted: Option<Admit>,
}

/// How a call left the pending set, for its endpoint's circuit breaker.
enum End<'a> {
    Answered(&'a Answer),
    TimedOut,
    Abandoned,
}

thread_local! {
    /// Only the nginx thread of a worker process touches this.
    static WORKER: RefCell<Runtime> = const { RefCell::new(Runtime::Absent) };
}

/// Starts the runtime of this process, if it serves requests (a worker, or
/// nginx in single-process mode; never the cache manager and loader) and some
/// location uses Esper. A runtime that cannot start leaves the process
/// running: nginx does not respawn a worker whose `init_process` fails.
///
pub fn start(cycle: &ngx_cycle_t) {
    // SAFETY: a plain read; nginx sets ngx_process before init_process.
    let process = unsafe { ngx_process } as u32;
    if process != NGX_PROCESS_WORKER && process != NGX_PROCESS_SINGLE {
        return;
    }
    let Some(main) = Module::main_conf(cycle) else {
        return;
    };
    if !main.in_use() {
        return;
    }
    let state = match build() {
        Ok(worker) => Runtime::Running(worker),
        Err(message) => {
            log_error(
                NGX_LOG_ALERT,
                cycle_log(),
                &format!("esper: cannot start in this worker process: {message}; every request gets the failure action"),
            );
            Runtime::Failed
        }
    };
    let running = matches!(state, Runtime::Running(_));
    WORKER.with(|w| *w.borrow_mut() = state);
    if running {
        // Made now rather than by the first request; a failure is logged there.
        clients_of(main);
    }
}

fn build() -> Result<Worker, String> {
    // SAFETY: eventfd returns a new descriptor, which nothing else owns, or -1.
    let eventfd = unsafe {
        let fd = libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC);
        if fd < 0 {
            return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
        }
        File::from(OwnedFd::from_raw_fd(fd))
    };
    let watched = eventfd.try_clone().map_err(|e| format!("dup: {e}"))?;
    let (dispatch, batches) = mpsc::unbounded_channel::<Vec<Job>>();
    let thread = runtime::start(batches)?;
    // Last: nothing after it can fail and leave the connection behind. (On
    // failure the thread ends as `dispatch` is dropped.)
    let notifier = watch(OwnedFd::from(watched))?;
    // SAFETY: ngx_event_t is a C struct for which all zeroes is the empty
    // event, as nginx's own ngx_pcalloc'd events are.
    let mut hand_off: Box<ngx_event_t> = Box::new(unsafe { std::mem::zeroed() });
    hand_off.handler = Some(on_hand_off);
    hand_off.log = cycle_log();

    Ok(Worker {
        thread,
        batch: Vec::new(),
        dispatch,
        hand_off,
        completions: Arc::new(Completions { queue: Mutex::new(Vec::new()), eventfd }),
        notifier,
        pending: HashMap::new(),
        next_id: 0,
    })
}

/// The clients and breakers of `main` in this process, made on first use.
/// TLS settings that cannot be made (a broken trust store) are said once,
/// at `alert`; calls to https URLs then get the failure action.
fn clients_of(main: &MainConf) -> Rc<ConfClients> {
    if let Some(made) = made_clients(main) {
        return made;
    }
    let any_https = main.endpoints.iter().any(|url| url.scheme() == "https");
    let tls: Vec<_> = if any_https {
        main.client_profiles.iter().map(esper_client::client_config).collect()
    } else {
        Vec::new()
    };
    if let Some(Err(message)) = tls.iter().find(|made| made.is_err()) {
        log_error(
            NGX_LOG_ALERT,
            cycle_log(),
            &format!("esper: cannot make the HTTP clients in this worker process: {message}; for https Esper URLs, every request gets the failure action"),
        );
    }
    let made = Rc::new(ConfClients {
        tls,
        origins: RefCell::new(HashMap::new()),
        breakers: RefCell::new(main.endpoints.iter().map(|_| Breaker::default()).collect()),
        retry_gates: RefCell::new(vec![RetryGate::default(); main.endpoints.len()]),
    });
    *main.clients.borrow_mut() = Some(made.clone());
    made
}

/// The clients and breakers of `main` in this process, if made yet.
fn made_clients(main: &MainConf) -> Option<Rc<ConfClients>> {
    main.clients.borrow().clone()?.downcast::<ConfClients>().ok()
}

/// Puts `fd` into nginx's event loop with [`on_wake`] as its read handler
/// (from `init_process`, on the nginx thread, once the event module runs).
fn watch(fd: OwnedFd) -> Result<*mut ngx_connection_t, String> {
    let log = cycle_log();
    // SAFETY: a free connection of this process's cycle takes the descriptor,
    // which nginx owns from here on and closes with the connection.
    unsafe {
        let raw = fd.as_raw_fd();
        let c = ngx_get_connection(raw, log);
        if c.is_null() {
            return Err("no free connection for the notification descriptor".to_owned());
        }
        std::mem::forget(fd);
        let rev = (*c).read;
        (*rev).handler = Some(on_wake);
        (*rev).log = log;
        (*c).log = log;
        if ngx_handle_read_event(rev, 0) != NGX_OK as ngx_int_t {
            ngx_close_connection(c);
            return Err("cannot watch the notification descriptor".to_owned());
        }
        Ok(c)
    }
}

/// Read handler of the eventfd: hands every queued outcome to its request.
extern "C" fn on_wake(_ev: *mut ngx_event_t) {
    guard((), || {
        let batch = WORKER.with(|w| match &*w.borrow() {
            Runtime::Running(worker) => {
                worker.completions.drain();
                Some(worker.completions.take())
            }
            Runtime::Absent | Runtime::Failed => None,
        });
        for (id, answer) in batch.into_iter().flatten() {
            // Look each call up only now: resuming an earlier request of the
            // batch may have freed this one (an HTTP/2 connection closing), and
            // a freed request has already forgotten its call.
            let Some(waiter) = end(id, End::Answered(&answer)) else {
                continue;
            };
            // The worker's borrow is released: the waiter may start or
            // forget calls.
            waiter(answer);
        }
    })
}

/// Handler of the posted hand-off event: gives the calls started in this
/// round of the event loop to the runtime at once.
extern "C" fn on_hand_off(_ev: *mut ngx_event_t) {
    guard((), || {
        WORKER.with(|w| {
            if let Runtime::Running(worker) = &mut *w.borrow_mut() {
                let batch = std::mem::take(&mut worker.batch);
                // The dispatcher lives as long as the runtime.
                let _ = worker.dispatch.send(batch);
            }
        })
    })
}

/// Starts a call for a location of `main`. `waiter` gets the outcome unless
/// the call is forgotten or expires first. Fails when this process has no
/// runtime or the endpoint's circuit breaker is open.
pub fn call(
    main: &MainConf,
    target: &Arc<Target>,
    call: Call,
    waiter: Waiter,
) -> Result<CallId, Failure> {
    WORKER.with(|w| {
        let mut w = w.borrow_mut();
        let worker = match &mut *w {
            Runtime::Running(worker) => worker,
            Runtime::Absent => {
                return Err(Failure::Transport("no runtime in this worker process".to_owned()))
            }
            Runtime::Failed => {
                return Err(Failure::Transport(
                    "the runtime of this worker process could not start".to_owned(),
                ))
            }
        };
        let conf = clients_of(main);
        // Before admission: a call that cannot start must not hold the
        // breaker's probe ticket.
        let origin = conf.origin(main, target).map_err(Failure::Transport)?;
        let now = now_ms();
        let admitted = match &call {
            Call::Decide(_) => {
                if conf.retry_gates.borrow()[target.endpoint].is_closed(now) {
                    return Err(Failure::RetryLater);
                }
                admit(&conf, target, now)?
            }
            // A verification is never the breaker's probe, and refused only
            // while the breaker is open.
            Call::Verify(_) => {
                if target.breaker.is_some() && conf.breakers.borrow()[target.endpoint].is_open() {
                    return Err(Failure::CircuitOpen);
                }
                None
            }
        };
        let id = worker.next_id;
        worker.next_id += 1;
        let completions = worker.completions.clone();
        let task_target = target.clone();
        let (cancel, mut cancelled) = oneshot::channel::<()>();
        // No timer here: the request's nginx timer bounds every call, and
        // cancels it (`expire`) at the deadline.
        let kind = call.kind();
        worker.batch.push(Box::pin(async move {
            let exchange = catching(exchange(&origin, &task_target.api_key, call));
            let mut answer = pin!(async {
                exchange.await.unwrap_or_else(|panic| {
                    kind.failed(Failure::Transport(format!("internal error: {panic}")))
                })
            });
            let answer = std::future::poll_fn(|cx| {
                if Pin::new(&mut cancelled).poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                answer.as_mut().poll(cx).map(Some)
            });
            if let Some(answer) = answer.await {
                completions.push(id, answer);
            }
        }));
        if worker.batch.len() == 1 {
            // SAFETY: the event lives in the worker, which lives until
            // `stop` takes it out of the posted queue.
            unsafe { ngx_post_event(&mut *worker.hand_off, &raw mut ngx_posted_events) };
        }
        let pending = Pending { waiter, cancel, target: target.clone(), conf, admitted };
        worker.pending.insert(id, pending);
        metrics::pending_changed(1, 0);
        Ok(id)
    })
}

/// Number of calls in flight in this worker process.
pub fn pending() -> usize {
    WORKER.with(|w| match &*w.borrow() {
        Runtime::Running(worker) => worker.pending.len(),
        Runtime::Absent | Runtime::Failed => 0,
    })
}

/// Drops interest in a call whose request ended, and cancels it.
pub fn forget(id: CallId) {
    end(id, End::Abandoned);
}

/// The call's deadline passed: cancel it and count it as a failure.
pub fn expire(id: CallId) {
    end(id, End::TimedOut);
}

/// Asks the endpoint's breaker to let a decision call through; `None` when
/// the location has no breaker.
fn admit(conf: &ConfClients, target: &Target, now: u64) -> Result<Option<Admit>, Failure> {
    if target.breaker.is_none() {
        return Ok(None);
    }
    let (admit, transition) = conf.breakers.borrow_mut()[target.endpoint].admit(now);
    log_transition(target, transition);
    match admit {
        Admit::Refuse => Err(Failure::CircuitOpen),
        admitted => Ok(Some(admitted)),
    }
}

/// Takes a call out of the pending set, tells its endpoint's breaker and
/// retry gate how it ended, and returns who waits for it. Only failures that
/// say Esper is unavailable count against the breaker: an answer of any
/// other kind shows it is there.
fn end(id: CallId, how: End) -> Option<Waiter> {
    WORKER.with(|w| {
        let mut w = w.borrow_mut();
        let Runtime::Running(worker) = &mut *w else {
            return None;
        };
        let pending = worker.pending.remove(&id)?;
        metrics::pending_changed(0, 1);
        let now = now_ms();
        if let End::Answered(answer) = &how {
            if let Some(Failure::RateLimited { retry_after }) = answer.failure() {
                metrics::count_rate_limited();
                pending.conf.retry_gates.borrow_mut()[pending.target.endpoint]
                    .note(now, *retry_after);
            }
        }
        if let (Some(settings), Some(admitted)) = (&pending.target.breaker, pending.admitted) {
            let mut breakers = pending.conf.breakers.borrow_mut();
            let breaker = &mut breakers[pending.target.endpoint];
            let ticket = match admitted {
                Admit::Call(ticket) | Admit::Probe(ticket) => ticket,
                Admit::Refuse => unreachable!("a refused call is never pending"),
            };
            let transition = match how {
                End::Answered(answer) => {
                    let available = answer.failure().is_none_or(|f| !f.is_availability_failure());
                    breaker.record(ticket, now, available, settings)
                }
                End::TimedOut => breaker.record(ticket, now, false, settings),
                End::Abandoned if matches!(admitted, Admit::Probe(_)) => {
                    breaker.abandon_probe();
                    None
                }
                End::Abandoned => None,
            };
            log_transition(&pending.target, transition);
        }
        // Dropping the sender cancels the call if it still runs.
        drop(pending.cancel);
        Some(pending.waiter)
    })
}

/// Shuts the runtime down and closes the notifier (`exit_process`).
pub fn stop(cycle: &ngx_cycle_t) {
    let Runtime::Running(mut worker) =
        WORKER.with(|w| std::mem::replace(&mut *w.borrow_mut(), Runtime::Absent))
    else {
        return;
    };
    // Pending calls are cancelled; their requests are gone with the process.
    // Take this worker's part out of the shared gauges.
    if let Some(conf) = Module::main_conf(cycle).and_then(made_clients) {
        let open = conf.breakers.borrow().iter().filter(|b| b.is_open()).count() as u64;
        metrics::breakers_changed(0, open);
    }
    metrics::pending_changed(0, worker.pending.len() as u64);
    // SAFETY: a posted event is in nginx's posted queue, which must not keep
    // it once it is freed (with `worker`); the notifier connection was
    // opened by `watch` in this process, and is closed once, here.
    unsafe {
        if worker.hand_off.posted() != 0 {
            ngx_delete_posted_event(&mut *worker.hand_off);
        }
        ngx_close_connection(worker.notifier);
    }
    // The dispatcher ends when its channel closes, and the thread with it.
    drop(worker.dispatch);
    let _ = worker.thread.join();
    log_error(NGX_LOG_NOTICE, cycle_log(), &runtime::report(worker.next_id));
}
