//! HTTP/1: framing over httparse (pure), the chunked codec, the client-side
//! connection loop, the upstream keep-alive pool and redirects.

pub mod chunked;
pub mod conn;
pub mod desync;
pub mod head;
mod park;
pub mod pool;
pub mod redirect;
pub mod trace;
