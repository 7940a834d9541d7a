//! The proxy-wasm ABI 0.2.1 host calls (module `env`) and the WASI preview1 imports the filters'
//! standard library pulls in, over `HostState`.
//!
//! Implemented: logging, time, buffers, header maps, properties, `send_local_response`, shared data
//! (with ngx_wasm_module's CAS rule and zones), metrics, `set_effective_context`,
//! `continue_stream`. Accepted but without effect: `set_tick_period_milliseconds` (ticks never
//! fire). Answered `Unimplemented` (the Rust SDK then panics, which traps): `http_call`, gRPC,
//! shared queues, foreign functions, `close_stream`, `done`. WASI: `fd_write` goes to the log,
//! the environment is empty, `proc_exit` traps.

use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Linker, format_err};

use super::{HostState, LocalResponse, Phase};
use crate::metrics::MetricKind;
use crate::shm::SetResult;

/// A header (or pseudo-header) and its raw value.
pub type Header = (String, Vec<u8>);

type C<'a> = Caller<'a, HostState>;
type R = wasmtime::Result<i32>;

// proxy-wasm `Status` values.
const OK: i32 = 0;
const NOT_FOUND: i32 = 1;
const BAD_ARGUMENT: i32 = 2;
const CAS_MISMATCH: i32 = 8;
const UNIMPLEMENTED: i32 = 12;

// Buffer and map types.
const BUFFER_HTTP_REQUEST_BODY: i32 = 0;
const BUFFER_HTTP_RESPONSE_BODY: i32 = 1;
const BUFFER_VM_CONFIGURATION: i32 = 6;
const BUFFER_PLUGIN_CONFIGURATION: i32 = 7;
const MAP_REQUEST_HEADERS: i32 = 0;
const MAP_REQUEST_TRAILERS: i32 = 1;
const MAP_RESPONSE_HEADERS: i32 = 2;
const MAP_RESPONSE_TRAILERS: i32 = 3;

/// Most bytes one `fd_write` gathers, and most I/O vectors it reads (POSIX's `IOV_MAX`). A filter
/// asking for more gets a short write, which WASI allows and its libc retries: the edge never
/// allocates more than this per call, whatever memory the filter has.
pub const FD_WRITE_MAX: usize = 64 * 1024;
pub const FD_WRITE_MAX_IOVS: usize = 1024;

/// `Ok` when the thing asked for exists, else `NotFound`.
fn found(exists: bool) -> i32 {
    if exists { OK } else { NOT_FOUND }
}

pub fn as_i32<T: TryInto<i32>>(v: T) -> i32 {
    v.try_into().unwrap_or(i32::MAX)
}

fn offset(v: i32) -> usize {
    v as u32 as usize
}

pub fn find<'h>(headers: &'h [Header], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

fn memory<'a>(c: &'a C<'_>) -> wasmtime::Result<&'a [u8]> {
    let mem = c
        .data()
        .memory
        .ok_or_else(|| format_err!("the filter has no memory"))?;
    Ok(mem.data(c))
}

fn read(c: &C<'_>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let (start, len) = (offset(ptr), offset(len));
    memory(c)?
        .get(start..start.saturating_add(len))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format_err!("the filter passed memory out of bounds ({start}+{len})"))
}

fn read_str(c: &C<'_>, ptr: i32, len: i32) -> wasmtime::Result<Option<String>> {
    Ok(String::from_utf8(read(c, ptr, len)?).ok())
}

fn write(c: &mut C<'_>, ptr: i32, bytes: &[u8]) -> wasmtime::Result<()> {
    let mem = c
        .data()
        .memory
        .ok_or_else(|| format_err!("the filter has no memory"))?;
    let start = offset(ptr);
    mem.data_mut(&mut *c)
        .get_mut(start..start.saturating_add(bytes.len()))
        .ok_or_else(|| format_err!("the filter passed memory out of bounds ({start})"))?
        .copy_from_slice(bytes);
    Ok(())
}

