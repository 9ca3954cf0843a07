//! Target selection. Lock-free: one atomic rotation per group, shared by every
//! worker. The health-aware eligibility and the other algorithms build on this.

pub mod cookie;

use std::sync::atomic::Ordering;

use crate::live::LiveGroup;

/// Picks a target index for a new request or connection; `skip` excludes one
/// target (the one a retry moves away from). `None` when the group is empty.
pub fn pick(group: &LiveGroup, skip: Option<usize>) -> Option<usize> {
    let n = group.targets.len();
    if n == 0 || (n == 1 && skip == Some(0)) {
        return None;
    }
    loop {
        let i = group.state.rotation.fetch_add(1, Ordering::Relaxed) % n;
        if Some(i) != skip {
            return Some(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::Registry;

    fn group(n: usize) -> LiveGroup {
        let mut r = Registry::default();
        LiveGroup {
            state: r.group("g"),
            targets: (0..n).map(|i| r.target("g", &format!("t{i}"))).collect(),
        }
    }

    #[test]
    fn round_robin_rotates_over_every_target() {
        let g = group(3);
        let picks: Vec<usize> = (0..9).filter_map(|_| pick(&g, None)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn retries_skip_the_failed_target() {
        let g = group(2);
        for _ in 0..10 {
            assert_eq!(pick(&g, Some(1)), Some(0));
        }
        assert_eq!(pick(&group(1), Some(0)), None);
        assert_eq!(pick(&group(0), None), None);
    }
}
