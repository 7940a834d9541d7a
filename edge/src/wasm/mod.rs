//! The proxy-wasm host: the engine and the loaded filter modules (`Host`), one set of instances per
//! worker and configuration (`VmSet`, like an nginx worker's VM), and one request's walk through its
//! filter chain (`Flow`). The ABI 0.2.1 host calls and the WASI preview1 imports are in `abi`.
//!
//! What follows ngx_wasm_module rather than Envoy: filters run in chain order in every phase; a
//! local response still passes through the chain's response callbacks; `Pause` in the response-body
//! phase asks the host to buffer; a trap fails only its request, with a plain 500 no filter
//! touches, and the trapped instance is replaced (its root contexts configured again on next use).

mod abi;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::{Config, Engine, Linker, Memory, Module, Store, TypedFunc};

use crate::metrics::Metrics;
use crate::router::{FilterStep, Plan};
use crate::shm::Shm;

pub use abi::{FD_WRITE_MAX, FD_WRITE_MAX_IOVS, Header};

/// The epoch advances this often; one call into a filter may run for `CALL_DEADLINE_TICKS` of them
/// before it traps (a filter in an endless loop fails its request, not the edge).
const EPOCH_TICK: Duration = Duration::from_millis(10);
const CALL_DEADLINE_TICKS: u64 = 100;

const ACTION_PAUSE: i32 = 1;

/// ngx_wasm_module's `wasm_response_body_buffers 4 4096`: what one filter may hold back with `Pause`.
pub const BODY_BUFFER_LIMIT: usize = 4 * 4096;

/// A response a filter made with `send_local_response`.
#[derive(Debug, Clone)]
pub struct LocalResponse {
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

/// What the host knows about a request beyond its headers, for properties.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub route_id: String,
    pub route_name: String,
    pub service_id: String,
    pub service_name: String,
    pub client: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub request_id: String,
}

/// One request and its response as the filters see them. Moved into the store of the instance
/// being called, and back out after.
#[derive(Debug, Default)]
pub struct Exchange {
    /// With the pseudo-headers `:method`, `:path`, `:authority` and `:scheme` first.
    pub request_headers: Vec<Header>,
    /// With `:status` first, once there is a response.
    pub response_headers: Vec<Header>,
    /// Trailers are not supported; filters see empty maps.
    pub trailers: Vec<Header>,
    /// The body buffer of the current body phase.
    pub body: Vec<u8>,
    /// Properties written by filters (`kong.ctx.shared.*`), keyed by their dotted path.
    pub properties: HashMap<String, Vec<u8>>,
    pub info: RequestInfo,
    pub local: Option<LocalResponse>,
    pub local_sent: bool,
    pub phase: Phase,
}

