//! The binary's allocator: jemalloc with the settings `main.rs` gives it,
//! which an operator's `MALLOC_CONF` overrides. `stats_print` makes jemalloc
//! print its settings on stderr at exit; glibc ignores the variable.

use std::process::Command;

fn settings_printed(malloc_conf: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_zeromesh"))
        .arg("--version")
        .env("MALLOC_CONF", malloc_conf)
        .output()
        .expect("run zeromesh");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_node_allocates_with_jemalloc_in_two_arenas_returning_pages_within_a_second() {
    let printed = settings_printed("stats_print:true");
    assert!(printed.contains("jemalloc statistics"), "not jemalloc, or MALLOC_CONF unread:\n{printed}");
    for setting in ["opt.narenas: 2", "opt.dirty_decay_ms: 1000", "opt.muzzy_decay_ms: 0"] {
        assert!(printed.contains(setting), "{setting} missing:\n{printed}");
    }
}

#[test]
fn malloc_conf_in_the_environment_overrides_the_built_in_settings() {
    let printed = settings_printed("stats_print:true,narenas:3");
    assert!(printed.contains("opt.narenas: 3"), "{printed}");
    assert!(printed.contains("opt.dirty_decay_ms: 1000"), "the others stay:\n{printed}");
}
