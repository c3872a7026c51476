//! The console's users and their login sessions, in `<data_dir>/console.sqlite`.
//!
//! - `user(name, role, hash, created)`: `hash` is an argon2id PHC string (salt and cost
//!   included), never the password; names compare case-insensitively for ASCII, so `Admin`
//!   and `admin` cannot be two people in the audit trail;
//! - `session(digest, user, created, expires)`: `digest` is the SHA-256 of the cookie value,
//!   so a copy of the file lets nobody in; `expires` slides with use, up to `created` +
//!   [`SESSION_MAX`]. Times are unix seconds (`datetime(expires, 'unixepoch')` in `sqlite3`).
//!
//! Sessions live in the file rather than in memory so that a restart (or an update) does not
//! log everybody out. Each call is one short statement or transaction; the API runs them on
//! `spawn_blocking` because argon2 takes tens of milliseconds by design.

mod limiter;
pub mod password;

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};
use sha2::{Digest, Sha256};

use crate::config::Role;

pub use limiter::LoginLimiter;
pub use password::{PASSWORD_MAX, PASSWORD_MIN};

/// The file name of the users database inside `hub.data_dir`.
pub const DB_FILE: &str = "console.sqlite";

/// A session unused this long has ended.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// No session outlives this, however busy: a stolen cookie stops working within a week.
pub const SESSION_MAX: Duration = Duration::from_secs(7 * 24 * 3600);
/// A session's expiry is written at most this often: every request of a busy console would
/// otherwise be a write, and SD cards wear out.
pub const SESSION_REFRESH: Duration = Duration::from_secs(60);

/// Longest user name, in characters.
pub const NAME_MAX: usize = 64;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS user (
    name TEXT PRIMARY KEY COLLATE NOCASE,
    role TEXT NOT NULL,
    hash TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS session (
    digest BLOB PRIMARY KEY,
    user TEXT NOT NULL COLLATE NOCASE,
    created INTEGER NOT NULL,
    expires INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS session_user ON session(user);
CREATE INDEX IF NOT EXISTS session_expires ON session(expires);
";

/// Why a change to the users was refused.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("a user by that name already exists")]
    Exists,
    #[error("no such user")]
    NotFound,
    #[error("user name refused: {0}")]
    BadName(String),
    /// Says why, never what the password was.
    #[error("password refused: {0}")]
    WeakPassword(String),
    #[error("cannot hash the password: {0}")]
    Crypto(String),
    #[error("the users database failed: {0}")]
    Store(#[from] rusqlite::Error),
}

/// A console user, as the console shows them: nothing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// As stored (its case may differ from what was typed at login).
    pub name: String,
    pub role: Role,
    pub created: DateTime<Utc>,
}

/// The users and sessions of the console. One connection; share it behind an `Arc`.
pub struct Users {
    conn: Mutex<Connection>,
}

// Hand-written: whatever a future field holds, hashes and sessions stay out of log lines.
impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Users")
    }
}

/// `viewer`, `operator` or `admin`, as the config and the users file spell roles.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
        Role::Admin => "admin",
    }
}

/// The role `viewer`, `operator` or `admin` names.
pub fn parse_role(s: &str) -> Option<Role> {
    match s {
        "viewer" => Some(Role::Viewer),
        "operator" => Some(Role::Operator),
        "admin" => Some(Role::Admin),
        _ => None,
    }
}

/// Refuses a name that is empty, longer than [`NAME_MAX`] characters, or has anything but
/// letters (any script: 张伟 is a fine name), digits and `-_.@`. Spaces and punctuation are
/// kept out because names end up in audit lines, URLs and shell commands.
pub fn check_name(name: &str) -> Result<(), UserError> {
    let n = name.chars().count();
    if n == 0 {
        return Err(UserError::BadName("it is empty".into()));
    }
    if n > NAME_MAX {
        return Err(UserError::BadName(format!(
            "it has {n} characters; at most {NAME_MAX} are taken"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_alphabetic() || c.is_numeric() || "-_.@".contains(c)))
    {
        return Err(UserError::BadName(format!(
            "{c:?} is not allowed: use letters, digits and - _ . @"
        )));
    }
    Ok(())
}

pub use password::check_password;

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn time(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(s, 0).unwrap_or_default()
}

/// What the session table keys a cookie by.
fn cookie_digest(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

/// A `name, role, created` row. A role this version does not know (a hand-edited file, or a
/// newer parkhub's) is an error rather than a guess, so such a user gets no access at all.
fn user_info(r: &Row<'_>) -> rusqlite::Result<UserInfo> {
    let role: String = r.get(1)?;
    let role = parse_role(&role).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Text,
            format!("unknown role `{role}`").into(),
        )
    })?;
    Ok(UserInfo {
        name: r.get(0)?,
        role,
        created: time(r.get(2)?),
    })
}

