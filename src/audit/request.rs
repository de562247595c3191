//! Which answered requests are security events, decided once per request from the
//! error the response carries (the observe layer calls [`Audit::observe`]).

use std::net::IpAddr;

use super::{Audit, AuditKind, Facts};
use crate::http::GatewayError;

/// Route of the consul-change webhook (its refusals are `webhook_bad_token`).
const WEBHOOK_ROUTE: &str = "/events/types/consul-change";
/// Prefix of the login routes (a backend's refusal there is `login_failed`).
const LOGIN_PREFIX: &str = "/v1/login/";

/// What the observe layer knows about one answered request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub route: &'a str,
    pub client_ip: Option<IpAddr>,
    /// The verified caller's uuid.
    pub caller: Option<&'a str>,
    /// The login id a login request carried.
    pub login_id: Option<&'a str>,
    pub request_id: &'a str,
    /// Whether the pipeline had named the backend service (a 429 before that is the
    /// client-IP guard's).
    pub service_known: bool,
}

/// The audit kind of a request that ended in `error` on `route`, if any; with the
/// detail to record.
pub fn classify(
    route: &str,
    error: &GatewayError,
    service_known: bool,
) -> Option<(AuditKind, Option<String>)> {
    let webhook = route == WEBHOOK_ROUTE;
    match error {
        GatewayError::Unauthenticated { .. } | GatewayError::Forbidden { .. } if webhook => {
            Some((AuditKind::WebhookBadToken, None))
        }
        GatewayError::Relayed { status, code, .. }
            if route.starts_with(LOGIN_PREFIX) && status.is_client_error() =>
        {
            Some((AuditKind::LoginFailed, Some(format!("code={code}"))))
        }
        GatewayError::Unauthenticated { code, .. } => {
            Some((AuditKind::Unauthorized, Some(format!("code={code}"))))
        }
        GatewayError::Relayed { status, code, .. } if status.as_u16() == 401 => Some((
            AuditKind::Unauthorized,
            Some(format!("code={code} by backend")),
        )),
        GatewayError::Forbidden { .. } => Some((AuditKind::Forbidden, None)),
        GatewayError::Relayed { status, code, .. } if status.as_u16() == 403 => Some((
            AuditKind::Forbidden,
            Some(format!("code={code} by backend")),
        )),
        // The guard answers 429 once, to the request that crossed the limit; the block
        // then starts (403 `Blocked` for the rest of it, not audited again).
        GatewayError::RateLimited { retry_after } if !service_known => Some((
            AuditKind::IpBlocked,
            Some(format!("block_secs={}", retry_after.as_secs())),
        )),
        _ => None,
    }
}

impl Audit {
    /// Records the security event of one answered request, if it is one.
    pub fn observe(&self, facts: RequestFacts<'_>, error: &GatewayError) {
        let Some((kind, detail)) = classify(facts.route, error, facts.service_known) else {
            return;
        };
        let account = match kind {
            AuditKind::LoginFailed => facts.login_id,
            _ => facts.caller,
        };
        self.record(
            kind,
            Facts {
                client_ip: facts.client_ip,
                account: account.map(str::to_owned),
                route: Some(facts.route.to_owned()),
                request_id: Some(facts.request_id.to_owned()),
                detail,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::StatusCode;

    use super::*;

    fn relayed(status: u16) -> GatewayError {
        GatewayError::Relayed {
            status: StatusCode::from_u16(status).expect("status"),
            code: -402,
            message: "wrong password".into(),
        }
    }

    fn kind(route: &str, error: &GatewayError, service_known: bool) -> Option<AuditKind> {
        classify(route, error, service_known).map(|(kind, _)| kind)
    }

    #[test]
    fn errors_map_to_kinds() {
        let unauthenticated = GatewayError::Unauthenticated {
            code: -101,
            message: "expired".into(),
        };
        let forbidden = GatewayError::forbidden("not yours");
        let limited = GatewayError::RateLimited {
            retry_after: Duration::from_secs(60),
        };
        let blocked = GatewayError::Blocked {
            retry_after: Duration::from_secs(60),
        };
        let route = "/v1/students/uuid/{student_uuid}";
        assert_eq!(
            kind(route, &unauthenticated, true),
            Some(AuditKind::Unauthorized)
        );
        assert_eq!(kind(route, &forbidden, true), Some(AuditKind::Forbidden));
        assert_eq!(kind(route, &relayed(403), true), Some(AuditKind::Forbidden));
        assert_eq!(kind(route, &limited, false), Some(AuditKind::IpBlocked));
        assert_eq!(kind(route, &limited, true), None, "a service's rate limit");
        assert_eq!(kind(route, &blocked, false), None, "already audited");
        assert_eq!(kind(route, &relayed(409), true), None);
        assert_eq!(
            kind("/v1/login/student", &relayed(409), true),
            Some(AuditKind::LoginFailed)
        );
        assert_eq!(
            kind(WEBHOOK_ROUTE, &forbidden, false),
            Some(AuditKind::WebhookBadToken)
        );
        assert_eq!(
            kind(WEBHOOK_ROUTE, &unauthenticated, false),
            Some(AuditKind::WebhookBadToken)
        );
        assert_eq!(kind(route, &GatewayError::integrity("x"), true), None);
    }
}
