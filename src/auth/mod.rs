//! Who is calling: Bearer JWT verification and issuing ([`jwt`]), the caller's account
//! kind ([`principal`]) and the per-endpoint access rules ([`access`]).

pub mod access;
pub mod jwt;
pub mod principal;

pub use access::Access;
pub use jwt::{JwtKeys, TokenLifetimes};
pub use principal::{Kind, Principal};
