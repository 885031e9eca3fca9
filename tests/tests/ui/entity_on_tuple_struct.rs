use orm_core::Entity;

#[derive(Entity, Clone, Debug, PartialEq)]
struct Customer(#[orm(primary_key)] i64, String);

fn main() {}
