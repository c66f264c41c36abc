//! The time a leader stamps into the entries it proposes: its wall clock,
//! held to its monotonic clock.
//!
//! From one stamp to the next, a stamp may advance by the monotonic time
//! elapsed, give or take [`MAX_SLEW_PERCENT`]. A wall clock that runs
//! normally, or is slewed by NTP, is followed exactly; one that is stepped
//! (set back or forward by hand, a virtual machine resumed, NTP stepping) is
//! not: stamps keep to real time and reach the new wall time only gradually,
//! 1% faster or slower. So an agreement's per-minute window lasts 59.4 to
//! 60.6 real seconds, never runs backwards and never skips an hour. A node
//! that becomes leader goes on from the latest time it applied (by how long
//! ago it applied it), so a new leader's clock, behind or ahead, is held to
//! the old leader's time the same way. Apply adds the rest: an entry stamped
//! earlier than the latest applied time takes effect at that time
//! (`Applier::entry_time`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// How far, in percent of the monotonic time elapsed, stamps may run
/// faster or slower than real time while they catch up with a stepped
/// wall clock (NTP itself slews at most 0.05%).
pub const MAX_SLEW_PERCENT: u64 = 1;

/// How far ahead of the monotonic count a stamp may be (µs): the two clocks
/// are read apart, and the time applied reached this node a little after
/// its leader stamped it.
const TOLERANCE_MICROS: u64 = 250_000;

/// A change of the wall clock's distance from the stamps larger than this
/// (µs) is a new step, said in the log.
const STEP_SAID_MICROS: i64 = 1_000_000;

/// Stamps for one node's proposals.
#[derive(Default)]
pub(crate) struct EntryClock {
    state: Mutex<Option<Stamped>>,
}

#[derive(Clone, Copy)]
struct Stamped {
    /// A time (µs since the epoch) and when it was read, by the monotonic
    /// clock: the wall clock when it was last followed, or the time applied.
    anchor: (u64, Instant),
    /// The last stamp given.
    last: u64,
    /// The wall clock's distance from the stamps when it was last said.
    said_gap: i64,
}

/// How far (µs) this process's wall clock is stepped from the system's:
/// zero, except on a node a fault test steps (`step_wall_clock`).
static WALL_STEP_MICROS: AtomicI64 = AtomicI64::new(0);

/// Steps this process's wall clock, as [`wall_clock_ms`] and the stamps of
/// its proposals read it, `micros` away from the system's (negative: back).
/// For fault tests (`zeromesh run --test-faults --test-clock-file`): a
/// stepped clock as an administrator or a resumed virtual machine makes
/// one, without touching the machine's.
pub fn step_wall_clock(micros: i64) {
    WALL_STEP_MICROS.store(micros, Ordering::Relaxed);
}

fn wall_micros() -> u64 {
    let system = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_micros() as u64);
    system.saturating_add_signed(WALL_STEP_MICROS.load(Ordering::Relaxed))
}

/// This node's wall clock: ms since the Unix epoch.
pub fn wall_clock_ms() -> u64 {
    wall_micros() / 1000
}

impl EntryClock {
    /// The stamp for a proposal made now, in ms since the Unix epoch, given
    /// the latest time applied here and when it was (`None` before this
    /// process applied any).
    pub(crate) fn stamp_ms(&self, applied: Option<(u64, Instant)>) -> u64 {
        let applied = applied.map(|(ms, at)| (ms.saturating_mul(1000), at));
        self.stamp_micros(wall_micros(), Instant::now(), applied) / 1000
    }

    /// The stamp for a proposal made at `now` when the wall clock reads
    /// `wall` (µs), and the latest time applied here was `applied`.
    fn stamp_micros(&self, wall: u64, now: Instant, applied: Option<(u64, Instant)>) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Another leader stamped after this node last did: go on from its time.
        if let Some((time, at)) = applied.filter(|(time, _)| state.is_none_or(|stamped| *time > stamped.last)) {
            let said_gap = state.map_or(0, |stamped| stamped.said_gap);
            *state = Some(Stamped { anchor: (time, at), last: time, said_gap });
        }
        let Some(mut stamped) = *state else {
            *state = Some(Stamped { anchor: (wall, now), last: wall, said_gap: 0 });
            return wall;
        };
        let (anchor, at) = stamped.anchor;
        let elapsed = now.saturating_duration_since(at).as_micros() as u64;
        let slowest = anchor + elapsed * (100 - MAX_SLEW_PERCENT) / 100;
        let fastest = anchor + elapsed * (100 + MAX_SLEW_PERCENT) / 100 + TOLERANCE_MICROS;
        let stamp = wall.clamp(slowest, fastest).max(stamped.last);
        if stamp == wall {
            stamped.anchor = (wall, now);
        }
        stamped.last = stamp;
        let gap = wall as i64 - stamp as i64;
        if (gap - stamped.said_gap).abs() > STEP_SAID_MICROS {
            stamped.said_gap = gap;
            tracing::warn!(
                wall_minus_stamp_ms = gap / 1000,
                "the wall clock was stepped: entries are stamped at most {MAX_SLEW_PERCENT}% faster or slower than the monotonic clock until they meet it"
            );
        } else if gap == 0 && stamped.said_gap != 0 {
            stamped.said_gap = 0;
            tracing::info!("entries are stamped by the wall clock again");
        }
        *state = Some(stamped);
        stamp
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SECOND: u64 = 1_000_000;
    const HOUR: u64 = 3600 * SECOND;
    const BASE: u64 = 1_000 * HOUR;