fn write_u32(c: &mut C<'_>, ptr: i32, v: u32) -> wasmtime::Result<()> {
    write(c, ptr, &v.to_le_bytes())
}

/// Copies `data` into memory the filter allocates and returns its address and size through the
/// two out-pointers, as every getter of the ABI does.
fn give(c: &mut C<'_>, data: &[u8], ret_ptr: i32, ret_size: i32) -> R {
    let alloc = c
        .data()
        .alloc
        .clone()
        .ok_or_else(|| format_err!("the filter exports no proxy_on_memory_allocate"))?;
    let ptr = alloc.call(&mut *c, as_i32(data.len()))?;
    if ptr == 0 && !data.is_empty() {
        return Err(format_err!(
            "proxy_on_memory_allocate({}) failed",
            data.len()
        ));
    }
    write(c, ptr, data)?;
    write_u32(c, ret_ptr, ptr as u32)?;
    write_u32(c, ret_size, data.len() as u32)?;
    Ok(OK)
}

/// The ABI's map encoding: count, then (key length, value length) pairs, then each key and value
/// followed by a NUL.
pub fn serialize_map(pairs: &[Header]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(k, v)| 10 + k.len() + v.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

pub fn deserialize_map(bytes: &[u8]) -> Option<Vec<Header>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let count = u32_at(0)?;
    let mut sizes = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        sizes.push((u32_at(4 + i * 8)?, u32_at(8 + i * 8)?));
    }
    let mut at = 4 + count * 8;
    let mut pairs = Vec::with_capacity(sizes.len());
    for (ks, vs) in sizes {
        let k = bytes.get(at..at + ks)?;
        at += ks + 1;
        let v = bytes.get(at..at + vs)?;
        at += vs + 1;
        pairs.push((String::from_utf8(k.to_vec()).ok()?, v.to_vec()));
    }
    Some(pairs)
}

fn map_mut(st: &mut HostState, map: i32) -> Option<&mut Vec<Header>> {
    let ex = st.ex.as_mut()?;
    match map {
        MAP_REQUEST_HEADERS => Some(&mut ex.request_headers),
        // Before the response, this map holds what filters set early; it joins the response.
        MAP_RESPONSE_HEADERS => Some(&mut ex.response_headers),
        MAP_REQUEST_TRAILERS | MAP_RESPONSE_TRAILERS => Some(&mut ex.trailers),
        _ => None,
    }
}

fn body_mut(st: &mut HostState, buffer: i32) -> Option<&mut Vec<u8>> {
    let ex = st.ex.as_mut()?;
    match (buffer, ex.phase) {
        (BUFFER_HTTP_REQUEST_BODY, Phase::RequestBody)
        | (BUFFER_HTTP_RESPONSE_BODY, Phase::ResponseBody) => Some(&mut ex.body),
        _ => None,
    }
}