impl Exchange {
    pub fn request_header(&self, name: &str) -> Option<&[u8]> {
        abi::find(&self.request_headers, name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Phase {
    #[default]
    Root,
    RequestHeaders,
    RequestBody,
    ResponseHeaders,
    ResponseBody,
    Done,
}

/// Per-instance state reachable from host calls.
pub struct HostState {
    filter: Arc<str>,
    worker: usize,
    shm: Arc<Shm>,
    metrics: Arc<Metrics>,
    memory: Option<Memory>,
    alloc: Option<TypedFunc<i32, i32>>,
    plugin_config: Arc<[u8]>,
    ex: Option<Box<Exchange>>,
    context_id: u32,
    root_id: u32,
    /// While validating a config for the Admin API, the filter's log lines are kept here.
    captured: Option<Vec<String>>,
}

pub struct Host {
    engine: Engine,
    linker: Linker<HostState>,
    modules: HashMap<String, Module>,
    pub shm: Arc<Shm>,
    pub metrics: Arc<Metrics>,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn werr(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

impl Host {
    /// Compiles every `<name>.wasm` in `dir` (Kong's `wasm_filters_path`: flat, no recursion).
    pub fn load(dir: &Path, shm: Arc<Shm>, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(werr)?;
        let mut linker = Linker::new(&engine);
        abi::define(&mut linker).map_err(werr)?;
        let mut modules = HashMap::new();
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("reading the filters directory {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                continue;
            };
            let module = Module::from_file(&engine, &path)
                .map_err(|e| anyhow::anyhow!("compiling {}: {e:#}", path.display()))?;
            if module.get_export("proxy_abi_version_0_2_1").is_none()
                && module.get_export("proxy_abi_version_0_2_0").is_none()
            {
                anyhow::bail!("{} exports no proxy_abi_version_0_2_x", path.display());
            }
            // Imports the edge does not provide trap when called, instead of failing the load.
            linker
                .define_unknown_imports_as_traps(&module)
                .map_err(werr)?;
            modules.insert(name, module);
        }
        if modules.is_empty() {
            anyhow::bail!("no .wasm filters in {}", dir.display());
        }
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let (engine, stop) = (engine.clone(), Arc::clone(&ticker_stop));
            std::thread::Builder::new()
                .name("kyc-edge-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })?;
        }
        Ok(Self {
            engine,
            linker,
            modules,
            shm,
            metrics,
            ticker_stop,
        })
    }

    pub fn filter_names(&self) -> HashSet<String> {
        self.modules.keys().cloned().collect()
    }

    /// Runs `on_configure` with `config` in a scratch instance: `Err` carries what the filter
    /// logged (or the trap) when it refuses. The Admin API answers 400 with it.
    pub fn validate(&self, filter: &str, config: &[u8]) -> Result<(), String> {
        let mut vm =
            FilterVm::new(self, filter.into(), usize::MAX, 0).map_err(|e| format!("{e:#}"))?;
        vm.store.data_mut().captured = Some(Vec::new());
        let step = FilterStep {
            entry: 0,
            filter: filter.into(),
            config: config.into(),
            chain: "validation".into(),
        };
        match vm.root(&step) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => {
                let lines = vm.store.data_mut().captured.take().unwrap_or_default();
                Err(if lines.is_empty() {
                    "on_configure refused the configuration".to_owned()
                } else {
                    lines.join("; ")
                })
            }
            Err(e) => Err(format!("the filter trapped in on_configure: {e:#}")),
        }
    }
}

struct Exports {
    on_context_create: TypedFunc<(i32, i32), ()>,
    on_vm_start: TypedFunc<(i32, i32), i32>,
    on_configure: TypedFunc<(i32, i32), i32>,
    on_request_headers: TypedFunc<(i32, i32, i32), i32>,
    on_request_body: TypedFunc<(i32, i32, i32), i32>,
    on_response_headers: TypedFunc<(i32, i32, i32), i32>,
    on_response_body: TypedFunc<(i32, i32, i32), i32>,
    on_log: TypedFunc<i32, ()>,
    on_done: TypedFunc<i32, i32>,
    on_delete: TypedFunc<i32, ()>,
}

/// One module instantiated in one worker.
struct FilterVm {
    store: Store<HostState>,
    fns: Exports,
    generation: u64,
    /// Plan entry → root context id, `None` when its `on_configure` refused.
    roots: HashMap<usize, Option<u32>>,
    next_id: u32,
}

impl FilterVm {
    fn new(host: &Host, filter: Arc<str>, worker: usize, generation: u64) -> anyhow::Result<Self> {
        let module = host
            .modules
            .get(&*filter)
            .with_context(|| format!("no filter named {filter}"))?;
        let mut store = Store::new(
            &host.engine,
            HostState {
                filter: Arc::clone(&filter),
                worker,
                shm: Arc::clone(&host.shm),
                metrics: Arc::clone(&host.metrics),
                memory: None,
                alloc: None,
                plugin_config: Arc::from(&[][..]),
                ex: None,
                context_id: 0,
                root_id: 0,
                captured: None,
            },
        );
        store.set_epoch_deadline(CALL_DEADLINE_TICKS);
        let err = |e: wasmtime::Error| anyhow::anyhow!("{filter}: {e:#}");
        let instance = host.linker.instantiate(&mut store, module).map_err(err)?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .with_context(|| format!("{filter} exports no memory"))?;
        // SDK 0.2 exports `malloc` instead on wasm32-unknown-unknown.
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "proxy_on_memory_allocate")
            .or_else(|_| instance.get_typed_func::<i32, i32>(&mut store, "malloc"))
            .map_err(err)?;
        store.data_mut().memory = Some(memory);
        store.data_mut().alloc = Some(alloc);
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            init.call(&mut store, ()).map_err(err)?;
        }
        macro_rules! export {
            ($name:literal) => {
                instance.get_typed_func(&mut store, $name).map_err(err)?
            };
        }
        let fns = Exports {
            on_context_create: export!("proxy_on_context_create"),
            on_vm_start: export!("proxy_on_vm_start"),
            on_configure: export!("proxy_on_configure"),
            on_request_headers: export!("proxy_on_request_headers"),
            on_request_body: export!("proxy_on_request_body"),
            on_response_headers: export!("proxy_on_response_headers"),
            on_response_body: export!("proxy_on_response_body"),
            on_log: export!("proxy_on_log"),
            on_done: export!("proxy_on_done"),
            on_delete: export!("proxy_on_delete"),
        };
        Ok(Self {
            store,
            fns,
            generation,
            roots: HashMap::new(),
            next_id: 1,
        })
    }

    fn new_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    fn enter(&mut self, ctx: u32, root: u32) {
        self.store.set_epoch_deadline(CALL_DEADLINE_TICKS);
        let st = self.store.data_mut();
        st.context_id = ctx;
        st.root_id = root;
    }

    /// The root context of `step`, created and configured on first use.
    fn root(&mut self, step: &FilterStep) -> wasmtime::Result<Option<u32>> {
        if let Some(root) = self.roots.get(&step.entry) {
            return Ok(*root);
        }
        let id = self.new_id();
        self.enter(id, id);
        self.store.data_mut().plugin_config = Arc::clone(&step.config);
        let c = abi::as_i32(id);
        self.fns.on_context_create.call(&mut self.store, (c, 0))?;
        self.fns.on_vm_start.call(&mut self.store, (c, 0))?;
        let size = abi::as_i32(step.config.len());
        let ok = self.fns.on_configure.call(&mut self.store, (c, size))? != 0;
        let root = ok.then_some(id);
        if !ok && self.store.data().captured.is_none() {
            tracing::error!(
                filter = %step.filter, chain = %step.chain, worker = self.store.data().worker,
                "filter refused its configuration; requests through this chain get 500 until it is fixed"
            );
        }
        self.roots.insert(step.entry, root);
        Ok(root)
    }
}

/// A worker's instances for one plan generation.
pub struct VmSet {
    host: Arc<Host>,
    worker: usize,
    plan_generation: u64,
    vms: HashMap<Arc<str>, FilterVm>,
    next_vm_generation: u64,
}

impl VmSet {
    fn vm(&mut self, filter: &Arc<str>) -> anyhow::Result<&mut FilterVm> {
        if !self.vms.contains_key(filter) {
            self.next_vm_generation += 1;
            let vm = FilterVm::new(
                &self.host,
                Arc::clone(filter),
                self.worker,
                self.next_vm_generation,
            )?;
            self.vms.insert(Arc::clone(filter), vm);
        }
        self.vms.get_mut(filter).context("instance just inserted")
    }

