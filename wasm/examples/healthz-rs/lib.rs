//! healthz-rs is an observer plugin in Rust against ABI v1 (wasm/ABI.md),
//! with the standard library only: on every call it GETs the target's
//! /healthz and emits one observation whose result is the answer's (ok for
//! a 2xx status, failed for any other, error when no answer came), with
//! the number of calls in a row that were not ok, which it keeps in its
//! state (set_state). README.md says how to build it and what it emits.

use std::alloc::{alloc, dealloc, Layout};

#[link(wasm_import_module = "polar")]
extern "C" {
    fn emit(ptr: *const u8, len: i32) -> i32;
    fn log(level: i32, ptr: *const u8, len: i32);
    fn set_state(ptr: *const u8, len: i32) -> i32;
    fn http_request(ptr: *const u8, len: i32) -> i32;
    fn http_response(ptr: *mut u8, len: i32) -> i32;
}

const PATH: &str = "/healthz";
const LOG_INFO: i32 = 1;
const LOG_ERROR: i32 = 3;
const SEVERITY_INFO: u64 = 1;
const SEVERITY_HIGH: u64 = 4;
const RESULT_OK: u64 = 1;
const RESULT_FAILED: u64 = 2;
const RESULT_ERROR: u64 = 4;

fn log_line(level: i32, line: &str) {
    unsafe { log(level, line.as_ptr(), line.len() as i32) }
}

/// Protobuf, by hand: each field a tag (number << 3 | wire type) and its
/// value, a varint (wire type 0) or a length and bytes (wire type 2).
fn put_varint(b: &mut Vec<u8>, mut x: u64) {
    while x > 0x7f {
        b.push((x as u8 & 0x7f) | 0x80);
        x >>= 7;
    }
    b.push(x as u8);
}

fn put_bytes(b: &mut Vec<u8>, field: u64, v: &[u8]) {
    put_varint(b, field << 3 | 2);
    put_varint(b, v.len() as u64);
    b.extend_from_slice(v);
}

fn put_varint_field(b: &mut Vec<u8>, field: u64, x: u64) {
    put_varint(b, field << 3);
    put_varint(b, x);
}

fn get_varint(b: &mut &[u8]) -> Option<u64> {
    let mut x = 0u64;
    for shift in (0..70).step_by(7) {
        let (&c, rest) = b.split_first()?;
        *b = rest;
        x |= u64::from(c & 0x7f) << shift;
        if c & 0x80 == 0 {
            return Some(x);
        }
    }
    None
}

/// The fields of message b, as (number, varint value, bytes); None when
/// it is malformed.
fn fields(mut b: &[u8]) -> Option<Vec<(u64, u64, &[u8])>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let tag = get_varint(&mut b)?;
        match tag & 7 {
            0 => out.push((tag >> 3, get_varint(&mut b)?, &b[..0])),
            1 | 5 => {
                let n = if tag & 7 == 1 { 8 } else { 4 };
                b = b.get(n..)?;
            }
            2 => {
                let n = usize::try_from(get_varint(&mut b)?).ok()?;
                let v = b.get(..n)?;
                b = &b[n..];
                out.push((tag >> 3, 0, v));
            }
            _ => return None,
        }
    }
    Some(out)
}

/// get asks the host for GET PATH: the status, or the negative result of
/// http_request or http_response.
fn get() -> i64 {
    let mut req = Vec::new();
    put_bytes(&mut req, 1, b"GET");
    put_bytes(&mut req, 2, PATH.as_bytes());
    let n = unsafe { http_request(req.as_ptr(), req.len() as i32) };
    if n < 0 {
        return i64::from(n);
    }
    let mut resp = vec![0u8; n as usize];
    let got = unsafe { http_response(resp.as_mut_ptr(), n) };
    if got != n {
        return i64::from(got);
    }
    // HttpResponse's status_code is field 1; a malformed one is no answer.
    match fields(&resp) {
        Some(fs) => fs.iter().filter(|f| f.0 == 1).map(|f| f.1 as i32 as i64).last().unwrap_or(0),
        None => -1,
    }
}

