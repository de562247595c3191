//! sms-gateway: the HTTP/JSON entry point of the school management system.
//!
//! A request passes the tower layers assembled in [`app`], is matched to one entry of
//! the endpoint table ([`endpoints`]) and runs through the one generic [`pipeline`]:
//! authenticate, authorize, bind and validate, call the backend over gRPC
//! ([`upstream`]), and map the in-band reply to the contract's envelope ([`http`]).

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod config;
pub mod endpoints;
pub mod guard;
pub mod http;
pub mod json_text;
pub mod openapi;
pub mod pipeline;
pub mod proto;
pub mod reference;
pub mod telemetry;
pub mod upstream;
