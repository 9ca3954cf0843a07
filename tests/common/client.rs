//! A raw HTTP/1.1 client over `TcpStream`: sends any bytes, reads Content-Length,
//! chunked and close-delimited responses, keeps connections alive, pipelines.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::text;

/// A response as read off the wire.
#[derive(Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = self.text();
        let shown: String = body.chars().take(300).collect();
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field("body", &shown)
            .finish()
    }
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        text(&self.body)
    }
}

/// Reads HTTP/1.1 responses (Content-Length, chunked, or until close) off a stream.
pub struct Reader<R> {
    r: R,
    buf: Vec<u8>,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(r: R) -> Self {
        Reader { r, buf: Vec::new() }
    }

    /// Reads more bytes; `Ok(0)` at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        self.buf.reserve(64 * 1024);
        self.r.read_buf(&mut self.buf).await
    }

    async fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let l = text(&self.buf[..i]);
                self.buf.drain(..i + 2);
                return Ok(l);
            }
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    async fn exact(&mut self, n: usize, out: &mut Vec<u8>) -> io::Result<()> {
        let take = n.min(self.buf.len());
        out.extend_from_slice(&self.buf[..take]);
        self.buf.drain(..take);
        let mut left = n - take;
        while left > 0 {
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let take = left.min(self.buf.len());
            out.extend_from_slice(&self.buf[..take]);
            self.buf.drain(..take);
            left -= take;
        }
        Ok(())
    }

    /// Reads one response, skipping 1xx interim responses. An end of stream before
    /// any byte of it is an `UnexpectedEof` error.
    pub async fn read_response(&mut self) -> io::Result<Response> {
        loop {
            let status_line = self.line().await?;
            let mut parts = status_line.splitn(3, ' ');
            let version = parts.next().unwrap_or("");
            if !version.starts_with("HTTP/1.") {
                return Err(invalid(format!("bad status line {status_line:?}")));
            }
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
            let mut headers = Vec::new();
            loop {
                let l = self.line().await?;
                if l.is_empty() {
                    break;
                }
                let (k, v) = l
                    .split_once(':')
                    .ok_or_else(|| invalid(format!("bad header line {l:?}")))?;
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
            if (100..200).contains(&status) {
                continue;
            }
            let mut resp = Response {
                status,
                headers,
                body: Vec::new(),
            };
            let chunked = resp
                .header("transfer-encoding")
                .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
            if status == 204 || status == 304 {
            } else if chunked {
                loop {
                    let size_line = self.line().await?;
                    let size =
                        usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                            .map_err(|_| invalid(format!("bad chunk size {size_line:?}")))?;
                    if size == 0 {
                        while !self.line().await?.is_empty() {}
                        break;
                    }
                    self.exact(size, &mut resp.body).await?;
                    if !self.line().await?.is_empty() {
                        return Err(invalid("chunk not followed by CRLF"));
                    }
                }
            } else if let Some(len) = resp.header("content-length") {
                let len: usize = len
                    .parse()
                    .map_err(|_| invalid(format!("bad content-length {len:?}")))?;
                self.exact(len, &mut resp.body).await?;
            } else {
                while self.fill().await? > 0 {}
                resp.body = std::mem::take(&mut self.buf);
            }
            return Ok(resp);
        }
    }
}

