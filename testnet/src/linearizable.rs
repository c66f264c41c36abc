//! A linearizability checker for the history of a versioned register (one
//! memory path): puts, reads and compare-and-sets as clients saw them, each
//! with the moment it was invoked and the moment its answer came.
//!
//! The search is Wing and Gong's, with Lowe's memo of visited (set of
//! operations placed, register state) pairs, as Porcupine does it: take the
//! earliest pending invocation whose effect the register allows, place it,
//! and backtrack when an operation answered before it could be placed. An
//! operation whose outcome is unknown (its answer never came, or said so)
//! stays pending to the end: placing it last is the same as it never having
//! happened. No crate fits: the Rust checkers found are part of model
//! checkers (stateright) built around their own actor runtime.
//!
//! The register is a memory path as the nodes apply it: a put writes version
//! `current + 1`; a compare-and-set writes it only when the live version is
//! the one expected, and otherwise answers the live version; a read answers
//! the live version and value. Values are strings, unique per write.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// What an operation asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Put { value: String },
    Get,
    Cas { expected: u64, value: String },
}

/// What an operation answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A put or compare-and-set wrote `version`.
    Written { version: u64 },
    /// A compare-and-set found another live version.
    Mismatch { current: u64 },
    /// A read found `version` holding `value`.
    Found { version: u64, value: String },
    /// A read found nothing.
    Missing,
    /// A write's answer never came or said its outcome is unknown: it may
    /// have taken effect at any moment after its invocation, or never.
    Unknown,
}

/// One operation on one register, with its times in nanoseconds from any
/// common origin (`completed` is `None` for an unknown outcome).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub client: usize,
    pub input: Input,
    pub output: Output,
    pub invoked: u64,
    pub completed: Option<u64>,
}

/// The checker's answer for one register's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order explains the history. `stuck` is the operation (an index in
    /// the history) that answered before the longest explained prefix could
    /// place it; `explained` is that prefix, in order.
    Violation {
        stuck: usize,
        explained: Vec<usize>,
    },
    /// The search ran past its deadline: neither proved nor refuted.
    Inconclusive,
}

/// The register: its live version (0: never written) and value (an index
/// into the history's interned values; `u32::MAX` for none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct State {
    version: u64,
    value: u32,
}

const NO_VALUE: u32 = u32::MAX;
/// The value of a write of unknown outcome that no read saw.
const UNSEEN_VALUE: u32 = u32::MAX - 1;

/// The state after `input` answered `output` in `state`, or `None` if the
/// register could not have answered that there.
fn step(state: State, input: &Input, value: u32, output: &Output, interned: &HashMap<&str, u32>) -> Option<State> {
    let next = State { version: state.version + 1, value };
    match (input, output) {
        (Input::Put { .. }, Output::Written { version }) => (*version == next.version).then_some(next),
        (Input::Put { .. }, Output::Unknown) => Some(next),
        (Input::Cas { expected, .. }, Output::Written { version }) => {
            (state.version == *expected && *version == next.version).then_some(next)
        }
        (Input::Cas { expected, .. }, Output::Mismatch { current }) => {
            (state.version == *current && current != expected).then_some(state)
        }
        (Input::Cas { expected, .. }, Output::Unknown) => (state.version == *expected).then_some(next),
        (Input::Get, Output::Found { version, value }) => {
            let value = interned.get(value.as_str()).copied().unwrap_or(NO_VALUE);
            (state.version == *version && value != NO_VALUE && state.value == value).then_some(state)
        }
        (Input::Get, Output::Missing) => (state.version == 0).then_some(state),
        _ => None,
    }
}

/// A set of operations, one bit each.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Bits {
        Bits(vec![0; len.div_ceil(64)])
    }
    fn set(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }
    fn clear(&mut self, index: usize) {
        self.0[index / 64] &= !(1 << (index % 64));
    }
}

/// One event of the time line: an operation's invocation or its answer.
struct Event {
    operation: usize,
    call: bool,
    /// The other event of the same operation.
    partner: usize,
    prev: usize,
    next: usize,
}

const NONE: usize = usize::MAX;

/// The time line as a doubly linked list (index 0 is its head), from which
/// placed operations are lifted and to which backtracking returns them.
struct Timeline {
    events: Vec<Event>,
}