    /// Stamps one proposal a second for `seconds`, the wall clock reading
    /// `wall(second)`; the stamps.
    fn run(clock: &EntryClock, start: Instant, seconds: u64, wall: impl Fn(u64) -> u64) -> Vec<u64> {
        (0..seconds).map(|second| clock.stamp_micros(wall(second), start + Duration::from_secs(second), None)).collect()
    }

    #[test]
    fn a_running_wall_clock_is_followed_exactly() {
        let clock = EntryClock::default();
        let stamps = run(&clock, Instant::now(), 100, |second| BASE + second * SECOND + 137);
        assert!(stamps.iter().enumerate().all(|(second, stamp)| *stamp == BASE + second as u64 * SECOND + 137));
    }

    #[test]
    fn a_clock_set_back_an_hour_moves_stamps_neither_back_nor_to_a_halt() {
        let clock = EntryClock::default();
        let stamps =
            run(&clock, Instant::now(), 20, |second| BASE + second * SECOND - if second >= 10 { HOUR } else { 0 });
        for pair in stamps[9..].windows(2) {
            assert_eq!(pair[1] - pair[0], SECOND * 99 / 100, "1% slower than real time: {stamps:?}");
        }
    }

    #[test]
    fn a_clock_set_forward_an_hour_moves_stamps_only_a_little_faster() {
        let clock = EntryClock::default();
        let stamps =
            run(&clock, Instant::now(), 20, |second| BASE + second * SECOND + if second >= 10 { HOUR } else { 0 });
        let first_step = stamps[10] - stamps[9];
        assert!(first_step <= SECOND * 101 / 100 + TOLERANCE_MICROS, "no jump: {first_step} µs in a second");
        for pair in stamps[10..].windows(2) {
            assert!(pair[1] - pair[0] <= SECOND * 101 / 100, "at most 1% faster: {stamps:?}");
        }
        // Many proposals a second do not add up their tolerances.
        let start = Instant::now();
        let busy = EntryClock::default();
        busy.stamp_micros(BASE, start, None);
        let last = (1..=1000u64)
            .map(|ms| busy.stamp_micros(BASE + HOUR + ms * 1000, start + Duration::from_millis(ms), None))
            .last()
            .unwrap();
        assert!(last - BASE <= SECOND * 101 / 100 + TOLERANCE_MICROS, "{} µs ahead after a second", last - BASE);
    }

    #[test]
    fn the_wall_clock_is_followed_again_once_it_is_set_right() {
        let clock = EntryClock::default();
        let stamps = run(&clock, Instant::now(), 30, |second| {
            BASE + second * SECOND - if (10..20).contains(&second) { HOUR } else { 0 }
        });
        assert_eq!(stamps[25], BASE + 25 * SECOND);
    }

    #[test]
    fn a_new_leader_goes_on_from_the_time_it_applied_whatever_its_clock() {
        let start = Instant::now();
        let applied = Some((BASE, start));
        for offset in [-(HOUR as i64), HOUR as i64] {
            let clock = EntryClock::default();
            let stamps: Vec<u64> = (1..=10u64)
                .map(|second| {
                    let wall = (BASE + second * SECOND) as i64 + offset;
                    clock.stamp_micros(wall as u64, start + Duration::from_secs(second), applied)
                })
                .collect();
            for (second, stamp) in (1..).zip(&stamps) {
                let real = BASE + second * SECOND;
                assert!(stamp.abs_diff(real) <= second * SECOND / 100 + TOLERANCE_MICROS, "{offset}: {stamps:?}");
            }
        }
        // A clock that agrees with the time applied is followed.
        let clock = EntryClock::default();
        assert_eq!(clock.stamp_micros(BASE + SECOND, start + Duration::from_secs(1), applied), BASE + SECOND);
    }
}
