//! Desync mitigation (SPEC §3, ALB's http_desync_guardian classes): every
//! request is compliant, acceptable, ambiguous or severe, with ALB's reason
//! name, and the listener's mode decides what happens to it.
//!
//! Above every mode stands the framing rule: a request whose length the
//! balancer and a target could read differently never reaches a target. The head
//! parser refuses those (400/501) in every mode, monitor included, and
//! normalises `Transfer-Encoding` + `Content-Length` (the Content-Length is
//! dropped, both connections close after the exchange).

use super::head::{BodyFraming, Method, RequestError, RequestHead, Version};
use crate::snapshot::DesyncMode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Compliant,
    Acceptable,
    Ambiguous,
    Severe,
}

impl Class {
    /// The metric label and access-log word.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Compliant => "compliant",
            Class::Acceptable => "acceptable",
            Class::Ambiguous => "ambiguous",
            Class::Severe => "severe",
        }
    }
}

/// A classification with ALB's reason name (`""` when compliant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub class: Class,
    pub reason: &'static str,
}

impl Verdict {
    pub const COMPLIANT: Verdict = Verdict {
        class: Class::Compliant,
        reason: "",
    };

    fn worse(self, class: Class, reason: &'static str) -> Verdict {
        if class > self.class {
            Verdict { class, reason }
        } else {
            self
        }
    }
}

/// What the connection loop does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Allow,
    /// Allow, then close both the client and the target connection.
    AllowThenClose,
    /// Answer 400 and close.
    Block,
}

/// ALB's table: monitor allows everything; defensive blocks severe and closes
/// after ambiguous; strictest blocks everything not compliant.
pub fn act(mode: DesyncMode, class: Class) -> Act {
    match (mode, class) {
        (_, Class::Compliant) => Act::Allow,
        (DesyncMode::Monitor, _) => Act::Allow,
        (DesyncMode::Defensive, Class::Acceptable) => Act::Allow,
        (DesyncMode::Defensive, Class::Ambiguous) => Act::AllowThenClose,
        (DesyncMode::Defensive, Class::Severe) => Act::Block,
        (DesyncMode::Strictest, _) => Act::Block,
    }
}

/// Classifies a request the parser accepted.
pub fn classify(buf: &[u8], head: &RequestHead) -> Verdict {
    let mut v = Verdict::COMPLIANT;
    let get_or_head = matches!(head.method_kind, Method::Get | Method::Head);
    match head.framing {
        BodyFraming::ContentLength(0) if get_or_head => {
            v = v.worse(Class::Acceptable, "GetHeadZeroContentLength")
        }
        BodyFraming::ContentLength(_) if get_or_head => {
            v = v.worse(Class::Ambiguous, "UndefinedContentLengthSemantics")
        }
        BodyFraming::Chunked if get_or_head => {
            v = v.worse(Class::Ambiguous, "UndefinedTransferEncodingSemantics")
        }
        _ => {}
    }
    // HTTP/1.0 has no Transfer-Encoding: how a server frames such a body varies.
    if head.version == Version::Http10 && head.framing == BodyFraming::Chunked {
        v = v.worse(Class::Ambiguous, "UndefinedTransferEncodingSemantics");
    }
    for (_, value) in &head.headers {
        let bytes = buf.get(value.clone()).unwrap_or_default();
        if bytes
            .iter()
            .any(|b| *b >= 0x80 || (*b < 0x20 && *b != b'\t') || *b == 0x7f)
        {
            v = v.worse(Class::Acceptable, "NonCompliantHeader");
            break;
        }
    }
    if head.suspicious_header {
        v = v.worse(Class::Ambiguous, "SuspiciousHeader");
    }
    if head.duplicate_content_length {
        v = v.worse(Class::Ambiguous, "DuplicateContentLength");
    }
    if head.te_with_cl {
        v = v.worse(Class::Ambiguous, "BothTeClPresent");
    }
    v
}

/// The classification of a request the parser refused, when it is one of ALB's
/// desync reasons (other refusals, such as a missing Host, are not desync).
pub fn classify_error(e: RequestError) -> Option<Verdict> {
    let reason = match e {
        RequestError::BadRequest(r) | RequestError::NotImplemented(r) => r,
        _ => return None,
    };
    let class = match reason {
        "BadContentLength"
        | "BadHeader"
        | "BadTransferEncoding"
        | "BadUri"
        | "BadMethod"
        | "BadVersion"
        | "MultipleContentLength"
        | "MultipleTransferEncodingChunked" => Class::Severe,
        "BothTeClPresent"
        | "DuplicateContentLength"
        | "SuspiciousHeader"
        | "EmptyHeader"
        | "AmbiguousUri" => Class::Ambiguous,
        "SpaceInUri" | "NonCompliantHeader" | "NonCompliantVersion" => Class::Acceptable,
        _ => return None,
    };
    Some(Verdict { class, reason })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{Limits, parse_request};

    fn verdict(raw: &[u8], reject_te_with_cl: bool) -> Verdict {
        let mut h = RequestHead::default();
        let limits = Limits {
            reject_te_with_cl,
            ..Limits::default()
        };
        match parse_request(raw, &limits, &mut h) {
            Ok(Some(())) => classify(raw, &h),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn classes_and_reasons() {
        assert_eq!(
            verdict(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
            Verdict::COMPLIANT
        );
        assert_eq!(
            verdict(
                b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
                true
            ),
            Verdict {
                class: Class::Acceptable,
                reason: "GetHeadZeroContentLength"
            }
        );
        assert_eq!(
            verdict(
                b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
                true
            )
            .reason,
            "UndefinedContentLengthSemantics"
        );
        assert_eq!(
            verdict(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", true),
            Verdict { class: Class::Ambiguous, reason: "DuplicateContentLength" }
        );
        assert_eq!(
            verdict(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", false),
            Verdict { class: Class::Ambiguous, reason: "BothTeClPresent" }
        );
        assert_eq!(
            verdict(
                b"GET / HTTP/1.1\r\nHost: a\r\nX-A: caf\xc3\xa9\r\n\r\n",
                true
            )
            .reason,
            "NonCompliantHeader"
        );
        // HTTP/1.0 has no Transfer-Encoding; a lower-case method is a compliant token.
        assert_eq!(
            verdict(
                b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                true
            ),
            Verdict {
                class: Class::Ambiguous,
                reason: "UndefinedTransferEncodingSemantics"
            }
        );
        assert_eq!(
            verdict(b"get / HTTP/1.1\r\nHost: a\r\n\r\n", true),
            Verdict::COMPLIANT
        );
    }

    #[test]
    fn the_table() {
        use Act::*;
        use Class::*;
        use DesyncMode::*;
        let want = [
            (Monitor, [Allow, Allow, Allow, Allow]),
            (Defensive, [Allow, Allow, AllowThenClose, Block]),
            (Strictest, [Allow, Block, Block, Block]),
        ];
        for (mode, acts) in want {
            for (class, a) in [Compliant, Acceptable, Ambiguous, Severe]
                .into_iter()
                .zip(acts)
            {
                assert_eq!(act(mode, class), a, "{mode:?} {class:?}");
            }
        }
        assert_eq!(
            classify_error(RequestError::BadRequest("MultipleContentLength")).map(|v| v.class),
            Some(Severe)
        );
        assert_eq!(
            classify_error(RequestError::BadRequest("MissingHost")),
            None
        );
        assert_eq!(classify_error(RequestError::MethodNotAllowed), None);
    }
}