impl Timeline {
    fn new(history: &[Operation]) -> Timeline {
        // (time, answer after invocation at equal times, operation, call)
        let mut times: Vec<(u64, bool, usize)> = Vec::with_capacity(history.len() * 2);
        for (index, operation) in history.iter().enumerate() {
            times.push((operation.invoked, true, index));
            times.push((operation.completed.unwrap_or(u64::MAX), false, index));
        }
        // Invocations sort before answers at the same instant: the two
        // operations count as overlapping.
        times.sort_by_key(|(time, call, index)| (*time, !*call, *index));
        let mut events = vec![Event {
            operation: NONE,
            call: false,
            partner: NONE,
            prev: NONE,
            next: if times.is_empty() { NONE } else { 1 },
        }];
        let mut call_of = vec![NONE; history.len()];
        for (position, (_, call, operation)) in times.iter().enumerate() {
            let index = position + 1;
            let next = if index == times.len() { NONE } else { index + 1 };
            let partner = if *call {
                call_of[*operation] = index;
                NONE
            } else {
                call_of[*operation]
            };
            if partner != NONE {
                events[partner].partner = index;
            }
            events.push(Event { operation: *operation, call: *call, partner, prev: index - 1, next });
        }
        Timeline { events }
    }

    fn first(&self) -> usize {
        self.events[0].next
    }

    fn unlink(&mut self, index: usize) {
        let (prev, next) = (self.events[index].prev, self.events[index].next);
        self.events[prev].next = next;
        if next != NONE {
            self.events[next].prev = prev;
        }
    }

    fn relink(&mut self, index: usize) {
        let (prev, next) = (self.events[index].prev, self.events[index].next);
        self.events[prev].next = index;
        if next != NONE {
            self.events[next].prev = index;
        }
    }

    /// Takes invocation `call` and its answer out of the time line.
    fn lift(&mut self, call: usize) {
        let answer = self.events[call].partner;
        self.unlink(call);
        self.unlink(answer);
    }

    /// Puts them back, in the reverse order.
    fn unlift(&mut self, call: usize) {
        let answer = self.events[call].partner;
        self.relink(answer);
        self.relink(call);
    }
}

