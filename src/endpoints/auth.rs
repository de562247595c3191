//! Endpoints of the auth service (`DMS.SMS.v1.service.auth`): accounts, logins,
//! passwords and look-ups of students, teachers and parents (spec api-auth-club.md §3).

use axum::http::Method;
use serde::Deserialize;
use serde_json::json;
use validator::Validate;

use crate::auth::Access;
use crate::endpoints::{Adapter, Call, Endpoint, Rpc, Success, endpoint};
use crate::http::GatewayError;
use crate::http::input::Source;
use crate::in_band;
use crate::proto::auth::student as pb_student;
use crate::upstream::Service;

in_band!(status, code, message: pb_student::LoginStudentAuthResponse);

/// The auth service's entries of the endpoint table.
pub fn endpoints() -> Vec<Endpoint> {
    vec![
        endpoint(
            "auth.login_student",
            Method::POST,
            "/v1/login/student",
            Service::Auth,
            Rpc {
                name: "LoginStudentAuth",
                path: "/auth.student.AuthStudent/LoginStudentAuth",
            },
            LoginStudent,
        )
        .access(Access::Public)
        .input(Source::Json),
    ]
}

// === POST /v1/login/student ===

#[derive(Debug, Default, Deserialize, Validate)]
#[serde(default)]
pub struct LoginStudentInput {
    #[validate(length(min = 1))]
    student_id: String,
    #[validate(length(min = 1))]
    student_pw: String,
}

struct LoginStudent;

impl Adapter for LoginStudent {
    type Input = LoginStudentInput;
    type Request = pb_student::LoginStudentAuthRequest;
    type Reply = pb_student::LoginStudentAuthResponse;

    fn request(&self, _call: &Call<'_>, input: Self::Input) -> Self::Request {
        Self::Request {
            student_id: input.student_id,
            student_pw: input.student_pw,
        }
    }

    fn success(&self, call: &Call<'_>, reply: Self::Reply) -> Result<Success, GatewayError> {
        // The gateway mints the token itself; the reply's AccessToken is ignored (§2.3).
        let token = call.jwt.issue(&reply.logged_in_student_uuid)?;
        Ok(Success::message("succeed to login student auth").with(json!({
            "access_token": token,
            "student_uuid": reply.logged_in_student_uuid,
        })))
    }
}
