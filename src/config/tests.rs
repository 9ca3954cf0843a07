//! Unit tests of the config loader: every validation rule with its message and
//! position, every default, and one file with many errors at once.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::*;
use crate::snapshot::*;

struct Env(Vec<(&'static str, &'static str)>);

fn load_in(dir: &std::path::Path, yaml: &str, env: Env) -> Result<Snapshot, Vec<ConfigError>> {
    crate::install_crypto_provider();
    let source = ConfigSource {
        path: dir.join("t.yaml"),
        sha256: String::new(),
        loaded_at: SystemTime::now(),
    };
    let vars = env.0;
    let opts = LoadOptions {
        env: Box::new(move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }),
    };
    load_text(yaml, "t.yaml", dir.to_path_buf(), source, opts)
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn load_ok(yaml: &str) -> Snapshot {
    let d = tmp();
    match load_in(d.path(), yaml, Env(vec![])) {
        Ok(s) => s,
        Err(e) => panic!(
            "expected ok, got:\n{}",
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

fn errors_in(dir: &std::path::Path, yaml: &str) -> Vec<String> {
    match load_in(dir, yaml, Env(vec![])) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    }
}

fn errors(yaml: &str) -> Vec<String> {
    errors_in(tmp().path(), yaml)
}

/// Asserts that exactly one error starts with `t.yaml:{at}: ` and contains `needle`.
#[track_caller]
fn expect(errs: &[String], at: &str, needle: &str) {
    let prefix = format!("t.yaml:{at}: ");
    let hits: Vec<&String> = errs
        .iter()
        .filter(|e| e.starts_with(&prefix) && e.contains(needle))
        .collect();
    assert!(
        hits.len() == 1,
        "wanted one error `{prefix}…{needle}…`, got:\n{}",
        errs.join("\n")
    );
}

#[track_caller]
fn only(yaml: &str, at: &str, needle: &str) {
    let e = errors(yaml);
    assert_eq!(
        e.len(),
        1,
        "wanted exactly one error, got:\n{}",
        e.join("\n")
    );
    expect(&e, at, needle);
}

const GROUP: &str = "target_groups:\n  - name: web\n    targets: [{address: 127.0.0.1:8080}]\n";

/// A listener block on line 5 of the document after GROUP (lines 1-3).
fn with_listener(listener_body: &str) -> String {
    format!("{GROUP}listeners:\n  - name: l\n    bind: 127.0.0.1:8000\n{listener_body}")
}

// ---------------------------------------------------------------- defaults

#[test]
fn defaults_of_every_section() {
    let s = load_ok(&with_listener("    default_action: {forward: web}\n"));
    assert!(!s.node.name.is_empty());
    assert_eq!(s.node.zone, "default");
    assert_eq!(s.node.secret_file, None);
    assert_eq!(
        s.runtime,
        RuntimeSettings {
            worker_threads: 0,
            max_connections: 100_000,
            shutdown_delay: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(30)
        }
    );
    assert_eq!(s.admin.bind, Some("127.0.0.1:9900".parse().unwrap()));
    assert_eq!(s.admin.token_file, None);
    assert_eq!(
        s.access_log,
        AccessLogSettings {
            dest: AccessLogDest::Off,
            format: AccessLogFormat::Alb,
            path_at: crate::config::Pos::START,
        }
    );
    assert!(s.alerts.is_none());
    assert!(s.aws_compat);
    let l = &s.listeners[0];
    assert_eq!(l.protocol, ListenerProtocol::Http);
    assert_eq!(l.allow.len(), 2);
    assert_eq!(l.tls_policy, TlsPolicy::Tls12);
    assert_eq!(l.idle_timeout, Duration::from_secs(60));
    assert_eq!(l.client_keep_alive, Duration::from_secs(3600));
    assert_eq!(l.header_timeout, Duration::from_secs(10));
    assert_eq!(l.xff, XffMode::Append);
    assert_eq!(l.desync_mitigation, DesyncMode::Defensive);
    let g = &s.target_groups[0];
    assert_eq!(g.protocol, GroupProtocol::Http);
    assert_eq!(g.algorithm, Algorithm::RoundRobin);
    assert_eq!(g.slow_start, Duration::ZERO);
    assert_eq!(g.deregistration_delay, Duration::from_secs(300));
    assert!(g.cross_zone && g.fail_open && !g.proxy_protocol_v2 && !g.verify_tls);
    assert_eq!(g.keep_alive_timeout, Duration::from_secs(50));
    assert_eq!(g.stickiness, None);
    assert_eq!(g.ca_file, None);
    let hc = &g.health_check;
    assert_eq!(hc.protocol, HealthProtocol::Http);
    assert_eq!(hc.port, None);
    assert_eq!(hc.path, "/");
    assert_eq!(hc.host, None);
    assert_eq!(hc.interval, Duration::from_secs(30));
    assert_eq!(hc.timeout, Duration::from_secs(5));
    assert_eq!((hc.healthy_threshold, hc.unhealthy_threshold), (5, 2));
    assert_eq!(hc.matcher, vec![(200, 200)]);
    let t = &g.targets[0];
    assert_eq!(
        (t.address.as_str(), t.zone.as_str(), t.weight),
        ("127.0.0.1:8080", "default", 1)
    );
    assert_eq!(s.summary(), "1 listener, 1 target group, 0 rules");
}

#[test]
fn l4_defaults_and_health_check_protocols() {
    let s = load_ok(
        "target_groups:\n  - {name: t, protocol: tcp}\n  - {name: s, protocol: https}\n  - {name: u, protocol: tls}\nlisteners:\n  - {name: db, protocol: tcp, bind: 127.0.0.1:5432, default_action: {forward: t}}\n",
    );
    assert_eq!(s.listeners[0].idle_timeout, Duration::from_secs(350));
    assert_eq!(
        s.target_groups[0].health_check.protocol,
        HealthProtocol::Tcp
    );
    assert_eq!(
        s.target_groups[1].health_check.protocol,
        HealthProtocol::Https
    );
    assert_eq!(
        s.target_groups[2].health_check.protocol,
        HealthProtocol::Tcp
    );
}

#[test]
fn alert_defaults() {
    let d = tmp();
    let s = load_in(d.path(), "alerts:\n  smtp: {host: 127.0.0.1, tls: none}\n  from: a@example.com\n  to: [b@example.com]\n", Env(vec![])).unwrap();
    let a = s.alerts.unwrap();
    assert_eq!(a.smtp.port, 25);
    assert_eq!(a.smtp.timeout, Duration::from_secs(10));
    assert_eq!(a.events, AlertEvent::ALL.to_vec());
    assert_eq!(a.batch_window, Duration::from_secs(30));
    assert_eq!(a.max_send_rate, 1.0);
    assert_eq!(a.max_per_day, 200);
    assert_eq!(a.spool_dir, PathBuf::from("/var/lib/fulcrum/alerts"));
    let s = load_in(d.path(), "alerts:\n  smtp: {host: email-smtp.example.com}\n  from: a@example.com\n  to: b@example.com\n", Env(vec![])).unwrap();
    let a = s.alerts.unwrap();
    assert_eq!((a.smtp.tls, a.smtp.port), (SmtpTls::StartTls, 587));
    let s = load_in(d.path(), "alerts:\n  smtp: {host: email-smtp.example.com, tls: tls}\n  from: a@example.com\n  to: b@example.com\n", Env(vec![])).unwrap();
    assert_eq!(s.alerts.unwrap().smtp.port, 465);
}

#[test]
fn node_environment_overrides() {
    let d = tmp();
    let yaml = "node: {name: lb-a, zone: zone-a}\ntarget_groups:\n  - {name: g, targets: [{address: 127.0.0.1:1}]}\n";
    let s = load_in(d.path(), yaml, Env(vec![])).unwrap();
    assert_eq!(
        (s.node.name.as_str(), s.node.zone.as_str()),
        ("lb-a", "zone-a")
    );
    assert_eq!(s.target_groups[0].targets[0].zone, "zone-a");
    let s = load_in(
        d.path(),
        yaml,
        Env(vec![
            ("FULCRUM_NODE_NAME", "lb-b"),
            ("FULCRUM_NODE_ZONE", "zone-b"),
        ]),
    )
    .unwrap();
    assert_eq!(
        (s.node.name.as_str(), s.node.zone.as_str()),
        ("lb-b", "zone-b")
    );
    // the override also becomes the targets' default zone
    assert_eq!(s.target_groups[0].targets[0].zone, "zone-b");
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let d = tmp();
    std::fs::write(d.path().join("tok"), "secret\n").unwrap();
    std::fs::create_dir(d.path().join("logs")).unwrap();
    let s = load_in(d.path(), "admin: {bind: 127.0.0.1:9901, token_file: tok}\naccess_log: {path: logs/a.log, format: json}\n", Env(vec![])).unwrap();
    assert_eq!(s.admin.token_file, Some(d.path().join("tok")));
    assert_eq!(
        s.access_log.dest,
        AccessLogDest::File(d.path().join("logs/a.log"))
    );
    assert_eq!(s.access_log.format, AccessLogFormat::Json);
}

/// An access log that could not be opened is found at load (so by `check`): a
/// missing directory, a directory in place of the file.
#[test]
fn an_access_log_that_cannot_be_opened_is_an_error() {
    let d = tmp();
    let errs = |yaml: &str| match load_in(d.path(), yaml, Env(vec![])) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    };
    let e = errs("access_log: {path: nodir/a.log}\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("1:20: access_log.path: cannot create"),
        "{e:?}"
    );
    assert!(e[0].contains("does not exist"), "{e:?}");
    std::fs::create_dir(d.path().join("adir")).unwrap();
    let e = errs("access_log: {path: adir}\n");
    assert!(e.len() == 1 && e[0].contains("is a directory"), "{e:?}");
    assert!(errs("access_log: {path: a.log}\n").is_empty());
    assert!(errs("access_log: {path: stdout}\n").is_empty());
}

// ---------------------------------------------------------------- parsing

#[test]
fn unknown_keys_are_errors_with_a_suggestion() {
    only(
        "runtime:\n  max_conections: 5\n",
        "2:3",
        "runtime.max_conections: unknown key `max_conections`; did you mean `max_connections`?",
    );
    only("listner: []\n", "1:1", "listner: unknown key");
}

#[test]
fn yaml_syntax_errors_have_positions() {
    let e = errors("listeners: [\n  {name: a\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.yaml:") && e[0].contains(": (yaml): "),
        "{e:?}"
    );
}

