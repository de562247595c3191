//! Demo accounts (documented in the README): one admin, two students, a teacher, a
//! parent of the first student, and an unsigned student who can sign up with a code.

use super::directory::{Account, Directory, hash_password};

pub const ADMIN_UUID: &str = "admin-000000000001";
pub const STUDENT_UUID: &str = "student-000000000001";
pub const STUDENT2_UUID: &str = "student-000000000002";
pub const UNSIGNED_STUDENT_UUID: &str = "student-000000000003";
pub const TEACHER_UUID: &str = "teacher-000000000001";
pub const PARENT_UUID: &str = "parent-000000000001";
/// The sign-up code of the unsigned student.
pub const UNSIGNED_AUTH_CODE: u32 = 123_456;

/// The seeded directory.
pub fn directory() -> Directory {
    let dir = Directory::default();
    let account = |uuid: &str, login: &str, pw: &str, name: &str, phone: &str| Account {
        uuid: uuid.to_owned(),
        login_id: login.to_owned(),
        password_hash: if pw.is_empty() {
            String::new()
        } else {
            hash_password(pw)
        },
        name: name.to_owned(),
        phone_number: phone.to_owned(),
        ..Account::default()
    };
    dir.upsert(account(
        ADMIN_UUID,
        "demoadmin",
        "demo-admin-pw",
        "관리자",
        "",
    ));
    dir.upsert(Account {
        grade: 2,
        group: 1,
        student_number: 7,
        profile_uri: "https://example.invalid/profiles/student-000000000001.png".to_owned(),
        parent_uuid: PARENT_UUID.to_owned(),
        ..account(
            STUDENT_UUID,
            "demostudent",
            "demo-student-pw",
            "김학생",
            "01011110001",
        )
    });
    dir.upsert(Account {
        grade: 2,
        group: 1,
        student_number: 8,
        profile_uri: "https://example.invalid/profiles/student-000000000002.png".to_owned(),
        ..account(
            STUDENT2_UUID,
            "demostudent2",
            "demo-student2-pw",
            "이학생",
            "01011110002",
        )
    });
    dir.upsert(Account {
        grade: 1,
        group: 3,
        student_number: 12,
        auth_code: UNSIGNED_AUTH_CODE,
        ..account(UNSIGNED_STUDENT_UUID, "", "", "박신입", "01011110003")
    });
    dir.upsert(Account {
        grade: 2,
        group: 1,
        approved: true,
        ..account(
            TEACHER_UUID,
            "demoteacher",
            "demo-teacher-pw",
            "최선생",
            "01022220001",
        )
    });
    dir.upsert(account(
        PARENT_UUID,
        "demoparent",
        "demo-parent-pw",
        "김부모",
        "01033330001",
    ));
    dir
}
