//! Tests for request and response heads, split by concern; helpers shared here.

use super::*;

mod props;
mod requests;
mod responses;
mod tables;
mod writers;

/// A request from its lines: each gets CRLF, then the final empty line.
fn req(lines: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    for l in lines {
        b.extend_from_slice(l.as_bytes());
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(b"\r\n");
    b
}

fn parse_with(raw: &[u8], limits: &Limits) -> Result<RequestHead, RequestError> {
    let mut head = RequestHead::default();
    match parse_request(raw, limits, &mut head) {
        Ok(Some(())) => Ok(head),
        Ok(None) => panic!("incomplete: {:?}", text(raw)),
        Err(e) => Err(e),
    }
}

fn parse(raw: &[u8]) -> Result<RequestHead, RequestError> {
    parse_with(raw, &Limits::default())
}

fn ok(raw: &[u8]) -> RequestHead {
    parse(raw).unwrap_or_else(|e| panic!("{:?} refused: {e:?}", text(raw)))
}

fn resp(raw: &[u8], head_request: bool) -> Result<ResponseHead, ResponseError> {
    let mut head = ResponseHead::default();
    match parse_response(raw, head_request, &mut head) {
        Ok(Some(())) => Ok(head),
        Ok(None) => panic!("incomplete: {:?}", text(raw)),
        Err(e) => Err(e),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An X-Forwarded-For header line with `n` addresses.
fn xff(n: usize) -> String {
    let list: Vec<String> = (0..n).map(|i| format!("10.0.0.{i}")).collect();
    format!("X-Forwarded-For: {}", list.join(", "))
}
