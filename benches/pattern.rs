//! Criterion bench: `Pattern::is_match` for each fast path and the general matcher.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fulcrum::router::pattern::{Pattern, PatternOptions};

fn bench_is_match(c: &mut Criterion) {
    let host = PatternOptions::new(true, false);
    let path = PatternOptions::new(false, false);
    let query = PatternOptions::new(true, true);
    let long_path = format!("/static/{}/app.js", "segment/".repeat(20));
    let cases: [(&str, &str, PatternOptions, &str); 9] = [
        ("exact", "api.example.com", host, "api.example.com"),
        ("prefix", "/api/*", path, "/api/v1/users/42"),
        ("suffix", "*.example.com", host, "shop.eu.example.com"),
        ("contains", "*admin*", path, "/internal/admin/settings"),
        ("contains_ci", "*admin*", host, "internal.ADMIN.example.com"),
        ("any", "*", path, "/anything/at/all"),
        (
            "general",
            "/api/v?/*/items/*.json",
            path,
            "/api/v2/shop/items/3.json",
        ),
        ("general_query", r"2\*?*", query, "2*beta"),
        ("general_long", "/static/*/app.?s", path, &long_path),
    ];
    let mut group = c.benchmark_group("pattern_is_match");
    for (name, src, opts, text) in cases {
        let pattern = Pattern::compile(src, opts);
        assert!(pattern.is_match(text), "{name}: {src} should match {text}");
        group.bench_function(name, |b| {
            b.iter(|| black_box(&pattern).is_match(black_box(text)))
        });
    }
    let miss = Pattern::compile("*a*a*a*a*a*b", path);
    let a1k = "a".repeat(1000);
    group.bench_function("general_pathological_miss", |b| {
        b.iter(|| black_box(&miss).is_match(black_box(&a1k)))
    });
    group.finish();
}

criterion_group!(benches, bench_is_match);
criterion_main!(benches);
