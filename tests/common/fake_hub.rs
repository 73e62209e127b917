//! A fake Hugging Face hub on 127.0.0.1 for the integration tests: serves repo directories the way
//! hf-hub 0.4.3's sync client (ureq) expects, with faults and redirects, std only.
//!
//! What hf-hub 0.4.3 sends for `ApiRepo::get`/`download` (read from its `src/api/sync.rs`, checked
//! against this server):
//! 1. `GET /{id}/resolve/{revision}/{file}` with `Range: bytes=0-0`, no redirects followed except
//!    relative ones (each re-sent with the same Range). It needs `etag` or `x-linked-etag` (quotes
//!    stripped: the blob name), `x-repo-commit` (the snapshot dir) and `content-range: .../{size}`.
//!    If the final answer is a redirect to an absolute URL (LFS), the etag and commit come from the
//!    redirect and the size from a second `Range: bytes=0-0` request to the `Location`.
//! 2. `GET` of the same resolve URL with `Range: bytes={start}-` (start = length of an existing
//!    `blobs/{etag}.part`), redirects followed; the body is appended to the `.part` file, which is
//!    then renamed. With `with_retries(n)` (default 0) a failed body is re-requested from where it
//!    stopped, up to n + 1 times, after 300 + i^2 + rand(0..=500) ms of backoff each. The metadata
//!    request is never retried; nothing checks the final size against `content-range`.
//!
//! Each connection carries one request and is closed after the answer (`connection: close`, which
//! ureq honours); reads and writes time out after [`IO_TIMEOUT`], so no test can hang on it.

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Read and write timeout of every connection the server accepts.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Environment variables through which ureq 2 (inside hf-hub) picks a proxy. ureq 2 ignores
/// `NO_PROXY`, so with any of these set even `127.0.0.1` goes through the proxy: remove them all
/// from the environment of a command that talks to a [`FakeHub`].
pub const PROXY_ENV_VARS: [&str; 6] = [
    "ALL_PROXY",
    "all_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
];

/// Longest request head (request line + headers) the server reads before giving up.
const MAX_HEAD: usize = 64 * 1024;

/// Path prefix of the fake LFS/CDN host (same server) that redirected files are served from.
const LFS_PREFIX: &str = "/_lfs/";

/// One repository the hub serves.
#[derive(Clone, Debug)]
pub struct RepoSpec {
    /// Repo id as it appears in URLs: `org/name`, `name`, or `datasets/org/name` for a dataset.
    pub id: String,
    /// Directory whose files (and files in its subdirectories) are the repo's files.
    pub dir: PathBuf,
    /// Files answered with 404 `EntryNotFound` even if present in `dir` (paths relative to it,
    /// with `/`).
    pub hidden: Vec<String>,
}

impl RepoSpec {
    /// A repo serving every file under `dir`.
    pub fn new(id: &str, dir: impl Into<PathBuf>) -> RepoSpec {
        RepoSpec {
            id: id.to_string(),
            dir: dir.into(),
            hidden: Vec::new(),
        }
    }

    /// The same repo with `file` answered with 404 even if it exists.
    pub fn hide(mut self, file: &str) -> RepoSpec {
        self.hidden.push(file.to_string());
        self
    }
}

/// A failure the server injects into later requests (see [`FakeHub::set_fault`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally.
    None,
    /// Answer every request with 500.
    Status500,
    /// Answer every request with this status (e.g. 401, 403, 429) and an `x-error-code`.
    Status(u16),
    /// For file bodies of 2 bytes or more: send the headers (with the full `content-length`) and
    /// half the body, then close. hf-hub's `Range: bytes=0-0` metadata request (1-byte body) is
    /// answered normally, so the fault hits the download itself.
    DropMidBody,
    /// Answer file requests whole (200, no `content-range`) whatever their `Range` header says,
    /// as some proxies and mirrors do.
    IgnoreRange,
}

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The request target as sent (still percent-encoded, with any query).
    pub target: String,
    /// Headers in the order received, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The value of the first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `"{method} {target}"`, the form [`FakeHub::requests`] returns.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.target)
    }
}

/// The fault in force and how many more requests it applies to (`None`: all of them).
struct FaultState {
    fault: Fault,
    remaining: Option<usize>,
}