#[test]
fn duplicate_yaml_keys_are_reported_where_they_repeat() {
    only(
        "runtime:\n  worker_threads: 1\n  worker_threads: 2\n",
        "3:3",
        "duplicate key `worker_threads` (first given at line 2)",
    );
}

#[test]
fn bare_numbers_are_not_durations() {
    only(
        "runtime:\n  shutdown_timeout: 30\n",
        "2:21",
        "runtime.shutdown_timeout: a bare number (30) is not a duration: add a unit, such as \"30s\"",
    );
    only(
        "runtime:\n  shutdown_timeout: 30x\n",
        "2:21",
        "expected a duration",
    );
}

#[test]
fn yaml11_booleans_are_not_booleans() {
    only(
        "target_groups:\n  - name: g\n    cross_zone: yes\n",
        "3:17",
        "expected true or false, got a string \"yes\"",
    );
}

#[test]
fn type_errors_say_what_was_expected() {
    only(
        "runtime:\n  worker_threads: many\n",
        "2:19",
        "runtime.worker_threads: expected a whole number from 0 to 1024, got \"many\"",
    );
    only(
        "runtime: [1]\n",
        "1:10",
        "runtime: expected a mapping of keys, got a list",
    );
    only(
        "listeners: {a: 1}\n",
        "1:12",
        "listeners: expected a list, got a mapping",
    );
}

// ---------------------------------------------------------------- names

