//! Generated protobuf messages and tonic server traits of the five backends, one module
//! per proto package (`proto/` holds the sources; names follow the spec's tables).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

pub mod auth {
    pub mod admin {
        tonic::include_proto!("auth.admin");
    }
    pub mod student {
        tonic::include_proto!("auth.student");
    }
    pub mod teacher {
        tonic::include_proto!("auth.teacher");
    }
    pub mod parent {
        tonic::include_proto!("auth.parent");
    }
    pub mod event {
        tonic::include_proto!("auth.event");
    }
}

pub mod club {
    /// Package `club.admin`: both `ClubAdmin` and `ClubStudent` live here.
    pub mod admin {
        tonic::include_proto!("club.admin");
    }
    pub mod leader {
        tonic::include_proto!("club.leader");
    }
    pub mod event {
        tonic::include_proto!("club.event");
    }
}

/// The outing protos declare no package (gRPC paths `/OutingStudent/...`).
pub mod outing {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

pub mod schedule {
    tonic::include_proto!("schedule");
}

pub mod announcement {
    tonic::include_proto!("announcement");
}