    fn live(&mut self, filter: &str, generation: u64) -> Option<&mut FilterVm> {
        self.vms
            .get_mut(filter)
            .filter(|vm| vm.generation == generation)
    }
}

/// The workers' instance sets; a request runs on its connection's worker.
pub struct Workers {
    host: Arc<Host>,
    slots: Vec<Mutex<Option<Arc<Mutex<VmSet>>>>>,
}

impl Workers {
    pub fn new(host: Arc<Host>, count: usize) -> Self {
        Self {
            host,
            slots: (0..count.max(1)).map(|_| Mutex::new(None)).collect(),
        }
    }

    pub fn count(&self) -> usize {
        self.slots.len()
    }

    pub fn host(&self) -> &Arc<Host> {
        &self.host
    }

    /// Worker `w`'s instances for `plan`, made fresh when the plan changed (requests still running
    /// on the old set keep it until they end).
    fn set_for(&self, w: usize, plan: &Plan) -> Arc<Mutex<VmSet>> {
        let mut slot = lock(&self.slots[w % self.slots.len()]);
        if let Some(set) = slot.as_ref()
            && lock(set).plan_generation == plan.generation
        {
            return Arc::clone(set);
        }
        let set = Arc::new(Mutex::new(VmSet {
            host: Arc::clone(&self.host),
            worker: w % self.slots.len(),
            plan_generation: plan.generation,
            vms: HashMap::new(),
            next_vm_generation: 0,
        }));
        *slot = Some(Arc::clone(&set));
        set
    }

