//! Bearer JWT verification and issuing (spec §2.3, decision 6).
//!
//! The algorithm is pinned (HS512 by default; `none` can never be configured), `exp` is
//! required, `type` must be `access_token`, an `iat` or `nbf` in the future (beyond a
//! small leeway for clock skew) is refused. Every failure maps to a documented 401
//! code with a plain message (the library's error goes to the log, never to the
//! client); nothing a client sends here can produce a 5xx. Time arithmetic saturates,
//! so no claim value (`exp` = 2^64−1, negative, fractional) can overflow or panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::principal::{Kind, Principal};
use crate::http::GatewayError;
use crate::http::error::code;

/// The HMAC algorithms a deployment may pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    #[default]
    HS512,
}

impl From<JwtAlgorithm> for Algorithm {
    fn from(alg: JwtAlgorithm) -> Self {
        match alg {
            JwtAlgorithm::HS256 => Algorithm::HS256,
            JwtAlgorithm::HS384 => Algorithm::HS384,
            JwtAlgorithm::HS512 => Algorithm::HS512,
        }
    }
}

/// How long issued tokens live, per account kind (spec §2.3: 7 days for students,
/// 24 h for everyone else).
#[derive(Debug, Clone, Copy)]
pub struct TokenLifetimes {
    pub student: Duration,
    pub other: Duration,
}

impl Default for TokenLifetimes {
    fn default() -> Self {
        Self {
            student: Duration::from_secs(7 * 24 * 3600),
            other: Duration::from_secs(24 * 3600),
        }
    }
}

/// How many verified tokens are remembered.
const VERIFIED_CAPACITY: u64 = 50_000;
/// A remembered verification: the principal, the token's `exp`, and when it was verified
/// (Unix seconds; the per-thread table keeps that time, so no copy outlives the minute).
#[derive(Clone)]
struct Verified {
    principal: Principal,
    exp: u64,
    at: u64,
}

impl Verified {
    /// Whether it may stand in for a verification at `now`: the token has not expired
    /// (with `leeway`) and the verification is less than a minute old.
    fn usable(&self, leeway: u64, now: u64) -> bool {
        self.exp.saturating_add(leeway) >= now
            && now.saturating_sub(self.at) < VERIFIED_LIFETIME_SECS
    }
}

/// How long a verified token is remembered (seconds).
const VERIFIED_LIFETIME_SECS: u64 = 60;
/// Longer tokens are verified every time rather than remembered.
const MAX_CACHED_TOKEN: usize = 2048;

/// The only `type` claim the gateway accepts (the one it issues, spec §2.3).
pub const ACCESS_TOKEN: &str = "access_token";

/// Longest leeway honoured: the library adds it to and subtracts it from "now", so an
/// absurd configured value must not reach that arithmetic.
const MAX_LEEWAY_SECS: u64 = 3600;

/// The claims the gateway issues and reads.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub uuid: String,
    #[serde(rename = "type")]
    pub token_type: String,
    /// Unix seconds; a fractional value is accepted (JSON numbers, as the original's
    /// library read them) and rounded, a negative one is invalid.
    #[serde(deserialize_with = "numeric_date")]
    pub exp: u64,
    /// Unix seconds of issue; optional (tokens of the original carry none).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_date"
    )]
    pub iat: Option<i64>,
}

/// Verifies and issues tokens with one secret and one pinned algorithm.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    algorithm: Algorithm,
    validation: Validation,
    lifetimes: TokenLifetimes,
    /// Tokens that verified recently, with their `exp`: a client sends the same token on
    /// every call, and the HMAC check was the largest single cost of a request. Only
    /// successes are kept, the expiry is re-checked on every hit, and entries live at
    /// most a minute.
    verified: moka::sync::Cache<String, Verified>,
    /// This instance among those of the process, for the per-thread [`NEAR`] tables.
    id: u64,
}

/// Slots of a thread's table of recently verified tokens, in front of `verified`.
const NEAR_SLOTS: usize = 256;

