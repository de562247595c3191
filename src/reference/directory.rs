//! The accounts of the reference system (admins, students, teachers, parents), shared by
//! the reference services of one process: auth owns them, outing and club look students
//! up. Passwords are stored as Argon2 hashes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::auth::Kind;

/// One account.
#[derive(Debug, Clone, Default)]
pub struct Account {
    pub uuid: String,
    /// Login id; empty for a student created by an admin but not yet signed up.
    pub login_id: String,
    pub password_hash: String,
    pub name: String,
    pub phone_number: String,
    /// Students (and a teacher's class): grade, group, student number.
    pub grade: u32,
    pub group: u32,
    pub student_number: u32,
    pub profile_uri: String,
    /// Students: the linked parent, if any.
    pub parent_uuid: String,
    /// Teachers: whether an admin approved the account (login answers -413 until then).
    pub approved: bool,
    /// Unsigned students: the sign-up code sent by SMS; 0 once signed up.
    pub auth_code: u32,
}

/// All accounts, by uuid.
#[derive(Debug, Default)]
pub struct Directory {
    accounts: RwLock<HashMap<String, Account>>,
    serial: AtomicU64,
}

impl Directory {
    /// A new uuid of the given prefix (`student-` …) with 12 digits, unique in this process.
    pub fn new_uuid(&self, prefix: &str) -> String {
        let n = self.serial.fetch_add(1, Ordering::Relaxed) + 100_000_000_000;
        format!("{prefix}{n:012}")
    }

    /// Adds or replaces an account.
    pub fn upsert(&self, account: Account) {
        self.accounts
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(account.uuid.clone(), account);
    }

    /// The account with `uuid`.
    pub fn get(&self, uuid: &str) -> Option<Account> {
        self.accounts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(uuid)
            .cloned()
    }

    /// Applies `change` to the account with `uuid`; false when there is none.
    pub fn update(&self, uuid: &str, change: impl FnOnce(&mut Account)) -> bool {
        let mut accounts = self
            .accounts
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match accounts.get_mut(uuid) {
            Some(account) => {
                change(account);
                true
            }
            None => false,
        }
    }

    /// Accounts of `kind` matching `filter`, sorted by uuid.
    pub fn find(&self, kind: Kind, filter: impl Fn(&Account) -> bool) -> Vec<Account> {
        let accounts = self.accounts.read().unwrap_or_else(PoisonError::into_inner);
        let mut found: Vec<Account> = accounts
            .values()
            .filter(|a| Kind::of_uuid(&a.uuid) == Some(kind) && filter(a))
            .cloned()
            .collect();
        found.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        found
    }

    /// The account of `kind` whose login id is `login_id`.
    pub fn by_login(&self, kind: Kind, login_id: &str) -> Option<Account> {
        if login_id.is_empty() {
            return None;
        }
        self.find(kind, |a| a.login_id == login_id)
            .into_iter()
            .next()
    }
}

/// Argon2id with small parameters: the reference services are demo peers, and logins
/// must stay cheap enough to benchmark.
fn hasher() -> Argon2<'static> {
    let params = Params::new(1024, 1, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password with a random salt (PHC string).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .unwrap_or_default()
}

/// Whether `password` matches the stored `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hashed_and_verified() {
        let hash = hash_password("demo-student-pw");
        assert!(!hash.contains("demo-student-pw"));
        assert!(verify_password("demo-student-pw", &hash));
        assert!(!verify_password("wrong", &hash));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn new_uuids_have_the_contract_shape() {
        let dir = Directory::default();
        let a = dir.new_uuid("student-");
        let b = dir.new_uuid("student-");
        assert_ne!(a, b);
        assert!(crate::auth::principal::is_uuid_of(&a, "student-"));
    }
}