    pub fn flow(
        &self,
        worker: usize,
        plan: &Plan,
        steps: Arc<[Arc<FilterStep>]>,
        ex: Exchange,
    ) -> Flow {
        let n = steps.len();
        Flow {
            // A route without filters never touches the worker's instances.
            set: (n > 0).then(|| self.set_for(worker, plan)),
            steps,
            ctxs: vec![None; n],
            pending: vec![Vec::new(); n],
            ex: Some(Box::new(ex)),
            replacement: None,
            trapped: false,
            finished: false,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a request could not go on through its chain. Each is a plain 500 for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A filter trapped (its instance is replaced).
    Trap,
    /// A filter of the chain refused its configuration.
    Misconfigured,
    /// A filter paused the request without answering it; the edge cannot resume it.
    Stalled,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// A filter answered: `Flow::take_local` has the response.
    Respond,
}

/// One request's contexts in its worker's instances, phase by phase.
pub struct Flow {
    set: Option<Arc<Mutex<VmSet>>>,
    steps: Arc<[Arc<FilterStep>]>,
    /// (context id, instance generation) per step.
    ctxs: Vec<Option<Ctx>>,
    pending: Vec<Vec<u8>>,
    ex: Option<Box<Exchange>>,
    replacement: Option<Vec<u8>>,
    trapped: bool,
    finished: bool,
}

/// A request's context in one filter: its id, its root context, and the instance it lives in.
#[derive(Clone, Copy)]
struct Ctx {
    id: u32,
    root: u32,
    generation: u64,
}

#[derive(Clone, Copy)]
enum Call {
    RequestHeaders,
    RequestBody,
    ResponseHeaders,
    ResponseBody(bool),
}

impl Flow {
    pub fn exchange_mut(&mut self) -> &mut Exchange {
        self.ex.get_or_insert_with(Box::default)
    }

    fn has_local(&self) -> bool {
        self.ex.as_ref().is_some_and(|ex| ex.local.is_some())
    }

    pub fn take_local(&mut self) -> Option<LocalResponse> {
        self.ex.as_mut().and_then(|ex| ex.local.take())
    }

    /// Creates the request's context in every filter of the chain.
    pub fn start(&mut self) -> Result<(), Failure> {
        let Some(set_arc) = self.set.clone() else {
            return Ok(());
        };
        let mut set = lock(&set_arc);
        for i in 0..self.steps.len() {
            let step = Arc::clone(&self.steps[i]);
            let vm = match set.vm(&step.filter) {
                Ok(vm) => vm,
                Err(e) => {
                    tracing::error!(filter = %step.filter, "instantiating the filter failed: {e:#}");
                    return Err(Failure::Misconfigured);
                }
            };
            let created = vm.root(&step).and_then(|root| match root {
                None => Ok(None),
                Some(root) => {
                    let id = vm.new_id();
                    vm.enter(id, root);
                    vm.fns
                        .on_context_create
                        .call(&mut vm.store, (abi::as_i32(id), abi::as_i32(root)))?;
                    Ok(Some(Ctx {
                        id,
                        root,
                        generation: vm.generation,
                    }))
                }
            });
            match created {
                Ok(Some(ctx)) => self.ctxs[i] = Some(ctx),
                Ok(None) => return Err(Failure::Misconfigured),
                Err(e) => {
                    self.on_trap(&mut set, i, &e);
                    return Err(Failure::Trap);
                }
            }
        }
        Ok(())
    }

    fn on_trap(&mut self, set: &mut VmSet, i: usize, e: &wasmtime::Error) {
        let step = &self.steps[i];
        tracing::error!(
            filter = %step.filter, chain = %step.chain, worker = set.worker,
            "filter trapped; its request fails with 500 and the instance is replaced: {e:#}"
        );
        set.vms.remove(&step.filter);
        self.ctxs[i] = None;
        self.trapped = true;
    }

    /// Calls one callback of step `i`; `None` when its context is gone (its instance was replaced).
    fn call(&mut self, set: &mut VmSet, i: usize, call: Call) -> Result<Option<i32>, Failure> {
        // A context lost to a trap (this request's or another's in the same instance) fails the
        // request: going on without the filter would let it through unchecked.
        let Some(Ctx {
            id: ctx,
            root,
            generation,
        }) = self.ctxs[i]
        else {
            return Err(Failure::Trap);
        };
        let Some(vm) = set.live(&self.steps[i].filter, generation) else {
            tracing::error!(
                filter = %self.steps[i].filter,
                "the filter's instance was replaced after a trap while this request was in it; the request fails"
            );
            self.ctxs[i] = None;
            self.trapped = true;
            return Err(Failure::Trap);
        };
        let mut ex = self.ex.take().unwrap_or_default();
        let c = abi::as_i32(ctx);
        let (phase, args) = match call {
            Call::RequestHeaders => (
                Phase::RequestHeaders,
                (c, abi::as_i32(ex.request_headers.len()), 0),
            ),
            Call::RequestBody => (Phase::RequestBody, (c, abi::as_i32(ex.body.len()), 1)),
            Call::ResponseHeaders => (
                Phase::ResponseHeaders,
                (c, abi::as_i32(ex.response_headers.len()), 0),
            ),
            Call::ResponseBody(eos) => (
                Phase::ResponseBody,
                (c, abi::as_i32(ex.body.len()), i32::from(eos)),
            ),
        };
        ex.phase = phase;
        vm.enter(ctx, root);
        vm.store.data_mut().ex = Some(ex);
        let f = match call {
            Call::RequestHeaders => &vm.fns.on_request_headers,
            Call::RequestBody => &vm.fns.on_request_body,
            Call::ResponseHeaders => &vm.fns.on_response_headers,
            Call::ResponseBody(_) => &vm.fns.on_response_body,
        };
        let result = f.call(&mut vm.store, args);
        self.ex = vm.store.data_mut().ex.take();
        match result {
            Ok(action) => Ok(Some(action)),
            Err(e) => {
                self.on_trap(set, i, &e);
                Err(Failure::Trap)
            }
        }
    }

    /// `on_http_request_headers` for every filter until one answers or fails.
    pub fn request_headers(&mut self) -> Result<Outcome, Failure> {
        self.request_phase(Call::RequestHeaders)
    }

    /// `on_http_request_body` with the whole body and end of stream.
    pub fn request_body(&mut self, body: Vec<u8>) -> Result<Outcome, Failure> {
        self.exchange_mut().body = body;
        self.request_phase(Call::RequestBody)
    }

    /// The request body after the filters (empty when there was none).
    pub fn take_body(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.exchange_mut().body)
    }

    fn request_phase(&mut self, call: Call) -> Result<Outcome, Failure> {
        let Some(set_arc) = self.set.clone() else {
            return Ok(Outcome::Continue);
        };
        let mut set = lock(&set_arc);
        for i in 0..self.steps.len() {
            let action = self.call(&mut set, i, call)?;
            if self.has_local() {
                return Ok(Outcome::Respond);
            }
            if action == Some(ACTION_PAUSE) {
                tracing::error!(
                    filter = %self.steps[i].filter,
                    "filter paused the request without answering it; kyc-edge does not resume paused requests"
                );
                return Err(Failure::Stalled);
            }
        }
        Ok(Outcome::Continue)
    }

    /// `on_http_response_headers` for every filter, with `status` and `headers` as the response
    /// (after any response headers filters set earlier in the request). A local response made
    /// here replaces the status, headers and body; the filters after it see the replacement.
    /// `Respond` then, and `take_replacement_body` has the new body.
    pub fn response_headers(
        &mut self,
        status: u16,
        headers: Vec<Header>,
    ) -> Result<Outcome, Failure> {
        {
            let ex = self.exchange_mut();
            let early = std::mem::take(&mut ex.response_headers);
            ex.response_headers
                .push((":status".into(), status.to_string().into_bytes()));
            ex.response_headers.extend(headers);
            ex.response_headers
                .extend(early.into_iter().filter(|(k, _)| !k.starts_with(':')));
        }
        let Some(set_arc) = self.set.clone() else {
            return Ok(Outcome::Continue);
        };
        let mut set = lock(&set_arc);
        let mut outcome = Outcome::Continue;
        for i in 0..self.steps.len() {
            self.call(&mut set, i, Call::ResponseHeaders)?;
            if let Some(local) = self.take_local() {
                let ex = self.exchange_mut();
                ex.response_headers.clear();
                ex.response_headers
                    .push((":status".into(), local.status.to_string().into_bytes()));
                ex.response_headers.extend(local.headers);
                self.replacement = Some(local.body);
                outcome = Outcome::Respond;
            }
        }
        Ok(outcome)
    }

    /// The body of a local response made during response headers.
    pub fn take_replacement_body(&mut self) -> Vec<u8> {
        self.replacement.take().unwrap_or_default()
    }

    /// The response headers after the filters (`:status` first).
    pub fn response_header_map(&mut self) -> Vec<Header> {
        std::mem::take(&mut self.exchange_mut().response_headers)
    }

    /// One chunk of the response body through the chain; returns what goes to the client now.
    /// A filter returning `Pause` before the end has its input held back and given to it again
    /// with the next chunk, up to the buffer limit (then it gets the full buffer and must go on).
    pub fn response_body(&mut self, chunk: Vec<u8>, eos: bool) -> Result<Vec<u8>, Failure> {
        let Some(set_arc) = self.set.clone() else {
            return Ok(chunk);
        };
        let mut set = lock(&set_arc);
        let mut data = chunk;
        for i in 0..self.steps.len() {
            let mut input = std::mem::take(&mut self.pending[i]);
            input.extend_from_slice(&data);
            self.exchange_mut().body = input;
            let action = self.call(&mut set, i, Call::ResponseBody(eos))?;
            let output = std::mem::take(&mut self.exchange_mut().body);
            if action == Some(ACTION_PAUSE) && !eos && output.len() < BODY_BUFFER_LIMIT {
                self.pending[i] = output;
                return Ok(Vec::new());
            }
            data = output;
        }
        Ok(data)
    }

    /// `on_done`, `on_log` and `on_delete` for every live context. Runs once; dropping the flow
    /// runs it too (a client that went away).
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let Some(set_arc) = self.set.clone() else {
            return;
        };
        let mut set = lock(&set_arc);
        if let Some(ex) = self.ex.as_mut() {
            ex.phase = Phase::Done;
        }
        for i in 0..self.steps.len() {
            let Some(Ctx {
                id: ctx,
                root,
                generation,
            }) = self.ctxs[i].take()
            else {
                continue;
            };
            let Some(vm) = set.live(&self.steps[i].filter, generation) else {
                continue;
            };
            vm.enter(ctx, root);
            vm.store.data_mut().ex = self.ex.take();
            let c = abi::as_i32(ctx);
            let result = vm
                .fns
                .on_done
                .call(&mut vm.store, c)
                .and_then(|_| vm.fns.on_log.call(&mut vm.store, c))
                .and_then(|()| vm.fns.on_delete.call(&mut vm.store, c));
            self.ex = vm.store.data_mut().ex.take();
            if let Err(e) = result {
                self.on_trap(&mut set, i, &e);
            }
        }
    }

    pub fn trapped(&self) -> bool {
        self.trapped
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.finish();
    }
}