#[test]
fn names_must_be_unique_reported_at_the_repeat() {
    let e = errors("target_groups:\n  - name: web\n  - name: web\n");
    assert_eq!(e.len(), 1, "{e:?}");
    expect(
        &e,
        "3:11",
        "target_groups[1].name: duplicate target group name \"web\" (first defined at line 2)",
    );
    let e = errors(&format!(
        "{GROUP}listeners:\n  - {{name: a, bind: 127.0.0.1:1, default_action: {{forward: web}}}}\n  - {{name: a, bind: 127.0.0.1:2, default_action: {{forward: web}}}}\n"
    ));
    expect(
        &e,
        "6:12",
        "listeners[1].name: duplicate listener name \"a\"",
    );
}

#[test]
fn an_empty_or_null_value_list_is_one_error() {
    let l = "listeners:\n  - {name: w, protocol: http, bind: 127.0.0.1:1, default_action: {fixed_response: {status: 200}},\n     rules: [{priority: 1, conditions: {host: RULE}, action: {fixed_response: {status: 200}}}]}\n";
    for (value, needle) in [
        ("[]", "must list at least one value"),
        ("~", "expected a list of strings"),
        ("[~]", "expected"),
    ] {
        let e = errors(&l.replace("RULE", value));
        assert_eq!(e.len(), 1, "host: {value}: {e:?}");
        assert!(e[0].contains(needle), "host: {value}: {e:?}");
    }
}

#[test]
fn stickiness_on_a_tcp_group_still_checks_its_keys() {
    let e = errors(
        "target_groups:\n  - name: t\n    protocol: tcp\n    stickiness: {type: lb_cookie, duration: 9d}\n",
    );
    assert!(
        e.iter().any(|e| e.contains("stickiness is for http")),
        "{e:?}"
    );
    assert!(e.iter().any(|e| e.contains("stickiness.duration")), "{e:?}");
    let e = errors(
        "target_groups:\n  - name: t\n    protocol: tcp\n    stickiness: {type: app_cookie, cookie_name: FULCRUMLBX}\n",
    );
    assert!(e.iter().any(|e| e.contains("reserved")), "{e:?}");
}

#[test]
fn target_group_names_are_checked() {
    only(
        "target_groups:\n  - name: bad_name\n",
        "2:11",
        "not a valid target group name",
    );
    only(
        "target_groups:\n  - name: a-very-long-name-that-is-longer-than-32\n",
        "2:11",
        "not a valid target group name",
    );
    only(
        "target_groups:\n  - protocol: http\n",
        "2:5",
        "target_groups[0].name: required",
    );
    // SPEC §2's set is the rule: a '-' anywhere is fine.
    for name in ["web-", "-web", "-"] {
        let yaml = format!("target_groups:\n  - {{name: \"{name}\", protocol: http}}\n");
        if let Err(errs) = load_in(tmp().path(), &yaml, Env(vec![])) {
            let errs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            assert!(
                !errs.iter().any(|e| e.contains("target group name")),
                "{name}: {errs:?}"
            );
        }
    }
}

#[test]
fn unused_target_groups_are_valid() {
    let s = load_ok("target_groups:\n  - name: spare\n    targets: [{address: 127.0.0.1:9}]\n");
    assert_eq!(s.target_groups.len(), 1);
}

// ---------------------------------------------------------------- references

#[test]
fn actions_must_name_existing_groups() {
    only(
        &with_listener("    default_action: {forward: nope}\n"),
        "7:31",
        "listeners[0].default_action.forward: no target group named \"nope\" (known: web)",
    );
    // A group named by digits is named by digits in the short form too.
    let y = "target_groups:\n  - {name: 123}\nlisteners:\n  - {name: a, bind: 127.0.0.1:1, default_action: {forward: 123}}\n";
    let s = load_in(tmp().path(), y, Env(vec![]))
        .unwrap_or_else(|e| panic!("{:?}", e.iter().map(|e| e.to_string()).collect::<Vec<_>>()));
    assert_eq!(s.target_groups[0].name, "123");
}

#[test]
fn listener_and_group_protocols_must_fit() {
    let y = "target_groups:\n  - {name: t, protocol: tcp}\n  - {name: h}\nlisteners:\n  - {name: a, bind: 127.0.0.1:1, default_action: {forward: t}}\n  - {name: b, protocol: tcp, bind: 127.0.0.1:2, default_action: {forward: h}}\n";
    let e = errors(y);
    assert_eq!(e.len(), 2, "{e:?}");
    expect(
        &e,
        "5:60",
        "target group \"t\" has protocol tcp; a http listener forwards only to http or https target groups",
    );
    expect(
        &e,
        "6:75",
        "target group \"h\" has protocol http; a tcp listener forwards only to tcp or tls target groups",
    );
}

#[test]
fn l4_listeners_take_no_rules_and_only_forward() {
    let y = "target_groups:\n  - {name: t, protocol: tcp}\nlisteners:\n  - name: a\n    protocol: tcp\n    bind: 127.0.0.1:1\n    rules:\n      - {priority: 1, conditions: {path: [/]}, action: {forward: t}}\n    default_action: {fixed_response: {status: 200}}\n";
    let e = errors(y);
    assert_eq!(e.len(), 2, "{e:?}");
    expect(&e, "8:7", "tcp listeners take no rules");
    expect(
        &e,
        "9:38",
        "tcp listeners can only forward to a tcp or tls target group",
    );
}

#[test]
fn default_action_is_required() {
    only(
        &with_listener(""),
        "5:5",
        "listeners[0].default_action: required",
    );
}

// ---------------------------------------------------------------- rules

fn rule(conditions: &str, action: &str) -> String {
    with_listener(&format!(
        "    rules:\n      - priority: 1\n        conditions: {conditions}\n        action: {action}\n    default_action: {{forward: web}}\n"
    ))
}

