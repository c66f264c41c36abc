//! Leases: a node's share of an agreement's allowance, reserved through the
//! log in one entry and spent here call by call, so most governed calls
//! need no Raft round. Apply never grants more than a limit has left, so the
//! sum of all nodes' leases never exceeds it; what a lease did not spend is
//! returned by settling it (when it is replaced and its last call is done,
//! or when it has been idle).

use std::collections::BTreeMap;

use zeromesh_protocol::agreement::{Metric, Usage};

/// A call's share taken from a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub lease_key: String,
    /// The lease's reservation entry.
    pub log_index: u64,
    pub grant: Usage,
}

/// A lease to settle: it is done, and `used` is what its calls spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spent {
    pub agreement: String,
    pub lease_key: String,
    pub used: Usage,
}

#[derive(Debug, Clone)]
struct Lease {
    key: String,
    log_index: u64,
    granted: Usage,
    left: Usage,
    /// The policy set version it was granted under: it serves only calls
    /// decided under that version.
    policy: u64,
    /// Calls running on it.
    in_flight: u32,
    last_used_ms: u64,
}

impl Lease {
    fn spent(&self, agreement: &str) -> Spent {
        Spent { agreement: agreement.to_owned(), lease_key: self.key.clone(), used: self.granted.minus(&self.left) }
    }
}

/// The leases one node holds: at most one current lease per agreement, and
/// replaced ones waiting for their last call.
#[derive(Debug, Default)]
pub struct LeaseBook {
    current: BTreeMap<String, Lease>,
    retiring: BTreeMap<(String, String), Lease>,
}

impl LeaseBook {
    /// Takes `want` from agreement `agreement`'s current lease: amounts known
    /// before the call exactly, the others up to what the lease has left.
    /// `None` when there is no lease, it was granted under another policy
    /// set version than `policy`, or it cannot cover the call.
    pub fn take(&mut self, agreement: &str, want: &Usage, policy: u64, now_ms: u64) -> Option<Taken> {
        let lease = self.current.get_mut(agreement).filter(|lease| lease.policy == policy)?;
        let mut grant = *want;
        for metric in Metric::ALL {
            let (wanted, left) = (want.get(metric), lease.left.get(metric));
            if wanted == 0 {
                continue;
            }
            if (metric.known_before() && wanted > left) || left == 0 {
                return None;
            }
            grant.set(metric, wanted.min(left));
        }
        lease.left = lease.left.minus(&grant);
        lease.in_flight += 1;
        lease.last_used_ms = now_ms;
        Some(Taken { lease_key: lease.key.clone(), log_index: lease.log_index, grant })
    }

    /// Makes a freshly granted lease the current one for `agreement`. The
    /// one it replaces is returned to settle at once if no call runs on it,
    /// else when its last call gives back.
    pub fn install(
        &mut self,
        agreement: &str,
        key: String,
        log_index: u64,
        granted: Usage,
        policy: u64,
        now_ms: u64,
    ) -> Option<Spent> {
        let lease = Lease { key, log_index, granted, left: granted, policy, in_flight: 0, last_used_ms: now_ms };
        let replaced = self.current.insert(agreement.to_owned(), lease)?;
        if replaced.in_flight == 0 {
            return Some(replaced.spent(agreement));
        }
        self.retiring.insert((agreement.to_owned(), replaced.key.clone()), replaced);
        None
    }

    /// A call on lease `lease_key` is done and did not use `unused` of its
    /// grant. Returns the lease to settle when it was replaced and this was
    /// its last call.
    pub fn give_back(&mut self, agreement: &str, lease_key: &str, unused: &Usage, now_ms: u64) -> Option<Spent> {
        let retiring_key = (agreement.to_owned(), lease_key.to_owned());
        let lease = match self.current.get_mut(agreement) {
            Some(lease) if lease.key == lease_key => lease,
            _ => self.retiring.get_mut(&retiring_key)?,
        };
        for metric in Metric::ALL {
            let restored = (lease.left.get(metric) + unused.get(metric)).min(lease.granted.get(metric));
            lease.left.set(metric, restored);
        }
        lease.in_flight = lease.in_flight.saturating_sub(1);
        lease.last_used_ms = now_ms;
        if lease.in_flight > 0 || !self.retiring.contains_key(&retiring_key) {
            return None;
        }
        self.retiring.remove(&retiring_key).map(|lease| lease.spent(agreement))
    }