/// polar_abi_version: the ABI this module speaks.
#[no_mangle]
pub extern "C" fn polar_abi_version() -> i32 {
    1
}

/// The layout of a request buffer of size bytes: polar_alloc allocates it,
/// polar_observe frees it with the same layout.
fn request_layout(size: i32) -> Option<Layout> {
    if !(0..=16 << 20).contains(&size) {
        return None;
    }
    Layout::array::<u8>(size.max(1) as usize).ok()
}

/// polar_alloc: a buffer for the host to write the ObserveRequest into,
/// this module's to free, which polar_observe does.
#[no_mangle]
pub extern "C" fn polar_alloc(size: i32) -> *mut u8 {
    match request_layout(size) {
        Some(layout) => unsafe { alloc(layout) }, // null when out of memory: the ABI's failure
        None => std::ptr::null_mut(),
    }
}

/// polar_observe: one call.
///
/// # Safety
///
/// ptr is the buffer polar_alloc returned for len bytes, which the host
/// filled: the ABI's contract.
#[no_mangle]
pub unsafe extern "C" fn polar_observe(ptr: *mut u8, len: i32) -> i32 {
    let layout = match request_layout(len) {
        Some(layout) if !ptr.is_null() => layout,
        _ => {
            log_line(LOG_ERROR, "healthz-rs: polar_observe was not given a buffer of polar_alloc");
            return 3;
        }
    };
    // ObserveRequest's state (field 5): the calls in a row not ok so far.
    let request = std::slice::from_raw_parts(ptr, len as usize);
    let mut failing: u64 = fields(request)
        .and_then(|fs| fs.iter().filter(|f| f.0 == 5).map(|f| f.2).last().and_then(|s| std::str::from_utf8(s).ok()?.parse().ok()))
        .unwrap_or(0);
    dealloc(ptr, layout);

    let status = get();
    let (result, severity, error, payload) = match status {
        s if s < 0 => (RESULT_ERROR, SEVERITY_HIGH, format!("GET {PATH}: http_request failed ({s})"), "{\"status\":null".to_string()),
        200..=299 => (RESULT_OK, SEVERITY_INFO, String::new(), format!("{{\"status\":{status}")),
        s => (RESULT_FAILED, SEVERITY_HIGH, format!("GET {PATH}: status {s}"), format!("{{\"status\":{s}")),
    };
    failing = if result == RESULT_OK { 0 } else { failing + 1 };
    let payload = format!("{payload},\"failing\":{failing}}}");

    let state = failing.to_string();
    if set_state(state.as_ptr(), state.len() as i32) != 0 {
        log_line(LOG_ERROR, "healthz-rs: set_state refused");
        return 1;
    }

    // A PluginObservation: type_suffix 1, severity 2, payload 4, schema 5,
    // labels 6 (map entries {1: key, 2: value}), result 7, error 8.
    let mut obs = Vec::new();
    put_bytes(&mut obs, 1, b"healthz");
    put_varint_field(&mut obs, 2, severity);
    put_bytes(&mut obs, 4, payload.as_bytes());
    put_bytes(&mut obs, 5, b"application/json");
    let mut label = Vec::new();
    put_bytes(&mut label, 1, b"path");
    put_bytes(&mut label, 2, PATH.as_bytes());
    put_bytes(&mut obs, 6, &label);
    put_varint_field(&mut obs, 7, result);
    if !error.is_empty() {
        put_bytes(&mut obs, 8, error.as_bytes());
    }
    let rc = emit(obs.as_ptr(), obs.len() as i32);
    if rc != 0 {
        log_line(LOG_ERROR, &format!("healthz-rs: emit returned {rc}"));
        return 1;
    }
    log_line(LOG_INFO, &format!("healthz-rs: status {status}, {failing} in a row not ok"));
    0
}