#[test]
fn rules_compile_sorted_with_patterns() {
    let y = with_listener(
        "    rules:\n      - {priority: 20, conditions: {path: [\"/b*\"]}, action: {forward: web}}\n      - {priority: 10, conditions: {host: [\"*.Example.com\"], source_ip: [10.0.0.0/8]}, action: {fixed_response: {status: 404}}}\n    default_action: {forward: web}\n",
    );
    let s = load_ok(&y);
    let l = &s.listeners[0];
    assert_eq!(
        l.rules.iter().map(|r| r.priority).collect::<Vec<_>>(),
        vec![10, 20]
    );
    assert!(l.rules[0].conditions.host[0].is_match("a.example.com"));
    assert!(!l.rules[0].conditions.host[0].is_match("example.com"));
    assert!(
        l.rules[0].conditions.source_ip[0]
            .contains(&"10.1.2.3".parse::<std::net::IpAddr>().unwrap())
    );
    assert!(l.rules[1].conditions.path[0].is_match("/blog"));
    assert!(!l.rules[1].conditions.path[0].is_match("/Blog"));
    assert_eq!(s.summary(), "1 listener, 1 target group, 2 rules");
}

#[test]
fn priorities_unique_and_in_range() {
    let y = with_listener(
        "    rules:\n      - {priority: 5, conditions: {path: [/a]}, action: {forward: web}}\n      - {priority: 5, conditions: {path: [/b]}, action: {forward: web}}\n      - {priority: 50001, conditions: {path: [/c]}, action: {forward: web}}\n    default_action: {forward: web}\n",
    );
    let e = errors(&y);
    assert_eq!(e.len(), 2, "{e:?}");
    expect(
        &e,
        "9:20",
        "listeners[0].rules[1].priority: duplicate priority 5 (also used at line 8)",
    );
    expect(
        &e,
        "10:20",
        "listeners[0].rules[2].priority: must be from 1 to 50000, got 50001",
    );
}

#[test]
fn too_many_wildcards() {
    // 4 in one value
    only(
        &rule("{path: [\"/*a*b*c*\"]}", "{forward: web}"),
        "9:29",
        "has 4 wildcard characters; at most 3 per condition value",
    );
    // 6 over the rule, none over 3 in a value
    only(
        &rule(
            "{path: [\"/*a*b*\", \"/?x?\"], host: [\"*.b\"]}",
            "{forward: web}",
        ),
        "9:21",
        "this rule has 6 wildcard characters; at most 5 per rule",
    );
    // escaped query wildcards do not count
    let _ = load_ok(&rule(
        "{query: [{value: \"\\\\*\\\\*\\\\*\\\\*\"}]}",
        "{forward: web}",
    ));
    // lifted by limits.aws_compat: false
    let _ = load_ok(&format!(
        "limits: {{aws_compat: false}}\n{}",
        rule("{path: [\"/*a*b*c*\", \"/?x?\"]}", "{forward: web}")
    ));
}

#[test]
fn too_many_condition_values() {
    only(
        &rule(
            "{host: [a.com, b.com], path: [/a, /b], headers: {x-a: [\"1\"], x-b: [\"2\"]}}",
            "{forward: web}",
        ),
        "9:21",
        "this rule has 6 condition values; at most 5 per rule",
    );
    only(
        &rule(
            "{query: [{value: a}, {value: b}, {value: c}, {value: d}, {value: e}, {key: k, value: f}]}",
            "{forward: web}",
        ),
        "9:21",
        "6 condition values",
    );
}

#[test]
fn condition_values_nonempty_and_short() {
    only(
        &rule("{path: [\"\"]}", "{forward: web}"),
        "9:29",
        "condition values must not be empty",
    );
    let long = format!("/{}", "a".repeat(128));
    only(
        &rule(&format!("{{path: [\"{long}\"]}}"), "{forward: web}"),
        "9:29",
        "at most 128 characters",
    );
    only(
        &rule("{path: []}", "{forward: web}"),
        "9:28",
        "must list at least one value",
    );
    only(
        &rule("{}", "{forward: web}"),
        "9:21",
        "a rule needs at least one condition",
    );
    only(
        &rule("{method: [get]}", "{forward: web}"),
        "9:31",
        "expected an HTTP method in capitals",
    );
    only(
        &rule("{headers: {Host: [a]}}", "{forward: web}"),
        "9:32",
        "use the host condition",
    );
}

#[test]
fn source_ip_must_be_cidrs() {
    only(
        &rule("{source_ip: [10.0.0.0/33]}", "{forward: web}"),
        "9:34",
        "expected a CIDR such as 10.0.0.0/8",
    );
    only(
        &rule("{source_ip: [10.0.0.1/8]}", "{forward: web}"),
        "9:34",
        "has host bits set; did you mean 10.0.0.0/8?",
    );
    let _ = load_ok(&rule(
        "{source_ip: [\"2001:db8::/32\", 192.168.0.0/16]}",
        "{forward: web}",
    ));
}

#[test]
fn actions_exactly_one() {
    only(
        &rule(
            "{path: [/]}",
            "{forward: web, fixed_response: {status: 200}}",
        ),
        "10:48",
        "an action is exactly one of forward, redirect or fixed_response; this one has forward and fixed_response",
    );
    only(
        &rule("{path: [/]}", "{}"),
        "10:17",
        "expected exactly one of forward, redirect or fixed_response",
    );
}

#[test]
fn weighted_forward() {
    let y = "target_groups:\n  - {name: a}\n  - {name: b}\nlisteners:\n  - name: l\n    bind: 127.0.0.1:1\n    default_action:\n      forward:\n        target_groups: [{name: a, weight: 90}, {name: b, weight: 10}]\n        stickiness: 1h\n";
    let s = load_ok(y);
    let Action::Forward(f) = &s.listeners[0].default_action else {
        panic!()
    };
    assert_eq!(f.groups, vec![(GroupId(0), 90), (GroupId(1), 10)]);
    assert_eq!(f.stickiness, Some(Duration::from_secs(3600)));
    let bad = y
        .replace("weight: 90", "weight: 0")
        .replace("weight: 10", "weight: 0");
    only(
        &bad,
        "9:24",
        "at least one target group needs a weight above 0",
    );
    let bad = y.replace("weight: 90", "weight: 1000");
    only(&bad, "9:43", "must be from 0 to 999, got 1000");
    let six = "target_groups: [{name: a}, {name: b}, {name: c}, {name: d}, {name: e}, {name: f}]\nlisteners:\n  - name: l\n    bind: 127.0.0.1:1\n    default_action:\n      forward:\n        target_groups: [{name: a}, {name: b}, {name: c}, {name: d}, {name: e}, {name: f}]\n";
    only(
        six,
        "7:24",
        "a forward names 1 to 5 target groups, this one 6",
    );
    let bad = y.replace("stickiness: 1h", "stickiness: 8d");
    only(&bad, "10:21", "must be from 1s to 7d");
}

