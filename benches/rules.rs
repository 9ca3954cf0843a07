//! Criterion bench: time per rule lookup for 10, 100 and 1000 rules, the linear
//! `route` against the indexed `route_with`, over the generator's lookup mix (a
//! third each matching an early rule, a late rule, nothing). Goal: at most 1 µs
//! per lookup at 1000 rules.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fulcrum::router::rulegen::{self, LookupKind};
use fulcrum::router::table::RuleTable;
use fulcrum::router::{route, route_with};

const SEED: u64 = 0x005e_ed0f_f00d;
const LOOKUPS: usize = 600;

fn bench_rules(c: &mut Criterion) {
    fulcrum::install_crypto_provider();
    let mut group = c.benchmark_group("rules");
    for n in [10, 100, 1000] {
        let w = rulegen::workload(n, LOOKUPS, SEED);
        let snapshot = rulegen::load(&w.yaml).unwrap_or_else(|e| panic!("{e}"));
        let listener = &snapshot.listeners[0];
        let table = RuleTable::build(&listener.rules);
        eprintln!("{n} rules: {:?}", table.stats());
        for l in &w.lookups {
            let (linear, indexed) =
                l.with_view(|v| (route(listener, v).1, route_with(listener, &table, v).1));
            assert_eq!(linear, indexed, "{l:?}");
        }
        // Each iteration is one lookup, cycling through the mix.
        let mixes: [(&str, Option<LookupKind>); 4] = [
            ("mix", None),
            ("early", Some(LookupKind::Early)),
            ("late", Some(LookupKind::Late)),
            ("miss", Some(LookupKind::Miss)),
        ];
        for (mix, kind) in mixes {
            let lookups: Vec<_> = w
                .lookups
                .iter()
                .filter(|l| kind.is_none_or(|k| l.kind == k))
                .collect();
            let mut i = 0;
            group.bench_function(BenchmarkId::new(format!("linear/{mix}"), n), |b| {
                b.iter(|| {
                    i = (i + 1) % lookups.len();
                    lookups[i].with_view(|v| black_box(route(listener, black_box(v)).1))
                })
            });
            group.bench_function(BenchmarkId::new(format!("indexed/{mix}"), n), |b| {
                b.iter(|| {
                    i = (i + 1) % lookups.len();
                    lookups[i]
                        .with_view(|v| black_box(route_with(listener, &table, black_box(v)).1))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_rules);
criterion_main!(benches);