impl Users {
    /// Opens (creating if needed) the users file. A new file is made readable by its owner
    /// only: password hashes are slow to crack, not impossible.
    pub fn open(path: &Path) -> anyhow::Result<Users> {
        create_private(path)?;
        let conn = crate::store::open(path)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Users {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a user. Refuses a name already taken (in any ASCII case), a bad name and a weak
    /// password.
    pub fn add(&self, name: &str, role: Role, password: &str) -> Result<(), UserError> {
        check_name(name)?;
        check_password(password)?;
        // Hashed before taking the connection: argon2 is slow on purpose, other calls need
        // not wait for it.
        let phc = password::hash(password)?;
        let added = self.conn().execute(
            "INSERT INTO user (name, role, hash, created) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO NOTHING",
            params![name, role_name(role), phc, Utc::now().timestamp()],
        )?;
        if added == 0 {
            return Err(UserError::Exists);
        }
        Ok(())
    }

    /// Changes a user's password and ends their sessions: a password is changed because it
    /// may be known to someone else, who may be logged in with it.
    pub fn set_password(&self, name: &str, password: &str) -> Result<(), UserError> {
        check_password(password)?;
        let phc = password::hash(password)?;
        let mut c = self.conn();
        let tx = c.transaction()?;
        if tx.execute(
            "UPDATE user SET hash = ?2 WHERE name = ?1",
            params![name, phc],
        )? == 0
        {
            return Err(UserError::NotFound);
        }
        tx.execute("DELETE FROM session WHERE user = ?1", [name])?;
        tx.commit()?;
        Ok(())
    }

    /// Changes a user's role; their sessions carry on with the new one from their next request.
    pub fn set_role(&self, name: &str, role: Role) -> Result<(), UserError> {
        let changed = self.conn().execute(
            "UPDATE user SET role = ?2 WHERE name = ?1",
            params![name, role_name(role)],
        )?;
        if changed == 0 {
            return Err(UserError::NotFound);
        }
        Ok(())
    }

    /// Removes a user and ends their sessions; `false` when there was no such user.
    pub fn remove(&self, name: &str) -> Result<bool, UserError> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        tx.execute("DELETE FROM session WHERE user = ?1", [name])?;
        let removed = tx.execute("DELETE FROM user WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(removed > 0)
    }

    /// Every user, by name.
    pub fn list(&self) -> Result<Vec<UserInfo>, UserError> {
        let c = self.conn();
        let mut st = c.prepare_cached("SELECT name, role, created FROM user ORDER BY name")?;
        let rows = st.query_map([], user_info)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// One user, if there is one by that name.
    pub fn user(&self, name: &str) -> Result<Option<UserInfo>, UserError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT name, role, created FROM user WHERE name = ?1",
                [name],
                user_info,
            )
            .optional()?)
    }

    /// The user whose password this is. Takes as long for a name nobody has as for a wrong
    /// password, so the answer's timing does not tell which names exist.
    pub fn verify(&self, name: &str, password: &str) -> Option<UserInfo> {
        let found = if check_name(name).is_ok() {
            let row = self
                .conn()
                .query_row(
                    "SELECT name, role, created, hash FROM user WHERE name = ?1",
                    [name],
                    |r| Ok((user_info(r)?, r.get::<_, String>(3)?)),
                )
                .optional();
            row.unwrap_or_else(|e| {
                // Not the name: a password typed into the name field would end up in the log.
                tracing::warn!(error = %e, "console login: cannot read the users file");
                None
            })
        } else {
            None
        };
        match found {
            Some((info, phc)) => password::verify(password, &phc).then_some(info),
            None => {
                password::verify_dummy(password);
                None
            }
        }
    }