#[test]
fn redirects() {
    let s = load_ok(&rule(
        "{path: [/old]}",
        "{redirect: {protocol: HTTPS, port: \"443\", status: 302}}",
    ));
    let Action::Redirect(r) = &s.listeners[0].rules[0].action else {
        panic!()
    };
    assert_eq!(
        (
            r.protocol,
            r.host.as_str(),
            r.port.as_str(),
            r.path.as_str(),
            r.query.as_str(),
            r.status
        ),
        (
            RedirectProtocol::Https,
            "#{host}",
            "443",
            "/#{path}",
            "#{query}",
            302
        )
    );
    only(
        &rule(
            "{path: [/]}",
            "{redirect: {host: \"#{host}\", status: 301}}",
        ),
        "10:28",
        "a redirect must change at least one of protocol, host, port or path",
    );
    // naming the listener's own protocol and port (127.0.0.1:8000) changes nothing
    only(
        &rule("{path: [/]}", "{redirect: {protocol: HTTP, port: 8000}}"),
        "10:28",
        "a redirect must change at least one of protocol, host, port or path",
    );
    let _ = load_ok(&rule("{path: [/]}", "{redirect: {port: 8080}}"));
    only(
        &rule("{path: [/]}", "{redirect: {path: /x, status: 307}}"),
        "10:47",
        "must be from 301 to 302, got 307",
    );
    only(
        &rule("{path: [/]}", "{redirect: {path: \"/#{query}\"}}"),
        "10:35",
        "#{query} cannot be used here",
    );
    only(
        &rule("{path: [/]}", "{redirect: {path: no-slash}}"),
        "10:35",
        "expected an absolute path",
    );
}

#[test]
fn https_to_http_redirects_are_refused() {
    let d = tmp();
    write_cert(d.path(), "c", &["example.com"]);
    let y = format!(
        "certificates: [{{name: c, cert: c.crt, key: c.key}}]\n{GROUP}listeners:\n  - name: s\n    protocol: https\n    bind: 127.0.0.1:8443\n    certificates: [c]\n    default_action: {{redirect: {{protocol: HTTP, host: example.com}}}}\n"
    );
    let e = errors_in(d.path(), &y);
    assert_eq!(e.len(), 1, "{e:?}");
    expect(
        &e,
        "10:43",
        "listeners[0].default_action.redirect.protocol: a redirect may not go from HTTPS to HTTP",
    );
}

#[test]
fn fixed_responses() {
    let s = load_ok(&rule(
        "{path: [/]}",
        "{fixed_response: {status: 503, body: soon}}",
    ));
    let Action::FixedResponse(f) = &s.listeners[0].rules[0].action else {
        panic!()
    };
    assert_eq!(
        (f.status, f.content_type.as_str(), f.body.as_str()),
        (503, "text/plain", "soon")
    );
    only(
        &rule("{path: [/]}", "{fixed_response: {status: 302}}"),
        "10:43",
        "a fixed response status is 2xx, 4xx or 5xx, got 302",
    );
    let body = "x".repeat(1025);
    only(
        &rule(
            "{path: [/]}",
            &format!("{{fixed_response: {{status: 200, body: {body}}}}}"),
        ),
        "10:54",
        "at most 1024 bytes, this one has 1025",
    );
}

// ---------------------------------------------------------------- listeners

