//! `parkhub user …` as an installer runs it: the password on stdin, the users in
//! `<data_dir>/console.sqlite`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn config(dir: &Path) -> PathBuf {
    let cfg = format!(
        "[hub]\nid = \"users-test\"\ndata_dir = \"{}\"\n",
        dir.join("data").display()
    );
    let path = dir.join("parkhub.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

/// `parkhub user ARGS --config CONFIG` with `stdin` piped in.
fn user(config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_parkhub"))
        .env_remove("RUST_LOG")
        .arg("user")
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("parkhub runs");
    let mut input = child.stdin.take().unwrap();
    // A command that refuses early may not read its stdin: a broken pipe here is no failure.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

#[test]
fn a_user_added_with_the_password_on_stdin_is_listed_with_their_role() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let out = user(
        &cfg,
        &["add", "wang", "--role", "operator"],
        "correct horse\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "added user `wang` (operator)");
    assert!(dir.path().join("data/console.sqlite").exists());

    let out = user(
        &cfg,
        &["add", "张伟", "--role", "admin"],
        "八个汉字的密码呀\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = user(&cfg, &["list"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    let lines: Vec<Vec<&str>> = listed.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert_eq!(lines[0][..2], ["wang", "operator"], "{listed}");
    assert_eq!(lines[1][..2], ["张伟", "admin"], "{listed}");
    assert!(!listed.contains("argon2") && !listed.contains("correct horse"));
}

#[test]
fn the_password_lets_the_user_in_and_only_that_password() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let out = user(
        &cfg,
        &["add", "wang", "--role", "viewer"],
        "pass word 1\r\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let users = parkhub::users::Users::open(&dir.path().join("data/console.sqlite")).unwrap();
    assert!(
        users.verify("wang", "pass word 1").is_some(),
        "spaces kept, line end dropped"
    );
    assert!(users.verify("wang", "pass word 1\r").is_none());
}

#[test]
fn adding_the_same_name_again_fails_and_keeps_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    assert!(user(
        &cfg,
        &["add", "wang", "--role", "viewer"],
        "correct horse\n"
    )
    .status
    .success());
    let out = user(
        &cfg,
        &["add", "wang", "--role", "admin"],
        "other password\n",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    let listed = text(&user(&cfg, &["list"], "").stdout);
    assert!(listed.starts_with("wang\tviewer\t"), "{listed}");
}

#[test]
fn an_empty_or_short_password_is_refused_and_nobody_is_added() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    for stdin in ["", "\n", "short\n"] {
        let out = user(&cfg, &["add", "wang", "--role", "admin"], stdin);
        assert!(!out.status.success(), "{stdin:?}");
        let err = text(&out.stderr);
        assert!(err.contains("password refused"), "{stdin:?}: {err}");
        assert!(!err.contains("short"), "the password is not echoed: {err}");
    }
    let listed = text(&user(&cfg, &["list"], "").stdout);
    assert!(listed.contains("no console users yet"), "{listed}");
}

#[test]
fn a_bad_name_or_role_is_refused_before_the_password_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let out = user(
        &cfg,
        &["add", "wang wei", "--role", "admin"],
        "correct horse\n",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("user name refused"),
        "{}",
        text(&out.stderr)
    );
    let out = user(&cfg, &["add", "wang", "--role", "root"], "correct horse\n");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("viewer, operator or admin"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_password_is_not_taken_as_an_argument() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let out = user(
        &cfg,
        &[
            "add",
            "wang",
            "--role",
            "admin",
            "--password",
            "correct horse",
        ],
        "",
    );
    assert!(!out.status.success());
    let out = user(
        &cfg,
        &["add", "wang", "correct horse", "--role", "admin"],
        "",
    );
    assert!(!out.status.success());
}

#[test]
fn passwd_changes_the_password_of_an_existing_user_only() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    assert!(user(
        &cfg,
        &["add", "wang", "--role", "viewer"],
        "first password\n"
    )
    .status
    .success());
    let out = user(&cfg, &["passwd", "wang"], "second password\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let users = parkhub::users::Users::open(&dir.path().join("data/console.sqlite")).unwrap();
    assert!(users.verify("wang", "first password").is_none());
    assert!(users.verify("wang", "second password").is_some());

    let out = user(&cfg, &["passwd", "zhao"], "third password\n");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no user `zhao`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn remove_takes_the_user_away_and_fails_for_a_user_not_there() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    assert!(user(
        &cfg,
        &["add", "wang", "--role", "viewer"],
        "correct horse\n"
    )
    .status
    .success());
    let out = user(&cfg, &["remove", "wang"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "removed user `wang`");
    assert!(text(&user(&cfg, &["list"], "").stdout).contains("no console users yet"));
    let out = user(&cfg, &["remove", "wang"], "");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no user `wang`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_config_that_does_not_load_is_reported_without_touching_the_users() {
    let dir = tempfile::tempdir().unwrap();
    let out = user(&dir.path().join("missing.toml"), &["list"], "");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot read config file"),
        "{}",
        text(&out.stderr)
    );
}
