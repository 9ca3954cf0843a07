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
    /// Same order as `snapshot.listeners`.
    pub listeners: Vec<LiveListener>,
    /// Same order as `snapshot.target_groups`.
    pub groups: Vec<LiveGroup>,
    /// Signs and checks sticky cookies (the node secret, or a per-process key).
    pub cookie_key: Arc<CookieKey>,
    /// Opaque cookie id of each group, by group id.
    pub group_cookie_ids: Vec<u64>,
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
        }
    }

    /// The index of a listener by name.
    pub fn listener_index(&self, name: &str) -> Option<usize> {
        self.snapshot.listeners.iter().position(|l| l.name == name)
    }
}