#[test]
fn overlapping_binds() {
    let y = format!(
        "{GROUP}listeners:\n  - {{name: a, bind: 0.0.0.0:80, default_action: {{forward: web}}}}\n  - {{name: b, bind: 10.0.0.1:80, default_action: {{forward: web}}}}\n  - {{name: c, bind: \"[::]:80\", default_action: {{forward: web}}}}\n  - {{name: d, bind: 127.0.0.1:9900, default_action: {{forward: web}}}}\n"
    );
    let e = errors(&y);
    assert_eq!(e.len(), 2, "{e:?}");
    expect(
        &e,
        "6:21",
        "listeners[1].bind: 10.0.0.1:80 overlaps listener a (line 5) bound to 0.0.0.0:80",
    );
    expect(
        &e,
        "8:21",
        "listeners[3].bind: 127.0.0.1:9900 overlaps the admin API",
    );
    // An admin block written after the listener is the repeat: reported there.
    let e = errors(&format!(
        "{GROUP}listeners:\n  - {{name: d, bind: 127.0.0.1:9901, default_action: {{forward: web}}}}\nadmin: {{bind: \"127.0.0.1:9901\"}}\n"
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    expect(
        &e,
        "6:15",
        "admin.bind: 127.0.0.1:9901 overlaps listener d (line 5) bound to 127.0.0.1:9901",
    );
    // admin off: no overlap
    let _ = load_ok(&format!(
        "admin: {{bind: \"off\"}}\n{GROUP}listeners:\n  - {{name: d, bind: 127.0.0.1:9900, default_action: {{forward: web}}}}\n"
    ));
}

#[test]
fn bind_syntax() {
    only(
        &format!(
            "{GROUP}listeners:\n  - {{name: a, bind: localhost:80, default_action: {{forward: web}}}}\n"
        ),
        "5:21",
        "expected \"IP:PORT\" or \"[IPv6]:PORT\"",
    );
    only(
        &format!(
            "{GROUP}listeners:\n  - {{name: a, bind: \"1.2.3.4:0\", default_action: {{forward: web}}}}\n"
        ),
        "5:21",
        "port must be from 1 to 65535",
    );
}

#[test]
fn short_header_and_keep_alive_timeouts_are_allowed_down_to_100ms() {
    let s = load_ok(&with_listener(
        "    header_timeout: 500ms\n    default_action: {forward: web}\n",
    ));
    assert_eq!(s.listeners[0].header_timeout, Duration::from_millis(500));
    only(
        &with_listener("    header_timeout: 50ms\n    default_action: {forward: web}\n"),
        "7:21",
        "must be from 100ms to 1h, got 50ms",
    );
    let s = load_ok(
        &with_listener("    default_action: {forward: web}\n").replacen(
            "name: web",
            "name: web\n    keep_alive_timeout: 250ms",
            1,
        ),
    );
    assert_eq!(
        s.target_groups[0].keep_alive_timeout,
        Duration::from_millis(250)
    );
}

#[test]
fn listener_timeouts_ranges() {
    only(
        &with_listener("    idle_timeout: 4001s\n    default_action: {forward: web}\n"),
        "7:19",
        "must be from 1s to 4000s, got 4001s",
    );
    only(
        &with_listener("    client_keep_alive: 30s\n    default_action: {forward: web}\n"),
        "7:24",
        "must be from 1m to 7d, got 30s",
    );
    only(
        &with_listener("    xff: drop\n    default_action: {forward: web}\n"),
        "7:10",
        "expected one of append, preserve, remove, got \"drop\"",
    );
}

#[test]
fn allow_lists() {
    let s = load_ok(&with_listener(
        "    allow: [10.0.0.0/8, \"::1/128\"]\n    default_action: {forward: web}\n",
    ));
    assert_eq!(s.listeners[0].allow.len(), 2);
    only(
        &with_listener("    allow: [10.0.0.0]\n    default_action: {forward: web}\n"),
        "7:13",
        "expected a CIDR",
    );
}

fn write_cert(dir: &std::path::Path, name: &str, names: &[&str]) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

#[test]
fn certificates_load_and_match() {
    let d = tmp();
    write_cert(d.path(), "a", &["a.example.com"]);
    write_cert(d.path(), "b", &["b.example.com"]);
    let good = format!(
        "certificates:\n  - {{name: a, cert: a.crt, key: a.key}}\n{GROUP}listeners:\n  - {{name: s, protocol: https, bind: 127.0.0.1:8443, certificates: [a], default_action: {{forward: web}}}}\n"
    );
    let s = load_in(d.path(), &good, Env(vec![])).unwrap();
    assert_eq!(
        s.certificates[0].loaded.dns_names,
        vec!["a.example.com".to_owned()]
    );
    assert_eq!(s.listeners[0].certificates, vec![CertId(0)]);
    // a key of another certificate
    let e = errors_in(d.path(), &good.replace("key: a.key", "key: b.key"));
    assert_eq!(e.len(), 1, "{e:?}");
    expect(&e, "2:33", "certificates[0].key: ");
    assert!(e[0].contains("does not match"), "{e:?}");
    // a missing file
    let e = errors_in(d.path(), &good.replace("cert: a.crt", "cert: missing.crt"));
    expect(&e, "2:21", "certificates[0].cert: ");
    // an https listener without certificates, an unknown name, certificates on http
    let y = format!(
        "certificates:\n  - {{name: a, cert: a.crt, key: a.key}}\n{GROUP}listeners:\n  - {{name: s, protocol: https, bind: 127.0.0.1:1, default_action: {{forward: web}}}}\n  - {{name: t, protocol: tls, bind: 127.0.0.1:2, certificates: [zz], default_action: {{forward: web}}}}\n  - {{name: u, bind: 127.0.0.1:3, certificates: [a], default_action: {{forward: web}}}}\n"
    );
    let e = errors_in(d.path(), &y);
    expect(
        &e,
        "7:5",
        "listeners[0].certificates: https listeners need at least one certificate",
    );
    expect(
        &e,
        "8:64",
        "listeners[1].certificates[0]: no certificate named \"zz\"",
    );
    expect(
        &e,
        "9:48",
        "listeners[2].certificates: only https and tls listeners use certificates",
    );
}

// ---------------------------------------------------------------- target groups

#[test]
fn least_outstanding_requests_with_slow_start() {
    only(
        "target_groups:\n  - name: g\n    algorithm: least_outstanding_requests\n    slow_start: 30s\n",
        "4:17",
        "slow_start cannot be combined with algorithm least_outstanding_requests",
    );
}

#[test]
fn target_group_settings_ranges() {
    only(
        "target_groups:\n  - {name: g, slow_start: 10s}\n",
        "2:27",
        "must be 0s (off) or from 30s to 900s",
    );
    only(
        "target_groups:\n  - {name: g, deregistration_delay: 3601s}\n",
        "2:37",
        "must be from 0s to 1h, got 3601s",
    );
    only(
        "target_groups:\n  - {name: g, algorithm: source_hash}\n",
        "2:26",
        "source_hash is for tcp and tls target groups",
    );
    only(
        "target_groups:\n  - {name: g, proxy_protocol_v2: true}\n",
        "2:34",
        "PROXY protocol v2 is for tcp and tls target groups",
    );
    only(
        "target_groups:\n  - {name: g, protocol: tcp, stickiness: {type: lb_cookie}}\n",
        "2:42",
        "stickiness is for http and https target groups",
    );
    only(
        "target_groups:\n  - {name: g, stickiness: {type: app_cookie}}\n",
        "2:27",
        "required with type app_cookie",
    );
    only(
        "target_groups:\n  - {name: g, ca_file: nope.pem}\n",
        "2:24",
        "cannot read",
    );
}

/// Every error in one run: a bad stickiness type does not hide a bad duration, a
/// certificate without a name still has its files checked.
#[test]
fn one_error_does_not_hide_another_in_the_same_block() {
    let errs = errors("target_groups:\n  - {name: g, stickiness: {type: foo, duration: 30}}\n");
    assert_eq!(errs.len(), 2, "{errs:#?}");
    expect(&errs, "2:34", "lb_cookie");
    expect(&errs, "2:49", "bare number");
    let errs = errors(&format!(
        "certificates:\n  - {{cert: nope.crt, key: nope.key}}\n{GROUP}"
    ));
    assert_eq!(errs.len(), 2, "{errs:#?}");
    expect(&errs, "2:5", "name");
    expect(&errs, "2:12", "cannot read");
    // A listener with a bad name still has its bind checked for overlaps.
    let errs = errors(&format!(
        "{GROUP}listeners:\n  - {{name: \"web 1\", bind: 127.0.0.1:8000, default_action: {{forward: web}}}}\n  - {{name: b, bind: 127.0.0.1:8000, default_action: {{forward: web}}}}\n"
    ));
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs.iter().any(|e| e.contains("not a valid listener name")),
        "{errs:#?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("listeners[1].bind")),
        "{errs:#?}"
    );
    // A query key over 128 characters does not hide a value over 128.
    let long = |c: char| std::iter::repeat_n(c, 129).collect::<String>();
    let errs = errors(&rule(
        &format!("{{query: [{{key: {}, value: {}}}]}}", long('k'), long('v')),
        "{forward: web}",
    ));
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs.iter().any(|e| e.contains("query[0].key")), "{errs:#?}");
    assert!(
        errs.iter().any(|e| e.contains("query[0].value")),
        "{errs:#?}"
    );
}

