//! The command line's offline commands (`plugin keygen | sign | verify`,
//! `completions`), run as a real process.

use std::path::Path;
use std::process::{Command, Output};

fn zeromesh(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zeromesh")).current_dir(dir).args(args).output().expect("run zeromesh")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_publisher_signs_a_package_that_verifies_and_a_changed_byte_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keygen = zeromesh(dir.path(), &["plugin", "keygen", "--out", "publisher.key"]);
    assert!(keygen.status.success(), "{}", text(&keygen.stderr));
    let public_key = text(&keygen.stdout).trim().to_owned();
    assert_eq!(public_key.len(), 64);
    let again = zeromesh(dir.path(), &["plugin", "keygen", "--out", "publisher.key"]);
    assert!(!again.status.success(), "an existing key is not overwritten without --force");

    let module = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "zm_alloc") (param i32) (result i32) (i32.const 1024))
             (func (export "zm_call") (param i32 i32 i32 i32) (result i64) (i64.const 0)))"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("echo.wasm"), module).unwrap();
    std::fs::write(
        dir.path().join("manifest.json"),
        r#"{"name": "echo", "version": "1.0.0", "description": "echo",
            "tools": [{"name": "echo", "description": "echo", "input_schema": {"type": "object"}}],
            "capabilities": ["log"],
            "limits": {"fuel_per_call": 1000000, "memory_bytes": 1048576, "wall_clock_ms": 1000}}"#,
    )
    .unwrap();
    let sign =
        zeromesh(dir.path(), &["plugin", "sign", "echo.wasm", "--manifest", "manifest.json", "--key", "publisher.key"]);
    assert!(sign.status.success(), "{}", text(&sign.stderr));
    assert!(dir.path().join("echo.zmp").exists());

    let verify = zeromesh(dir.path(), &["plugin", "verify", "echo.zmp", "--trust", &public_key]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    assert!(text(&verify.stdout).contains("ok: echo 1.0.0"));
    assert!(text(&verify.stdout).contains("capabilities: log"));
    // The key's file, as `plugin trust` takes it; a mistyped one is named.
    let from_file = zeromesh(dir.path(), &["plugin", "verify", "echo.zmp", "--trust", "publisher.key.pub"]);
    assert!(from_file.status.success(), "{}", text(&from_file.stderr));
    let missing = zeromesh(dir.path(), &["plugin", "verify", "echo.zmp", "--trust", "publisher.pub"]);
    assert!(!missing.status.success());
    let said = text(&missing.stderr);
    assert!(said.contains("\"publisher.pub\" is neither a publisher key") && !said.contains("package"), "{said}");

    let stranger = "00".repeat(32);
    let untrusted = zeromesh(dir.path(), &["plugin", "verify", "echo.zmp", "--trust", &stranger]);
    assert!(!untrusted.status.success());
    assert!(text(&untrusted.stderr).contains("trust check failed"), "{}", text(&untrusted.stderr));

    let mut bytes = std::fs::read(dir.path().join("echo.zmp")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(dir.path().join("tampered.zmp"), bytes).unwrap();
    let tampered = zeromesh(dir.path(), &["plugin", "verify", "tampered.zmp", "--trust", &public_key]);
    assert!(!tampered.status.success());
    assert!(text(&tampered.stderr).contains("module check failed"), "{}", text(&tampered.stderr));
}

#[test]
fn completion_scripts_are_printed_for_bash_zsh_and_fish_and_bash_accepts_its_script() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let output = zeromesh(dir.path(), &["completions", shell]);
        assert!(output.status.success(), "{shell}: {}", text(&output.stderr));
        let script = text(&output.stdout);
        assert!(
            script.contains("prove-usage") && script.contains("agreement"),
            "{shell}: no subcommands in the script"
        );
        if shell == "bash" {
            std::fs::write(dir.path().join("zeromesh.bash"), &script).unwrap();
            let checked = Command::new("bash").args(["-n", "zeromesh.bash"]).current_dir(dir.path()).output().unwrap();
            assert!(checked.status.success(), "bash -n: {}", text(&checked.stderr));
        }
    }
    let refused = zeromesh(dir.path(), &["completions", "tcsh"]);
    assert!(
        !refused.status.success() && text(&refused.stderr).contains("possible values"),
        "{}",
        text(&refused.stderr)
    );
}