/// A property's value. Every value is a string, as in ngx_wasm_module.
fn property(st: &HostState, path: &[&str]) -> Option<Vec<u8>> {
    let text = |s: &str| Some(s.as_bytes().to_vec());
    match path {
        ["plugin_name"] => return text(&st.filter),
        ["plugin_root_id"] => return text(&st.root_id.to_string()),
        _ => {}
    }
    let ex = st.ex.as_ref()?;
    let info = &ex.info;
    let header = |name: &str| find(&ex.request_headers, name).map(<[u8]>::to_vec);
    let full_path = || header(":path").unwrap_or_default();
    match path {
        ["kong", "ctx", "shared", _] => ex.properties.get(&path.join(".")).cloned(),
        ["kong", "route_id"] => text(&info.route_id),
        ["kong", "route_name"] => text(&info.route_name),
        ["kong", "service_id"] => text(&info.service_id),
        ["kong", "service_name"] => text(&info.service_name),
        ["kong", "version"] => text(concat!("kyc-edge/", env!("CARGO_PKG_VERSION"))),
        ["kong", "client", "protocol"] | ["request", "scheme"] => text("http"),
        ["request", "path"] => Some(full_path()),
        ["request", "url_path"] => {
            let p = full_path();
            let end = p.iter().position(|&b| b == b'?').unwrap_or(p.len());
            Some(p[..end].to_vec())
        }
        ["request", "query"] => {
            let p = full_path();
            Some(
                p.iter()
                    .position(|&b| b == b'?')
                    .map_or_else(Vec::new, |i| p[i + 1..].to_vec()),
            )
        }
        ["request", "method"] => header(":method"),
        ["request", "host"] => header(":authority"),
        ["request", "protocol"] => text("HTTP/1.1"),
        ["request", "id"] => text(&info.request_id),
        ["request", "useragent"] => header("user-agent"),
        ["request", "headers", name] => header(name),
        ["response", "code"] => find(&ex.response_headers, ":status").map(<[u8]>::to_vec),
        ["response", "headers", name] => find(&ex.response_headers, name).map(<[u8]>::to_vec),
        ["source", "address"] => info.client.map(|a| a.ip().to_string().into_bytes()),
        ["source", "port"] => info.client.map(|a| a.port().to_string().into_bytes()),
        ["destination", "address"] => info.local.map(|a| a.ip().to_string().into_bytes()),
        ["destination", "port"] => info.local.map(|a| a.port().to_string().into_bytes()),
        _ => None,
    }
}

fn split_path(bytes: &[u8]) -> Option<Vec<String>> {
    let mut parts: Vec<String> = bytes
        .split(|&b| b == 0)
        .map(|p| String::from_utf8(p.to_vec()).ok())
        .collect::<Option<_>>()?;
    if parts.last().is_some_and(String::is_empty) {
        parts.pop();
    }
    Some(parts)
}

fn log_line(st: &mut HostState, level: i32, message: &str) {
    if let Some(captured) = st.captured.as_mut() {
        captured.push(message.to_owned());
        return;
    }
    let (filter, ctx, worker) = (&*st.filter, st.context_id, st.worker);
    match level {
        0 => tracing::trace!(target: "proxy_wasm", filter, ctx, worker, "{message}"),
        1 => tracing::debug!(target: "proxy_wasm", filter, ctx, worker, "{message}"),
        2 => tracing::info!(target: "proxy_wasm", filter, ctx, worker, "{message}"),
        3 => tracing::warn!(target: "proxy_wasm", filter, ctx, worker, "{message}"),
        _ => tracing::error!(target: "proxy_wasm", filter, ctx, worker, "{message}"),
    }
}

fn unimplemented(
    linker: &mut Linker<HostState>,
    name: &str,
    params: usize,
) -> wasmtime::Result<()> {
    use wasmtime::{FuncType, Val, ValType};
    let ty = FuncType::new(linker.engine(), vec![ValType::I32; params], [ValType::I32]);
    let name_owned = name.to_owned();
    linker.func_new("env", name, ty, move |mut c, _params, results| {
        let msg = format!("{name_owned} is not implemented by kyc-edge");
        log_line(c.data_mut(), 1, &msg);
        results[0] = Val::I32(UNIMPLEMENTED);
        Ok(())
    })?;
    Ok(())
}