#[test]
fn health_checks() {
    only(
        "target_groups:\n  - name: g\n    health_check: {interval: 5s, timeout: 5s}\n",
        "3:43",
        "timeout (5s) must be less than interval (5s)",
    );
    only(
        "target_groups:\n  - name: g\n    health_check: {interval: 4s}\n",
        "3:30",
        "timeout (5s) must be less than interval (4s)",
    );
    // An interval out of range is one error, not also a timeout compared with the
    // default interval.
    only(
        "target_groups:\n  - name: g\n    health_check: {interval: 400s, timeout: 60s}\n",
        "3:30",
        "interval: must be from 1s to 5m, got 400s",
    );
    only(
        "target_groups:\n  - name: g\n    health_check: {healthy_threshold: 11}\n",
        "3:39",
        "must be from 1 to 10, got 11",
    );
    only(
        "target_groups:\n  - name: g\n    health_check: {matcher: \"200-1000\"}\n",
        "3:29",
        "expected HTTP codes such as",
    );
    only(
        "target_groups:\n  - name: g\n    health_check: {port: 0}\n",
        "3:26",
        "must be from 1 to 65535",
    );
    let s = load_ok(
        "target_groups:\n  - name: g\n    health_check: {matcher: \"200,202,300-399\", port: 8081, protocol: tcp, host: example.com}\n",
    );
    let hc = &s.target_groups[0].health_check;
    assert_eq!(hc.matcher, vec![(200, 200), (202, 202), (300, 399)]);
    assert!(hc.matches(202) && hc.matches(350) && !hc.matches(201));
    assert_eq!(
        (hc.port, hc.protocol, hc.host.as_deref()),
        (Some(8081), HealthProtocol::Tcp, Some("example.com"))
    );
}

#[test]
fn targets() {
    let s = load_ok(
        "target_groups:\n  - name: g\n    targets:\n      - {address: \"[::1]:80\", zone: z, weight: 0}\n      - localhost:81\n",
    );
    let t = &s.target_groups[0].targets;
    assert_eq!(
        (t[0].addr, t[0].zone.as_str(), t[0].weight),
        ("[::1]:80".parse().unwrap(), "z", 0)
    );
    assert_eq!(t[1].addr.port(), 81);
    only(
        "target_groups:\n  - name: g\n    targets: [{address: 127.0.0.1:80}, {address: 127.0.0.1:80}]\n",
        "3:50",
        "duplicate target 127.0.0.1:80",
    );
    only(
        "target_groups:\n  - name: g\n    targets: [{address: 127.0.0.1}]\n",
        "3:25",
        "expected IP:PORT",
    );
    only(
        "target_groups:\n  - name: g\n    targets: [{address: 127.0.0.1:80, weight: 1000}]\n",
        "3:47",
        "must be from 0 to 999",
    );
}

// ---------------------------------------------------------------- admin and secrets

#[test]
fn admin_needs_a_token_off_loopback() {
    only(
        "admin: {bind: 0.0.0.0:9900}\n",
        "1:15",
        "admin.bind: 0.0.0.0:9900 is not a loopback address, so admin.token_file is required",
    );
    only(
        "admin: {bind: 127.0.0.1:9900, token_file: nope}\n",
        "1:43",
        "admin.token_file: cannot read",
    );
    let s = load_ok("admin: {bind: \"off\"}\n");
    assert_eq!(s.admin.bind, None);
}

fn alerts(smtp: &str) -> String {
    format!("alerts:\n  smtp: {smtp}\n  from: a@example.com\n  to: [b@example.com]\n")
}

#[test]
fn inline_passwords_are_refused() {
    only(
        &alerts("{host: smtp.example.com, password: hunter2}"),
        "2:34",
        "alerts.smtp.password: secrets are never given inline: put the password in a file and name it with password_file, or name an environment variable with password_env",
    );
    // Anywhere else, too: the message still points at the file or variable.
    only(
        "alerts:\n  smtp: {host: smtp.example.com}\n  from: a@example.com\n  to: [b@example.com]\n  password: hunter2\n",
        "5:3",
        "alerts.password: secrets are never given inline: put the password in a file and name it with password_file",
    );
}

