//! Bearer JWT verification and issuing (spec §2.3, decision 6).
//!
//! The algorithm is pinned (HS512 by default; `none` can never be configured), `exp` is
//! required, a small leeway absorbs clock skew. Every failure maps to a documented 401
//! code; nothing a client sends here can produce a 5xx.

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
/// Longer tokens are verified every time rather than remembered.
const MAX_CACHED_TOKEN: usize = 2048;

/// The claims the gateway issues and reads.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub uuid: String,
    #[serde(rename = "type")]
    pub token_type: String,
    pub exp: u64,
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
    verified: moka::sync::Cache<String, (Principal, u64)>,
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
        validation.leeway = leeway.as_secs();
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
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
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
        if let Some((principal, exp)) = self.verified.get(token)
            && exp + self.validation.leeway >= unix_now()
        {
            return Ok(principal);
        }
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => {
                let principal = Principal::from_uuid(data.claims.uuid);
                // Bounded: an attacker minting many valid tokens would need the secret.
                if token.len() <= MAX_CACHED_TOKEN {
                    self.verified
                        .insert(token.to_owned(), (principal.clone(), data.claims.exp));
                }
                Ok(principal)
            }
            Err(err) => Err(self.map_error(token, err.into_kind())),
        }
    }

    fn map_error(&self, token: &str, kind: ErrorKind) -> GatewayError {
        match kind {
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm
                if self.also_expired(token) =>
            {
                unexpected("token has several problems: invalid signature and expired")
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
            other => unexpected(&format!("{other:?}")),
        }
    }

    /// Whether the token's `exp` (read without verification) is in the past.
    fn also_expired(&self, token: &str) -> bool {
        let Ok(claims) = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(token)
        else {
            return false;
        };
        claims.claims["exp"]
            .as_u64()
            .is_some_and(|exp| exp + self.validation.leeway < unix_now())
    }

    /// Mints a login token for `uuid` (claims `uuid`, `type: "access_token"`, `exp`).
    pub fn issue(&self, uuid: &str) -> Result<String, GatewayError> {
        let lifetime = match Kind::of_uuid(uuid) {
            Some(Kind::Student) => self.lifetimes.student,
            _ => self.lifetimes.other,
        };
        self.issue_with_expiry(uuid, unix_now() + lifetime.as_secs())
    }

    /// Mints a token expiring at `exp` (unix seconds).
    pub fn issue_with_expiry(&self, uuid: &str, exp: u64) -> Result<String, GatewayError> {
        let claims = Claims {
            uuid: uuid.to_owned(),
            token_type: "access_token".to_owned(),
            exp,
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.encoding)
            .map_err(|e| GatewayError::Internal(format!("signing a token failed: {e}")))
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
        assert!(keys.verify(&token).is_ok(), "served from the verified set");
        // Forge the remembered expiry into the past: the hit must re-check it.
        keys.verified.insert(
            token.clone(),
            (
                Principal::from_uuid("student-000000000001".into()),
                unix_now() - 10,
            ),
        );
        assert!(
            keys.verify(&token).is_ok(),
            "re-verified, still valid by its real exp"
        );
        let expired = keys
            .issue_with_expiry("student-000000000001", unix_now() - 10)
            .expect("issue");
        keys.verified.insert(
            expired.clone(),
            (
                Principal::from_uuid("student-000000000001".into()),
                unix_now() - 10,
            ),
        );
        assert_eq!(code_of(keys.verify(&expired)), -104);
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
