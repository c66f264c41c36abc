//! A fault test's step of this node's wall clock (`--test-clock-file`, only
//! with `--test-faults`): the file is read every second and the step it
//! holds (`+1h`, `-30m`, `+90s`, `+0`) applied to the wall clock the node
//! reads (`zeromesh_consensus::step_wall_clock`: the stamps of its
//! proposals, agreements' expiry, plugins' time, adverts). The monotonic
//! clock is not touched, as when an administrator or NTP steps a machine's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncReadExt;

const READ_EVERY: Duration = Duration::from_secs(1);
/// More than any step needs; a longer file is refused.
const MAX_FILE_BYTES: u64 = 64;
/// Steps beyond a year either way are refused.
const MAX_STEP_SECONDS: i64 = 366 * 24 * 3600;

/// Runs for the node's lifetime.
pub async fn follow(path: PathBuf) {
    let mut tick = tokio::time::interval(READ_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut applied = None;
    let mut said = None;
    loop {
        tick.tick().await;
        match read_step(&path).await {
            Ok(micros) if applied != Some(micros) => {
                zeromesh_consensus::step_wall_clock(micros);
                applied = Some(micros);
                said = None;
                tracing::warn!(step_ms = micros / 1000, "test fault: this node's wall clock is stepped");
            }
            Ok(_) => {}
            Err(error) if said.as_ref() != Some(&error) => {
                tracing::warn!(file = %path.display(), "test clock file: {error}");
                said = Some(error);
            }
            Err(_) => {}
        }
    }
}

async fn read_step(path: &Path) -> Result<i64, String> {
    let file = tokio::fs::File::open(path).await.map_err(|error| error.to_string())?;
    // Reads one byte past the limit, never more, to tell a longer file.
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text).await.map_err(|error| error.to_string())?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("more than {MAX_FILE_BYTES} bytes"));
    }
    parse_step(&text)
}

/// A step in µs from `+1h`, `-30m`, `+90s`, `2d` or `0`: a sign, then a
/// span (`crate::cli::parse_span`); only zero may leave out the unit.
fn parse_step(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (negative, span) = match text.strip_prefix('-') {
        Some(span) => (true, span),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if span == "0" {
        return Ok(0);
    }
    let seconds = crate::cli::parse_span(span)?.as_secs();
    let seconds = i64::try_from(seconds).ok().filter(|seconds| *seconds <= MAX_STEP_SECONDS);
    let seconds = seconds.ok_or_else(|| format!("{text:?}: steps are at most a year"))?;
    Ok(if negative { -seconds } else { seconds } * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::parse_step;

    #[test]
    fn steps_parse_with_their_sign_and_unit() {
        assert_eq!(parse_step("+1h\n"), Ok(3_600_000_000));
        assert_eq!(parse_step("-30m"), Ok(-1_800_000_000));
        assert_eq!(parse_step("90s"), Ok(90_000_000));
        assert_eq!(parse_step("+2d"), Ok(172_800_000_000));
        assert_eq!(parse_step("+0"), Ok(0));
        assert_eq!(parse_step("0"), Ok(0));
    }

    #[test]
    fn malformed_or_huge_steps_are_refused() {
        for bad in ["", "+", "1", "+1x", "h", "--1h", "+1.5h", "+367d", "99999999999999999999s", "+1h junk", "+1é"] {
            assert!(parse_step(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
