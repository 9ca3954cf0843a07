//! The value published behind the one `ArcSwap`: the validated config snapshot
//! joined with the runtime state objects (targets, groups, listeners) it refers
//! to. Built by the control thread at start and on every reload; a connection
//! loads it once per request and uses that view to the end.

use std::sync::Arc;

use metrics::Counter;

use crate::balancer::cookie::{CookieKey, opaque_id};
use crate::metrics::LazyCounter;
use crate::snapshot::{GroupId, Snapshot};
use crate::targets::{GroupState, ListenerState, Registry, TargetState};

pub struct Live {
    pub snapshot: Arc<Snapshot>,
    /// Names a reload took away from a listener that kept its bind under a new
    /// name, with the new listener's index: connections accepted under the old
    /// name go on under the new one (see [`Live::listener_index`]).
    pub renamed: std::collections::HashMap<String, usize>,
    /// Same order as `snapshot.listeners`.
    pub listeners: Vec<LiveListener>,
    /// Same order as `snapshot.target_groups`.
    pub groups: Vec<LiveGroup>,
    /// Signs and checks sticky cookies (the node secret, or a per-process key).
    pub cookie_key: Arc<CookieKey>,
    /// Opaque cookie id of each group, by group id.
    pub group_cookie_ids: Vec<u64>,
    /// The access log, when one is configured.
    pub access_log: Option<crate::access_log::AccessLog>,
    /// TLS server configs of https/tls listeners, by listener index.
    pub tls_servers: Vec<Option<Arc<rustls::ServerConfig>>>,
    /// TLS client configs of https/tls target groups, by group id.
    pub tls_clients: Vec<Option<Arc<rustls::ClientConfig>>>,
    /// The pool's TLS id of each target's connections, by group id and target
    /// index: 0 for plain TCP, else a digest of what the handshake depended on
    /// (see [`tls_pool_id`]).
    tls_pool_ids: Vec<Vec<u64>>,
}

/// What a group's TLS verification depends on: `verify_tls` and the trust
/// anchors' file (the CA file, or the system bundle without one) by path, size
/// and modification time, so an edited file counts as another. Taken before the
/// client config is built from the file, so an edit in between shows at the next
/// reload.
fn trust_digest(g: &crate::snapshot::TargetGroup) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    g.verify_tls.hash(&mut h);
    if g.verify_tls {
        let anchors = g
            .ca_file
            .as_deref()
            .unwrap_or(std::path::Path::new(crate::tls::client::SYSTEM_CA_BUNDLE));
        anchors.hash(&mut h);
        if let Ok(m) = std::fs::metadata(anchors) {
            m.len().hash(&mut h);
            m.modified().ok().hash(&mut h);
        }
    }
    h.finish()
}

/// What a TLS connection to a target was made under: the group, its trust
/// ([`trust_digest`]) and the name the target is verified and addressed by (SNI).
/// Equal across reloads that change none of these, so a reload keeps the pool.
/// Never 0.
fn tls_pool_id(group: &str, trust: u64, address: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    group.hash(&mut h);
    trust.hash(&mut h);
    address.hash(&mut h);
    h.finish() | 1
}

pub struct LiveListener {
    pub state: Arc<ListenerState>,
    /// `fulcrum_requests_total{listener, target_group}`, by group id.
    requests: Vec<LazyCounter>,
}

impl LiveListener {
    pub fn requests(&self, group: GroupId, group_name: &str) -> &Counter {
        // The vector has one slot per group of the same snapshot.
        let slot = &self.requests[group.0 as usize];
        slot.get(|| crate::metrics::requests(&self.state.metrics.name, group_name))
    }
}

pub struct LiveGroup {
    pub state: Arc<GroupState>,
    /// Same order as the group's `targets` in the snapshot.
    pub targets: Vec<Arc<TargetState>>,
}

