//! Bearer tokens of `[[api.token]]` and the console's session cookie: who is calling and what
//! their role lets them do.
//!
//! The config holds only the SHA-256 of each token, so a leaked config does not leak access.
//! A presented token is hashed and compared with every configured hash in constant time, and
//! the whole list is always walked, so response timing says nothing about how close a guess
//! came or which entry it matched.

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use super::error::ApiError;
use crate::config::{ApiToken, Role};
pub use crate::users::role_name;

/// Who made a request, as their token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's `name`: recorded as `who` of every command.
    pub name: String,
    pub role: Role,
}

struct Key {
    name: String,
    role: Role,
    digest: [u8; 32],
}

/// The configured tokens, decoded once.
pub struct Keys(Vec<Key>);

// Hand-written so that nothing derived from a token ever reaches a log line.
impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|k| (&k.name, k.role)))
            .finish()
    }
}

/// SHA-256 of a token, as `[[api.token]] sha256` holds it (in hex).
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The token of an `Authorization: Bearer …` header. The scheme is case-insensitive
/// (RFC 7235); anything else, an empty token included, is no token.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The cookie that carries a console session. HttpOnly (page scripts never see it) and
/// SameSite=Strict (no other site's page can make the browser send it).
pub const SESSION_COOKIE: &str = "parkhub_session";

/// The session cookie's value, if the request has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == SESSION_COOKIE && !c.value().is_empty())
        .map(|c| c.value().to_owned())
}

/// The `Set-Cookie` value that starts (`Some(value)`) or ends (`None`) a session. `Secure` when
/// the hub serves HTTPS: then the browser never sends it in clear.
pub fn set_session_cookie(value: Option<&str>, secure: bool, max_age_s: i64) -> String {
    let mut c = cookie::Cookie::build((SESSION_COOKIE, value.unwrap_or("").to_owned()))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(secure)
        .max_age(cookie::time::Duration::seconds(if value.is_some() {
            max_age_s
        } else {
            0
        }))
        .build();
    if value.is_none() {
        c.make_removal();
    }
    c.to_string()
}

/// `caller` if their role is at least `need`.
pub fn permit(caller: Caller, need: Role) -> Result<Caller, ApiError> {
    if caller.role < need {
        return Err(ApiError::Forbidden {
            name: caller.name,
            role: caller.role,
            need,
        });
    }
    Ok(caller)
}

impl Keys {
    pub fn new(tokens: &[ApiToken]) -> Self {
        let keys = tokens
            .iter()
            .filter_map(|t| {
                let mut digest = [0u8; 32];
                match hex::decode_to_slice(t.sha256.trim(), &mut digest) {
                    Ok(()) => Some(Key {
                        name: t.name.clone(),
                        role: t.role,
                        digest,
                    }),
                    Err(_) => {
                        // The config check refuses these; a token nobody can present is
                        // better than a hub that does not start.
                        tracing::warn!(token = %t.name, "api token's sha256 is not 64 hex digits: ignored");
                        None
                    }
                }
            })
            .collect();
        Self(keys)
    }

