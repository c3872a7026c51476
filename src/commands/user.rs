//! `parkhub user add|passwd|remove|list`: the console's users, kept in
//! `<hub.data_dir>/console.sqlite`.
//!
//! The password is never an argument (it would sit in the shell history and in `ps` for
//! everyone to read): it is asked for twice on a terminal, else read as the first line of
//! stdin, for scripts (`echo "$PW" | parkhub user add …`).

use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{UserArgs, UserCommand};
use crate::config;
use crate::users::{self, UserError, Users};

pub fn run(args: &UserArgs) -> anyhow::Result<ExitCode> {
    let loaded = match config::load(&args.config) {
        Ok(l) => l,
        Err(d) => return Ok(super::report_config_errors(&d)),
    };
    let data_dir = &loaded.config.hub.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    become_data_dir_owner(data_dir)?;
    let path = data_dir.join(users::DB_FILE);
    let users = Users::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    command(args, &users, &path)
}

fn command(args: &UserArgs, users: &Users, path: &Path) -> anyhow::Result<ExitCode> {
    match &args.command {
        UserCommand::Add { name, role } => {
            // Checked before asking for the password, so nobody types it twice for nothing.
            users::check_name(name)?;
            if users.user(name)?.is_some() {
                anyhow::bail!("a user named `{name}` already exists (change their password with `parkhub user passwd {name}`)");
            }
            let password = read_password()?;
            users.add(name, *role, &password).map_err(|e| match e {
                UserError::Exists => anyhow::anyhow!("a user named `{name}` already exists"),
                e => e.into(),
            })?;
            println!("added user `{name}` ({})", users::role_name(*role));
        }
        UserCommand::Passwd { name } => {
            let Some(user) = users.user(name)? else {
                return not_found(name, path);
            };
            let password = read_password()?;
            match users.set_password(&user.name, &password) {
                Ok(()) => println!(
                    "changed the password of `{}`; their sessions have ended",
                    user.name
                ),
                Err(UserError::NotFound) => return not_found(name, path),
                Err(e) => return Err(e.into()),
            }
        }
        UserCommand::Remove { name } => {
            let stored = users.user(name)?.map(|u| u.name);
            if !users.remove(name)? {
                return not_found(name, path);
            }
            println!("removed user `{}`", stored.as_deref().unwrap_or(name));
        }
        UserCommand::List => {
            let list = users.list()?;
            if list.is_empty() {
                println!("no console users yet: add one with `parkhub user add NAME --role admin`");
            }
            for u in list {
                println!(
                    "{}\t{}\t{}",
                    u.name,
                    users::role_name(u.role),
                    u.created.format("%Y-%m-%d %H:%M UTC")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `sudo parkhub user …`, as the README has installers type it, acts as the data dir's owner
/// (the service's user): files it makes are the service's, and a link planted in the data dir
/// by that user cannot make root write or give away a file elsewhere. Nothing changes for
/// anyone but root, or when root owns the data dir.
#[cfg(unix)]
fn become_data_dir_owner(data_dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = std::fs::metadata(data_dir)
        .with_context(|| format!("cannot read {}", data_dir.display()))?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || dir.uid() == 0 {
        return Ok(());
    }
    // By hand: std has no way to change a process's credentials. glibc applies each call to
    // every thread of the process. Groups first: once the uid is given up, they cannot be.
    // SAFETY: plain system calls on integers and an empty list.
    let dropped = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(dir.gid()) == 0
            && libc::setuid(dir.uid()) == 0
    };
    if !dropped {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!(
                "cannot act as uid {} (the owner of {})",
                dir.uid(),
                data_dir.display()
            )
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn become_data_dir_owner(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

fn not_found(name: &str, path: &Path) -> anyhow::Result<ExitCode> {
    eprintln!("no user `{name}` in {}", path.display());
    Ok(ExitCode::FAILURE)
}

/// The new password: typed twice without echo on a terminal, else the first line of stdin.
/// Its strength is judged by `Users` (one rule for the console and the command line).
fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first =
            rpassword::prompt_password("密码 / Password: ").context("cannot read the password")?;
        users::check_password(&first)?;
        let second =
            rpassword::prompt_password("再输一次 / Again: ").context("cannot read the password")?;
        if first != second {
            anyhow::bail!("the two passwords differ: nothing changed");
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        // Only the line's end goes: spaces are as good in a password as any other character.
        let password = line
            .strip_suffix('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .unwrap_or(&line);
        Ok(password.to_string())
    }
}
