//! Argon2id hashes of console passwords, and the rules a new password must meet.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use super::UserError;

/// Shortest password accepted, in characters (not bytes: 8 CJK characters are as good as 8
/// Latin ones for this purpose).
pub const PASSWORD_MIN: usize = 8;

/// Longest password accepted, in characters. Argon2 takes any length, but nobody types more
/// and a bound keeps a megabyte "password" from being hashed.
pub const PASSWORD_MAX: usize = 1024;

/// Refuses a password that is empty, too short or absurdly long.
pub fn check_password(password: &str) -> Result<(), UserError> {
    let n = password.chars().count();
    if n == 0 {
        return Err(UserError::WeakPassword("it is empty".into()));
    }
    if n < PASSWORD_MIN {
        return Err(UserError::WeakPassword(format!(
            "it has {n} characters; at least {PASSWORD_MIN} are needed"
        )));
    }
    if n > PASSWORD_MAX {
        return Err(UserError::WeakPassword(format!(
            "it has {n} characters; at most {PASSWORD_MAX} are taken"
        )));
    }
    Ok(())
}

/// The argon2id PHC string of `password` with a fresh random salt.
pub fn hash(password: &str) -> Result<String, UserError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|e| UserError::Crypto(format!("no randomness from the OS: {e}")))?;
    hash_with_salt(password, &salt)
}

fn hash_with_salt(password: &str, salt: &[u8]) -> Result<String, UserError> {
    let salt = SaltString::encode_b64(salt).map_err(|e| UserError::Crypto(e.to_string()))?;
    let phc = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| UserError::Crypto(e.to_string()))?;
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `phc`. A malformed `phc` matches nothing.
/// The cost is the one recorded in `phc`, so hashes made with other parameters still verify.
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Spends the work of one verification against a hash made with today's parameters, for a
/// name that has no user: answering "unknown user" faster than "wrong password" would tell an
/// attacker which names exist. The hash is made once per process; what it was made from does
/// not matter, because the result is thrown away.
pub fn verify_dummy(password: &str) {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    let dummy =
        DUMMY.get_or_init(|| hash_with_salt("parkhub-unknown-user", b"parkhub-dummy-salt").ok());
    if let Some(phc) = dummy {
        let _ = verify(password, phc);
    }
}