/// State shared by the handle and the server threads.
struct Shared {
    endpoint: String,
    repos: Vec<RepoSpec>,
    /// Legacy id -> current id.
    redirects: Mutex<BTreeMap<String, String>>,
    /// File name suffixes served LFS-style (302 to an absolute URL).
    lfs_suffixes: Mutex<Vec<String>>,
    fault: Mutex<FaultState>,
    log: Mutex<Vec<RecordedRequest>>,
    stop: AtomicBool,
}

/// A running fake hub; stops accepting connections when dropped.
pub struct FakeHub {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl FakeHub {
    /// Serves each repo's directory (files directly under it, and subpaths) at
    /// `/{id}/resolve/{revision}/{file}`. Any revision name is accepted, as is the repo's commit;
    /// every answer names the commit [`FakeHub::commit_of`] gives (a 40-hex string derived from
    /// the id). Also answers `/api/{models,datasets,spaces}/{id}[/revision/{rev}]` with
    /// `{"id", "sha", "siblings": [{"rfilename"}]}` (what hf-hub's `ApiRepo::info` reads).
    pub fn start(repos: Vec<RepoSpec>) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("local address of the listener");
        let shared = Arc::new(Shared {
            endpoint: format!("http://{addr}"),
            repos,
            redirects: Mutex::new(BTreeMap::new()),
            lfs_suffixes: Mutex::new(Vec::new()),
            fault: Mutex::new(FaultState {
                fault: Fault::None,
                remaining: None,
            }),
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name("fake-hub-accept".into())
            .spawn(move || accept_loop(listener, accept_shared))
            .expect("spawning the fake hub accept thread");
        FakeHub {
            shared,
            addr,
            accept: Some(accept),
        }
    }

    /// Legacy id redirect: requests for `/{from}/resolve/...` (and `/api/models/{from}...`) answer
    /// 307 with a RELATIVE `Location` to the same path under `/{to}`, as the real hub does for
    /// `bert-base-chinese` -> `google-bert/bert-base-chinese`. `to` must be a served repo.
    pub fn with_redirect(self, from: &str, to: &str) -> FakeHub {
        lock(&self.shared.redirects).insert(from.to_string(), to.to_string());
        self
    }

    /// Files whose name ends with `suffix` (e.g. `.safetensors`) are served the way the real hub
    /// serves LFS files: the resolve URL answers 302 with an ABSOLUTE `Location` on the same server
    /// (`/_lfs/{commit}/{file}`, standing in for the CDN), carrying `x-repo-commit`,
    /// `x-linked-etag` (the content hash: the blob name) and `etag` (a different, pointer hash);
    /// the CDN URL answers with the bytes, `etag` and `content-range`, but no `x-repo-commit`.
    /// Unlike the real CDN it is the same host, so ureq keeps sending `Authorization` to it.
    pub fn with_lfs_redirect(self, suffix: &str) -> FakeHub {
        lock(&self.shared.lfs_suffixes).push(suffix.to_string());
        self
    }

    /// Injects `f` into all later requests ([`Fault::None`] turns faults off).
    pub fn set_fault(&self, f: Fault) {
        *lock(&self.shared.fault) = FaultState {
            fault: f,
            remaining: None,
        };
    }

    /// Injects `f` into the next `times` requests it applies to, then answers normally again
    /// (e.g. `DropMidBody` once, to see a retry resume the `.part` file).
    pub fn set_fault_times(&self, f: Fault, times: usize) {
        *lock(&self.shared.fault) = FaultState {
            fault: f,
            remaining: Some(times),
        };
    }

    /// `"http://127.0.0.1:PORT"`, for `ApiBuilder::with_endpoint` or `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        self.shared.endpoint.clone()
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The 40-hex commit the hub reports for `repo_id` (after following a legacy-id redirect, so
    /// for `bert-base-chinese` it is the commit of `google-bert/bert-base-chinese`).
    pub fn commit_of(&self, repo_id: &str) -> String {
        commit_for(&self.shared.canonical_id(repo_id))
    }

    /// Log of `"GET /path"` lines received, in order (targets as sent, still percent-encoded).
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.log)
            .iter()
            .map(RecordedRequest::line)
            .collect()
    }