    /// Starts a session for `name` now; see [`Users::start_session_at`].
    pub fn start_session(&self, name: &str) -> Result<String, UserError> {
        self.start_session_at(name, Utc::now())
    }

    /// Starts a session for `name` at `now` and returns the cookie value that names it
    /// (32 random bytes, base64url without padding). Only its SHA-256 is stored. Sessions that
    /// have expired are deleted on the way: logins are rare, requests are not.
    pub fn start_session_at(&self, name: &str, now: DateTime<Utc>) -> Result<String, UserError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| UserError::Crypto(format!("no randomness from the OS: {e}")))?;
        let cookie = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now_s = now.timestamp();
        let expires = now_s
            .saturating_add(secs(SESSION_IDLE))
            .min(now_s.saturating_add(secs(SESSION_MAX)));
        let mut c = self.conn();
        let tx = c.transaction()?;
        tx.execute("DELETE FROM session WHERE expires <= ?1", [now_s])?;
        // The stored spelling of the name, so that sessions follow the user row exactly.
        let stored: Option<String> = tx
            .query_row("SELECT name FROM user WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(stored) = stored else {
            return Err(UserError::NotFound);
        };
        tx.execute(
            "INSERT INTO session (digest, user, created, expires) VALUES (?1, ?2, ?3, ?4)",
            params![&cookie_digest(&cookie)[..], stored, now_s, expires],
        )?;
        tx.commit()?;
        Ok(cookie)
    }

    /// The user of a session cookie now; see [`Users::session_at`].
    pub fn session(&self, cookie: &str) -> Option<UserInfo> {
        self.session_at(cookie, Utc::now())
    }

    /// The user a session cookie belongs to at `now`, if the session has neither been idle for
    /// [`SESSION_IDLE`] nor lasted [`SESSION_MAX`]. The role is the user's current one. Using
    /// a session pushes its idle expiry back (written at most once per [`SESSION_REFRESH`]).
    pub fn session_at(&self, cookie: &str, now: DateTime<Utc>) -> Option<UserInfo> {
        self.try_session_at(cookie, now).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "console session: cannot read the users file");
            None
        })
    }

    fn try_session_at(
        &self,
        cookie: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<UserInfo>, UserError> {
        // Looking up by digest is not constant-time, and need not be: timing can at most
        // reveal something about a SHA-256 output, from which no cookie can be worked back.
        let digest = cookie_digest(cookie);
        let now_s = now.timestamp();
        let c = self.conn();
        let row = c
            .query_row(
                "SELECT u.name, u.role, u.created, s.created, s.expires
                 FROM session s JOIN user u ON u.name = s.user WHERE s.digest = ?1",
                [&digest[..]],
                |r| Ok((user_info(r)?, r.get::<_, i64>(3)?, r.get::<_, i64>(4)?)),
            )
            .optional()?;
        let Some((info, created, expires)) = row else {
            return Ok(None);
        };
        let cap = created.saturating_add(secs(SESSION_MAX));
        if now_s >= expires || now_s >= cap {
            c.execute("DELETE FROM session WHERE digest = ?1", [&digest[..]])?;
            return Ok(None);
        }
        let pushed = now_s.saturating_add(secs(SESSION_IDLE)).min(cap);
        if pushed - expires >= secs(SESSION_REFRESH) {
            if let Err(e) = c.execute(
                "UPDATE session SET expires = ?2 WHERE digest = ?1",
                params![&digest[..], pushed],
            ) {
                // The session is valid; failing to extend it is no reason to log anyone out.
                tracing::warn!(error = %e, "console session: cannot extend its expiry");
            }
        }
        Ok(Some(info))
    }

    /// Ends the session a cookie names (logout). Ending an unknown session is no error.
    pub fn end_session(&self, cookie: &str) -> Result<(), UserError> {
        self.conn().execute(
            "DELETE FROM session WHERE digest = ?1",
            [&cookie_digest(cookie)[..]],
        )?;
        Ok(())
    }
}

