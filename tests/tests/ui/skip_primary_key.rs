use orm_core::Entity;

#[derive(Entity, Clone, Debug, PartialEq)]
struct Customer {
    #[orm(primary_key)]
    id: i64,
    #[orm(skip, primary_key)]
    cache: i64,
}

fn main() {}
