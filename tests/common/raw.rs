//! A raw-socket target for the framing and error tests: it records every byte it
//! receives, parses requests itself (httparse; Transfer-Encoding chunked, else
//! Content-Length, else no body) and answers according to its [`Mode`]. `GET /hc`
//! (the health check) is always answered 200 and left out of the request list.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// How a [`RawBackend`] answers each request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// This status with body `ok`, after reading the whole request (keep-alive).
    Status(u16),
    /// 200 as soon as the head arrived, then reads (and records) the body.
    Early,
    /// Reads forever, never answers.
    Silent,
    /// Closes the connection once a request head arrived, without answering.
    Close,
    /// Answers bytes that are not HTTP, then closes.
    Garbage,
    /// Sends part of a response head, then resets the connection.
    ResetInHead,
    /// Sends a 200 head (Content-Length 100000) and 1000 body bytes, then resets.
    ResetInBody,
    /// A 200 whose head is over 40 KiB.
    HugeHead,
    /// `Upgrade: websocket`: 101, then `welcome\n`, then echoes every byte; else 200.
    WebSocket,
    /// 200 with body `ok`, then 50 ms later an unsolicited second response
    /// (body `poisoned`) on the same connection.
    ExtraResponse,
    /// 200 with `Transfer-Encoding: gzip, chunked` and [`GZIP_HELLO`] in two chunks
    /// (keep-alive).
    GzipChunked,
}

/// `hello\n` gzipped (`printf 'hello\n' | gzip -n`): the body [`Mode::GzipChunked`]
/// sends in its transfer coding.
pub const GZIP_HELLO: [u8; 26] = [
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0xe7,
    0x02, 0x00, 0x20, 0x30, 0x3a, 0x36, 0x06, 0x00, 0x00, 0x00,
];

/// A request as the raw backend parsed it.
#[derive(Clone, Debug)]
pub struct RawRequest {
    /// Index of the connection it came on.
    pub conn: usize,
    pub method: String,
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Vec<(String, String)>,
    /// The decoded body (what was read of it if the connection ended first).
    pub body: Vec<u8>,
    /// The head exactly as received.
    pub head: String,
    /// The body was read to the end its head declares (false: the connection ended
    /// first).
    pub complete: bool,
}

impl RawRequest {
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

#[derive(Default)]
struct RawState {
    /// Bytes received, per connection.
    received: Mutex<Vec<Vec<u8>>>,
    /// Per connection: the peer closed it (read returned 0 or failed).
    eof: Mutex<Vec<bool>>,
    requests: Mutex<Vec<RawRequest>>,
    /// Heads httparse refused.
    unparsable: AtomicUsize,
}

pub struct RawBackend {
    pub addr: SocketAddr,
    pub mode: Mode,
    state: Arc<RawState>,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl RawBackend {
    pub async fn start(mode: Mode) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(RawState::default());
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = tokio::spawn({
            let (state, conns) = (state.clone(), conns.clone());
            async move {
                loop {
                    let Ok((s, _)) = listener.accept().await else {
                        continue;
                    };
                    let id = {
                        let mut r = state.received.lock().unwrap();
                        r.push(Vec::new());
                        state.eof.lock().unwrap().push(false);
                        r.len() - 1
                    };
                    let h = tokio::spawn(serve(s, id, mode, state.clone()));
                    conns.lock().unwrap().push(h.abort_handle());
                }
            }
        });
        RawBackend {
            addr,
            mode,
            state,
            accept,
            conns,
        }
    }

    /// Requests other than health checks, in arrival order.
    pub fn requests(&self) -> Vec<RawRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// Every byte received, all connections in order of their opening.
    pub fn received(&self) -> Vec<u8> {
        self.state.received.lock().unwrap().concat()
    }

    /// Whether the peer closed connection `conn`.
    pub fn conn_closed(&self, conn: usize) -> bool {
        self.state
            .eof
            .lock()
            .unwrap()
            .get(conn)
            .copied()
            .unwrap_or(false)
    }

    /// Request heads httparse could not parse.
    pub fn unparsable(&self) -> usize {
        self.state.unparsable.load(Ordering::SeqCst)
    }

    pub fn stop(&self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads more bytes into `buf`, recording them; `false` at end of stream.
async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>, id: usize, st: &RawState) -> bool {
    let mut tmp = [0u8; 64 * 1024];
    match s.read(&mut tmp).await {
        Ok(n) if n > 0 => {
            buf.extend_from_slice(&tmp[..n]);
            st.received.lock().unwrap()[id].extend_from_slice(&tmp[..n]);
            true
        }
        _ => {
            st.eof.lock().unwrap()[id] = true;
            false
        }
    }
}

enum Framing {
    None,
    Length(usize),
    Chunked,
}

struct Head {
    len: usize,
    req: RawRequest,
    framing: Framing,
}

fn parse_head(buf: &[u8], id: usize) -> Result<Option<Head>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut r = httparse::Request::new(&mut headers);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into()))
        .collect();
    let te = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
        .map(|(_, v)| v.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(",");
    let cl = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok());
    let framing = if te.rsplit(',').next().is_some_and(|c| c.trim() == "chunked") {
        Framing::Chunked
    } else {
        cl.map_or(Framing::None, Framing::Length)
    };
    let req = RawRequest {
        conn: id,
        method: r.method.unwrap_or("").to_string(),
        target: r.path.unwrap_or("").to_string(),
        version: r.version.unwrap_or(1),
        headers,
        body: Vec::new(),
        head: String::from_utf8_lossy(&buf[..len]).into(),
        complete: matches!(framing, Framing::None),
    };
    Ok(Some(Head { len, req, framing }))
}