/// Checks one register's `history`, giving up at `deadline`.
///
/// Two reductions keep writes of unknown outcome from making the search
/// exponential. A compare-and-set of unknown outcome is placed only where
/// it writes: where it would not, leaving it to the end is the same. And
/// unknown puts whose value no read saw are interchangeable (the same
/// effect, any moment after their invocation), so only the earliest invoked
/// of those not yet placed is ever tried. The search ends once every
/// operation with a known outcome is placed: the unknown rest go last.
pub fn check(history: &[Operation], deadline: Instant) -> Verdict {
    let observed: HashSet<&str> = history
        .iter()
        .filter_map(|operation| match &operation.output {
            Output::Found { value, .. } => Some(value.as_str()),
            _ => None,
        })
        .collect();
    let mut interned: HashMap<&str, u32> = HashMap::new();
    let mut unseen_puts: Vec<usize> = Vec::new();
    let values: Vec<u32> = history
        .iter()
        .enumerate()
        .map(|(index, operation)| match &operation.input {
            Input::Put { value } | Input::Cas { value, .. } => {
                if operation.output == Output::Unknown && !observed.contains(value.as_str()) {
                    if matches!(operation.input, Input::Put { .. }) {
                        unseen_puts.push(index);
                    }
                    return UNSEEN_VALUE;
                }
                let next = interned.len() as u32;
                *interned.entry(value.as_str()).or_insert(next)
            }
            Input::Get => NO_VALUE,
        })
        .collect();
    unseen_puts.sort_by_key(|index| (history[*index].invoked, *index));
    let mut timeline = Timeline::new(history);
    let mut placed = Bits::new(history.len());
    let mut seen: HashSet<(Bits, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut known_left = history.iter().filter(|operation| operation.output != Output::Unknown).count();
    let mut unseen_placed = 0;
    // The deepest prefix explained, and the operation that answered before it could be placed.
    let mut deepest: Option<(Vec<usize>, usize)> = None;
    let mut state = State { version: 0, value: NO_VALUE };
    let mut cursor = timeline.first();
    let mut steps = 0u64;
    while known_left > 0 {
        steps += 1;
        if steps.is_multiple_of(4096) && Instant::now() > deadline {
            return Verdict::Inconclusive;
        }
        let event = &timeline.events[cursor];
        let operation = event.operation;
        let unseen_put = values[operation] == UNSEEN_VALUE && matches!(history[operation].input, Input::Put { .. });
        if event.call {
            let in_turn = !unseen_put || unseen_puts.get(unseen_placed) == Some(&operation);
            let next = step(state, &history[operation].input, values[operation], &history[operation].output, &interned);
            if let Some(next) = next.filter(|_| in_turn) {
                let mut with = placed.clone();
                with.set(operation);
                if seen.insert((with.clone(), next)) {
                    stack.push((cursor, state));
                    placed = with;
                    state = next;
                    known_left -= usize::from(history[operation].output != Output::Unknown);
                    unseen_placed += usize::from(unseen_put);
                    timeline.lift(cursor);
                    cursor = timeline.first();
                    continue;
                }
            }
            cursor = timeline.events[cursor].next;
        } else {
            // An answer came before its operation could be placed: undo the last placement.
            if deepest.as_ref().is_none_or(|(explained, _)| stack.len() > explained.len()) {
                let explained = stack.iter().map(|(call, _)| timeline.events[*call].operation).collect();
                deepest = Some((explained, operation));
            }
            let Some((call, before)) = stack.pop() else {
                let (explained, stuck) = deepest.expect("set before");
                return Verdict::Violation { stuck, explained };
            };
            let undone = timeline.events[call].operation;
            state = before;
            placed.clear(undone);
            known_left += usize::from(history[undone].output != Output::Unknown);
            unseen_placed -=
                usize::from(values[undone] == UNSEEN_VALUE && matches!(history[undone].input, Input::Put { .. }));
            timeline.unlift(call);
            cursor = timeline.events[call].next;
        }
    }
    Verdict::Linearizable
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn put(client: usize, value: &str, output: Output, invoked: u64, completed: Option<u64>) -> Operation {
        Operation { client, input: Input::Put { value: value.into() }, output, invoked, completed }
    }

    fn get(client: usize, output: Output, invoked: u64, completed: u64) -> Operation {
        Operation { client, input: Input::Get, output, invoked, completed: Some(completed) }
    }

    fn cas(client: usize, expected: u64, value: &str, output: Output, invoked: u64, completed: u64) -> Operation {
        Operation {
            client,
            input: Input::Cas { expected, value: value.into() },
            output,
            invoked,
            completed: Some(completed),
        }
    }

    fn written(version: u64) -> Output {
        Output::Written { version }
    }

    fn found(version: u64, value: &str) -> Output {
        Output::Found { version, value: value.into() }
    }

    fn verdict(history: &[Operation]) -> Verdict {
        check(history, Instant::now() + Duration::from_secs(10))
    }

    #[test]
    fn concurrent_operations_in_some_valid_order_are_linearizable() {
        // a and b overlap: b's write may come first, then a's; the reads see both orders' ends.
        let history = vec![
            put(0, "a", written(2), 0, Some(10)),
            put(1, "b", written(1), 1, Some(9)),
            get(2, found(1, "b"), 2, 4),
            get(2, found(2, "a"), 11, 12),
            cas(1, 2, "c", written(3), 13, 15),
            cas(0, 2, "d", Output::Mismatch { current: 3 }, 14, 16),
            get(2, found(3, "c"), 17, 18),
        ];
        assert_eq!(verdict(&history), Verdict::Linearizable);
        assert_eq!(verdict(&[get(0, Output::Missing, 0, 1)]), Verdict::Linearizable);
        assert_eq!(verdict(&[]), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_is_a_violation() {
        let history = vec![
            put(0, "a", written(1), 0, Some(1)),
            put(0, "b", written(2), 2, Some(3)),
            // Began after b was acknowledged, yet saw a.
            get(1, found(1, "a"), 4, 5),
        ];
        let Verdict::Violation { stuck, .. } = verdict(&history) else { panic!("a stale read passed") };
        assert_eq!(stuck, 2);
        // The same read, overlapping b's write, is fine.
        let history = vec![history[0].clone(), history[1].clone(), get(1, found(1, "a"), 2, 5)];
        assert_eq!(verdict(&history), Verdict::Linearizable);
    }

    #[test]
    fn a_lost_acknowledged_write_is_a_violation() {
        let history = vec![
            put(0, "a", written(1), 0, Some(1)),
            put(1, "b", written(2), 2, Some(3)),
            // b was acknowledged as version 2, yet version 2 holds c.
            put(0, "c", written(2), 4, Some(5)),
            get(1, found(2, "c"), 6, 7),
        ];
        assert!(matches!(verdict(&history), Verdict::Violation { .. }));
        // An acknowledged write that no read sees is lost too.
        let history = vec![put(0, "a", written(1), 0, Some(1)), get(1, Output::Missing, 2, 3)];
        assert!(matches!(verdict(&history), Verdict::Violation { stuck: 1, .. }));
    }

    #[test]
    fn two_compare_and_sets_won_from_the_same_version_are_a_violation() {
        let history = vec![
            put(0, "a", written(1), 0, Some(1)),
            cas(1, 1, "b", written(2), 2, 10),
            cas(2, 1, "c", written(2), 3, 11),
        ];
        assert!(matches!(verdict(&history), Verdict::Violation { .. }));
        // A refusal must name the version really there.
        let history = vec![put(0, "a", written(1), 0, Some(1)), cas(1, 0, "b", Output::Mismatch { current: 0 }, 2, 3)];
        assert!(matches!(verdict(&history), Verdict::Violation { .. }));
    }

    #[test]
    fn a_write_of_unknown_outcome_may_or_may_not_have_happened() {
        // Seen by a later read: it happened.
        let history = vec![put(0, "a", Output::Unknown, 0, None), get(1, found(1, "a"), 5, 6)];
        assert_eq!(verdict(&history), Verdict::Linearizable);
        // Never seen: it did not (or not yet).
        let history = vec![
            put(0, "a", Output::Unknown, 0, None),
            get(1, Output::Missing, 5, 6),
            put(1, "b", written(1), 7, Some(8)),
            get(1, found(1, "b"), 9, 10),
        ];
        assert_eq!(verdict(&history), Verdict::Linearizable);
        // A compare-and-set of unknown outcome that found its version wrote.
        let history = vec![
            put(0, "a", written(1), 0, Some(1)),
            Operation {
                client: 1,
                input: Input::Cas { expected: 1, value: "b".into() },
                output: Output::Unknown,
                invoked: 2,
                completed: None,
            },
            get(2, found(2, "b"), 3, 4),
        ];
        assert_eq!(verdict(&history), Verdict::Linearizable);
        // Unseen, but the versions show it happened, between a and b.
        let mut history = vec![
            put(0, "a", written(1), 0, Some(1)),
            put(1, "x", Output::Unknown, 2, None),
            put(1, "y", Output::Unknown, 3, None),
            put(0, "b", written(3), 4, Some(5)),
        ];
        assert_eq!(verdict(&history), Verdict::Linearizable);
        // Without it, a version was skipped.
        history.remove(1);
        history.remove(1);
        assert!(matches!(verdict(&history), Verdict::Violation { stuck: 1, .. }));
        // But nothing may appear that nobody wrote.
        let history = vec![put(0, "a", Output::Unknown, 0, None), get(1, found(1, "z"), 5, 6)];
        assert!(matches!(verdict(&history), Verdict::Violation { .. }));
    }

    #[test]
    fn a_long_concurrent_history_is_checked_before_its_deadline() {
        // Eight clients writing and reading in overlapping rounds, every
        // answer consistent with the order of the writes' versions.
        let mut history = Vec::new();
        let mut version = 0;
        let mut value = String::new();
        for round in 0..400u64 {
            let start = round * 100;
            for client in (0..8usize).step_by(2) {
                version += 1;
                value = format!("{round}-{client}");
                let (invoked, completed) = (start + client as u64, start + 50 + client as u64);
                history.push(put(client, &value, written(version), invoked, Some(completed)));
            }
            for client in (1..8usize).step_by(2) {
                if client == 7 && round % 10 == 0 {
                    history.push(put(client, &format!("lost-{round}"), Output::Unknown, start + 7, None));
                } else {
                    history.push(get(client, found(version, &value), start + 60 + client as u64, start + 70));
                }
            }
        }
        assert_eq!(check(&history, Instant::now() + Duration::from_secs(60)), Verdict::Linearizable);
    }
}