#[allow(clippy::too_many_lines)]
pub fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut c: C<'_>, level: i32, ptr: i32, len: i32| -> R {
            let message = String::from_utf8_lossy(&read(&c, ptr, len)?).into_owned();
            log_line(c.data_mut(), level, &message);
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: C<'_>, ret: i32| -> R {
            write_u32(&mut c, ret, 2)?;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: C<'_>, ret: i32| -> R {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            write(&mut c, ret, &now.to_le_bytes())?;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |_c: C<'_>, _ms: i32| -> R { Ok(OK) },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: C<'_>, ctx: i32| -> R {
            c.data_mut().context_id = ctx as u32;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |_c: C<'_>, _stream: i32| -> R { Ok(OK) },
    )?;

    // ---- buffers ----
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: C<'_>, buffer: i32, start: i32, max: i32, ret_ptr: i32, ret_size: i32| -> R {
            let data = match buffer {
                BUFFER_PLUGIN_CONFIGURATION => c.data().plugin_config.to_vec(),
                BUFFER_VM_CONFIGURATION => Vec::new(),
                _ => match body_mut(c.data_mut(), buffer) {
                    Some(body) => {
                        let from = offset(start).min(body.len());
                        let to = from.saturating_add(offset(max)).min(body.len());
                        body[from..to].to_vec()
                    }
                    None => return Ok(NOT_FOUND),
                },
            };
            if data.is_empty() {
                return Ok(NOT_FOUND);
            }
            give(&mut c, &data, ret_ptr, ret_size)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: C<'_>, buffer: i32, start: i32, size: i32, ptr: i32, len: i32| -> R {
            let data = read(&c, ptr, len)?;
            let Some(body) = body_mut(c.data_mut(), buffer) else {
                return Ok(BAD_ARGUMENT);
            };
            let from = offset(start).min(body.len());
            let to = from.saturating_add(offset(size)).min(body.len());
            body.splice(from..to, data);
            Ok(OK)
        },
    )?;

    // ---- header maps ----
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: C<'_>, map: i32, ret_ptr: i32, ret_size: i32| -> R {
            let Some(pairs) = map_mut(c.data_mut(), map) else {
                return Ok(BAD_ARGUMENT);
            };
            let bytes = serialize_map(pairs);
            give(&mut c, &bytes, ret_ptr, ret_size)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: C<'_>, map: i32, ptr: i32, len: i32| -> R {
            let Some(new) = deserialize_map(&read(&c, ptr, len)?) else {
                return Ok(BAD_ARGUMENT);
            };
            let Some(pairs) = map_mut(c.data_mut(), map) else {
                return Ok(BAD_ARGUMENT);
            };
            // Pseudo-headers stay unless the new map sets them.
            pairs.retain(|(k, _)| k.starts_with(':') && find(&new, k).is_none());
            pairs.extend(new.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)));
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: C<'_>, map: i32, kp: i32, kl: i32, ret_ptr: i32, ret_size: i32| -> R {
            let Some(name) = read_str(&c, kp, kl)? else {
                return Ok(BAD_ARGUMENT);
            };
            let Some(pairs) = map_mut(c.data_mut(), map) else {
                return Ok(BAD_ARGUMENT);
            };
            let Some(value) = find(pairs, &name).map(<[u8]>::to_vec) else {
                return Ok(NOT_FOUND);
            };
            give(&mut c, &value, ret_ptr, ret_size)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: C<'_>, map: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> R {
            let (Some(name), value) = (read_str(&c, kp, kl)?, read(&c, vp, vl)?) else {
                return Ok(BAD_ARGUMENT);
            };
            let Some(pairs) = map_mut(c.data_mut(), map) else {
                return Ok(BAD_ARGUMENT);
            };
            match pairs
                .iter()
                .position(|(k, _)| k.eq_ignore_ascii_case(&name))
            {
                Some(i) => {
                    pairs[i].1 = value;
                    let mut j = i + 1;
                    while j < pairs.len() {
                        if pairs[j].0.eq_ignore_ascii_case(&name) {
                            pairs.remove(j);
                        } else {
                            j += 1;
                        }
                    }
                }
                None => pairs.push((name.to_ascii_lowercase(), value)),
            }
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: C<'_>, map: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> R {
            let (Some(name), value) = (read_str(&c, kp, kl)?, read(&c, vp, vl)?) else {
                return Ok(BAD_ARGUMENT);
            };
            let Some(pairs) = map_mut(c.data_mut(), map) else {
                return Ok(BAD_ARGUMENT);
            };
            pairs.push((name.to_ascii_lowercase(), value));
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: C<'_>, map: i32, kp: i32, kl: i32| -> R {
            let Some(name) = read_str(&c, kp, kl)? else {
                return Ok(BAD_ARGUMENT);
            };
            let Some(pairs) = map_mut(c.data_mut(), map) else {
                return Ok(BAD_ARGUMENT);
            };
            pairs.retain(|(k, _)| !k.eq_ignore_ascii_case(&name));
            Ok(OK)
        },
    )?;

    // ---- properties ----
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: C<'_>, pp: i32, pl: i32, ret_ptr: i32, ret_size: i32| -> R {
            let Some(parts) = split_path(&read(&c, pp, pl)?) else {
                return Ok(BAD_ARGUMENT);
            };
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            match property(c.data(), &parts) {
                Some(value) => give(&mut c, &value, ret_ptr, ret_size),
                None => Ok(NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: C<'_>, pp: i32, pl: i32, vp: i32, vl: i32| -> R {
            let (Some(parts), value) = (split_path(&read(&c, pp, pl)?), read(&c, vp, vl)?) else {
                return Ok(BAD_ARGUMENT);
            };
            let writable = parts.len() == 4 && parts[..3] == ["kong", "ctx", "shared"];
            match c.data_mut().ex.as_mut() {
                Some(ex) if writable => {
                    ex.properties.insert(parts.join("."), value);
                    Ok(OK)
                }
                _ => Ok(BAD_ARGUMENT),
            }
        },
    )?;

    // ---- shared data ----
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: C<'_>, kp: i32, kl: i32, ret_ptr: i32, ret_size: i32, ret_cas: i32| -> R {
            let Some(key) = read_str(&c, kp, kl)? else {
                return Ok(BAD_ARGUMENT);
            };
            match c.data().shm.get(&key) {
                Ok(None) => Ok(NOT_FOUND),
                Ok(Some((value, cas))) => {
                    give(&mut c, &value, ret_ptr, ret_size)?;
                    write_u32(&mut c, ret_cas, cas)?;
                    Ok(OK)
                }
                Err(e) => {
                    log_line(c.data_mut(), 4, &e.to_string());
                    Err(format_err!("{e}"))
                }
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: C<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| -> R {
            let Some(key) = read_str(&c, kp, kl)? else {
                return Ok(BAD_ARGUMENT);
            };
            let value = if vp == 0 {
                None
            } else {
                Some(read(&c, vp, vl)?)
            };
            match c.data().shm.set(&key, value.as_deref(), cas as u32) {
                Ok(SetResult::Ok) => Ok(OK),
                Ok(SetResult::CasMismatch) => Ok(CAS_MISMATCH),
                Err(e) => {
                    log_line(c.data_mut(), 4, &e.to_string());
                    Err(format_err!("{e}"))
                }
            }
        },
    )?;

    // ---- local responses ----
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: C<'_>,
         status: i32,
         _dp: i32,
         _dl: i32,
         bp: i32,
         bl: i32,
         hp: i32,
         hl: i32,
         _grpc: i32|
         -> R {
            let mut body = read(&c, bp, bl)?;
            let headers = deserialize_map(&read(&c, hp, hl)?)
                .ok_or_else(|| format_err!("send_local_response: malformed header map"))?;
            let Some(ex) = c.data_mut().ex.as_mut() else {
                return Ok(BAD_ARGUMENT);
            };
            if ex.local_sent {
                return Err(format_err!(
                    "send_local_response called twice for one request"
                ));
            }
            if ex.phase >= Phase::ResponseBody {
                return Err(format_err!(
                    "send_local_response after the response body started"
                ));
            }
            let status = u16::try_from(status)
                .ok()
                .filter(|s| (100..=999).contains(s))
                .ok_or_else(|| format_err!("send_local_response: bad status {status}"))?;
            // ngx_wasm_module ends a non-empty local body with a newline.
            if !body.is_empty() {
                body.push(b'\n');
            }
            ex.local = Some(LocalResponse {
                status,
                headers,
                body,
            });
            ex.local_sent = true;
            Ok(OK)
        },
    )?;

    // ---- metrics ----
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: C<'_>, kind: i32, np: i32, nl: i32, ret: i32| -> R {
            let (Some(kind), Some(name)) = (MetricKind::from_abi(kind), read_str(&c, np, nl)?)
            else {
                return Ok(BAD_ARGUMENT);
            };
            let st = c.data();
            match st.metrics.define(&st.filter, &name, kind) {
                Ok(id) => {
                    write_u32(&mut c, ret, id)?;
                    Ok(OK)
                }
                Err(why) => {
                    log_line(c.data_mut(), 4, &format!("define_metric({name}): {why}"));
                    Ok(BAD_ARGUMENT)
                }
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: C<'_>, id: i32, by: i64| -> R { Ok(found(c.data().metrics.increment(id as u32, by))) },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |c: C<'_>, id: i32, value: i64| -> R {
            Ok(found(c.data().metrics.record(id as u32, value)))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: C<'_>, id: i32, ret: i32| -> R {
            match c.data().metrics.value(id as u32) {
                Some(v) => {
                    write(&mut c, ret, &v.to_le_bytes())?;
                    Ok(OK)
                }
                None => Ok(NOT_FOUND),
            }
        },
    )?;

    // ---- not implemented (documented in the edge's README) ----
    for (name, params) in [
        ("proxy_http_call", 10),
        ("proxy_grpc_call", 12),
        ("proxy_grpc_stream", 9),
        ("proxy_grpc_send", 4),
        ("proxy_grpc_cancel", 1),
        ("proxy_grpc_close", 1),
        ("proxy_get_status", 3),
        ("proxy_register_shared_queue", 3),
        ("proxy_resolve_shared_queue", 5),
        ("proxy_dequeue_shared_queue", 3),
        ("proxy_enqueue_shared_queue", 3),
        ("proxy_call_foreign_function", 6),
        ("proxy_close_stream", 1),
        ("proxy_done", 0),
    ] {
        unimplemented(linker, name, params)?;
    }

    // ---- WASI preview1: what Rust's std pulls in ----
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "fd_write",
        |mut c: C<'_>, fd: i32, iovs: i32, count: i32, ret: i32| -> R {
            let mut out = Vec::new();
            for i in 0..offset(count).min(FD_WRITE_MAX_IOVS) {
                let room = FD_WRITE_MAX - out.len();
                if room == 0 {
                    break;
                }
                let iov = read(&c, as_i32(offset(iovs) + i * 8), 8)?;
                let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                let take = (len as usize).min(room);
                out.extend(read(&c, ptr as i32, as_i32(take))?);
            }
            let text = String::from_utf8_lossy(&out);
            let level = if fd == 2 { 4 } else { 2 };
            let trimmed = text.trim_end();
            if !trimmed.is_empty() {
                log_line(c.data_mut(), level, trimmed);
            }
            write_u32(&mut c, ret, out.len() as u32)?;
            Ok(0)
        },
    )?;
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "environ_sizes_get",
        |mut c: C<'_>, count: i32, size: i32| -> R {
            write_u32(&mut c, count, 0)?;
            write_u32(&mut c, size, 0)?;
            Ok(0)
        },
    )?;
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "environ_get",
        |_c: C<'_>, _environ: i32, _buf: i32| -> R { Ok(0) },
    )?;
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "proc_exit",
        |_c: C<'_>, code: i32| -> wasmtime::Result<()> {
            Err(format_err!("the filter called proc_exit({code})"))
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_round_trip_in_the_abi_encoding() {
        let pairs = vec![
            (":status".to_owned(), b"200".to_vec()),
            ("x-empty".to_owned(), Vec::new()),
            ("content-type".to_owned(), b"application/json".to_vec()),
        ];
        let bytes = serialize_map(&pairs);
        assert_eq!(&bytes[..4], &3u32.to_le_bytes());
        assert_eq!(deserialize_map(&bytes), Some(pairs));
        assert_eq!(deserialize_map(&bytes[..bytes.len() - 3]), None);
        assert_eq!(
            split_path(b"kong\0ctx\0shared\0id\0"),
            Some(vec![
                "kong".into(),
                "ctx".into(),
                "shared".into(),
                "id".into()
            ])
        );
    }
}
