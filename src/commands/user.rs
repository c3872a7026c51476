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
    let path = data_dir.join(users::DB_FILE);
    let users = Users::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let done = command(args, &users, &path);
    drop(users);
    give_to_data_dir_owner(data_dir, &path);
    done
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

/// `sudo parkhub user add` before the service ever ran (an image build, a chroot) would leave
/// the users' database root's, which the service's user then cannot open: the files take the
/// data dir's owner. Only root can give files away; for anyone else this changes nothing.
fn give_to_data_dir_owner(data_dir: &Path, db: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::metadata(data_dir) else {
        return;
    };
    for suffix in ["", "-wal", "-shm"] {
        let mut file = db.as_os_str().to_owned();
        file.push(suffix);
        let file = Path::new(&file);
        if let Ok(m) = std::fs::metadata(file) {
            if (m.uid(), m.gid()) != (dir.uid(), dir.gid()) {
                if let Err(e) = std::os::unix::fs::chown(file, Some(dir.uid()), Some(dir.gid())) {
                    eprintln!(
                        "note: {} is not owned by the data dir's owner ({e}); the service may not open it",
                        file.display()
                    );
                }
            }
        }
    }
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
