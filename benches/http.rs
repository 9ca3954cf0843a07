//! Criterion benches of the HTTP engine's per-request work outside rule matching
//! (benches/rules.rs): request-head parsing, writing the head sent upstream,
//! response-head parsing, target picking for each algorithm, and compiling a
//! 1,000-rule config the way a reload does (goal: a reload applied in ≤ 50 ms).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fulcrum::balancer::pick;
use fulcrum::http::head::{self, ForwardInfo, Limits, RequestHead, ResponseHead};
use fulcrum::live::Live;
use fulcrum::router::rulegen;
use fulcrum::snapshot::XffMode;
use fulcrum::targets::{HEALTHY, Registry};

/// What wrk sends, and what a browser sends.
const SMALL: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18083\r\n\r\n";
const BROWSER: &[u8] = b"GET /static/app/main.3f9a1c.js?v=12&lang=en HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: */*\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://shop.example.com/cart\r\n\
Cookie: session=8c1f0e2a9b7d4c6e; FULCRUMLB=abcdef0123456789; theme=dark\r\n\
Sec-Fetch-Dest: script\r\n\
Sec-Fetch-Mode: no-cors\r\n\
Sec-Fetch-Site: same-origin\r\n\
Connection: keep-alive\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\
Date: Thu, 03 Dec 2026 10:00:00 GMT\r\nContent-Type: text/plain\r\n\
Content-Length: 10\r\nConnection: keep-alive\r\n\r\nbackend-1\n";

fn bench_heads(c: &mut Criterion) {
    let mut group = c.benchmark_group("head");
    let limits = Limits::default();
    let fwd = ForwardInfo {
        client_ip: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        proto: "http",
        port: 80,
        xff: XffMode::Append,
    };
    for (name, raw) in [("small", SMALL), ("browser", BROWSER)] {
        let mut req = RequestHead::default();
        group.bench_function(BenchmarkId::new("parse_request", name), |b| {
            b.iter(|| {
                req.clear();
                let r = head::parse_request(black_box(raw), &limits, &mut req);
                assert!(matches!(r, Ok(Some(()))));
                black_box(req.head_len)
            })
        });
        let mut out = Vec::with_capacity(4096);
        let extra = [(
            "X-Amzn-Trace-Id",
            "Root=1-67891233-abcdef012345678912345678",
        )];
        group.bench_function(BenchmarkId::new("write_upstream_request", name), |b| {
            b.iter(|| {
                out.clear();
                head::write_upstream_request(raw, &req, &fwd, &extra, &mut out);
                black_box(out.len())
            })
        });
    }
    let mut resp = ResponseHead::default();
    group.bench_function("parse_response", |b| {
        b.iter(|| {
            resp.clear();
            let r = head::parse_response(black_box(RESPONSE), false, &mut resp);
            assert!(matches!(r, Ok(Some(()))));
            black_box(resp.head_len)
        })
    });
    group.finish();
}

fn live(group_yaml: &str) -> Live {
    let yaml = format!("node: {{zone: a}}\ntarget_groups:\n  - {group_yaml}\n");
    let snapshot = rulegen::load(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let l = Live::build(Arc::new(snapshot), &mut Registry::default());
    for t in &l.groups[0].targets {
        t.health.store(HEALTHY, Ordering::Relaxed);
    }
    l
}

fn bench_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for algorithm in [
        "round_robin",
        "least_outstanding_requests",
        "weighted_random",
        "source_hash",
    ] {
        for n in [3, 30] {
            let targets: Vec<String> = (0..n)
                .map(|i| {
                    format!(
                        "{{address: \"10.0.{}.{}:80\", weight: {}}}",
                        i / 200,
                        i % 200 + 1,
                        i % 3 + 1
                    )
                })
                .collect();
            // source_hash is for tcp and tls groups (SPEC §4).
            let protocol = if algorithm == "source_hash" {
                "tcp"
            } else {
                "http"
            };
            let l = live(&format!(
                "{{name: g, protocol: {protocol}, algorithm: {algorithm}, targets: [{}]}}",
                targets.join(", ")
            ));
            let (g, cfg) = (&l.groups[0], &l.snapshot.target_groups[0]);
            let mut ip = 0u32;
            group.bench_function(BenchmarkId::new(algorithm, n), |b| {
                b.iter(|| {
                    ip = ip.wrapping_add(0x9e37_79b9);
                    let client = IpAddr::V4(Ipv4Addr::from(ip));
                    black_box(pick(g, cfg, "a", black_box(client), None).unwrap())
                })
            });
        }
    }
    group.finish();
}

/// A reload reads the file, parses, validates and compiles it (rule table included)
/// and builds the live view; this is that work for the seeded 1,000-rule config.
fn bench_reload(c: &mut Criterion) {
    fulcrum::install_crypto_provider();
    let w = rulegen::workload(1000, 10, 0x005e_ed0f_f00d);
    // The same config as a file, for timing a reload of a running fulcrum
    // (benches/README.md).
    if let Some(path) = std::env::var_os("FULCRUM_WRITE_RULES_YAML") {
        std::fs::write(&path, &w.yaml).expect("write the 1,000-rule config");
    }
    let mut registry = Registry::default();
    let mut group = c.benchmark_group("reload");
    group.sample_size(20);
    group.bench_function("compile_1000_rules", |b| {
        b.iter(|| {
            let snapshot = rulegen::load(black_box(&w.yaml)).unwrap();
            black_box(Live::build(Arc::new(snapshot), &mut registry))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_heads, bench_pick, bench_reload);
criterion_main!(benches);