impl Live {
    /// Joins a snapshot with the registry's state objects (creating new ones for
    /// new names and addresses).
    pub fn build(snapshot: Arc<Snapshot>, registry: &mut Registry) -> Live {
        let groups = snapshot
            .target_groups
            .iter()
            .map(|g| LiveGroup {
                state: registry.group(&g.name),
                targets: g
                    .targets
                    .iter()
                    .map(|t| registry.target(&g.name, &t.address))
                    .collect(),
            })
            .collect();
        let listeners = snapshot
            .listeners
            .iter()
            .map(|l| LiveListener {
                state: registry.listener(&l.name),
                requests: snapshot
                    .target_groups
                    .iter()
                    .map(|_| LazyCounter::default())
                    .collect(),
            })
            .collect();
        let cookie_key = registry.cookie_key(snapshot.node.secret_file.as_deref());
        let access_log = registry.access_log(&snapshot.access_log);
        // Certificates were loaded and checked by the config loader; a failure here
        // leaves the listener unable to serve TLS, which is logged.
        let tls_servers = snapshot
            .listeners
            .iter()
            .map(|l| {
                if !l.protocol.terminates_tls() {
                    return None;
                }
                crate::tls::server::server_config(l, &snapshot.certificates)
                    .map_err(|e| tracing::error!(listener = %l.name, "TLS: {e}"))
                    .ok()
            })
            .collect();
        // Before the configs read the files (see trust_digest).
        let trust: Vec<u64> = snapshot.target_groups.iter().map(trust_digest).collect();
        let tls_clients = snapshot
            .target_groups
            .iter()
            .map(|g| {
                if !matches!(
                    g.protocol,
                    crate::snapshot::GroupProtocol::Https | crate::snapshot::GroupProtocol::Tls
                ) {
                    return None;
                }
                // A config that cannot be built (say the CA file went missing after
                // validation) fails closed: every handshake is refused, never a
                // plain-text connection to a TLS target.
                match crate::tls::client::client_config(g.verify_tls, g.ca_file.as_deref()) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::error!(target_group = %g.name, "TLS: {e}; handshakes with its targets will fail");
                        crate::tls::client::refusing_config(&e)
                    }
                }
            })
            .collect::<Vec<_>>();
        let tls_pool_ids = tls_clients
            .iter()
            .zip(&snapshot.target_groups)
            .zip(&trust)
            .map(
                |((c, g), trust): ((&Option<Arc<rustls::ClientConfig>>, _), _)| {
                    g.targets
                        .iter()
                        .map(|t| {
                            c.as_ref()
                                .map_or(0, |_| tls_pool_id(&g.name, *trust, &t.address))
                        })
                        .collect()
                },
            )
            .collect();
        let group_cookie_ids = snapshot
            .target_groups
            .iter()
            .map(|g| opaque_id(&[&g.name]))
            .collect();
        Live {
            snapshot,
            listeners,
            groups,
            cookie_key,
            group_cookie_ids,
            access_log,
            tls_servers,
            tls_clients,
            tls_pool_ids,
            renamed: std::collections::HashMap::new(),
        }
    }

    /// The pool key of a connection to target `ti` (at `addr`) of group `gid`.
    pub fn pool_key(
        &self,
        gid: GroupId,
        ti: usize,
        addr: std::net::SocketAddr,
    ) -> crate::http::pool::Key {
        let tls = self
            .tls_pool_ids
            .get(gid.0 as usize)
            .and_then(|g| g.get(ti))
            .copied()
            .unwrap_or(0);
        crate::http::pool::Key { addr, tls }
    }

    /// The TLS client config and server name for target `ti` of group `gid`,
    /// when the group speaks TLS to its targets.
    pub fn target_tls(
        &self,
        gid: GroupId,
        ti: usize,
    ) -> Option<(
        &Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )> {
        let cfg = self.tls_clients.get(gid.0 as usize)?.as_ref()?;
        let t = self
            .snapshot
            .target_groups
            .get(gid.0 as usize)?
            .targets
            .get(ti)?;
        Some((cfg, crate::tls::client::server_name(&t.address, t.addr)))
    }

    /// The index of a listener by name.
    pub fn listener_index(&self, name: &str) -> Option<usize> {
        self.snapshot
            .listeners
            .iter()
            .position(|l| l.name == name)
            .or_else(|| self.renamed.get(name).copied())
    }

    /// Fills [`Live::renamed`] from the previous view: every listener name of
    /// `old` (renamed ones included) that this config no longer has, whose bind
    /// a listener of this config took over.
    pub fn carry_renames(&mut self, old: &Live) {
        let old_names =
            old.snapshot
                .listeners
                .iter()
                .map(|l| (l.name.as_str(), l.bind))
                .chain(old.renamed.iter().filter_map(|(n, &i)| {
                    old.snapshot.listeners.get(i).map(|l| (n.as_str(), l.bind))
                }));
        for (name, bind) in old_names {
            if self.snapshot.listeners.iter().any(|l| l.name == name) {
                continue;
            }
            if let Some(i) = self.snapshot.listeners.iter().position(|l| l.bind == bind) {
                self.renamed.insert(name.to_owned(), i);
            }
        }
    }
}
