//! Method paths as go-micro servers accept them: the service segment may carry any
//! package prefix, or none (`/AuthStudent/LoginStudentAuth` as well as
//! `/auth.student.AuthStudent/LoginStudentAuth`), because the real outing service calls
//! auth that way. A path whose service segment names one of this server's services by
//! its last dot-separated part is rewritten to the canonical name before routing.

use crate::proto;
use crate::upstream::Service;

/// The gRPC services (full names) one reference server serves.
pub fn grpc_services(service: Service) -> &'static [&'static str] {
    use proto::{announcement, auth, club, outing, schedule};
    match service {
        Service::Auth => &[
            auth::admin::auth_admin_server::SERVICE_NAME,
            auth::student::auth_student_server::SERVICE_NAME,
            auth::teacher::auth_teacher_server::SERVICE_NAME,
            auth::parent::auth_parent_server::SERVICE_NAME,
            auth::event::auth_event_server::SERVICE_NAME,
        ],
        Service::Club => &[
            club::admin::club_admin_server::SERVICE_NAME,
            club::admin::club_student_server::SERVICE_NAME,
            club::leader::club_leader_server::SERVICE_NAME,
            club::event::club_event_server::SERVICE_NAME,
        ],
        Service::Outing => &[
            outing::outing_student_server::SERVICE_NAME,
            outing::outing_teacher_server::SERVICE_NAME,
            outing::outing_parents_server::SERVICE_NAME,
            outing::outing_event_server::SERVICE_NAME,
        ],
        Service::Schedule => &[
            schedule::schedule_service_server::SERVICE_NAME,
            schedule::schedule_event_server::SERVICE_NAME,
        ],
        Service::Announcement => &[
            announcement::announcement_service_server::SERVICE_NAME,
            announcement::announcement_event_server::SERVICE_NAME,
        ],
    }
}

/// The canonical form of `path` among `names`, when it differs from `path` only by the
/// service segment's package prefix; `None` when `path` is canonical already, or names
/// no service (or an ambiguous one).
pub fn canonical_path(path: &str, names: &[&'static str]) -> Option<String> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    if names.contains(&service) {
        return None;
    }
    let short = last_segment(service);
    let mut matching = names.iter().filter(|name| last_segment(name) == short);
    let found = matching.next()?;
    if matching.next().is_some() {
        return None;
    }
    Some(format!("/{found}/{method}"))
}

fn last_segment(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// Rewrites the request's path in place (see the module doc).
pub fn canonicalize<B>(mut request: http::Request<B>, names: &[&'static str]) -> http::Request<B> {
    let Some(path) = canonical_path(request.uri().path(), names) else {
        return request;
    };
    let mut parts = request.uri().clone().into_parts();
    if let Ok(rewritten) = path.parse() {
        parts.path_and_query = Some(rewritten);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_package_prefix_or_none_maps_to_the_canonical_name() {
        let names = grpc_services(Service::Auth);
        let canonical = "/auth.student.AuthStudent/LoginStudentAuth";
        for path in [
            "/AuthStudent/LoginStudentAuth",
            "/auth.AuthStudent/LoginStudentAuth",
            "/dms.sms.auth.student.AuthStudent/LoginStudentAuth",
        ] {
            assert_eq!(
                canonical_path(path, names).as_deref(),
                Some(canonical),
                "{path}"
            );
        }
        assert_eq!(canonical_path(canonical, names), None);
        assert_eq!(canonical_path("/Nope/LoginStudentAuth", names), None);
        assert_eq!(canonical_path("/AuthStudent", names), None);
        assert_eq!(
            canonical_path(
                "/club.ClubEvent/ChangeAllServiceNodes",
                grpc_services(Service::Club)
            )
            .as_deref(),
            Some("/club.event.ClubEvent/ChangeAllServiceNodes")
        );
    }

    #[test]
    fn ambiguous_short_names_are_left_alone() {
        assert_eq!(canonical_path("/B/M", &["x.B", "y.B"]), None);
    }
}