/// Decodes a complete chunked body at the start of `buf`: (bytes used, data), or
/// `None` when more bytes are needed.
fn dechunk(buf: &[u8]) -> Option<(usize, Vec<u8>)> {
    let mut pos = 0;
    let mut data = Vec::new();
    loop {
        let eol = buf[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
        let line = String::from_utf8_lossy(&buf[pos..eol]);
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        pos = eol + 2;
        if size == 0 {
            // Trailers up to an empty line.
            loop {
                let eol = buf[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
                let empty = eol == pos;
                pos = eol + 2;
                if empty {
                    return Some((pos, data));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return None;
        }
        data.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}

fn reset(s: TcpStream) {
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    drop(s);
}

async fn serve(mut s: TcpStream, id: usize, mode: Mode, st: Arc<RawState>) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let head = loop {
            match parse_head(&buf, id) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(()) => {
                    st.unparsable.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
            if !fill(&mut s, &mut buf, id, &st).await {
                return;
            }
        };
        buf.drain(..head.len);
        let mut req = head.req;
        let hc = req.target == "/hc";
        let early = mode == Mode::Early && !hc;
        if early && s.write_all(&status_response(200)).await.is_err() {
            return;
        }
        if !hc && matches!(mode, Mode::Close | Mode::Garbage | Mode::ResetInHead) {
            st.requests.lock().unwrap().push(req.clone());
            match mode {
                Mode::Close => return,
                Mode::Garbage => {
                    let _ = s
                        .write_all(b"SSH-2.0-OpenSSH_9.6\r\nnot http at all\r\n\r\n")
                        .await;
                    return;
                }
                Mode::ResetInHead => {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return reset(s);
                }
                _ => {}
            }
        }
        // The body.
        let mut complete = true;
        match head.framing {
            Framing::None => {}
            Framing::Length(n) => {
                while buf.len() < n {
                    if !fill(&mut s, &mut buf, id, &st).await {
                        complete = false;
                        break;
                    }
                }
                let take = n.min(buf.len());
                req.body = buf.drain(..take).collect();
            }
            Framing::Chunked => loop {
                if let Some((used, data)) = dechunk(&buf) {
                    buf.drain(..used);
                    req.body = data;
                    break;
                }
                if !fill(&mut s, &mut buf, id, &st).await {
                    complete = false;
                    break;
                }
            },
        }
        let websocket = req
            .header_all("upgrade")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("websocket"));
        req.complete = complete;
        if !hc {
            st.requests.lock().unwrap().push(req);
        }
        if !complete {
            return;
        }
        let answer = match mode {
            _ if hc => status_response(200),
            Mode::Status(code) => status_response(code),
            Mode::Early => continue,
            Mode::Silent => {
                while fill(&mut s, &mut buf, id, &st).await {}
                return;
            }
            Mode::ResetInBody => {
                let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
                r.extend_from_slice(&[b'x'; 1000]);
                let _ = s.write_all(&r).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                return reset(s);
            }
            Mode::GzipChunked => {
                let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec();
                for part in GZIP_HELLO.chunks(13) {
                    r.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                    r.extend_from_slice(part);
                    r.extend_from_slice(b"\r\n");
                }
                r.extend_from_slice(b"0\r\n\r\n");
                r
            }
            Mode::HugeHead => {
                let mut r = b"HTTP/1.1 200 OK\r\n".to_vec();
                for i in 0..40 {
                    r.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "p".repeat(1024)).as_bytes());
                }
                r.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
                r
            }
            Mode::WebSocket if websocket => {
                let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                            Connection: Upgrade\r\n\
                            Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nwelcome\n";
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    if !buf.is_empty() {
                        if s.write_all(&buf).await.is_err() {
                            return;
                        }
                        buf.clear();
                    }
                    if !fill(&mut s, &mut buf, id, &st).await {
                        return;
                    }
                }
            }
            _ => status_response(200),
        };
        if s.write_all(&answer).await.is_err() {
            return;
        }
        if mode == Mode::ExtraResponse && !hc {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let stray = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Backend: raw\r\n\r\npoisoned";
            if s.write_all(stray).await.is_err() {
                return;
            }
        }
    }
}

fn status_response(code: u16) -> Vec<u8> {
    format!("HTTP/1.1 {code} Status\r\nContent-Length: 2\r\nX-Backend: raw\r\n\r\nok").into_bytes()
}
