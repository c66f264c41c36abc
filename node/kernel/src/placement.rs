//! Where a plugin call runs: on this node, or on peers that hold the
//! plugin's module, chosen from their adverts.

/// Load per core is compared in steps of this many thousandths: adverts
/// are sampled at different moments, and a smaller difference is noise.
pub const LOAD_STEP_MILLI: u64 = 250;

/// A peer that holds the plugin's module, as its advert describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<P> {
    pub peer: P,
    /// Its one-minute load average per core, in thousandths.
    pub load_per_core_milli: u64,
    /// The round-trip time this node measured to it, if any.
    pub rtt_ms: Option<u64>,
}

/// This node, as far as the choice goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Here {
    /// It runs the plugin (it holds and loaded the module).
    pub runs_plugin: bool,
    /// Its one-minute load average per core, in thousandths.
    pub load_per_core_milli: u64,
}

/// One place to try a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place<P> {
    Here,
    Peer(P),
}

/// The places to try a call at, in order, at most `attempts` peers and
/// then this node if it runs the plugin. A node that runs the plugin and
/// is not loaded at or above `offload_above_milli` (load per core; `None`:
/// never offload for load) runs it itself, and only there. Otherwise peers
/// come first: by load (in [`LOAD_STEP_MILLI`] steps), then round-trip
/// time (unknown last); a node offloading because it is loaded skips peers
/// loaded at or above the threshold too, since they are no better.
pub fn plan<P>(
    here: Here,
    mut candidates: Vec<Candidate<P>>,
    offload_above_milli: Option<u64>,
    attempts: usize,
) -> Vec<Place<P>> {
    let overloaded = offload_above_milli.is_some_and(|threshold| here.load_per_core_milli >= threshold);
    if here.runs_plugin && !overloaded {
        return vec![Place::Here];
    }
    if here.runs_plugin {
        if let Some(threshold) = offload_above_milli {
            candidates.retain(|candidate| candidate.load_per_core_milli < threshold);
        }
    }
    candidates.sort_by_key(|candidate| {
        (candidate.load_per_core_milli / LOAD_STEP_MILLI, candidate.rtt_ms.unwrap_or(u64::MAX))
    });
    let mut places: Vec<Place<P>> =
        candidates.into_iter().take(attempts).map(|candidate| Place::Peer(candidate.peer)).collect();
    if here.runs_plugin {
        places.push(Place::Here);
    }
    places
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &'static str, load: u64, rtt: Option<u64>) -> Candidate<&'static str> {
        Candidate { peer: name, load_per_core_milli: load, rtt_ms: rtt }
    }

    fn peers() -> Vec<Candidate<&'static str>> {
        vec![
            peer("busy", 1_900, Some(1)),
            peer("far", 100, Some(40)),
            peer("near", 150, Some(2)),
            peer("unmeasured", 120, None),
            peer("idle", 600, Some(1)),
        ]
    }

    #[test]
    fn a_node_that_runs_the_plugin_and_is_not_loaded_runs_it_itself() {
        let here = Here { runs_plugin: true, load_per_core_milli: 500 };
        assert_eq!(plan(here, peers(), None, 3), [Place::Here]);
        assert_eq!(plan(here, peers(), Some(800), 3), [Place::Here]);
    }

    #[test]
    fn a_node_without_the_plugin_tries_the_least_loaded_then_nearest_peers() {
        let here = Here { runs_plugin: false, load_per_core_milli: 0 };
        // 100, 150 and 120 are one load step: round-trip time decides, unknown last.
        assert_eq!(plan(here, peers(), None, 3), [Place::Peer("near"), Place::Peer("far"), Place::Peer("unmeasured")]);
        assert_eq!(plan(here, peers(), None, 10).last(), Some(&Place::Peer("busy")));
        assert!(plan(here, Vec::<Candidate<&str>>::new(), None, 3).is_empty());
    }

    #[test]
    fn a_loaded_node_offloads_to_peers_under_the_threshold_then_falls_back_to_itself() {
        let here = Here { runs_plugin: true, load_per_core_milli: 1_200 };
        assert_eq!(
            plan(here, peers(), Some(800), 3),
            [Place::Peer("near"), Place::Peer("far"), Place::Peer("unmeasured"), Place::Here]
        );
        let all_busy = vec![peer("busy", 1_900, Some(1))];
        assert_eq!(plan(here, all_busy, Some(800), 3), [Place::Here]);
    }
}