    /// Every request received, in order, with its headers.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).clone()
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the loop sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

/// The blob name hf-hub stores `content` under (`blobs/{etag}`): a deterministic 64-hex content
/// hash (not sha256, but shaped like the real hub's LFS etags).
pub fn content_etag(content: &[u8]) -> String {
    hex_digest(content, 64)
}

/// The 40-hex commit the hub reports for `repo_id` (no redirects applied).
pub fn commit_for(repo_id: &str) -> String {
    hex_digest(format!("commit:{repo_id}").as_bytes(), 40)
}

/// Locks `m`, ignoring poisoning (a panicking test thread must not break the others).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `len` hex digits derived from `data`: FNV-1a 64, then splitmix64 per 16 digits.
fn hex_digest(data: &[u8], len: usize) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= (data.len() as u64).rotate_left(32);
    let mut out = String::with_capacity(len + 16);
    let mut lane: u64 = 0;
    while out.len() < len {
        let _ = write!(
            out,
            "{:016x}",
            splitmix64(h ^ lane.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        );
        lane += 1;
    }
    out.truncate(len);
    out
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else {
            // E.g. out of file descriptors: back off instead of spinning.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let conn_shared = Arc::clone(&shared);
        let _ = std::thread::Builder::new()
            .name("fake-hub-conn".into())
            .spawn(move || handle_connection(stream, &conn_shared));
    }
}

/// What to send back.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send half the body, then close.
    drop_mid_body: bool,
}

impl Response {
    fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            drop_mid_body: false,
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    fn text(mut self, body: &str) -> Response {
        self.body = body.as_bytes().to_vec();
        self.header("content-type", "text/plain; charset=utf-8")
    }

