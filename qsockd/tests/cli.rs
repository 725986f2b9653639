//! qsockd's and qsockctl's command lines refuse bad input with a clear
//! error before touching anything (no root needed). Being an integration
//! test of this package, it also makes `cargo test` build the binaries the
//! kernel tests in `tests/` run.
use std::process::Command;

fn run(bin: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin).args(args).output().expect("spawn");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_arguments_and_config_keys_are_refused_by_name() {
    let qsockd = env!("CARGO_BIN_EXE_qsockd");
    let (ok, err) = run(qsockd, &["init", "--device", "eth0", "--rate", "fast"]);
    assert!(!ok && err.contains("is not a rate"), "{err}");
    let dir = std::env::temp_dir().join(format!("qsockd-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "class_pool = 20\nclass_pool_max = 10\n").unwrap();
    let (ok, err) = run(qsockd, &["--config", cfg.to_str().unwrap(), "status"]);
    assert!(!ok && err.contains("class_pool"), "{err}");
    std::fs::write(&cfg, "metrics_listen = 9464\n").unwrap();
    let (ok, err) = run(qsockd, &["--config", cfg.to_str().unwrap(), "status"]);
    assert!(!ok && err.contains("metrics_listen"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    let (ok, err) = run(env!("CARGO_BIN_EXE_qsockctl"), &["list", "--watch", "0"]);
    assert!(!ok && !err.is_empty(), "{err}");
}