thread_local! {
    /// Per thread, the tokens that thread verified or found in `verified` last, by a slot
    /// chosen from the token's end (an HMAC signature, so spread evenly; a token whose
    /// end was chosen to collide only ever misses, since a slot is compared whole and
    /// filled only with a verified token). A hit costs a comparison and no lock; the
    /// shared cache's lookup (hashing the whole token, its bookkeeping) was a third of
    /// the authentication.
    static NEAR: std::cell::RefCell<Vec<Option<Near>>> =
        std::cell::RefCell::new(vec![None; NEAR_SLOTS]);
}

/// One verified token in a thread's table, with the [`JwtKeys`] instance that verified it.
#[derive(Clone)]
struct Near {
    keys: u64,
    token: Box<str>,
    verified: Verified,
}

/// Ids of [`JwtKeys`] instances.
static NEXT_KEYS_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The slot of `token` in a thread's table.
fn near_slot(token: &str) -> usize {
    let bytes = token.as_bytes();
    let mut tail = [0_u8; 8];
    let start = bytes.len().saturating_sub(8);
    tail[..bytes.len() - start].copy_from_slice(&bytes[start..]);
    let mixed = u64::from_le_bytes(tail).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> 56) as usize % NEAR_SLOTS
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("JwtKeys")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// Keys for `secret`, pinned to `algorithm`.
    pub fn new(
        secret: &[u8],
        algorithm: JwtAlgorithm,
        leeway: Duration,
        lifetimes: TokenLifetimes,
    ) -> Self {
        let algorithm = Algorithm::from(algorithm);
        let mut validation = Validation::new(algorithm);
        validation.leeway = leeway.as_secs().min(MAX_LEEWAY_SECS);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_nbf = true;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            algorithm,
            validation,
            lifetimes,
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_CAPACITY)
                .time_to_live(Duration::from_secs(VERIFIED_LIFETIME_SECS))
                .build(),
            id: NEXT_KEYS_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The principal of `token` from this thread's table, if it is there and
    /// [usable](Verified::usable).
    fn near(&self, token: &str, now: u64) -> Option<Principal> {
        NEAR.with(|table| {
            let table = table.try_borrow().ok()?;
            let near = table.get(near_slot(token))?.as_ref()?;
            let fresh = near.keys == self.id
                && *near.token == *token
                && near.verified.usable(self.validation.leeway, now);
            fresh.then(|| near.verified.principal.clone())
        })
    }

    /// Puts a verification of `token` into this thread's table.
    fn remember_near(&self, token: &str, verified: &Verified) {
        NEAR.with(|table| {
            if let Ok(mut table) = table.try_borrow_mut()
                && let Some(slot) = table.get_mut(near_slot(token))
            {
                *slot = Some(Near {
                    keys: self.id,
                    token: token.into(),
                    verified: verified.clone(),
                });
            }
        });
    }

    /// Authenticates an `Authorization` header value (`None` when absent).
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Principal, GatewayError> {
        let header = match header {
            Some(value) if !value.is_empty() => value,
            _ => {
                return Err(unauthenticated(
                    code::NO_AUTHORIZATION,
                    "authorization doesn't exist in header",
                ));
            }
        };
        let text = std::str::from_utf8(header).map_err(|_| {
            unauthenticated(
                code::INVALID_AUTHORIZATION_FORMAT,
                "invalid data format of Authorization",
            )
        })?;
        let mut parts = text.split(' ');
        let (Some(scheme), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(unauthenticated(
                code::INVALID_AUTHORIZATION_FORMAT,
                "invalid data format of Authorization",
            ));
        };
        if scheme != "Bearer" {
            return Err(unauthenticated(
                code::UNSUPPORTED_AUTHORIZATION,
                &format!(
                    "{} is an unacceptable authentication method",
                    printable(scheme)
                ),
            ));
        }
        self.verify(token)
    }

    /// Verifies a bare token.
    pub fn verify(&self, token: &str) -> Result<Principal, GatewayError> {
        let now = unix_now();
        if let Some(principal) = self.near(token, now) {
            return Ok(principal);
        }
        if let Some(verified) = self.verified.get(token)
            && verified.usable(self.validation.leeway, now)
        {
            self.remember_near(token, &verified);
            return Ok(verified.principal);
        }
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => {
                self.check_claims(&data.claims)?;
                let principal = Principal::from_uuid(data.claims.uuid);
                // Bounded: an attacker minting many valid tokens would need the secret.
                if token.len() <= MAX_CACHED_TOKEN {
                    let verified = Verified {
                        principal: principal.clone(),
                        exp: data.claims.exp,
                        at: now,
                    };
                    self.remember_near(token, &verified);
                    self.verified.insert(token.to_owned(), verified);
                }
                Ok(principal)
            }
            Err(err) => Err(self.map_error(token, err.into_kind())),
        }
    }

    /// What the library does not check: the `type` claim (-105) and an `iat` in the
    /// future (code 0, as the original's "Token used before issued").
    fn check_claims(&self, claims: &Claims) -> Result<(), GatewayError> {
        if claims.token_type != ACCESS_TOKEN {
            tracing::debug!("JWT refused: type claim is not access_token");
            return Err(unauthenticated(
                code::INVALID_CLAIMS,
                "invalid claims of jwt",
            ));
        }
        if self.issued_in_future(claims.iat) {
            return Err(unexpected("token used before issued"));
        }
        Ok(())
    }

    /// Whether `iat` lies beyond now + leeway.
    fn issued_in_future(&self, iat: Option<i64>) -> bool {
        let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        let leeway = i64::try_from(self.validation.leeway).unwrap_or(i64::MAX);
        iat.is_some_and(|iat| iat > now.saturating_add(leeway))
    }

    fn map_error(&self, token: &str, kind: ErrorKind) -> GatewayError {
        tracing::debug!(error = ?kind, "JWT refused");
        match kind {
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm
                if self.also_out_of_time(token) =>
            {
                unexpected(
                    "token has several problems: invalid signature and expired or used before issued",
                )
            }
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                unauthenticated(code::INVALID_SIGNATURE, "invalid signature of JWT")
            }
            ErrorKind::ExpiredSignature => {
                unauthenticated(code::EXPIRED_TOKEN, "expired jwt token")
            }
            ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
                unauthenticated(code::INVALID_CLAIMS, "invalid claims of jwt")
            }
            // An `alg` outside the HMAC family (`none`, RS*, ...) is a bad signature, as
            // in the original; anything else that fails to parse is "unexpected".
            ErrorKind::Json(_) if header_alg_is_foreign(token) => {
                unauthenticated(code::INVALID_SIGNATURE, "invalid signature of JWT")
            }
            ErrorKind::Json(err) if err.is_data() => {
                unauthenticated(code::INVALID_CLAIMS, "invalid claims of jwt")
            }
            ErrorKind::ImmatureSignature => unexpected("token is not valid yet"),
            // Plain sentences instead of the library's Debug text (decision: no Rust
            // internals in client messages); the detail is in the debug line above.
            ErrorKind::InvalidToken => unexpected("token contains an invalid number of segments"),
            ErrorKind::Base64(_) => unexpected("token is not valid base64url"),
            ErrorKind::Json(_) | ErrorKind::Utf8(_) => unexpected("token is not valid JSON"),
            ErrorKind::InvalidAlgorithmName => unexpected("token names an unknown algorithm"),
            _ => unexpected("token cannot be read"),
        }
    }

    /// Whether the token's `exp` (read without verification) is in the past or its
    /// `iat` in the future. Saturating: an unverified claim may hold any number.
    fn also_out_of_time(&self, token: &str) -> bool {
        let Ok(claims) = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(token)
        else {
            return false;
        };
        let expired = claims.claims["exp"]
            .as_u64()
            .is_some_and(|exp| exp.saturating_add(self.validation.leeway) < unix_now());
        let iat = claims.claims["iat"].as_i64().or_else(|| {
            claims.claims["iat"]
                .as_f64()
                .map(|f| if f > 0.0 { i64::MAX } else { i64::MIN })
        });
        expired || self.issued_in_future(iat)
    }

    /// Mints a login token for `uuid` (claims `uuid`, `type: "access_token"`, `exp`).
    pub fn issue(&self, uuid: &str) -> Result<String, GatewayError> {
        let lifetime = match Kind::of_uuid(uuid) {
            Some(Kind::Student) => self.lifetimes.student,
            _ => self.lifetimes.other,
        };
        self.issue_with_expiry(uuid, unix_now().saturating_add(lifetime.as_secs()))
    }

    /// Mints a token expiring at `exp` (unix seconds).
    pub fn issue_with_expiry(&self, uuid: &str, exp: u64) -> Result<String, GatewayError> {
        let claims = Claims {
            uuid: uuid.to_owned(),
            token_type: ACCESS_TOKEN.to_owned(),
            exp,
            iat: None,
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.encoding)
            .map_err(|e| GatewayError::Internal(format!("signing a token failed: {e}")))
    }
}