    /// Current leases no call has used for `idle_ms` and none runs on:
    /// removed, to settle, so their allowance goes back to the mesh.
    pub fn idle(&mut self, now_ms: u64, idle_ms: u64) -> Vec<Spent> {
        let done: Vec<String> = self
            .current
            .iter()
            .filter(|(_, lease)| lease.in_flight == 0 && now_ms.saturating_sub(lease.last_used_ms) >= idle_ms)
            .map(|(agreement, _)| agreement.clone())
            .collect();
        done.into_iter()
            .filter_map(|agreement| self.current.remove(&agreement).map(|lease| lease.spent(&agreement)))
            .collect()
    }

    /// Leases held, current and retiring.
    pub fn held(&self) -> usize {
        self.current.len() + self.retiring.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(count: u64) -> Usage {
        Usage { calls: count, ..Usage::default() }
    }

    #[test]
    fn calls_are_served_from_a_lease_until_it_runs_out() {
        let mut book = LeaseBook::default();
        assert_eq!(book.take("deal", &calls(1), 0, 0), None, "no lease yet");
        assert_eq!(book.install("deal", "lease-1".into(), 40, calls(2), 0, 0), None);
        let first = book.take("deal", &calls(1), 0, 1).unwrap();
        assert_eq!(first, Taken { lease_key: "lease-1".into(), log_index: 40, grant: calls(1) });
        book.take("deal", &calls(1), 0, 2).unwrap();
        assert_eq!(book.take("deal", &calls(1), 0, 3), None, "two calls leased, two taken");
    }

    #[test]
    fn a_lease_serves_only_calls_decided_under_the_policy_set_it_was_granted_under() {
        let mut book = LeaseBook::default();
        book.install("deal", "lease-1".into(), 40, calls(5), 3, 0);
        assert_eq!(book.take("deal", &calls(1), 4, 1), None, "decided under a newer set");
        let spent = book.install("deal", "lease-2".into(), 41, calls(5), 4, 2).unwrap();
        assert_eq!(spent.used, Usage::default(), "the old lease goes back whole");
        assert_eq!(book.take("deal", &calls(1), 4, 3).unwrap().lease_key, "lease-2");
    }

    #[test]
    fn amounts_known_afterwards_are_granted_up_to_what_is_left_and_come_back() {
        let mut book = LeaseBook::default();
        let granted = Usage { calls: 10, fuel: 1_500, ..Usage::default() };
        book.install("deal", "lease-1".into(), 40, granted, 0, 0);
        let want = Usage { calls: 1, fuel: 1_000, ..Usage::default() };
        let first = book.take("deal", &want, 0, 1).unwrap();
        let second = book.take("deal", &want, 0, 1).unwrap();
        assert_eq!((first.grant.fuel, second.grant.fuel), (1_000, 500));
        assert_eq!(book.take("deal", &want, 0, 1), None, "no fuel left");
        book.give_back("deal", "lease-1", &Usage { fuel: 900, ..Usage::default() }, 2);
        assert_eq!(book.take("deal", &want, 0, 3).unwrap().grant.fuel, 900);
    }

    #[test]
    fn a_replaced_lease_is_settled_after_its_last_call_with_what_it_spent() {
        let mut book = LeaseBook::default();
        book.install("deal", "old".into(), 40, calls(3), 0, 0);
        let running = book.take("deal", &calls(1), 0, 1).unwrap();
        assert_eq!(book.install("deal", "new".into(), 41, calls(3), 0, 2), None, "a call still runs on the old one");
        assert_eq!(book.take("deal", &calls(1), 0, 3).unwrap().lease_key, "new");
        let spent = book.give_back("deal", &running.lease_key, &Usage::default(), 4).unwrap();
        assert_eq!(spent, Spent { agreement: "deal".into(), lease_key: "old".into(), used: calls(1) });
        assert_eq!(book.held(), 1);
    }

    #[test]
    fn an_idle_lease_returns_but_not_while_a_call_runs_on_it() {
        let mut book = LeaseBook::default();
        book.install("deal", "lease-1".into(), 40, calls(5), 0, 0);
        let running = book.take("deal", &calls(1), 0, 10).unwrap();
        assert!(book.idle(10_000, 500).is_empty(), "a call runs on it");
        book.give_back("deal", &running.lease_key, &Usage::default(), 20);
        assert!(book.idle(400, 500).is_empty(), "not idle long enough");
        let spent = book.idle(520, 500);
        assert_eq!(spent, [Spent { agreement: "deal".into(), lease_key: "lease-1".into(), used: calls(1) }]);
        assert_eq!(book.held(), 0);
    }
}