    /// The hub's error answer: a status, `x-error-code` and a short message.
    fn error(status: u16, code: &str, message: &str) -> Response {
        Response::new(status)
            .header("x-error-code", code)
            .header("x-error-message", message)
            .text(message)
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn handle_connection(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    let Some(request) = parse_head(&head) else {
        let response = Response::error(400, "BadRequest", "bad request");
        let _ = send(&mut stream, &response, false);
        return;
    };
    lock(&shared.log).push(request.clone());
    let head_only = request.method == "HEAD";
    let response = shared.answer(&request);
    let _ = send(&mut stream, &response, head_only);
    let _ = stream.shutdown(Shutdown::Both);
}

/// Reads up to the blank line ending the request head; `None` on EOF, timeout or an oversized head.
fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Some(buf);
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn parse_head(head: &[u8]) -> Option<RecordedRequest> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    if method.is_empty() || !target.starts_with('/') {
        return None;
    }
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(RecordedRequest {
        method,
        target,
        headers,
    })
}

fn send(stream: &mut TcpStream, response: &Response, head_only: bool) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (name, value) in &response.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    let _ = write!(
        head,
        "content-length: {}\r\nconnection: close\r\n\r\n",
        response.body.len()
    );
    stream.write_all(head.as_bytes())?;
    if head_only {
        return stream.flush();
    }
    if response.drop_mid_body {
        stream.write_all(&response.body[..response.body.len() / 2])?;
        stream.flush()?;
        // Closing with bytes still owed: the client sees the body end early.
        return stream.shutdown(Shutdown::Both);
    }
    stream.write_all(&response.body)?;
    stream.flush()
}

/// Decodes `%XX` escapes; anything malformed is kept as is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A file path inside a repo that cannot leave the repo directory.
fn safe_relative(file: &str) -> Option<PathBuf> {
    let path = Path::new(file);
    if file.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(path.to_path_buf())
}

/// The part of a file a `Range` header asks for.
enum ByteRange {
    /// No (usable) Range header: the whole file, 200.
    Full,
    /// Inclusive first and last byte: 206.
    Part(usize, usize),
    /// 416.
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n`; anything else (multiple ranges, other units) is
/// ignored, as RFC 9110 allows.
fn parse_range(header: Option<&str>, size: usize) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return ByteRange::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return match last.parse::<usize>() {
            Ok(n) if n > 0 && size > 0 => ByteRange::Part(size - n.min(size), size - 1),
            Ok(_) => ByteRange::Unsatisfiable,
            Err(_) => ByteRange::Full,
        };
    }
    let Ok(first) = first.parse::<usize>() else {
        return ByteRange::Full;
    };
    let last = if last.is_empty() {
        usize::MAX
    } else {
        match last.parse::<usize>() {
            Ok(l) if l >= first => l,
            _ => return ByteRange::Full,
        }
    };
    if first >= size {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Part(first, last.min(size - 1))
}

/// All files under `dir`, as `/`-separated relative paths, sorted.
fn list_files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(base, &path, out);
            } else if let Ok(rel) = path.strip_prefix(base) {
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Shared {
    /// `id` after a legacy-id redirect, if any.
    fn canonical_id(&self, id: &str) -> String {
        lock(&self.redirects)
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }

    fn repo(&self, id: &str) -> Option<&RepoSpec> {
        self.repos.iter().find(|r| r.id == id)
    }

    /// Takes one use of the current fault if `applies` says it concerns this answer.
    fn claim_fault(&self, applies: impl Fn(Fault) -> bool) -> Fault {
        let mut state = lock(&self.fault);
        if state.fault == Fault::None || !applies(state.fault) {
            return Fault::None;
        }
        let fault = state.fault;
        if let Some(remaining) = state.remaining.as_mut() {
            *remaining -= 1;
            if *remaining == 0 {
                state.fault = Fault::None;
                state.remaining = None;
            }
        }
        fault
    }

    fn answer(&self, request: &RecordedRequest) -> Response {
        match self.claim_fault(|f| matches!(f, Fault::Status500 | Fault::Status(_))) {
            Fault::Status500 => {
                return Response::error(500, "InternalError", "injected fault: 500");
            }
            Fault::Status(code) => {
                let error_code = match code {
                    401 | 403 => "GatedRepo",
                    429 => "RateLimited",
                    _ => "InjectedFault",
                };
                return Response::error(code, error_code, &format!("injected fault: {code}"));
            }
            _ => {}
        }
        if request.method != "GET" && request.method != "HEAD" {
            return Response::error(405, "MethodNotAllowed", "only GET and HEAD");
        }
        let path = request.target.split('?').next().unwrap_or_default();
        if let Some(rest) = path.strip_prefix(LFS_PREFIX) {
            return self.answer_lfs(rest, request);
        }
        if let Some(rest) = path.strip_prefix("/api/") {
            return self.answer_api(rest);
        }
        match path[1..].split_once("/resolve/") {
            Some((id, rest)) => self.answer_resolve(&percent_decode(id), rest, request),
            None => Response::error(404, "NotFound", "no such route on the fake hub"),
        }
    }

    /// `/{id}/resolve/{revision}/{file}`; `rest` is `{revision}/{file}`, still encoded.
    fn answer_resolve(&self, id: &str, rest: &str, request: &RecordedRequest) -> Response {
        if let Some(to) = lock(&self.redirects).get(id) {
            return Response::new(307)
                .header("location", format!("/{to}/resolve/{rest}"))
                .text("Temporary Redirect");
        }
        let Some(repo) = self.repo(id) else {
            return Response::error(404, "RepositoryNotFound", "Repository not found");
        };
        let Some((_revision, raw_file)) = rest.split_once('/') else {
            return Response::error(404, "EntryNotFound", "Entry not found");
        };
        let file = percent_decode(raw_file);
        let commit = commit_for(&repo.id);
        let Some(content) = read_repo_file(repo, &file) else {
            return Response::error(404, "EntryNotFound", "Entry not found");
        };
        let etag = content_etag(&content);
        let lfs = lock(&self.lfs_suffixes)
            .iter()
            .any(|s| file.ends_with(s.as_str()));
        if lfs {
            let pointer = format!("version https://git-lfs.github.com/spec/v1\noid {etag}\n");
            return Response::new(302)
                .header(
                    "location",
                    format!("{}{LFS_PREFIX}{commit}/{raw_file}", self.endpoint),
                )
                .header(
                    "etag",
                    format!("\"{}\"", hex_digest(pointer.as_bytes(), 40)),
                )
                .header("x-linked-etag", format!("\"{etag}\""))
                .header("x-linked-size", content.len().to_string())
                .header("x-repo-commit", commit)
                .text("Found");
        }
        self.serve_bytes(content, request)
            .header("etag", format!("\"{etag}\""))
            .header("x-repo-commit", commit)
    }

    /// `/_lfs/{commit}/{file}`: the stand-in CDN for [`FakeHub::with_lfs_redirect`].
    fn answer_lfs(&self, rest: &str, request: &RecordedRequest) -> Response {
        let Some((commit, file)) = rest.split_once('/') else {
            return Response::error(404, "NotFound", "no such object");
        };
        let file = percent_decode(file);
        let repo = self.repos.iter().find(|r| commit_for(&r.id) == commit);
        let Some(content) = repo.and_then(|r| read_repo_file(r, &file)) else {
            return Response::error(404, "NotFound", "no such object");
        };
        let etag = content_etag(&content);
        self.serve_bytes(content, request)
            .header("etag", format!("\"{etag}\""))
    }

    /// `api/{models,datasets,spaces}/{id}[/revision/{rev}]`, `rest` without the `/api/`.
    fn answer_api(&self, rest: &str) -> Response {
        let Some((kind, rest)) = rest.split_once('/') else {
            return Response::error(404, "NotFound", "no such route on the fake hub");
        };
        let prefix = match kind {
            "models" => "",
            "datasets" => "datasets/",
            "spaces" => "spaces/",
            _ => return Response::error(404, "NotFound", "no such route on the fake hub"),
        };
        let (id, tail) = match rest.split_once("/revision/") {
            Some((id, rev)) => (percent_decode(id), format!("/revision/{rev}")),
            None => (percent_decode(rest), String::new()),
        };
        let full_id = format!("{prefix}{id}");
        if let Some(to) = lock(&self.redirects).get(&full_id) {
            let to = to.strip_prefix(prefix).unwrap_or(to);
            return Response::new(307)
                .header("location", format!("/api/{kind}/{to}{tail}"))
                .text("Temporary Redirect");
        }
        let Some(repo) = self.repo(&full_id) else {
            return Response::error(404, "RepositoryNotFound", "Repository not found");
        };
        let siblings: Vec<String> = list_files(&repo.dir)
            .into_iter()
            .filter(|f| !repo.hidden.contains(f))
            .map(|f| format!("{{\"rfilename\":{}}}", json_string(&f)))
            .collect();
        let body = format!(
            "{{\"id\":{},\"modelId\":{},\"sha\":\"{}\",\"siblings\":[{}]}}",
            json_string(&id),
            json_string(&id),
            commit_for(&repo.id),
            siblings.join(",")
        );
        let mut response = Response::new(200).header("content-type", "application/json");
        response.body = body.into_bytes();
        response
    }

    /// 200/206/416 for `content` according to the request's Range, with the body fault applied.
    fn serve_bytes(&self, content: Vec<u8>, request: &RecordedRequest) -> Response {
        let size = content.len();
        let ignore_range = request.header("range").is_some()
            && self.claim_fault(|f| f == Fault::IgnoreRange) == Fault::IgnoreRange;
        let range = if ignore_range {
            ByteRange::Full
        } else {
            parse_range(request.header("range"), size)
        };
        let (status, body, content_range) = match range {
            ByteRange::Full => (200, content, None),
            ByteRange::Part(first, last) => (
                206,
                content[first..=last].to_vec(),
                Some(format!("bytes {first}-{last}/{size}")),
            ),
            ByteRange::Unsatisfiable => {
                return Response::error(416, "RangeNotSatisfiable", "range not satisfiable")
                    .header("content-range", format!("bytes */{size}"));
            }
        };
        let drop_mid_body = body.len() >= 2
            && request.method == "GET"
            && self.claim_fault(|f| f == Fault::DropMidBody) == Fault::DropMidBody;
        let mut response = Response::new(status)
            .header("content-type", "application/octet-stream")
            .header("accept-ranges", "bytes");
        if let Some(range) = content_range {
            response = response.header("content-range", range);
        }
        response.body = body;
        response.drop_mid_body = drop_mid_body;
        response
    }
}

/// The bytes of `file` in `repo`, unless hidden, missing or outside the repo directory.
fn read_repo_file(repo: &RepoSpec, file: &str) -> Option<Vec<u8>> {
    if repo.hidden.iter().any(|h| h == file) {
        return None;
    }
    let path = repo.dir.join(safe_relative(file)?);
    if !path.is_file() {
        return None;
    }
    std::fs::read(path).ok()
}