/// A JSON number as unix seconds: non-negative integers as they are, finite
/// non-negative fractions rounded (saturating at `u64::MAX`); anything else is invalid.
fn numeric_date<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    use serde::de::Error;
    let n = serde_json::Number::deserialize(deserializer)?;
    if let Some(secs) = n.as_u64() {
        return Ok(secs);
    }
    match n.as_f64() {
        // `as` saturates for floats beyond u64::MAX.
        Some(f) if f.is_finite() && f >= 0.0 => Ok(f.round() as u64),
        _ => Err(D::Error::custom("a date must be a non-negative number")),
    }
}

/// Like [`numeric_date`] but signed (an `iat` before 1970 is merely old) and optional.
fn lenient_date<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    match n.as_f64() {
        // Saturating casts: 2^64−1 or 1e300 is "far in the future".
        Some(f) if !f.is_nan() => Ok(Some(f.round() as i64)),
        _ => Err(D::Error::custom("a date must be a number")),
    }
}

fn header_alg_is_foreign(token: &str) -> bool {
    use base64_url_decode as decode;
    let Some(header) = token.split('.').next().and_then(decode) else {
        return false;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&header) else {
        return false;
    };
    value["alg"]
        .as_str()
        .is_some_and(|alg| !alg.starts_with("HS"))
}

