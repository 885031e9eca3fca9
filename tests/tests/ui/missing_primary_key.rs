use orm_core::Entity;

#[derive(Entity, Clone, Debug, PartialEq)]
struct Customer {
    id: i64,
    name: String,
}

fn main() {}