#[test]
fn smtp_rules() {
    let d = tmp();
    std::fs::write(d.path().join("u"), "user\n").unwrap();
    std::fs::write(d.path().join("p"), "pass\n").unwrap();
    let ok = load_in(
        d.path(),
        &alerts("{host: smtp.example.com, username_file: u, password_env: PW}"),
        Env(vec![("PW", "x")]),
    )
    .unwrap();
    let smtp = ok.alerts.unwrap().smtp;
    assert_eq!(smtp.username, Some(SecretSource::File(d.path().join("u"))));
    assert_eq!(smtp.password, Some(SecretSource::Env("PW".into())));
    let e = errors_in(
        d.path(),
        &alerts("{host: 127.0.0.1, tls: none, username_file: u, password_file: p}"),
    );
    expect(
        &e,
        "2:53",
        "alerts.smtp.username_file: credentials with tls: none would send AUTH in plaintext",
    );
    let e = errors_in(d.path(), &alerts("{host: smtp.example.com, tls: none}"));
    expect(
        &e,
        "2:39",
        "tls: none is allowed only for a relay on this host",
    );
    let e = errors_in(
        d.path(),
        &alerts("{host: smtp.example.com, username_file: u, password_env: MISSING}"),
    );
    expect(&e, "2:66", "environment variable MISSING is not set");
    let e = errors_in(
        d.path(),
        &alerts("{host: smtp.example.com, username_file: u}"),
    );
    expect(&e, "2:9", "AUTH needs both a username and a password");
    let e = errors_in(
        d.path(),
        &alerts("{host: smtp.example.com, username_file: missing, password_file: p}"),
    );
    expect(&e, "2:49", "alerts.smtp.username_file: cannot read");
}

#[test]
fn alert_fields() {
    only(
        "alerts:\n  smtp: {host: smtp.example.com}\n  from: not-an-address\n  to: [b@example.com]\n",
        "3:9",
        "expected a mail address",
    );
    only(
        "alerts:\n  smtp: {host: smtp.example.com}\n  from: a@example.com\n  to: [b@example.com]\n  events: [target_down]\n",
        "5:12",
        "expected one of target_unhealthy",
    );
    only(
        "alerts:\n  smtp: {host: smtp.example.com}\n  from: a@example.com\n  to: [b@example.com]\n  max_send_rate: 0\n",
        "5:18",
        "must be above 0",
    );
    only(
        "alerts:\n  smtp: {host: smtp.example.com}\n  from: a@example.com\n  to: []\n",
        "4:7",
        "must list at least one recipient",
    );
}

// ---------------------------------------------------------------- all at once

#[test]
fn many_errors_reported_at_once_in_file_order() {
    let y = "\
runtime:
  shutdown_timeout: 30
  worker_thread: 2
target_groups:
  - name: web
    algorithm: least_outstanding_requests
    slow_start: 60s
    health_check: {interval: 5s, timeout: 10s}
  - name: web
listeners:
  - name: a
    bind: 0.0.0.0:80
    rules:
      - {priority: 1, conditions: {path: [\"/*a*b*c*\"]}, action: {forward: web}}
      - {priority: 1, conditions: {path: [/x]}, action: {forward: ghost}}
    default_action: {forward: web}
  - name: b
    bind: 127.0.0.1:80
    default_action: {redirect: {status: 301}}
alerts:
  smtp: {host: smtp.example.com, password: x}
  from: a@example.com
  to: [b@example.com]
";
    let e = errors(y);
    let want = [
        ("2:21", "runtime.shutdown_timeout: a bare number"),
        ("3:3", "runtime.worker_thread: unknown key"),
        (
            "7:17",
            "target_groups[0].slow_start: slow_start cannot be combined",
        ),
        (
            "8:43",
            "target_groups[0].health_check.timeout: timeout (10s) must be less than interval (5s)",
        ),
        ("9:11", "target_groups[1].name: duplicate target group name"),
        (
            "14:43",
            "listeners[0].rules[0].conditions.path[0]: \"/*a*b*c*\" has 4 wildcard characters",
        ),
        (
            "15:20",
            "listeners[0].rules[1].priority: duplicate priority 1",
        ),
        (
            "15:67",
            "listeners[0].rules[1].action.forward: no target group named \"ghost\"",
        ),
        (
            "18:11",
            "listeners[1].bind: 127.0.0.1:80 overlaps listener a (line 12)",
        ),
        (
            "19:32",
            "listeners[1].default_action.redirect: a redirect must change",
        ),
        (
            "21:34",
            "alerts.smtp.password: secrets are never given inline",
        ),
    ];
    for (at, needle) in want {
        expect(&e, at, needle);
    }
    assert_eq!(e.len(), want.len(), "{}", e.join("\n"));
    // sorted by position
    let mut sorted = e.clone();
    sorted.sort_by_key(|s| {
        let mut it = s.split(':').skip(1).map(|n| n.parse::<u32>().unwrap_or(0));
        (it.next(), it.next())
    });
    assert_eq!(e, sorted);
}

// ---------------------------------------------------------------- shipped files

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

#[test]
fn shipped_example_config_passes() {
    crate::install_crypto_provider();
    let s = match load_with(
        &repo("config/fulcrum.yaml"),
        LoadOptions {
            env: Box::new(|_| None),
        },
    ) {
        Ok(s) => s,
        Err(e) => panic!(
            "{}",
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    };
    assert_eq!(s.node.name, "lb-a");
    assert!(s.alerts.is_some());
    assert_eq!(s.source.sha256.len(), 64);
}

#[test]
fn shipped_example_config_shows_every_key() {
    let text = std::fs::read_to_string(repo("config/fulcrum.yaml")).unwrap();
    let mut missing = Vec::new();
    for path in schema::all_key_paths() {
        let key = path
            .rsplit('.')
            .next()
            .unwrap_or(&path)
            .trim_end_matches("[]");
        let present = text.contains(&format!("{key}:")) || text.contains(&format!("{key} :"));
        if !present {
            missing.push(path);
        }
    }
    assert!(
        missing.is_empty(),
        "config/fulcrum.yaml does not show: {missing:?}"
    );
}

#[test]
fn configuration_reference_documents_every_key() {
    let text = std::fs::read_to_string(repo("docs/configuration.md")).unwrap();
    let missing: Vec<String> = schema::all_key_paths()
        .into_iter()
        .filter(|p| !text.contains(&format!("`{p}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not document: {missing:?}"
    );
}