fn base64_url_decode(part: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()
}

fn unauthenticated(code: i32, message: &str) -> GatewayError {
    GatewayError::Unauthenticated {
        code,
        message: message.to_owned(),
    }
}

fn unexpected(detail: &str) -> GatewayError {
    unauthenticated(
        0,
        &format!("unexpected error occurs while parsing JWT, err: {detail}"),
    )
}

/// Keeps client text printable and short in messages.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(32).collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    const SECRET: &[u8] = b"an-unsafe-test-secret-of-32-bytes!!";

    fn keys() -> JwtKeys {
        JwtKeys::new(
            SECRET,
            JwtAlgorithm::HS512,
            Duration::from_secs(5),
            TokenLifetimes::default(),
        )
    }

    fn code_of(result: Result<Principal, GatewayError>) -> i32 {
        let err = result.expect_err("must fail");
        assert_eq!(err.status(), 401, "{err:?}");
        err.code()
    }

    fn bearer(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    fn hand_made(header: &str, claims: &str, secret: &[u8], alg: Algorithm) -> String {
        let head = URL_SAFE_NO_PAD.encode(header);
        let body = URL_SAFE_NO_PAD.encode(claims);
        let message = format!("{head}.{body}");
        let sig =
            jsonwebtoken::crypto::sign(message.as_bytes(), &EncodingKey::from_secret(secret), alg)
                .expect("sign");
        format!("{message}.{sig}")
    }

    #[test]
    fn issued_tokens_verify_with_kind_and_lifetime() {
        let keys = keys();
        let token = keys.issue("student-000000000001").expect("issue");
        let principal = keys.authenticate(Some(&bearer(&token))).expect("valid");
        assert_eq!(principal.kind, Some(Kind::Student));
        let claims = jsonwebtoken::dangerous::insecure_decode::<Claims>(&token)
            .expect("claims")
            .claims;
        assert_eq!(claims.token_type, "access_token");
        let lifetime = claims.exp - unix_now();
        assert!((7 * 24 * 3600 - 10..=7 * 24 * 3600).contains(&lifetime));
        let teacher = keys.issue("teacher-000000000001").expect("issue");
        let exp = jsonwebtoken::dangerous::insecure_decode::<Claims>(&teacher)
            .expect("claims")
            .claims
            .exp;
        assert!((24 * 3600 - 10..=24 * 3600).contains(&(exp - unix_now())));
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.alg, Algorithm::HS512);
    }

    #[test]
    fn header_shape_errors_have_their_codes() {
        let keys = keys();
        assert_eq!(code_of(keys.authenticate(None)), -101);
        assert_eq!(code_of(keys.authenticate(Some(b""))), -101);
        assert_eq!(code_of(keys.authenticate(Some(b"Bearer"))), -102);
        assert_eq!(code_of(keys.authenticate(Some(b"Bearer  abc"))), -102);
        assert_eq!(code_of(keys.authenticate(Some(b"Bearer a b"))), -102);
        assert_eq!(code_of(keys.authenticate(Some(b"\xff\xfe"))), -102);
        assert_eq!(code_of(keys.authenticate(Some(b"Basic abc"))), -106);
        assert_eq!(code_of(keys.authenticate(Some(b"bearer abc"))), -106);
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let keys = JwtKeys::new(
            SECRET,
            JwtAlgorithm::HS512,
            Duration::ZERO,
            TokenLifetimes::default(),
        );
        let token = keys
            .issue_with_expiry("student-000000000001", unix_now() + 3600)
            .expect("issue");
        assert!(keys.verify(&token).is_ok());
        // The shared cache as another thread sees it (its own table is empty there): a
        // valid entry is served, an expired one is verified again.
        let now = unix_now();
        let forged = |exp| Verified {
            principal: Principal::from_uuid("student-000000000999".into()),
            exp,
            at: now,
        };
        let uuid_elsewhere = || {
            std::thread::scope(|scope| {
                scope
                    .spawn(|| keys.verify(&token).expect("valid").uuid)
                    .join()
                    .expect("thread")
            })
        };
        keys.verified.insert(token.clone(), forged(now + 3600));
        assert_eq!(&*uuid_elsewhere(), "student-000000000999", "a cache hit");
        keys.verified.insert(token.clone(), forged(now - 10));
        assert_eq!(
            &*uuid_elsewhere(),
            "student-000000000001",
            "re-verified, still valid by its real exp"
        );
        let expired = keys
            .issue_with_expiry("student-000000000001", now - 10)
            .expect("issue");
        keys.verified.insert(expired.clone(), forged(now - 10));
        assert_eq!(code_of(keys.verify(&expired)), -104);
    }

    #[test]
    fn the_per_thread_table_is_used_only_while_fresh_and_only_by_its_keys() {
        let keys = keys();
        let now = unix_now();
        let token = keys
            .issue_with_expiry("student-000000000001", now + 3600)
            .expect("issue");
        let forged = |exp, at| Verified {
            principal: Principal::from_uuid("student-000000000999".into()),
            exp,
            at,
        };
        let uuid_of = |keys: &JwtKeys| keys.verify(&token).expect("valid").uuid;
        keys.remember_near(&token, &forged(now + 3600, now));
        assert_eq!(&*uuid_of(&keys), "student-000000000999", "a table hit");
        // Past its exp, or taken over a minute ago: verified again.
        keys.remember_near(&token, &forged(now - 10, now));
        assert_eq!(&*uuid_of(&keys), "student-000000000001");
        keys.remember_near(&token, &forged(now + 3600, now - VERIFIED_LIFETIME_SECS));
        assert_eq!(&*uuid_of(&keys), "student-000000000001");
        // Another key set (same secret here) never takes this one's entries.
        keys.remember_near(&token, &forged(now + 3600, now));
        assert_eq!(&*uuid_of(&super::tests::keys()), "student-000000000001");
        // Nor does a token that only shares the slot.
        let mut other = token.clone();
        other.insert(0, 'x');
        assert!(keys.verify(&other).is_err());
    }

    #[test]
    fn expired_token_is_104() {
        let keys = keys();
        let token = keys
            .issue_with_expiry("student-000000000001", unix_now() - 3600)
            .expect("issue");
        assert_eq!(code_of(keys.verify(&token)), -104);
    }

    #[test]
    fn bad_signature_is_103_and_with_expiry_is_0() {
        let keys = keys();
        let other = JwtKeys::new(
            b"another-secret-another-secret-!!",
            JwtAlgorithm::HS512,
            Duration::ZERO,
            TokenLifetimes::default(),
        );
        let token = other.issue("student-000000000001").expect("issue");
        assert_eq!(code_of(keys.verify(&token)), -103);
        let both = other
            .issue_with_expiry("student-000000000001", unix_now() - 3600)
            .expect("issue");
        assert_eq!(code_of(keys.verify(&both)), 0);
    }

    #[test]
    fn wrong_algorithm_and_none_are_rejected() {
        let keys = keys();
        let exp = unix_now() + 60;
        let claims =
            format!(r#"{{"uuid":"admin-000000000001","type":"access_token","exp":{exp}}}"#);
        let hs256 = hand_made(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &claims,
            SECRET,
            Algorithm::HS256,
        );
        assert_eq!(code_of(keys.verify(&hs256)), -103);
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(&claims)
        );
        assert_eq!(code_of(keys.verify(&none)), -103);
    }

    #[test]
    fn missing_exp_or_uuid_is_invalid_claims() {
        let keys = keys();
        let no_exp = hand_made(
            r#"{"alg":"HS512","typ":"JWT"}"#,
            r#"{"uuid":"admin-000000000001"}"#,
            SECRET,
            Algorithm::HS512,
        );
        assert_eq!(code_of(keys.verify(&no_exp)), -105);
        let exp = unix_now() + 60;
        let no_uuid = hand_made(
            r#"{"alg":"HS512","typ":"JWT"}"#,
            &format!(r#"{{"exp":{exp}}}"#),
            SECRET,
            Algorithm::HS512,
        );
        assert_eq!(code_of(keys.verify(&no_uuid)), -105);
    }

    fn signed(claims: &str) -> String {
        hand_made(
            r#"{"alg":"HS512","typ":"JWT"}"#,
            claims,
            SECRET,
            Algorithm::HS512,
        )
    }

    #[test]
    fn iat_in_the_future_beyond_the_leeway_is_code_0() {
        let keys = keys();
        let exp = unix_now() + 3600;
        let future = unix_now() + 600;
        let token = signed(&format!(
            r#"{{"uuid":"student-000000000001","type":"access_token","exp":{exp},"iat":{future}}}"#
        ));
        let err = keys.verify(&token).expect_err("iat in the future");
        assert_eq!((err.status().as_u16(), err.code()), (401, 0));
        assert_eq!(
            err.message(),
            "unexpected error occurs while parsing JWT, err: token used before issued"
        );
        // Within the leeway (5 s), in the past, negative or fractional: accepted.
        for iat in [
            (unix_now() + 2).to_string(),
            (unix_now() - 60).to_string(),
            "-1".to_owned(),
            "-9223372036854775808".to_owned(),
            "1.5".to_owned(),
        ] {
            let token = signed(&format!(
                r#"{{"uuid":"student-000000000001","type":"access_token","exp":{exp},"iat":{iat}}}"#
            ));
            assert!(keys.verify(&token).is_ok(), "iat {iat}");
        }
        for iat in ["18446744073709551615", "1e300", "9223372036854775807"] {
            let token = signed(&format!(
                r#"{{"uuid":"student-000000000001","type":"access_token","exp":{exp},"iat":{iat}}}"#
            ));
            assert_eq!(code_of(keys.verify(&token)), 0, "iat {iat}");
        }
    }

    #[test]
    fn type_must_be_access_token() {
        let keys = keys();
        let exp = unix_now() + 3600;
        for claims in [
            format!(r#"{{"uuid":"student-000000000001","type":"refresh_token","exp":{exp}}}"#),
            format!(r#"{{"uuid":"student-000000000001","type":"","exp":{exp}}}"#),
            format!(r#"{{"uuid":"student-000000000001","exp":{exp}}}"#),
            format!(r#"{{"uuid":"student-000000000001","type":7,"exp":{exp}}}"#),
        ] {
            let err = keys.verify(&signed(&claims)).expect_err(&claims);
            assert_eq!((err.status().as_u16(), err.code()), (401, -105), "{claims}");
            assert_eq!(err.message(), "invalid claims of jwt");
        }
    }

    #[test]
    fn extreme_exp_values_never_overflow() {
        let keys = keys();
        let max = u64::MAX;
        // A valid signature and the largest exp: valid (it never expires).
        let far = signed(&format!(
            r#"{{"uuid":"student-000000000001","type":"access_token","exp":{max}}}"#
        ));
        assert!(keys.verify(&far).is_ok());
        assert!(
            keys.verify(&far).is_ok(),
            "remembered, re-checked without overflow"
        );
        // A bad signature with exp = 2^64−1 is a bad signature only (-103), not "several
        // problems" (the unchecked `exp + leeway` used to wrap into the past).
        let other = hand_made(
            r#"{"alg":"HS512","typ":"JWT"}"#,
            &format!(r#"{{"uuid":"student-000000000001","type":"access_token","exp":{max}}}"#),
            b"another-secret-another-secret-!!",
            Algorithm::HS512,
        );
        assert_eq!(code_of(keys.verify(&other)), -103);
        // Negative, fractional, huge and non-numeric values.
        for (exp, expected) in [
            ("-1", -105),
            ("-9223372036854775808", -105),
            ("1e300", -105),
            ("\"soon\"", -105),
            ("null", -105),
            ("1.5", -104),
            ("100000000000000000000000", -105),
        ] {
            let token = signed(&format!(
                r#"{{"uuid":"student-000000000001","type":"access_token","exp":{exp}}}"#
            ));
            assert_eq!(code_of(keys.verify(&token)), expected, "exp {exp}");
        }
        let fraction = unix_now() as f64 + 3600.25;
        let token = signed(&format!(
            r#"{{"uuid":"student-000000000001","type":"access_token","exp":{fraction}}}"#
        ));
        assert!(keys.verify(&token).is_ok(), "fractional exp in the future");
    }

    #[test]
    fn a_huge_configured_leeway_is_capped() {
        let keys = JwtKeys::new(
            SECRET,
            JwtAlgorithm::HS512,
            Duration::from_secs(u64::MAX),
            TokenLifetimes::default(),
        );
        let token = keys
            .issue_with_expiry("student-000000000001", 1)
            .expect("issue");
        assert_eq!(code_of(keys.verify(&token)), -104);
        let long = JwtKeys::new(
            SECRET,
            JwtAlgorithm::HS512,
            Duration::ZERO,
            TokenLifetimes {
                student: Duration::from_secs(u64::MAX),
                other: Duration::from_secs(u64::MAX),
            },
        );
        let token = long.issue("student-000000000001").expect("saturates");
        assert!(long.verify(&token).is_ok());
    }

    #[test]
    fn messages_never_show_library_internals() {
        let keys = keys();
        for token in ["a.b", "$$$.$$$.$$$", "eyJ.eyJ.sig", "a.b.c.d", "", "x"] {
            let err = keys.verify(token).expect_err(token);
            let message = err.message();
            for leak in [
                "InvalidToken",
                "Base64",
                "InvalidByte",
                "Json(",
                "Error(",
                "{",
            ] {
                assert!(!message.contains(leak), "{token:?}: {message}");
            }
        }
    }

    #[test]
    fn garbage_never_panics_and_is_401() {
        let keys = keys();
        for token in [
            "",
            "a",
            "a.b",
            "a.b.c",
            "....",
            "eyJ.eyJ.sig",
            "%%%.%%%.%%%",
            "\u{1F600}.x.y",
        ] {
            let err = keys.verify(token).expect_err(token);
            assert_eq!(err.status(), 401, "{token}");
        }
    }
}
