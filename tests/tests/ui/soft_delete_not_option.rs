use orm_core::Entity;

#[derive(Entity, Clone, Debug, PartialEq)]
struct Note {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(soft_delete)]
    deleted_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Flagged {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(soft_delete)]
    deleted: Option<bool>,
}

fn main() {}