/// Creates `path` readable and writable by its owner only, if it does not exist yet. SQLite
/// gives its `-wal` and `-shm` files the mode of the database, so they follow.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> (tempfile::TempDir, Users) {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::open(&dir.path().join(DB_FILE)).unwrap();
        (dir, users)
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + s, 0).unwrap()
    }

    fn stored_hash(users: &Users, name: &str) -> String {
        users
            .conn()
            .query_row("SELECT hash FROM user WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .unwrap()
    }

    fn stored_expiry(users: &Users, cookie: &str) -> Option<i64> {
        users
            .conn()
            .query_row(
                "SELECT expires FROM session WHERE digest = ?1",
                [&cookie_digest(cookie)[..]],
                |r| r.get(0),
            )
            .optional()
            .unwrap()
    }

    #[test]
    fn the_stored_hash_is_argon2id_with_its_own_salt_and_not_the_password() {
        let (_dir, users) = users();
        users.add("wang", Role::Operator, "correct horse").unwrap();
        users.add("li", Role::Operator, "correct horse").unwrap();
        let a = stored_hash(&users, "wang");
        let b = stored_hash(&users, "li");
        assert!(a.starts_with("$argon2id$v=19$"), "{a}");
        assert!(!a.contains("correct horse"));
        assert_ne!(a, b, "the same password hashes differently for two users");
    }

    #[test]
    fn the_right_password_lets_a_user_in_and_a_wrong_one_or_an_unknown_name_does_not() {
        let (_dir, users) = users();
        users.add("wang", Role::Operator, "correct horse").unwrap();
        let info = users.verify("wang", "correct horse").unwrap();
        assert_eq!(info.name, "wang");
        assert_eq!(info.role, Role::Operator);
        assert_eq!(users.verify("wang", "correct hors"), None);
        assert_eq!(users.verify("wang", ""), None);
        assert_eq!(users.verify("zhao", "correct horse"), None);
        assert_eq!(users.verify("", "correct horse"), None);
        assert_eq!(users.verify("wang wang", "correct horse"), None);
    }

    #[test]
    fn names_differing_only_in_ascii_case_are_one_user_stored_as_first_spelt() {
        let (_dir, users) = users();
        users.add("Admin", Role::Admin, "correct horse").unwrap();
        assert!(matches!(
            users.add("admin", Role::Viewer, "other password"),
            Err(UserError::Exists)
        ));
        assert_eq!(
            users.verify("ADMIN", "correct horse").unwrap().name,
            "Admin"
        );
    }

    #[test]
    fn an_existing_name_is_refused_and_the_first_user_keeps_their_password() {
        let (_dir, users) = users();
        users.add("wang", Role::Viewer, "first password").unwrap();
        assert!(matches!(
            users.add("wang", Role::Admin, "second password"),
            Err(UserError::Exists)
        ));
        let info = users.verify("wang", "first password").unwrap();
        assert_eq!(info.role, Role::Viewer);
    }

    #[test]
    fn names_of_letters_in_any_script_digits_and_a_few_marks_are_accepted() {
        for name in ["wang", "张伟", "li.na-2@park_b", "x", &"a".repeat(64)] {
            assert!(check_name(name).is_ok(), "{name}");
        }
        for name in [
            "",
            "wang wei",
            "a/b",
            "a;b",
            "a'b",
            "tab\t",
            "ok\n",
            &"a".repeat(65),
        ] {
            assert!(
                matches!(check_name(name), Err(UserError::BadName(_))),
                "{name:?}"
            );
        }
        let (_dir, users) = users();
        assert!(matches!(
            users.add("wang wei", Role::Viewer, "correct horse"),
            Err(UserError::BadName(_))
        ));
        users.add("张伟", Role::Viewer, "correct horse").unwrap();
        assert!(users.verify("张伟", "correct horse").is_some());
    }

    #[test]
    fn empty_and_short_passwords_are_refused_counting_characters_not_bytes() {
        let (_dir, users) = users();
        for pw in ["", "1234567", "短密码"] {
            assert!(
                matches!(
                    users.add("wang", Role::Viewer, pw),
                    Err(UserError::WeakPassword(_))
                ),
                "{pw:?}"
            );
        }
        assert!(check_password("12345678").is_ok());
        assert!(check_password("八个汉字的密码呀").is_ok());
        assert!(check_password(&"x".repeat(PASSWORD_MAX + 1)).is_err());
        assert!(users.list().unwrap().is_empty(), "nothing was added");
    }

    #[test]
    fn a_refused_password_is_not_repeated_in_the_error() {
        let err = check_password("hunter2").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        assert!(!format!("{err:?}").contains("hunter2"));
    }

    #[test]
    fn a_new_password_replaces_the_old_and_ends_the_users_sessions() {
        let (_dir, users) = users();
        users.add("wang", Role::Viewer, "first password").unwrap();
        let cookie = users.start_session_at("wang", at(0)).unwrap();
        users.set_password("wang", "second password").unwrap();
        assert_eq!(users.verify("wang", "first password"), None);
        assert!(users.verify("wang", "second password").is_some());
        assert_eq!(users.session_at(&cookie, at(1)), None);
        assert!(matches!(
            users.set_password("zhao", "second password"),
            Err(UserError::NotFound)
        ));
        assert!(matches!(
            users.set_password("wang", "short"),
            Err(UserError::WeakPassword(_))
        ));
    }

    #[test]
    fn users_are_listed_by_name_with_role_and_creation_time_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let before = Utc::now().timestamp();
        {
            let users = Users::open(&path).unwrap();
            users.add("zhao", Role::Viewer, "correct horse").unwrap();
            users.add("an", Role::Admin, "correct horse").unwrap();
        }
        let users = Users::open(&path).unwrap();
        let list = users.list().unwrap();
        let names: Vec<_> = list.iter().map(|u| (u.name.as_str(), u.role)).collect();
        assert_eq!(names, [("an", Role::Admin), ("zhao", Role::Viewer)]);
        assert!(list[0].created.timestamp() >= before);
        assert!(list[0].created.timestamp() <= Utc::now().timestamp());
    }

    #[cfg(unix)]
    #[test]
    fn a_new_users_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        Users::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn removing_a_user_says_whether_there_was_one_and_ends_their_sessions() {
        let (_dir, users) = users();
        users.add("wang", Role::Operator, "correct horse").unwrap();
        let cookie = users.start_session_at("wang", at(0)).unwrap();
        assert!(users.remove("wang").unwrap());
        assert!(!users.remove("wang").unwrap());
        assert_eq!(users.verify("wang", "correct horse"), None);
        assert_eq!(users.session_at(&cookie, at(1)), None);
        // A new user by the same name does not inherit the old one's session.
        users.add("wang", Role::Admin, "another password").unwrap();
        assert_eq!(users.session_at(&cookie, at(2)), None);
        assert_eq!(stored_expiry(&users, &cookie), None);
    }

    #[test]
    fn a_session_cookie_is_random_url_safe_and_stored_only_as_its_digest() {
        let (_dir, users) = users();
        users.add("wang", Role::Operator, "correct horse").unwrap();
        let a = users.start_session_at("wang", at(0)).unwrap();
        let b = users.start_session_at("wang", at(0)).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 bytes in base64 without padding");
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        let stored: Vec<Vec<u8>> = {
            let c = users.conn();
            let mut st = c.prepare("SELECT digest FROM session").unwrap();
            let rows = st.query_map([], |r| r.get(0)).unwrap();
            rows.map(Result::unwrap).collect()
        };
        assert_eq!(stored.len(), 2);
        assert!(stored.iter().all(|d| d.len() == 32 && d != a.as_bytes()));
        assert!(stored.contains(&cookie_digest(&a).to_vec()));
    }

    #[test]
    fn a_session_names_its_user_until_it_ends() {
        let (_dir, users) = users();
        users.add("wang", Role::Operator, "correct horse").unwrap();
        let cookie = users.start_session_at("wang", at(0)).unwrap();
        let info = users.session_at(&cookie, at(5)).unwrap();
        assert_eq!((info.name.as_str(), info.role), ("wang", Role::Operator));
        assert_eq!(users.session_at("not a session", at(5)), None);
        assert_eq!(users.session_at("", at(5)), None);
        users.end_session(&cookie).unwrap();
        assert_eq!(users.session_at(&cookie, at(6)), None);
        users.end_session(&cookie).unwrap();
        assert!(matches!(
            users.start_session_at("zhao", at(0)),
            Err(UserError::NotFound)
        ));
    }

    #[test]
    fn a_session_idle_for_twelve_hours_has_expired() {
        let (_dir, users) = users();
        users.add("wang", Role::Viewer, "correct horse").unwrap();
        let idle = secs(SESSION_IDLE);
        let cookie = users.start_session_at("wang", at(0)).unwrap();
        assert!(users.session_at(&cookie, at(idle - 1)).is_some());
        let other = users.start_session_at("wang", at(0)).unwrap();
        assert_eq!(users.session_at(&other, at(idle)), None);
        assert_eq!(
            stored_expiry(&users, &other),
            None,
            "an expired session is deleted"
        );
    }

    #[test]
    fn using_a_session_pushes_its_expiry_back_writing_at_most_once_a_minute() {
        let (_dir, users) = users();
        users.add("wang", Role::Viewer, "correct horse").unwrap();
        let idle = secs(SESSION_IDLE);
        let cookie = users.start_session_at("wang", at(0)).unwrap();
        assert_eq!(stored_expiry(&users, &cookie), Some(at(idle).timestamp()));
        users.session_at(&cookie, at(59)).unwrap();
        assert_eq!(
            stored_expiry(&users, &cookie),
            Some(at(idle).timestamp()),
            "not written within the minute"
        );
        users.session_at(&cookie, at(60)).unwrap();
        assert_eq!(
            stored_expiry(&users, &cookie),
            Some(at(60 + idle).timestamp())
        );
        // Used every eleven hours, it outlives the idle timeout many times over.
        for n in 1..=10 {
            assert!(
                users.session_at(&cookie, at(n * 11 * 3600)).is_some(),
                "{n}"
            );
        }
    }

    #[test]
    fn no_session_outlives_seven_days_however_busy() {
        let (_dir, users) = users();
        users.add("wang", Role::Viewer, "correct horse").unwrap();
        let max = secs(SESSION_MAX);
        let cookie = users.start_session_at("wang", at(0)).unwrap();
        let mut t = 0;
        while t < max {
            assert!(users.session_at(&cookie, at(t)).is_some(), "at {t}");
            t += 3600;
        }
        assert!(users.session_at(&cookie, at(max - 1)).is_some());
        assert_eq!(users.session_at(&cookie, at(max)), None);
        assert_eq!(stored_expiry(&users, &cookie), None);
    }

    #[test]
    fn a_role_change_applies_to_running_sessions_at_once() {
        let (_dir, users) = users();
        users.add("wang", Role::Admin, "correct horse").unwrap();
        let cookie = users.start_session_at("wang", at(0)).unwrap();
        assert_eq!(users.session_at(&cookie, at(1)).unwrap().role, Role::Admin);
        users.set_role("wang", Role::Viewer).unwrap();
        assert_eq!(users.session_at(&cookie, at(2)).unwrap().role, Role::Viewer);
        assert!(matches!(
            users.set_role("zhao", Role::Viewer),
            Err(UserError::NotFound)
        ));
    }

    #[test]
    fn a_user_with_a_role_this_version_does_not_know_gets_no_access() {
        let (_dir, users) = users();
        users.add("wang", Role::Admin, "correct horse").unwrap();
        let cookie = users.start_session_at("wang", at(0)).unwrap();
        users
            .conn()
            .execute("UPDATE user SET role = 'superuser'", [])
            .unwrap();
        assert_eq!(users.verify("wang", "correct horse"), None);
        assert_eq!(users.session_at(&cookie, at(1)), None);
        assert!(users.list().is_err());
    }

    #[test]
    fn starting_a_session_deletes_the_expired_ones() {
        let (_dir, users) = users();
        users.add("wang", Role::Viewer, "correct horse").unwrap();
        let old = users.start_session_at("wang", at(0)).unwrap();
        let later = at(secs(SESSION_IDLE) + 1);
        let new = users.start_session_at("wang", later).unwrap();
        assert_eq!(stored_expiry(&users, &old), None);
        assert!(stored_expiry(&users, &new).is_some());
    }

    #[test]
    fn sessions_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let cookie = {
            let users = Users::open(&path).unwrap();
            users.add("wang", Role::Viewer, "correct horse").unwrap();
            users.start_session_at("wang", at(0)).unwrap()
        };
        let users = Users::open(&path).unwrap();
        assert_eq!(users.session_at(&cookie, at(10)).unwrap().name, "wang");
    }

    #[test]
    fn debug_shows_no_hash() {
        let (_dir, users) = users();
        users.add("wang", Role::Viewer, "correct horse").unwrap();
        let shown = format!("{users:?} {:?}", users.list().unwrap());
        assert!(!shown.contains("argon2"), "{shown}");
        assert!(!shown.contains(&stored_hash(&users, "wang")));
    }
}
