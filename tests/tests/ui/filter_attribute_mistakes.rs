use chrono::{DateTime, Utc};
use orm_core::Entity;

#[derive(Entity, Clone, Debug, PartialEq)]
struct Twice {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(soft_delete)]
    deleted_at: Option<DateTime<Utc>>,
    #[orm(soft_delete)]
    removed_at: Option<DateTime<Utc>>,
    #[orm(tenant)]
    tenant_id: i64,
    #[orm(tenant)]
    org_id: i64,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Misplaced {
    #[orm(primary_key, generated, tenant)]
    id: i64,
    #[orm(soft_delete, skip)]
    deleted_at: Option<DateTime<Utc>>,
    #[orm(version, soft_delete)]
    version: i32,
}

fn main() {}
