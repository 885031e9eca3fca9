use orm_core::Entity;

#[derive(Entity, Clone, Debug, PartialEq)]
struct Customer {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(version)]
    version: String,
}

fn main() {}