    /// The caller a token belongs to.
    pub fn identify(&self, token: &str) -> Option<Caller> {
        let given = digest(token);
        let mut found = Choice::from(0);
        let mut index = 0u64;
        for (i, k) in self.0.iter().enumerate() {
            let hit = given.ct_eq(&k.digest) & !found;
            index.conditional_assign(&(i as u64), hit);
            found |= hit;
        }
        if !bool::from(found) {
            return None;
        }
        let k = self.0.get(usize::try_from(index).ok()?)?;
        Some(Caller {
            name: k.name.clone(),
            role: k.role,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn token(name: &str, role: Role, secret: &str) -> ApiToken {
        ApiToken {
            name: name.into(),
            role,
            sha256: hex::encode(digest(secret)),
        }
    }

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    /// What a request's extractor does with a bearer header.
    fn authorize(keys: &Keys, h: &HeaderMap, need: Role) -> Result<Caller, ApiError> {
        let token = bearer(h).ok_or(ApiError::NoToken)?;
        permit(keys.identify(token).ok_or(ApiError::UnknownToken)?, need)
    }

    fn keys() -> Keys {
        Keys::new(&[
            token("guard", Role::Viewer, "guard-secret"),
            token("duty", Role::Operator, "duty-secret"),
            token("root", Role::Admin, "root-secret"),
        ])
    }

    #[test]
    fn a_token_is_known_by_its_sha256_and_nothing_else_matches() {
        let keys = keys();
        assert_eq!(
            keys.identify("duty-secret"),
            Some(Caller {
                name: "duty".into(),
                role: Role::Operator
            })
        );
        assert_eq!(keys.identify("root-secret").unwrap().name, "root");
        assert_eq!(keys.identify("duty-secre"), None);
        assert_eq!(keys.identify(""), None);
        // The hash itself is not a token.
        assert_eq!(keys.identify(&hex::encode(digest("duty-secret"))), None);
    }

    #[test]
    fn the_sha256_of_the_config_may_be_upper_case() {
        let mut t = token("guard", Role::Viewer, "s");
        t.sha256 = t.sha256.to_uppercase();
        assert!(Keys::new(&[t]).identify("s").is_some());
    }

    #[test]
    fn a_malformed_sha256_is_ignored_rather_than_matching_anything() {
        let bad = ApiToken {
            name: "bad".into(),
            role: Role::Admin,
            sha256: "not hex".into(),
        };
        let keys = Keys::new(&[bad]);
        assert_eq!(keys.identify("not hex"), None);
        assert_eq!(keys.identify(""), None);
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_other_schemes_are_no_token() {
        assert_eq!(bearer(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&headers("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&headers("Basic YWJjOmRlZg==")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&headers("Bearer")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn a_role_grants_what_it_names_and_every_lower_role() {
        let keys = keys();
        let op = headers("Bearer duty-secret");
        assert!(authorize(&keys, &op, Role::Viewer).is_ok());
        assert!(authorize(&keys, &op, Role::Operator).is_ok());
        assert!(matches!(
            authorize(&keys, &op, Role::Admin),
            Err(ApiError::Forbidden {
                need: Role::Admin,
                ..
            })
        ));
        assert!(matches!(
            authorize(&keys, &headers("Bearer guard-secret"), Role::Operator),
            Err(ApiError::Forbidden { .. })
        ));
        assert!(authorize(&keys, &headers("Bearer root-secret"), Role::Operator).is_ok());
    }

    #[test]
    fn no_token_and_an_unknown_token_are_told_apart_for_the_client() {
        let keys = keys();
        assert!(matches!(
            authorize(&keys, &HeaderMap::new(), Role::Viewer),
            Err(ApiError::NoToken)
        ));
        assert!(matches!(
            authorize(&keys, &headers("Bearer nope"), Role::Viewer),
            Err(ApiError::UnknownToken)
        ));
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_an_empty_one_is_none() {
        assert_eq!(
            session_cookie(&cookies("theme=dark; parkhub_session=abc; lang=zh")),
            Some("abc".into())
        );
        assert_eq!(session_cookie(&cookies("parkhub_session=")), None);
        assert_eq!(session_cookie(&cookies("other=1")), None);
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn the_session_cookie_is_http_only_strict_and_secure_under_tls() {
        let set = set_session_cookie(Some("abc"), true, 3600);
        for part in [
            "parkhub_session=abc",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/",
            "Max-Age=3600",
        ] {
            assert!(set.contains(part), "{set} lacks {part}");
        }
        assert!(!set_session_cookie(Some("abc"), false, 60).contains("Secure"));
        let ended = set_session_cookie(None, false, 60);
        assert!(ended.starts_with("parkhub_session=;"), "{ended}");
        assert!(ended.contains("Max-Age=0"), "{ended}");
    }

    fn cookies(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn debug_shows_names_and_roles_only() {
        let shown = format!("{:?}", keys());
        assert!(shown.contains("duty"));
        assert!(!shown.contains(&hex::encode(digest("duty-secret"))));
    }
}