/// One client connection that can carry several requests (keep-alive, pipelining).
pub struct Conn {
    reader: Reader<TcpStream>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let s = TcpStream::connect(addr).await?;
        let _ = s.set_nodelay(true); // fails on a connection already reset: fine
        Ok(Conn {
            reader: Reader::new(s),
        })
    }

    pub async fn send(&mut self, raw: &[u8]) -> io::Result<()> {
        self.reader.r.write_all(raw).await?;
        self.reader.r.flush().await
    }

    pub async fn read_response(&mut self) -> io::Result<Response> {
        self.reader.read_response().await
    }

    /// `GET path` on this connection, keeping it open.
    pub async fn get(&mut self, path: &str) -> io::Result<Response> {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n\r\n").as_bytes())
            .await?;
        self.read_response().await
    }

    /// Waits (at most `within`) for the peer to close: true when the stream ended or
    /// was reset before any byte arrived, false when bytes arrived or nothing
    /// happened in time.
    pub async fn closed_without_bytes(&mut self, within: Duration) -> bool {
        if !self.reader.buf.is_empty() {
            return false;
        }
        let mut b = [0u8; 1024];
        match tokio::time::timeout(within, self.reader.r.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        }
    }

    /// Reads one head (status line and headers, any status, 1xx included) and
    /// returns it as text without its final empty line; bytes after it stay buffered.
    pub async fn read_head(&mut self) -> io::Result<String> {
        let mut lines = Vec::new();
        loop {
            let l = self.reader.line().await?;
            if l.is_empty() {
                return Ok(lines.join("\r\n"));
            }
            lines.push(l);
        }
    }

    /// Reads exactly `n` bytes (buffered ones first).
    pub async fn read_bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.reader.exact(n, &mut out).await?;
        Ok(out)
    }

    pub fn into_inner(self) -> TcpStream {
        self.reader.r
    }
}

/// Connects to a listening `addr`, sends a request and reports whether the load
/// balancer closed (or reset) the connection without sending a byte. A connect that
/// is refused does not count: the port must be listening.
pub async fn closed_at_accept(addr: SocketAddr) -> bool {
    let mut c = match Conn::connect(addr).await {
        Ok(c) => c,
        Err(e) => {
            return matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
            );
        }
    };
    // The write may already fail if the close was quick; that is fine.
    let _ = c
        .send(b"GET /rejected HTTP/1.1\r\nHost: test.local\r\n\r\n")
        .await;
    c.closed_without_bytes(Duration::from_secs(3)).await
}

/// Sends `raw` on a new connection and reads one response.
pub async fn http_request(addr: SocketAddr, raw: &[u8]) -> io::Result<Response> {
    let mut c = Conn::connect(addr).await?;
    c.send(raw).await?;
    c.read_response().await
}

/// `GET path` on a new connection; panics unless it is answered.
pub async fn get(addr: SocketAddr, path: &str) -> Response {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n");
    http_request(addr, raw.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"))
}

/// How a streamed request body is framed.
#[derive(Clone, Copy, Debug)]
pub enum Framing {
    ContentLength,
    /// Chunks of varying sizes around `chunk` bytes.
    Chunked {
        chunk: usize,
    },
}

/// Sends `head` (without its final blank line and framing header) and `body`, writing
/// and reading at the same time so a streaming echo cannot deadlock, and reads the
/// response.
pub async fn exchange_streaming(
    addr: SocketAddr,
    head: &str,
    body: Vec<u8>,
    framing: Framing,
) -> io::Result<Response> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let (r, mut w) = s.into_split();
    let head = match framing {
        Framing::ContentLength => format!("{head}Content-Length: {}\r\n\r\n", body.len()),
        Framing::Chunked { .. } => format!("{head}Transfer-Encoding: chunked\r\n\r\n"),
    };
    let writer = tokio::spawn(async move {
        w.write_all(head.as_bytes()).await?;
        match framing {
            Framing::ContentLength => {
                for part in body.chunks(256 * 1024) {
                    w.write_all(part).await?;
                }
            }
            Framing::Chunked { chunk } => {
                let mut pos = 0;
                let mut k = 0;
                while pos < body.len() {
                    // Vary the chunk sizes so no boundary lines up with a buffer.
                    let size = (chunk + (k * 7919) % chunk.max(1)).min(body.len() - pos);
                    w.write_all(format!("{size:x}\r\n").as_bytes()).await?;
                    w.write_all(&body[pos..pos + size]).await?;
                    w.write_all(b"\r\n").await?;
                    pos += size;
                    k += 1;
                }
                w.write_all(b"0\r\n\r\n").await?;
            }
        }
        w.flush().await?;
        Ok::<_, io::Error>(w)
    });
    let mut reader = Reader::new(r);
    let resp = reader.read_response().await;
    let w = writer.await.expect("writer task")?;
    drop(w);
    resp
}
